//! `cargo xtask pipeline`: the journey from a corpus to a served model, one stage at a time.
//!
//! Every stage is one or more `lmforge` commands run in the run folder (`--out`, relative paths
//! only, so two runs write the same bytes wherever they live), with declared inputs and
//! outputs. `manifest.json` records for each stage the sha256 of its inputs and outputs, its
//! parameters, seed, git commit, rustc and duration; a stage whose inputs and parameters hash
//! to the recorded key and whose outputs are still the recorded bytes is skipped
//! (content-addressed), so an edit to `[train]` re-runs training and what follows and nothing
//! before it. A failing stage removes its own partial outputs and stops the run; the earlier
//! stages' outputs and records stay, and the next run starts from the failed stage.
//!
//! Stages: `clean` (`lmforge clean`) → `tokenizer` (`lmforge bpe train`) → `convert` (`lmforge
//! convert`, Megatron's .bin/.idx) → `train` (`lmforge train gpt`) → `eval` (`lmforge eval`,
//! fp32) → `quantize` (`lmforge quantize`, each scheme) → `eval-quantized` → `samples`
//! (`lmforge generate` on every model). Then the summary table, `report.md`, and with `--serve`
//! `lmforge serve`.

mod config;
pub mod faults;
mod manifest;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

pub use self::config::Config;
use self::config::Train;
pub use self::manifest::Provenance;
use self::manifest::{Manifest, StageRecord};
use crate::flags::{Pipeline, VerifyRepro};

/// The stages in order; `--force` takes one of these names.
pub const STAGES: [&str; 8] = [
    "clean",
    "tokenizer",
    "convert",
    "train",
    "eval",
    "quantize",
    "eval-quantized",
    "samples",
];

/// What one stage reads, writes and runs. Paths are relative to the run folder, except corpus
/// inputs, which are wherever the config says.
struct Stage {
    name: &'static str,
    inputs: Vec<PathBuf>,
    params: Value,
    /// Files or folders this stage owns in the run folder: removed before it runs.
    outputs: Vec<String>,
    /// Folders its commands write into but do not create.
    folders: Vec<&'static str>,
    /// A job-array stage's work folder (`--ranks`): kept across a failed or killed run, so
    /// that the re-run redoes only the unfinished tasks; removed once the stage succeeds.
    work: Option<String>,
    /// A training stage's checkpoints: kept across a failed, killed or stopped run of the same
    /// stage key, which the next run continues with `--load`.
    resume: Option<Resume>,
    commands: Vec<Step>,
}

/// Where a training stage saves, and the checkpoint that ends it.
struct Resume {
    /// The `--save` folder, one of the stage's outputs.
    save: &'static str,
    /// The last iteration's checkpoint, relative to the run folder: until it exists the stage
    /// has not finished, even when its command exits 0 (`--exit-interval`).
    last: String,
    /// What a fresh start adds (`--load INIT --finetune` for `[train] init`); a run that
    /// continues its own checkpoints adds `--load SAVE` instead.
    start: Vec<String>,
}

/// The stage key of the run that wrote a save folder's checkpoints, inside it.
const RESUME_KEY: &str = ".stage-key";
/// Megatron's name for a save folder's latest checkpoint (`lmforge_train::checkpoint`).
const LATEST: &str = "latest_checkpointed_iteration.txt";

/// One `lmforge` command; with `stdout`, its standard output is the named file.
struct Step {
    args: Vec<String>,
    stdout: Option<String>,
    /// A launcher and its flags that start the command (`mpirun -n 2`); none: run it.
    launcher: Vec<String>,
    /// RAYON_NUM_THREADS for it (the ranks of one machine share its cores).
    threads: Option<usize>,
}

impl Step {
    fn new<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Step {
        Step {
            args: args.into_iter().map(|a| a.as_ref().to_string()).collect(),
            stdout: None,
            launcher: Vec::new(),
            threads: None,
        }
    }

    fn stdout_to(mut self, path: &str) -> Step {
        self.stdout = Some(path.into());
        self
    }
}

/// What a finished run hands back to its callers (the summary, `verify-repro`).
pub struct Outcome {
    pub manifest: Manifest,
}

