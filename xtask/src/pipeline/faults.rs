//! `cargo xtask faults`: the pipeline killed with `kill -9` at seeded moments of each long
//! stage, then run again, must end with the bytes of an uninterrupted run and no stray file.
//!
//! A trial starts `cargo xtask pipeline` as its own process group (the orchestrator and the
//! `lmforge` it runs, as a terminal's Ctrl-\ or the OOM killer of a cgroup would hit them),
//! waits until the stage's `lmforge` command is running, sleeps a seeded fraction of that
//! stage's duration in the reference run, and sends SIGKILL to the whole group. The next run
//! must finish, with every output file byte-identical to the reference's (the manifests'
//! sha256) and the same file names in the run folder, hidden ones included: a temporary file
//! or folder left by the killed writers is a failure. Two more trials abort the training's
//! checkpoint deterministically (`LMFORGE_FAULT`): with its weights cut in half before the
//! state is written, and with every file written before the folder's rename.
//!
//! Then each long stage's command runs again over a finished run folder that cannot take its
//! writes: a full tmpfs, and a read-only bind mount, each in a private mount namespace. It
//! must fail with an error naming a path and the cause, and leave every output as it was.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::manifest::{Manifest, is_volatile};
use super::{LATEST, STAGES, compare, remove, run_on_flex, short_config};
use crate::flags::Faults;

/// The stages a trial kills, each with the `lmforge` arguments that show it running.
const LONG_STAGES: [(&str, &[&str]); 5] = [
    ("clean", &["clean"]),
    ("tokenizer", &["bpe", "train"]),
    ("convert", &["convert"]),
    ("train", &["train", "gpt"]),
    ("quantize", &["quantize"]),
];

/// `lmforge_executor::task::FAULT`: xtask depends on no lmforge crate.
const FAULT: &str = "LMFORGE_FAULT";

/// No trial's run may take longer than this (the short config runs in seconds).
const TRIAL_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(root: &Path, flags: &Faults) -> Result<()> {
    let out = root.join(&flags.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let config = match &flags.config {
        Some(path) => root.join(path),
        None => {
            // The short run with a checkpoint every quarter of its training, so that a kill in
            // the training leaves checkpoints to continue from.
            let mut config = short_config(root)?;
            config.train.save_interval = (config.train.train_iters / 4).max(1);
            let path = out.join("faults.toml");
            crate::write_atomic(&path, toml::to_string(&config)?.as_bytes())?;
            path
        }
    };
    let stages: Vec<(&str, &[&str])> = match &flags.stages {
        None => LONG_STAGES.to_vec(),
        Some(names) => names
            .iter()
            .map(|name| {
                LONG_STAGES
                    .iter()
                    .find(|(stage, _)| stage == name)
                    .copied()
                    .with_context(|| {
                        format!(
                            "--stages {name}: give some of {}",
                            LONG_STAGES.map(|(s, _)| s).join(", ")
                        )
                    })
            })
            .collect::<Result<_>>()?,
    };

    println!("== faults: the uninterrupted reference run");
    let reference_dir = out.join("reference");
    remove(&reference_dir)?;
    let reference = run_on_flex(root, &config, &reference_dir)?.manifest;
    let reference_files = listing(&reference_dir)?;
    let mut seed = flags.seed;
    let mut results = Vec::new();
    for (stage, command) in &stages {
        let seconds = reference
            .stage(stage)
            .context("the reference run lacks a stage")?
            .seconds;
        for k in 0..flags.kills {
            // The k-th of `kills` equal parts of the stage, at a seeded place within it: early,
            // middle and late moments all get tried.
            let fraction = flags
                .at
                .unwrap_or_else(|| (k as f64 + unit(&mut seed)) / flags.kills as f64);
            let trial = Trial {
                name: format!("{stage}-{k}"),
                kill: Kill::Signal {
                    command,
                    after: Duration::from_secs_f64(seconds * fraction),
                },
            };
            let result = trial.run(&config, &out)?;
            results.push((trial, result));
        }
    }
    if flags.stages.is_none() && flags.config.is_none() {
        let iteration = format!("iter_{:07}", short_config(root)?.train.train_iters / 2);
        for point in ["mid-write", "before-rename"] {
            let trial = Trial {
                name: format!("checkpoint-{point}"),
                kill: Kill::Fault(format!("{iteration}:{point}")),
            };
            let result = trial.run(&config, &out)?;
            results.push((trial, result));
        }
    }

    let refusals = if flags.stages.is_none() && flags.config.is_none() {
        refused_writes(&reference, &reference_dir, &out, &stages)?
    } else {
        Vec::new()
    };

    println!("\n== faults: each trial against the uninterrupted run");
    println!(
        "{:<26} {:<28} {:<36} {:>9} {:>9}",
        "trial", "killed", "left on disk", "re-run s", "stage s"
    );
    let mut failures = Vec::new();
    for (trial, result) in &results {
        let rerun = Manifest::load(&out.join(&trial.name).join("manifest.json"))?;
        let (compared, mut differences) = compare(&reference, &rerun, &STAGES)?;
        let files = listing(&out.join(&trial.name))?;
        differences.extend(
            files
                .difference(&reference_files)
                .map(|f| format!("{f}: left behind")),
        );
        differences.extend(
            reference_files
                .difference(&files)
                .map(|f| format!("{f}: missing")),
        );
        let stage_seconds = result
            .stage
            .and_then(|s| rerun.stage(s))
            .map_or(0.0, |s| s.seconds);
        println!(
            "{:<26} {:<28} {:<36} {:>9.1} {:>9.1}",
            trial.name, result.killed, result.left, result.rerun_seconds, stage_seconds
        );
        if differences.is_empty() {
            println!("    {compared} output files as the reference's; no stray file");
        } else {
            for difference in &differences {
                println!("    {difference}");
            }
            failures.push(trial.name.clone());
        }
    }
    println!("\n== faults: a full disk and a read-only run folder");
    for refusal in &refusals {
        println!(
            "{:<10} {:<14} {}",
            refusal.stage, refusal.case, refusal.error
        );
        for problem in &refusal.problems {
            println!("    {problem}");
        }
        if !refusal.problems.is_empty() {
            failures.push(format!("{} on a {}", refusal.stage, refusal.case));
        }
    }
    ensure!(
        failures.is_empty(),
        "after a kill and a re-run, these trials differ from the uninterrupted run: {} (their \
         folders and logs are in {})",
        failures.join(", "),
        out.display()
    );
    println!(
        "\nfaults: {} kills, each followed by a run that ended with the uninterrupted run's \
         bytes and no stray file; {} writes to a full disk or a read-only folder refused, \
         naming the path, with the earlier outputs intact",
        results.len(),
        refusals.len()
    );
    Ok(())
}

/// How a trial interrupts its first run.
enum Kill {
    /// SIGKILL to the pipeline's process group, `after` the stage's `command` is seen running.
    Signal {
        command: &'static [&'static str],
        after: Duration,
    },
    /// `LMFORGE_FAULT=DIR:POINT`: `lmforge` aborts itself there (lmforge_executor::task).
    Fault(String),
}

