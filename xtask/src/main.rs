//! `cargo xtask`: lmforge's repository tasks (tests as CI runs them, the embedded corpus, the
//! pipeline and its reproducibility check, the benches, the serving load test). `cargo xtask` alone lists them.

mod bench;
mod dataset;
mod fixtures;
mod flags;
mod install;
mod loadtest;
mod pipeline;
mod test;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match flags::parse(&args)? {
        None => print!("{}", flags::USAGE),
        Some(flags::Task::Test(f)) => test::run(&root, &f)?,
        Some(flags::Task::Dataset(f)) => dataset::run(&root, &f)?,
        Some(flags::Task::Fixtures) => {
            fixtures::run(&root)?;
        }
        Some(flags::Task::Pipeline(f)) => {
            pipeline::run(&root, &f)?;
        }
        Some(flags::Task::VerifyRepro(f)) => pipeline::verify_repro(&root, &f)?,
        Some(flags::Task::Faults(f)) => pipeline::faults::run(&root, &f)?,
        Some(flags::Task::Bench(f)) => bench::run(&root, &f)?,
        Some(flags::Task::Loadtest(f)) => loadtest::run(&root, &f)?,
    }
    Ok(())
}

/// The workspace root: xtask lives one level below it.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR` (as CI sets it) or `target/`.
fn target_dir(root: &Path) -> PathBuf {
    root.join(std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from))
}

/// `cargo ARGS` in the workspace, with the cargo that runs xtask.
fn cargo_command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(root);
    command
}

/// Runs `cargo ARGS` in the workspace with extra environment variables, echoing the command,
/// failing on a non-zero exit.
fn cargo(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    println!("$ cargo {}", args.join(" "));
    let status = cargo_command(root, args)
        .envs(envs.iter().copied())
        .status()
        .context("running cargo")?;
    ensure!(
        status.success(),
        "`cargo {}` failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// Writes through a temporary file and a rename: the file is whole or absent.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// `cargo ARGS`, returning its standard output.
fn cargo_output(root: &Path, args: &[&str]) -> Result<String> {
    let output = cargo_command(root, args)
        .output()
        .context("running cargo")?;
    ensure!(
        output.status.success(),
        "`cargo {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