pub fn run(root: &Path, flags: &Pipeline) -> Result<Outcome> {
    let config_path = match &flags.config {
        // Like --out, relative to the workspace (cargo xtask runs from anywhere in it).
        Some(path) => root.join(path),
        None => root.join("datasets/default/pipeline.toml"),
    };
    let mut config = Config::load(&config_path)?;
    if let Some(device) = &flags.device {
        config.device = device.clone();
        config
            .validate()
            .with_context(|| format!("--device {device}"))?;
    }
    if let Some(until) = &flags.until {
        ensure!(
            STAGES.contains(&until.as_str()),
            "--until {until}: no such stage; give one of {}",
            STAGES.join(", ")
        );
    }
    let force_from = match &flags.force {
        Some(stage) => Some(STAGES.iter().position(|s| s == stage).with_context(|| {
            format!(
                "--force {stage}: no such stage; give one of {}",
                STAGES.join(", ")
            )
        })?),
        None => None,
    };
    let base = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for (key, paths) in [
        ("corpus.inputs", &config.corpus.inputs),
        ("clean.blacklists", &config.clean.blacklists),
    ] {
        for path in paths {
            let full = base.join(path);
            ensure!(
                full.exists(),
                "pipeline config {}: `{key}` names {path}, which is not at {}",
                config_path.display(),
                full.display()
            );
        }
    }
    if config_path.starts_with(root.join("datasets")) {
        crate::dataset::verify_checksums(&root.join("datasets"))?;
    }
    let out = root.join(&flags.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // The `lmforge` binary alone: a newcomer's first run waits for no test or bench target.
    // lmforge-cli's feature-unification dependencies make it resolve the features the whole
    // workspace does, so this and `cargo xtask test` share one build of burn (docs/ARCHITECTURE.md,
    // "CI"). A CUDA device needs the CUDA build (docs/ARCHITECTURE.md, "Backends").
    let mut build = vec![
        "build",
        "-p",
        "lmforge-cli",
        "--bin",
        "lmforge",
        "--locked",
        "--quiet",
    ];
    let mut features = Vec::new();
    if config.device.starts_with("cuda") {
        features.push("lmforge-cli/cuda");
    }
    if flags.train_ranks.is_some_and(|n| n > 1) {
        ensure!(
            crate::test::mpi_installed(),
            "--train-ranks needs {}",
            crate::test::MPI_INSTALL
        );
        // As `cargo xtask test` builds it where Open MPI is installed.
        features.push("lmforge-cli/mpi");
    }
    let features = features.join(",");
    if !features.is_empty() {
        build.extend(["--features", &features]);
    }
    crate::cargo(root, &build, &[])?;
    let lmforge = lmforge_binary(root);
    let provenance = manifest::Provenance::collect(root);

    let manifest_path = out.join("manifest.json");
    let mut manifest = Manifest::load(&manifest_path)?;
    manifest.config = config_path.display().to_string();
    manifest.config_sha256 = crate::dataset::sha256_file(&config_path)?;
    manifest.settings = serde_json::to_value(&config)?;
    let started = Instant::now();
    for (index, name) in STAGES.iter().enumerate() {
        let mut stage = plan(name, &config, &base, &out)?;
        if let Some(ranks) = flags.ranks {
            shard(&mut stage, ranks, flags);
        }
        if let Some(ranks) = flags.train_ranks.filter(|&n| n > 1) {
            train_on_ranks(&mut stage, ranks, flags);
        }
        let forced = force_from.is_some_and(|from| index >= from);
        let record = run_stage(&lmforge, &out, &stage, &manifest, forced, &provenance);
        match record {
            Ok(record) => {
                manifest.put(record);
                manifest.save(&manifest_path)?;
            }
            Err(error) => {
                manifest.put(StageRecord::failed(
                    stage.name,
                    &stage.params,
                    &provenance,
                    &error,
                ));
                manifest.save(&manifest_path)?;
                return Err(error.context(format!(
                    "pipeline stage `{name}` failed; the stages before it are kept in {} and \
                     the next run starts from `{name}`",
                    out.display()
                )));
            }
        }
        if flags.until.as_deref() == Some(name) {
            break;
        }
    }
    manifest.seconds = started.elapsed().as_secs_f64();
    manifest.save(&manifest_path)?;
    if let Some(until) = &flags.until
        && until != STAGES[STAGES.len() - 1]
    {
        println!(
            "\nstopped after `{until}` (--until); manifest: {}",
            manifest_path.display()
        );
        return Ok(Outcome { manifest });
    }

    let summary = report::Summary::read(&out, &config, &manifest)?;
    summary.print();
    report::write_markdown(&out, &summary)?;
    println!("\nmanifest: {}", manifest_path.display());
    println!("report:   {}", out.join("report.md").display());

    if flags.serve {
        serve(&lmforge, &out, &config)?;
    }
    Ok(Outcome { manifest })
}

/// The `lmforge` binary `run` builds.
fn lmforge_binary(root: &Path) -> PathBuf {
    crate::target_dir(root).join("debug/lmforge")
}

/// The tokenizer the run takes rather than trains: `[tokenizer] from`, else the tokenizer.json
/// of `[train] init`.
fn tokenizer_source(config: &Config, base: &Path) -> Option<PathBuf> {
    match (&config.tokenizer.from, &config.train.init) {
        (Some(from), _) => Some(base.join(from)),
        (None, Some(init)) => Some(base.join(init).join("tokenizer.json")),
        (None, None) => None,
    }
}

/// The stage `name` for this config, planned after the stages before it ran (its inputs are
/// their outputs).
fn plan(name: &'static str, config: &Config, base: &Path, out: &Path) -> Result<Stage> {
    let seed = config.seed.to_string();
    let device = config.device.as_str();
    let data = "data/corpus_text_document";
    let data_files = vec![
        PathBuf::from(format!("{data}.bin")),
        PathBuf::from(format!("{data}.idx")),
    ];
    let tokenizer = "tokenizer/tokenizer.json";
    // The trained checkpoint itself: `generate` takes a checkpoint folder, not a save folder.
    let trained = format!("train/iter_{:07}", config.train.train_iters);
    let models = || {
        std::iter::once(("fp32".to_string(), trained.clone())).chain(
            config
                .quantize
                .schemes
                .iter()
                .map(|s| (s.clone(), format!("quantized/{s}"))),
        )
    };
    let stage = match name {
        "clean" => {
            let c = &config.clean;
            let mut args = vec!["clean".to_string(), "--input".into()];
            let inputs: Vec<PathBuf> = config.corpus.inputs.iter().map(|i| base.join(i)).collect();
            args.extend(inputs.iter().map(|p| absolute(p)));
            args.extend(
                [
                    "--output",
                    "clean",
                    "--text-field",
                    &config.corpus.text_field,
                    "--dedup",
                    &c.dedup,
                    "--minhash-threshold",
                    &c.threshold.to_string(),
                    "--min-chars",
                    &c.min_chars.to_string(),
                    "--seed",
                    &seed,
                ]
                .map(String::from),
            );
            if !c.languages.is_empty() {
                args.extend(["--languages".into(), c.languages.join(",")]);
            }
            if !c.keep_fields.is_empty() {
                args.extend(["--keep-fields".into(), c.keep_fields.join(",")]);
            }
            let blacklists: Vec<PathBuf> = c.blacklists.iter().map(|b| base.join(b)).collect();
            for blacklist in &blacklists {
                args.extend(["--blacklist".into(), absolute(blacklist)]);
            }
            Stage {
                name,
                inputs: inputs.into_iter().chain(blacklists).collect(),
                // The corpus and blacklist files enter the key by content (as inputs), not by
                // where the config says they are.
                params: json!({
                    "text_field": config.corpus.text_field,
                    "languages": c.languages,
                    "keep_fields": c.keep_fields,
                    "dedup": c.dedup,
                    "threshold": c.threshold,
                    "min_chars": c.min_chars,
                    "seed": config.seed,
                }),
                outputs: vec!["clean".into()],
                folders: vec![],
                work: None,
                resume: None,
                commands: vec![Step::new(args)],
            }
        }
        "tokenizer" if tokenizer_source(config, base).is_some() => {
            // The init model's tokenizer (or the one named), as our tokenizer.json: its ids are
            // the model's.
            let from = tokenizer_source(config, base).expect("checked by the guard");
            Stage {
                name,
                inputs: vec![from.clone()],
                params: json!({ "tokenizer": "from" }),
                outputs: vec!["tokenizer".into()],
                folders: vec!["tokenizer"],
                work: None,
                resume: None,
                commands: vec![Step::new([
                    "bpe",
                    "convert",
                    "--tokenizer",
                    &absolute(&from),
                    "--output",
                    tokenizer,
                ])],
            }
        }
        "tokenizer" => {
            let shards = clean_shards(out)?;
            let t = &config.tokenizer;
            let mut args: Vec<String> = [
                "bpe",
                "train",
                "--vocab-size",
                &t.vocab_size.to_string(),
                "--min-frequency",
                &t.min_frequency.to_string(),
                "--output",
                tokenizer,
                "--input",
            ]
            .map(String::from)
            .into();
            args.extend(shards.iter().map(|s| s.display().to_string()));
            Stage {
                name,
                inputs: shards,
                params: json!({ "tokenizer": t }),
                outputs: vec!["tokenizer".into()],
                folders: vec!["tokenizer"],
                work: None,
                resume: None,
                commands: vec![Step::new(args)],
            }
        }
        "convert" => {
            let shards = clean_shards(out)?;
            let mut args: Vec<String> = [
                "convert",
                "--tokenizer",
                tokenizer,
                "--output-prefix",
                "data/corpus",
            ]
            .map(String::from)
            .into();
            if config.convert.append_eod {
                args.push("--append-eod".into());
            }
            args.push("--input".into());
            args.extend(shards.iter().map(|s| s.display().to_string()));
            Stage {
                name,
                inputs: std::iter::once(PathBuf::from(tokenizer))
                    .chain(shards)
                    .collect(),
                params: json!({ "convert": config.convert }),
                outputs: vec!["data".into()],
                folders: vec!["data"],
                work: None,
                resume: None,
                commands: vec![Step::new(args)],
            }
        }
        "train" => {
            let t = &config.train;
            let mut args: Vec<String> = [
                "train",
                "gpt",
                "--data-path",
                data,
                "--tokenizer",
                tokenizer,
                "--data-cache-path",
                "cache",
                "--save",
                "train",
                "--seed",
                &seed,
                "--device",
                device,
            ]
            .map(String::from)
            .into();
            // Every `[train]` key is the Megatron flag of the same name (`model` is --config),
            // so the flags are the keys: a new key reaches the trainer without a second list.
            // A continued model (`init`) brings its own architecture.
            let Value::Object(keys) = serde_json::to_value(t)? else {
                bail!("[train] is not a table");
            };
            let init = t.init.as_ref().map(|i| base.join(i));
            let start: Vec<String> = match &init {
                Some(init) => vec!["--load".into(), absolute(init), "--finetune".into()],
                None => Vec::new(),
            };
            let architecture = ["model", "num_layers", "hidden_size", "num_attention_heads"];
            for (key, value) in keys {
                if key == "init" || (init.is_some() && architecture.contains(&key.as_str())) {
                    continue;
                }
                let flag = if key == "model" {
                    "config".into()
                } else {
                    key.replace('_', "-")
                };
                let value = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                args.extend([format!("--{flag}"), value]);
            }
            Stage {
                name,
                inputs: data_files
                    .iter()
                    .cloned()
                    .chain([PathBuf::from(tokenizer)])
                    .chain(init)
                    .collect(),
                // Where training stops is not what it makes: a stopped run and its
                // continuation are the same stage.
                params: json!({
                    "train": Train {
                        exit_interval: None,
                        exit_duration_in_mins: None,
                        ..t.clone()
                    },
                    "seed": config.seed,
                    "device": device,
                }),
                outputs: vec!["train".into(), "cache".into()],
                folders: vec![],
                work: None,
                resume: Some(Resume {
                    save: "train",
                    last: trained.clone(),
                    start,
                }),
                commands: vec![Step::new(args)],
            }
        }
        "eval" | "eval-quantized" => {
            let which: Vec<(String, String)> = if name == "eval" {
                models().take(1).collect()
            } else {
                models().skip(1).collect()
            };
            let mut inputs = data_files.clone();
            let mut commands = Vec::new();
            let mut outputs = Vec::new();
            for (model, dir) in &which {
                inputs.push(dir.into());
                let report = format!("eval/{model}.json");
                commands.push(
                    Step::new([
                        "eval",
                        "--checkpoint",
                        dir,
                        "--data-path",
                        data,
                        "--eval-iters",
                        &config.eval.eval_iters.to_string(),
                        "--micro-batch-size",
                        &config.eval.micro_batch_size.to_string(),
                        // The training run's samples for every model: a quantized folder
                        // carries no trainer.json to take them from.
                        "--split",
                        &config.train.split,
                        "--seq-length",
                        &config.train.seq_length.to_string(),
                        "--seed",
                        &seed,
                        "--device",
                        device,
                        "--json",
                    ])
                    .stdout_to(&report),
                );
                outputs.push(report);
            }
            Stage {
                name,
                inputs,
                params: json!({
                    "eval": config.eval,
                    "split": config.train.split,
                    "seq_length": config.train.seq_length,
                    "seed": config.seed,
                    "device": device,
                    "models": which,
                }),
                outputs,
                folders: vec![],
                work: None,
                resume: None,
                commands,
            }
        }
        "quantize" => {
            let commands = config
                .quantize
                .schemes
                .iter()
                .map(|scheme| {
                    Step::new([
                        "quantize",
                        "--checkpoint",
                        &trained,
                        "--scheme",
                        scheme,
                        "--output",
                        &format!("quantized/{scheme}"),
                        "--bench-tokens",
                        "64",
                        "--device",
                        device,
                    ])
                })
                .collect();
            Stage {
                name,
                inputs: vec![trained.clone().into()],
                params: json!({ "quantize": config.quantize }),
                outputs: vec!["quantized".into()],
                folders: vec!["quantized"],
                work: None,
                resume: None,
                commands,
            }
        }
        "samples" => {
            let s = &config.samples;
            // On the host the CPU engine decodes (it reads the quantized model's codes);
            // elsewhere the device engine on the run's device.
            let device = if device == "flex" { "cpu" } else { device };
            let mut inputs = Vec::new();
            let mut commands = Vec::new();
            let mut outputs = Vec::new();
            for (model, dir) in models() {
                let mut args = vec![
                    "generate".to_string(),
                    "--checkpoint".into(),
                    dir.clone(),
                    "--tokens".into(),
                    s.tokens.to_string(),
                    "--device".into(),
                    device.into(),
                    "--json".into(),
                ];
                if s.temperature > 0.0 {
                    args.extend([
                        "--temperature".into(),
                        s.temperature.to_string(),
                        "--top-p".into(),
                        s.top_p.to_string(),
                        "--seed".into(),
                        seed.clone(),
                    ]);
                } else {
                    args.push("--greedy".into());
                }
                for prompt in &s.prompts {
                    args.extend(["--prompt".into(), prompt.clone()]);
                }
                let file = format!("samples/{model}.jsonl");
                commands.push(Step::new(args).stdout_to(&file));
                inputs.push(dir.into());
                outputs.push(file);
            }
            Stage {
                name,
                inputs,
                params: json!({ "samples": s, "seed": config.seed, "device": device }),
                outputs,
                folders: vec![],
                work: None,
                resume: None,
                commands,
            }
        }
        other => bail!("no stage named {other}"),
    };
    Ok(stage)
}

/// The data stages as job arrays of `ranks` (`--ranks`): the same command with the executor's
/// flags and a work folder of its own; the outputs are the bytes one process writes, so the
/// stage's key does not change with the rank count.
fn shard(stage: &mut Stage, ranks: usize, flags: &Pipeline) {
    if !["clean", "tokenizer", "convert"].contains(&stage.name) {
        return;
    }
    let work = format!("work/{}", stage.name);
    let Some(step) = stage.commands.first_mut() else {
        return;
    };
    step.args.extend([
        "--ranks".into(),
        ranks.to_string(),
        "--executor".into(),
        flags.executor.clone().unwrap_or_else(|| "local".into()),
        "--work".into(),
        work.clone(),
    ]);
    if let Some(parallel) = flags.parallel {
        step.args
            .extend(["--parallel".into(), parallel.to_string()]);
    }
    stage.work = Some(work);
}

/// The train stage as `ranks` processes: under `mpirun` with the local executor, `srun
/// --mpi=pmix` with Slurm's. The rank count is part of the stage's key: the weights differ from
/// one process's in the last bits (the all-reduce sums in another order).
fn train_on_ranks(stage: &mut Stage, ranks: usize, flags: &Pipeline) {
    if stage.name != "train" {
        return;
    }
    let Some(step) = stage.commands.first_mut() else {
        return;
    };
    // The ranks share this machine's cores: a compute pool of its share each.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / ranks).max(1);
    let n = ranks.to_string();
    let export = format!("RAYON_NUM_THREADS={threads}");
    let launcher: &[&str] = if flags.executor.as_deref() == Some("slurm") {
        // srun passes the whole environment on.
        &["srun", "--mpi=pmix", "-n", &n, "--kill-on-bad-exit=1"]
    } else {
        // mpirun passes on only what it is told to (-x).
        &[
            "mpirun",
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
            "-n",
            &n,
            "-x",
            &export,
        ]
    };
    step.launcher = launcher.iter().map(|s| s.to_string()).collect();
    step.threads = Some(threads);
    stage.params["train_ranks"] = ranks.into();
}

/// The cleaned shards the clean stage wrote, as its report lists them.
fn clean_shards(out: &Path) -> Result<Vec<PathBuf>> {
    let path = out.join("clean/report.json");
    let report: Value = serde_json::from_str(
        &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let shards: Vec<PathBuf> = report["outputs"]
        .as_array()
        .with_context(|| format!("{}: no `outputs`", path.display()))?
        .iter()
        .filter_map(|o| o["file"].as_str())
        .map(|f| Path::new("clean").join(f))
        .collect();
    ensure!(
        !shards.is_empty(),
        "the clean stage kept no document ({})",
        path.display()
    );
    Ok(shards)
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Runs `stage` unless the manifest says its inputs, parameters and outputs are unchanged.
fn run_stage(
    lmforge: &Path,
    out: &Path,
    stage: &Stage,
    manifest: &Manifest,
    forced: bool,
    provenance: &manifest::Provenance,
) -> Result<StageRecord> {
    let inputs = manifest::hash_paths(out, &stage.inputs)
        .with_context(|| format!("hashing the inputs of `{}`", stage.name))?;
    let key = manifest::stage_key(stage.name, &stage.params, &inputs);
    let output_paths: Vec<PathBuf> = stage.outputs.iter().map(PathBuf::from).collect();
    if !forced
        && let Some(previous) = manifest.stage(stage.name)
        && previous.reusable(&key, out, &output_paths)
    {
        println!("== {}: unchanged, skipped (key {})", stage.name, &key[..12]);
        let mut record = previous.clone();
        record.skipped = true;
        return Ok(record);
    }
    println!("== {}", stage.name);
    // A training of this same key that stopped after a checkpoint (killed, failed, or
    // `--exit-interval`) continues from it, as Megatron's --load of its --save folder does,
    // instead of starting over.
    let resumed = kept_checkpoint(stage, out, &key);
    for output in &stage.outputs {
        if resumed.is_some_and(|(save, _)| save == output) {
            continue;
        }
        remove(&out.join(output))?;
    }
    let mut extra: Vec<String> = Vec::new();
    if let Some(r) = &stage.resume {
        let save = out.join(r.save);
        fs::create_dir_all(&save).with_context(|| format!("creating {}", save.display()))?;
        crate::write_atomic(&save.join(RESUME_KEY), key.as_bytes())?;
        extra = match resumed {
            Some((_, iteration)) => {
                println!("continuing from iteration {iteration}, where the last run stopped");
                vec!["--load".into(), r.save.into()]
            }
            None => r.start.clone(),
        };
    }
    // A work folder left by an interrupted run of this same stage key is resumed; one of
    // another key (changed parameters or inputs) would be refused by the tasks, so it goes.
    if let Some(work) = &stage.work {
        let dir = out.join(work);
        let stamp = dir.join("stage-key");
        if fs::read_to_string(&stamp).ok().as_deref() != Some(key.as_str()) {
            remove(&dir)?;
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::write_atomic(&stamp, key.as_bytes())?;
        }
    }
    let start = Instant::now();
    let mut commands = Vec::new();
    let result = (|| -> Result<()> {
        for folder in &stage.folders {
            let path = out.join(folder);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        for step in &stage.commands {
            let launcher: String = step.launcher.iter().map(|a| format!("{a} ")).collect();
            let args = [step.args.clone(), extra.clone()].concat();
            commands.push(format!("{launcher}lmforge {}", shell_words(&args)));
            run_step(lmforge, out, step, &args)?;
        }
        if let Some(r) = &stage.resume
            && !out.join(&r.last).exists()
        {
            bail!(
                "training stopped before its last checkpoint ({}), after iteration {} \
                 (--exit-interval, or a signal)",
                r.last,
                kept_checkpoint(stage, out, &key).map_or("none".into(), |(_, i)| i.to_string())
            );
        }
        Ok(())
    })();
    if let Err(error) = result {
        let kept = kept_checkpoint(stage, out, &key);
        for output in &stage.outputs {
            if kept.is_some_and(|(save, _)| save == output) {
                continue;
            }
            let _ = remove(&out.join(output));
        }
        return Err(match kept {
            Some((_, iteration)) => error.context(format!(
                "its checkpoints up to iteration {iteration} are kept: the next run continues \
                 from there"
            )),
            None => error,
        });
    }
    if let Some(r) = &stage.resume {
        remove(&out.join(r.save).join(RESUME_KEY))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(work) = &stage.work {
        remove(&out.join(work))?;
        // The parent goes once the last job-array stage's folder has gone.
        let _ = fs::remove_dir(out.join("work"));
    }
    let outputs = manifest::hash_paths(out, &output_paths)?;
    Ok(StageRecord {
        name: stage.name.into(),
        status: "ok".into(),
        key,
        skipped: false,
        params: stage.params.clone(),
        seed: stage.params.get("seed").and_then(Value::as_u64),
        inputs,
        outputs,
        commands,
        seconds,
        git_commit: provenance.git_commit.clone(),
        rustc: provenance.rustc.clone(),
        finished_unix: manifest::now_unix(),
        error: None,
    })
}

/// A resumable stage's save folder and the iteration of its latest checkpoint, when the
/// folder was written by a run of stage `key` (its stamp) and holds one: what a failed run
/// keeps and the next run continues.
fn kept_checkpoint(stage: &Stage, out: &Path, key: &str) -> Option<(&'static str, u64)> {
    let save = stage.resume.as_ref()?.save;
    let dir = out.join(save);
    if fs::read_to_string(dir.join(RESUME_KEY)).ok()?.trim() != key {
        return None;
    }
    let iteration = fs::read_to_string(dir.join(LATEST))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((save, iteration))
}

/// Runs `step` with `args`: its own, and any the run adds (`--load`).
fn run_step(lmforge: &Path, out: &Path, step: &Step, args: &[String]) -> Result<()> {
    println!(
        "$ {}lmforge {}",
        step.launcher
            .iter()
            .map(|a| format!("{a} "))
            .collect::<String>(),
        shell_words(args)
    );
    let mut command = match step.launcher.split_first() {
        None => Command::new(lmforge),
        Some((launcher, flags)) => {
            let mut command = Command::new(launcher);
            command.args(flags).arg(lmforge);
            command
        }
    };
    command.args(args).current_dir(out);
    if let Some(threads) = step.threads {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    if let Some(file) = &step.stdout {
        let path = out.join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        command.stdout(Stdio::piped());
    }
    let output = command
        .spawn()
        .with_context(|| format!("running {}", lmforge.display()))?
        .wait_with_output()?;
    ensure!(
        output.status.success(),
        "`lmforge {}` failed ({})",
        step.args.first().map_or("", String::as_str),
        output.status
    );
    if let Some(file) = &step.stdout {
        crate::write_atomic(&out.join(file), &output.stdout)?;
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else if path.exists() {
        fs::remove_file(path)
    } else {
        Ok(())
    };
    result.with_context(|| format!("removing {}", path.display()))
}

/// Arguments as a shell would need them typed.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:,=".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `lmforge serve` on the run's chosen model, after printing how to talk to it.
fn serve(lmforge: &Path, out: &Path, config: &Config) -> Result<()> {
    let s = &config.serve;
    let dir = if s.model == "fp32" {
        "train".to_string()
    } else {
        format!("quantized/{}", s.model)
    };
    let url = format!("http://{}:{}", s.host, s.port);
    println!(
        "\nserving {} ({}) on {url}; Ctrl-C stops it. Try:\n\n  \
         curl -X PUT {url}/api -H 'Content-Type: application/json' \
         -d '{{\"prompts\":[\"Il était une fois\"],\"tokens_to_generate\":32}}'\n  \
         curl {url}/v1/completions -H 'Content-Type: application/json' \
         -d '{{\"prompt\":\"Había una vez\",\"max_tokens\":32,\"stream\":true}}'\n\n\
         or open {url}/ in a browser.\n",
        out.join(&dir).display(),
        s.model
    );
    let status = Command::new(lmforge)
        .args(["serve", "--checkpoint", &dir, "--host", &s.host])
        .args(["--port", &s.port.to_string(), "--device"])
        .arg(
            if config.device.starts_with("cuda") || config.device == "wgpu" {
                "auto"
            } else {
                &config.device
            },
        )
        .current_dir(out)
        .status()
        .context("running lmforge serve")?;
    ensure!(status.success(), "lmforge serve failed ({status})");
    Ok(())
}

/// The pipeline on flex with `config` into `out` (the runs `verify-repro` compares).
fn run_on_flex(root: &Path, config: &Path, out: &Path) -> Result<Outcome> {
    let pipeline = Pipeline {
        config: Some(config.display().to_string()),
        out: out.display().to_string(),
        device: Some("flex".into()),
        ..Pipeline::default()
    };
    run(root, &pipeline)
}

/// The stages a run executed rather than skipped.
fn ran(outcome: &Outcome) -> Vec<&str> {
    let stages = outcome.manifest.stages.iter();
    stages
        .filter(|s| !s.skipped)
        .map(|s| s.name.as_str())
        .collect()
}

/// Every non-volatile output file of `stages` in two manifests: how many were compared, and
/// each stage whose key or file differs.
fn compare(a: &Manifest, b: &Manifest, stages: &[&str]) -> Result<(usize, Vec<String>)> {
    let mut compared = 0;
    let mut differences = Vec::new();
    for &stage in stages {
        let (a, b) = (
            a.stage(stage).context("the first run lacks a stage")?,
            b.stage(stage).context("the second run lacks a stage")?,
        );
        if a.key != b.key {
            differences.push(format!("{stage}: the inputs or parameters differ"));
        }
        let names: std::collections::BTreeSet<_> =
            a.outputs.keys().chain(b.outputs.keys()).collect();
        for file in names {
            if manifest::is_volatile(file) {
                continue;
            }
            compared += 1;
            if a.outputs.get(file) != b.outputs.get(file) {
                differences.push(format!(
                    "{stage}: {file}: {} against {}",
                    a.outputs.get(file).map_or("missing", String::as_str),
                    b.outputs.get(file).map_or("missing", String::as_str),
                ));
            }
        }
    }
    Ok((compared, differences))
}

/// `cargo xtask verify-repro`: two fresh runs of one config must write the same bytes in every
/// stage's outputs, and a third run over the first must skip every stage.
pub fn verify_repro(root: &Path, flags: &VerifyRepro) -> Result<()> {
    let config = match &flags.config {
        Some(path) => root.join(path),
        None => root.join("datasets/default/pipeline-short.toml"),
    };
    let out = root.join(&flags.out);
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        remove(&out.join(name))?;
        runs.push(run_on_flex(root, &config, &out.join(name))?.manifest);
    }
    let (compared, differences) = compare(&runs[0], &runs[1], &STAGES)?;
    ensure!(
        differences.is_empty(),
        "two runs of {} differ:\n  {}",
        config.display(),
        differences.join("\n  ")
    );
    println!(
        "\nverify-repro: {compared} output files of {} agree byte for byte between {} and {}",
        STAGES.join(", "),
        out.join("a").display(),
        out.join("b").display()
    );
    let again = run_on_flex(root, &config, &out.join("a"))?;
    let rerun = ran(&again);
    ensure!(
        rerun.is_empty(),
        "a third run over unchanged inputs re-ran {rerun:?} instead of skipping them"
    );
    println!(
        "verify-repro: a third run skipped all {} stages",
        STAGES.len()
    );
    Ok(())
}

/// A stage that fails stops the run with its error and leaves the earlier stages' outputs in
/// place; the next run reuses them and starts from the failed stage. Checked on the short
/// config's run in `out/a` (after `verify_repro`): training is made to fail, then fixed.
pub fn check_failure_recovery(root: &Path, out: &Path) -> Result<()> {
    let short = root.join("datasets/default/pipeline-short.toml");
    let mut config = short_config(root)?;
    config.train.model = "no-such-preset".into();
    let failing = out.join("failing.toml");
    crate::write_atomic(&failing, toml::to_string(&config)?.as_bytes())?;
    let run_in_a = |config: &Path| run_on_flex(root, config, &out.join("a"));
    let error = match run_in_a(&failing) {
        Ok(_) => bail!("a pipeline whose training cannot start succeeded"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(
        error.contains("stage `train` failed"),
        "the failure does not name its stage: {error}"
    );
    let manifest = Manifest::load(&out.join("a/manifest.json"))?;
    let status = |name: &str| manifest.stage(name).map(|s| s.status.clone());
    ensure!(
        status("train").as_deref() == Some("failed") && !out.join("a/train").exists(),
        "the failed stage is not recorded as failed, or left outputs behind"
    );
    for stage in ["clean", "tokenizer", "convert"] {
        ensure!(
            status(stage).as_deref() == Some("ok"),
            "the failure lost the record of `{stage}`"
        );
    }
    let again = run_in_a(&short)?;
    let ran = ran(&again);
    // Training writes the same bytes again, so everything after it is still up to date.
    ensure!(
        ran == ["train"],
        "after the failure was fixed the pipeline re-ran {ran:?} instead of only `train`"
    );
    println!(
        "failure recovery: the failed `train` stage kept the earlier stages and was resumed alone"
    );
    Ok(())
}

/// The short config with its paths made absolute, to be written elsewhere.
fn short_config(root: &Path) -> Result<Config> {
    let short = root.join("datasets/default/pipeline-short.toml");
    let base = short.parent().context("a config folder")?;
    let mut config = Config::load(&short)?;
    let absolute_all = |paths: &mut Vec<String>| {
        for path in paths.iter_mut() {
            *path = absolute(&base.join(&*path));
        }
    };
    absolute_all(&mut config.corpus.inputs);
    absolute_all(&mut config.clean.blacklists);
    Ok(config)
}

/// A training stopped after a checkpoint (here by `exit_interval`, where a kill after one
/// would leave the same folder) continues from that checkpoint on the next run, `--load`ing
/// it, and ends with the weights of the uninterrupted run in `out/a` (`verify_repro`'s).
pub fn check_training_resume(root: &Path, out: &Path) -> Result<()> {
    let config = short_config(root)?;
    let half = config.train.train_iters / 2;
    let mut stopping = config.clone();
    stopping.train.exit_interval = Some(half);
    let (stopping_path, whole_path) = (out.join("stopping.toml"), out.join("whole.toml"));
    crate::write_atomic(&stopping_path, toml::to_string(&stopping)?.as_bytes())?;
    crate::write_atomic(&whole_path, toml::to_string(&config)?.as_bytes())?;
    let run = out.join("resume");
    remove(&run)?;
    let error = match run_on_flex(root, &stopping_path, &run) {
        Ok(_) => bail!("a pipeline whose training stops at iteration {half} succeeded"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(
        error.contains(&format!("up to iteration {half} are kept")),
        "the stopped training does not say it kept its checkpoint: {error}"
    );
    let again = run_on_flex(root, &whole_path, &run)?;
    let train = again.manifest.stage("train").context("no `train` record")?;
    ensure!(
        !train.skipped && train.commands.iter().any(|c| c.contains("--load train")),
        "the next run did not continue the training from its checkpoint: {:?}",
        train.commands
    );
    let last = format!(
        "train/iter_{:07}/model.safetensors",
        config.train.train_iters
    );
    let read = |dir: &Path| fs::read(dir.join(&last)).with_context(|| format!("reading {last}"));
    ensure!(
        read(&run)? == read(&out.join("a"))?,
        "the continued training's weights differ from the uninterrupted run's"
    );
    println!(
        "training resume: stopped after iteration {half}, the next run continued from there to \
         the uninterrupted run's weights"
    );
    Ok(())
}

/// A run that continues the model `out/a` trained (`[train] init`) with that model's own
/// tokenizer (the default of `[tokenizer] from`): its training starts from those weights with
/// their architecture (`--finetune`; the config's `num_layers` is not the model's and is left
/// out), and stopped after a checkpoint it continues, no longer from `init`, to the
/// uninterrupted run's weights.
pub fn check_init(root: &Path, out: &Path) -> Result<()> {
    let mut config = short_config(root)?;
    let init = out
        .join("a/train")
        .join(format!("iter_{:07}", config.train.train_iters));
    config.train.init = Some(absolute(&init));
    config.train.num_layers = 3;
    config.train.train_iters = 8;
    config.train.save_interval = 4;
    config.train.lr_warmup_iters = 2;
    config.train.eval_interval = 4;
    let mut stopping = config.clone();
    stopping.train.exit_interval = Some(4);
    let (whole_path, stopping_path) = (out.join("init.toml"), out.join("init-stopping.toml"));
    crate::write_atomic(&whole_path, toml::to_string(&config)?.as_bytes())?;
    crate::write_atomic(&stopping_path, toml::to_string(&stopping)?.as_bytes())?;
    let (whole, parts) = (out.join("init"), out.join("init-stopped"));
    remove(&whole)?;
    remove(&parts)?;
    let first = run_on_flex(root, &whole_path, &whole)?.manifest;
    let train = first.stage("train").context("no `train` record")?;
    let command = train.commands.join(" ");
    ensure!(
        command.contains("--finetune") && !command.contains("--num-layers"),
        "the training did not start from `init` with its own architecture: {command}"
    );
    let tokenizer = first.stage("tokenizer").context("no `tokenizer` record")?;
    ensure!(
        tokenizer.commands.iter().any(|c| c.contains("bpe convert")),
        "the tokenizer stage trained a tokenizer instead of taking the model's: {:?}",
        tokenizer.commands
    );
    let model_config = |dir: &Path| -> Result<Value> {
        let text = fs::read_to_string(dir.join("lmforge.json"))?;
        Ok(serde_json::from_str::<Value>(&text)?["config"].clone())
    };
    let last = whole.join("train/iter_0000008");
    ensure!(
        model_config(&last)? == model_config(&init)?,
        "the continued model's architecture is not the one it started from"
    );
    let error = match run_on_flex(root, &stopping_path, &parts) {
        Ok(_) => bail!("a continued training that stops at iteration 4 succeeded"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(
        error.contains("up to iteration 4 are kept"),
        "the stopped training does not say it kept its checkpoint: {error}"
    );
    let again = run_on_flex(root, &whole_path, &parts)?.manifest;
    let command = again
        .stage("train")
        .context("no `train` record")?
        .commands
        .join(" ");
    ensure!(
        command.contains("--load train") && !command.contains("--finetune"),
        "the stopped run did not continue from its own checkpoint: {command}"
    );
    let weights = |dir: &Path| fs::read(dir.join("train/iter_0000008/model.safetensors"));
    ensure!(
        weights(&parts)? == weights(&whole)?,
        "the stopped and continued run's weights differ from the uninterrupted one's"
    );
    println!(
        "init: a run continued the trained model with its own tokenizer and architecture; \
         stopped at iteration 4 and continued, it ended with the uninterrupted run's weights"
    );
    Ok(())
}

/// The data stages as job arrays of 4 ranks on `executor` (`local` or `slurm`) write the
/// bytes one process wrote in `out/a` (after `verify_repro`): every clean shard and
/// `duplicates.jsonl`, `tokenizer.json`, the `.bin/.idx`; reports differ only in timings and
/// their `sharded`/`ranks` sections.
pub fn check_ranks(root: &Path, out: &Path, executor: &str) -> Result<()> {
    let config = root.join("datasets/default/pipeline-short.toml");
    let dir = out.join(format!("ranks-{executor}"));
    remove(&dir)?;
    let pipeline = Pipeline {
        config: Some(config.display().to_string()),
        out: dir.display().to_string(),
        device: Some("flex".into()),
        until: Some("convert".into()),
        ranks: Some(4),
        executor: Some(executor.into()),
        ..Pipeline::default()
    };
    let ranked = run(root, &pipeline)?.manifest;
    let single = Manifest::load(&out.join("a/manifest.json"))?;
    let stages = ["clean", "tokenizer", "convert"];
    for stage in stages {
        let b = ranked
            .stage(stage)
            .context("the ranked run lacks a stage")?;
        ensure!(
            !b.skipped && b.commands.iter().any(|c| c.contains("--ranks 4")),
            "`{stage}` did not run as 4 ranks: {:?}",
            b.commands
        );
    }
    let (compared, differences) = compare(&single, &ranked, &stages)?;
    ensure!(
        differences.is_empty(),
        "the data stages as 4 ranks ({executor}) differ from one process:\n  {}",
        differences.join("\n  ")
    );
    ensure!(
        !dir.join("work").exists(),
        "the job arrays' work folders were left in {}",
        dir.display()
    );
    println!(
        "ranks: clean, tokenizer and convert as 4 ranks on {executor} wrote the same {compared} \
         files as one process"
    );
    Ok(())
}