struct Trial {
    name: String,
    kill: Kill,
}

struct Outcome {
    /// Where the kill landed, in words.
    killed: String,
    /// What the interrupted run left that the next one can use.
    left: String,
    /// The stage that was interrupted, if one was.
    stage: Option<&'static str>,
    rerun_seconds: f64,
}

impl Trial {
    fn run(&self, config: &Path, out: &Path) -> Result<Outcome> {
        let dir = out.join(&self.name);
        remove(&dir)?;
        let log = out.join(format!("{}.log", self.name));
        println!("== faults: {}", self.name);
        let fault = match &self.kill {
            Kill::Fault(spec) => Some(spec.as_str()),
            Kill::Signal { .. } => None,
        };
        let mut child = pipeline(config, &dir, &log, fault)?;
        let group = child.id();
        let deadline = Instant::now() + TRIAL_TIMEOUT;
        let (killed, stage) = match &self.kill {
            Kill::Signal { command, after } => {
                let mut seen = false;
                while !seen {
                    seen = running(group, command);
                    // A stage quicker than the polling on a loaded machine: the run ended
                    // unkilled, and the next run is still held to the reference.
                    if !seen && child.try_wait()?.is_some() {
                        break;
                    }
                    ensure!(Instant::now() < deadline, "{}: timed out", self.name);
                    if !seen {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                if seen {
                    std::thread::sleep(*after);
                }
                let stage = LONG_STAGES
                    .iter()
                    .find(|(_, c)| running(group, c))
                    .map(|(s, _)| *s);
                let status = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{group}")])
                    .status()
                    .context("running kill")?;
                // The group may have ended on its own just before (a late moment).
                let ended = child.wait()?;
                let killed = match (stage, status.success() && !ended.success()) {
                    (Some(stage), true) => format!("in {stage}, {:.2} s in", after.as_secs_f64()),
                    (None, true) => "between stages".into(),
                    (_, false) => "after the run ended".into(),
                };
                (killed, stage)
            }
            Kill::Fault(spec) => {
                ensure!(
                    !wait(&mut child, deadline)?,
                    "{}: the pipeline succeeded with LMFORGE_FAULT={spec}",
                    self.name
                );
                (format!("LMFORGE_FAULT {spec}"), Some("train"))
            }
        };
        // Every process of the group is gone before the next run starts.
        while group_alive(group) {
            ensure!(
                Instant::now() < deadline,
                "{}: the group outlived SIGKILL",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = match fs::read_to_string(dir.join("train").join(LATEST)) {
            Ok(iteration) => format!("checkpoint {}", iteration.trim()),
            Err(_) => {
                let done = Manifest::load(&dir.join("manifest.json"))
                    .map(|m| m.stages.iter().filter(|s| s.status == "ok").count())
                    .unwrap_or(0);
                format!("{done} stages done")
            }
        };
        let start = Instant::now();
        let mut again = pipeline(config, &dir, &log, None)?;
        ensure!(
            wait(&mut again, deadline)?,
            "{}: the run after the kill failed (log: {})",
            self.name,
            log.display()
        );
        Ok(Outcome {
            killed,
            left,
            stage,
            rerun_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// `cargo xtask pipeline` on flex into `dir` as its own process group, its output appended to
/// `log`; `fault` is given to its commands as `LMFORGE_FAULT`.
fn pipeline(config: &Path, dir: &Path, log: &Path, fault: Option<&str>) -> Result<Child> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let exe = std::env::current_exe().context("finding xtask's own binary")?;
    let mut command = Command::new(exe);
    command
        .args(["pipeline", "--device", "flex", "--config"])
        .arg(config)
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0);
    match fault {
        Some(spec) => command.env(FAULT, spec),
        None => command.env_remove(FAULT),
    };
    command.spawn().context("starting cargo xtask pipeline")
}

/// Waits for `child` until `deadline`: whether it succeeded.
fn wait(child: &mut Child, deadline: Instant) -> Result<bool> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("a pipeline run passed {} s", TRIAL_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes of group `group`, each with its arguments.
fn members(group: u32) -> Vec<Vec<String>> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // After the command name in parentheses: state, ppid, pgrp.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(2)?.parse::<u32>().ok()? != group || fields.first() == Some(&"Z") {
                return None;
            }
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            Some(
                cmdline
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            )
        })
        .collect()
}

/// Whether an `lmforge` of group `group` runs `command` (its first arguments).
fn running(group: u32, command: &[&str]) -> bool {
    members(group).iter().any(|args| {
        args.first()
            .is_some_and(|a| a.ends_with("/lmforge") || a == "lmforge")
            && args.len() > command.len()
            && args[1..=command.len()]
                .iter()
                .zip(command)
                .all(|(a, b)| a == b)
    })
}

fn group_alive(group: u32) -> bool {
    !members(group).is_empty()
}

/// Every file under `dir`, relative, hidden ones included (the manifest's walk).
fn listing(dir: &Path) -> Result<BTreeSet<String>> {
    let mut files = Vec::new();
    super::manifest::collect_files(dir, &mut files)?;
    Ok(files
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect())
}

/// A seeded number in [0, 1) (splitmix64): the same seed, the same moments.
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A stage's command run again over a finished run folder that cannot take its writes.
struct Refusal {
    stage: &'static str,
    case: &'static str,
    /// The error's last line.
    error: String,
    problems: Vec<String>,
}

/// Each stage's command run again in a copy of the reference run folder mounted as a full
/// tmpfs, then read-only (a private mount namespace: `unshare`), must fail with an error that
/// names a path in the run and the cause, without a panic, and leave every file as it was
/// and nothing new.
fn refused_writes(
    reference: &Manifest,
    reference_dir: &Path,
    out: &Path,
    stages: &[(&'static str, &[&str])],
) -> Result<Vec<Refusal>> {
    let lmforge = super::lmforge_binary(&crate::project_root());
    let bytes: u64 = listing(reference_dir)?
        .iter()
        .map(|f| fs::metadata(reference_dir.join(f)).map_or(0, |m| m.len()))
        .sum();
    let mut refusals = Vec::new();
    for (stage, _) in stages {
        let record = reference
            .stage(stage)
            .context("the reference lacks a stage")?;
        let command = record
            .commands
            .first()
            .context("a stage without a command")?;
        let args = command
            .strip_prefix("lmforge ")
            .context("a stage command that is not lmforge's")?;
        for (case, cause, setup) in [
            (
                "full disk",
                "No space left on device",
                // Room for the run and a little more, then a filler file takes the rest.
                format!(
                    "mount -t tmpfs -o size={}k tmpfs \"$RUN\" && cp -a \"$COPY/.\" \"$RUN/\" && \
                     (dd if=/dev/zero of=\"$RUN/.filler\" bs=4k 2>/dev/null || true)",
                    bytes / 1024 + 4096
                ),
            ),
            (
                "read-only run",
                "Read-only file system",
                "cp -a \"$COPY/.\" \"$RUN/\" && mount --bind \"$RUN\" \"$RUN\" && \
                 mount -o remount,bind,ro \"$RUN\""
                    .to_string(),
            ),
        ] {
            let dir = out.join(format!("{stage}-{}", case.replace(' ', "-")));
            remove(&dir)?;
            let (copy, run) = (dir.join("copy"), dir.join("run"));
            fs::create_dir_all(&run)?;
            copy_tree(reference_dir, &copy)?;
            let before = hashes(&copy)?;
            let script = format!(
                "set -e\n{setup}\ncd \"$RUN\"\nset +e\n\"$LMFORGE\" {args} > \"$DIR/stdout\" \
                 2> \"$DIR/stderr\"\necho $? > \"$DIR/status\"\nset -e\nrm -f \"$RUN/.filler\" \
                 2>/dev/null || true\ncd /\nmount -o remount,bind,rw \"$RUN\" 2>/dev/null || true\n\
                 rm -f \"$RUN/.filler\"\ncp -a \"$RUN/.\" \"$DIR/after/\"\n"
            );
            fs::create_dir_all(dir.join("after"))?;
            let output = namespaced(
                &script,
                &[
                    ("LMFORGE", &lmforge),
                    ("COPY", &copy),
                    ("RUN", &run),
                    ("DIR", &dir),
                ],
            )?;
            let mut problems = Vec::new();
            let stderr = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
            let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
            if !output.status.success() {
                problems.push(format!(
                    "the mount namespace's script failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            if status.trim() == "0" {
                problems.push("the command succeeded".into());
            }
            if stderr.contains("panicked") {
                problems.push(format!("it panicked: {}", stderr.trim()));
            }
            let error = stderr
                .lines()
                .find(|l| l.starts_with("Error:"))
                .unwrap_or("")
                .to_string();
            if !stderr.contains(cause) {
                problems.push(format!(
                    "its error does not say \"{cause}\": {}",
                    stderr.trim()
                ));
            }
            // A path in the run folder: a file or folder the stage writes.
            let names_path = record
                .outputs
                .keys()
                .filter_map(|f| f.split('/').next())
                .any(|top| stderr.contains(top));
            if !names_path {
                problems.push(format!(
                    "its error names none of its outputs: {}",
                    stderr.trim()
                ));
            }
            let after = hashes(&dir.join("after"))?;
            // A run's own log (metrics.jsonl, report.json) is the new run's from its start,
            // as the manifest has it: the outputs are the rest.
            for (file, hash) in before.iter().filter(|(f, _)| !is_volatile(f)) {
                match after.get(file) {
                    None => problems.push(format!("{file}: lost")),
                    Some(h) if h != hash => problems.push(format!("{file}: changed")),
                    Some(_) => {}
                }
            }
            for file in after.keys().filter(|f| !before.contains_key(*f)) {
                problems.push(format!("{file}: left behind"));
            }
            if problems.is_empty() {
                remove(&dir)?;
            }
            refusals.push(Refusal {
                stage,
                case,
                error,
                problems,
            });
        }
    }
    Ok(refusals)
}

/// Runs `script` with `sh` in a private mount namespace, as root in it: `unshare` with a user
/// namespace (which needs no privilege where the kernel allows them), else without one (root).
fn namespaced(script: &str, envs: &[(&str, &Path)]) -> Result<std::process::Output> {
    let mut last = None;
    for flags in [&["--user", "--map-root-user", "--mount"][..], &["--mount"]] {
        let output = Command::new("unshare")
            .args(flags)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .args(["sh", "-c", script])
            .envs(envs.iter().map(|(k, v)| (*k, v.as_os_str())))
            .output()
            .context("running unshare (util-linux)")?;
        let refused = String::from_utf8_lossy(&output.stderr).contains("unshare failed");
        if !refused {
            return Ok(output);
        }
        last = Some(output);
    }
    let output = last.expect("two attempts");
    bail!(
        "a private mount namespace cannot be made here (unshare: {}): the full-disk and \
         read-only checks need one (root, or unprivileged user namespaces)",
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// sha256 of every file under `dir`.
fn hashes(dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    super::manifest::hash_paths(dir, &[PathBuf::new()])
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for file in listing(from)? {
        let target = to.join(&file);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from.join(&file), &target)
            .with_context(|| format!("copying {file} to {}", to.display()))?;
    }
    Ok(())
}
