//! `cargo xtask test`: everything CI runs, cheapest checks first.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::flags::{Test, VerifyRepro};
use crate::{cargo, cargo_output, dataset};

/// Dependencies a crate must never have (normal and build edges): what a crate does not depend
/// on is its most important property. Crates not in the workspace yet are skipped.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("lmforge-tokenizer", &["burn"]),
    ("lmforge-bpe", &["burn"]),
    ("lmforge-wordpiece", &["burn"]),
    ("lmforge-clean", &["burn"]),
    ("lmforge-corpus", &["burn"]),
    ("lmforge-dataset", &["burn"]),
    // Job arrays know processes and folders, never what the tasks compute.
    (
        "lmforge-executor",
        &["burn", "lmforge-corpus", "lmforge-clean", "lmforge-dataset"],
    ),
    (
        "lmforge-model",
        &[
            // The models know no decoding loop, scheduler or engine.
            "lmforge-infer",
            "tokenizers",
            "lmforge-tokenizer",
            "lmforge-bpe",
            "lmforge-wordpiece",
            "axum",
            "hyper",
        ],
    ),
    // Quantization sits between the model and serving: it needs no tokenizer, data or
    // training code, so a server can take it without them.
    (
        "lmforge-quant",
        &[
            "lmforge-infer",
            "tokenizers",
            "lmforge-tokenizer",
            "lmforge-dataset",
            "lmforge-train",
            "axum",
            "hyper",
        ],
    ),
    // The decoding engine: token ids in, token ids out; no HTTP, no tokenizer, no training.
    (
        "lmforge-infer",
        &[
            "tokenizers",
            "lmforge-tokenizer",
            "lmforge-tokenizers",
            "lmforge-bpe",
            "lmforge-wordpiece",
            "lmforge-dataset",
            "lmforge-train",
            "axum",
            "hyper",
            "tokio",
        ],
    ),
    // Opening tokenizer files needs the two implementations, nothing of the data stack.
    (
        "lmforge-tokenizers",
        &[
            "burn",
            "lmforge-corpus",
            "lmforge-dataset",
            "arrow-array",
            "parquet",
        ],
    ),
    // A server opens its tokenizer without the data stack.
    (
        "lmforge-serve",
        &[
            "lmforge-dataset",
            "lmforge-corpus",
            "arrow-array",
            "parquet",
        ],
    ),
];
/// Direct dependencies a crate must never name (normal and build edges), where the transitive
/// rule above cannot hold: the server reaches burn through the engine, but is HTTP only.
const FORBIDDEN_DIRECT: &[(&str, &[&str])] =
    &[("lmforge-serve", &["burn", "lmforge-model", "lmforge-quant"])];
/// Leaves of the crate graph: nothing else in the workspace may depend on these.
const LEAVES: &[&str] = &["lmforge-serve", "lmforge-cli"];

pub fn run(root: &Path, flags: &Test) -> Result<()> {
    let mut timings = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("\n== {name}");
        let start = Instant::now();
        f().with_context(|| format!("step `{name}` failed"))?;
        timings.push((name.to_string(), start.elapsed().as_secs_f64()));
        Ok(())
    };
    step("prerequisites", &mut || prerequisites(root, flags))?;
    // Multi-process training is built and tested where Open MPI is installed (always in CI).
    let mpi = mpi_installed();
    step("datasets checksums", &mut || {
        dataset::verify_checksums(&root.join("datasets"))
    })?;
    step("crate boundaries", &mut || boundaries(root))?;
    let mut fixtures = std::path::PathBuf::new();
    step("fixtures", &mut || {
        fixtures = crate::fixtures::run(root)?;
        Ok(())
    })?;
    if !flags.no_lint {
        step("fmt", &mut || {
            cargo(root, &["fmt", "--all", "--", "--check"], &[])
        })?;
        step("clippy", &mut || {
            let mut args = vec!["clippy", "--workspace", "--all-targets", "--locked"];
            if mpi {
                args.extend(["--features", "lmforge-cli/mpi"]);
            }
            args.extend(["--", "-D", "warnings"]);
            cargo(root, &args, &[])
        })?;
    }
    step("tests", &mut || {
        // Without a Vulkan driver the wgpu tests would skip; here that is a failure.
        // Likewise the tokenizer oracles without their vocabularies, and the playground check
        // without a browser.
        let mut envs = vec![
            ("LMFORGE_REQUIRE_WGPU", "1".to_string()),
            ("LMFORGE_REQUIRE_CHROMIUM", "1".to_string()),
            ("LMFORGE_REQUIRE_FIXTURES", "1".to_string()),
            ("LMFORGE_FIXTURES", fixtures.to_string_lossy().into_owned()),
        ];
        // The job-array tests need a Slurm; where one answers (always in CI) they must run.
        if slurm_answers() {
            envs.push(("LMFORGE_REQUIRE_SLURM", "1".to_string()));
        }
        let xdg = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(_) => None,
            None => Some(xdg_runtime_dir()?),
        };
        if let Some(dir) = &xdg {
            envs.push(("XDG_RUNTIME_DIR", dir.clone()));
        }
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut args = vec!["test", "--workspace", "--locked"];
        if mpi {
            // The feature only adds code to lmforge-train and lmforge-cli: burn is shared with
            // the build above.
            args.extend(["--features", "lmforge-cli/mpi"]);
        }
        let tested = cargo(root, &args, &envs);
        if let Some(dir) = xdg {
            let _ = std::fs::remove_dir_all(dir);
        }
        tested
    })?;

    step("pipeline", &mut || {
        // The README's first command on a shortened config, twice from scratch on flex: the
        // same bytes in every stage's outputs, then a third run that skips every stage.
        let out = crate::target_dir(root).join("repro");
        crate::pipeline::verify_repro(
            root,
            &VerifyRepro {
                config: None,
                out: out.to_string_lossy().into_owned(),
            },
        )?;
        let report = std::fs::read_to_string(out.join("a/report.md"))?;
        ensure!(
            report.contains("| q4_0 |") && report.contains("![loss curve](train/loss.png)"),
            "the pipeline's report.md lacks the models table or the loss curve"
        );
        // Every model's bits per byte and per character (its byte-level BPE gives them),
        // numbers in bits, a character at least a byte.
        let figures: Vec<(Option<f64>, Option<f64>)> = report
            .lines()
            .skip_while(|l| !l.starts_with("## Models"))
            .skip(4)
            .take_while(|l| l.starts_with("| "))
            .map(|l| {
                let cell = |k: usize| {
                    l.split('|')
                        .nth(k)
                        .and_then(|c| c.trim().parse::<f64>().ok())
                };
                (cell(5), cell(6))
            })
            .collect();
        ensure!(
            !figures.is_empty()
                && figures.iter().all(|f| match *f {
                    (Some(b), Some(c)) => b > 0.0 && b < 16.0 && c >= b && c < 64.0,
                    _ => false,
                }),
            "the pipeline's report.md lacks a model's bits per byte or per character: {figures:?}"
        );
        crate::pipeline::check_failure_recovery(root, &out)?;
        crate::pipeline::check_training_resume(root, &out)?;
        crate::pipeline::check_init(root, &out)?;
        // The data stages as job arrays through sbatch where a Slurm answers (always in CI:
        // the prerequisites require it), else the local process pool.
        let executor = if slurm_answers() { "slurm" } else { "local" };
        crate::pipeline::check_ranks(root, &out, executor)
    })?;
    step("faults", &mut || {
        // kill -9 at seeded moments of every long stage, then a full disk and a read-only run
        // folder (docs/reliability.md).
        crate::pipeline::faults::run(root, &crate::flags::Faults::default())
    })?;
    if !flags.no_lint {
        step("cuda type-check", &mut || {
            // The CUDA backend cannot be built here (see docs/ARCHITECTURE.md, "Backends"), but
            // its code must not rot: type-check it. DOCS_RS makes tracel-llvm-bundler skip the
            // LLVM download it does for docs.rs; a check build links nothing, so nothing misses it.
            let args = [
                "check",
                "--workspace",
                "--all-targets",
                "--locked",
                "--features",
                "lmforge-model/cuda,lmforge-cli/cuda",
            ];
            cargo(root, &args, &[("DOCS_RS", "1")])
        })?;
    }

    println!("\n== summary");
    for (name, seconds) in &timings {
        println!("{name:<20} {seconds:>8.1} s");
    }
    Ok(())
}

/// The Vulkan loader logs an error for every device it opens when `XDG_RUNTIME_DIR` is unset (as
/// in CI); a private directory for it keeps the test log free of harmless errors.
fn xdg_runtime_dir() -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lmforge-xdg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir.to_string_lossy().into_owned())
}

/// What `cargo test` needs beyond Rust itself; says how to install what is missing.
/// Checks what the tests need from the system. As root (or with password-less sudo) with
/// apt-get, what is missing is installed and a one-node Slurm started (stopped when the run
/// ends); elsewhere a missing driver, browser or tool is an error naming what to install, and
/// a missing Open MPI or Slurm skips their tests (an error under CI=true).
fn prerequisites(root: &Path, flags: &Test) -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let admin = crate::install::as_root();
    let missing = missing_needs();
    if let Some(sudo) = &admin {
        crate::install::apt_install(sudo, &missing)?;
    }
    if !flags.no_lint && !rust_lints() {
        println!("installing rustfmt and clippy (rustup component add rustfmt clippy)");
        let status = Command::new("rustup")
            .args(["component", "add", "rustfmt", "clippy"])
            .status()
            .context("running rustup")?;
        ensure!(
            status.success(),
            "rustup component add rustfmt clippy failed ({status})"
        );
    }
    if admin.is_some() && !slurm_answers() {
        crate::install::start_slurm(root)?;
    }
    let mut errors = Vec::new();
    for need in missing_needs() {
        let optional =
            std::ptr::eq(need, &crate::install::MPI) || std::ptr::eq(need, &crate::install::SLURM);
        if !optional || ci {
            errors.push(need.advice());
        }
    }
    let slurm = slurm_answers();
    if !slurm && ci {
        errors.push(
            "a Slurm cluster for the sharded data stages' job-array tests: run `cargo xtask \
             test` as root to have it started, or `sudo .ci/slurm up` (one node on this machine)"
                .into(),
        );
    }
    if !flags.no_lint && !rust_lints() {
        errors.push("rustfmt and clippy: `rustup component add rustfmt clippy`".into());
    }
    if !errors.is_empty() {
        bail!("missing prerequisites:\n  - {}", errors.join("\n  - "));
    }
    println!("Vulkan loader and driver found; chromium, curl, rustfmt and clippy present");
    if mpi_installed() {
        println!("Open MPI found: lmforge is built with `--features mpi` and its mpirun tests run");
    } else {
        println!(
            "no Open MPI: the multi-process training tests are not built; to run them install {} \
             (under CI=true this is an error)",
            crate::install::MPI.advice()
        );
    }
    if slurm {
        println!("Slurm answers: the job-array tests run on it");
    } else {
        println!(
            "no Slurm answers: the job-array tests are skipped (run as root to have one \
             started, or `sudo .ci/slurm up`; under CI=true this is an error)"
        );
    }
    Ok(())
}

/// The system dependencies not found here.
fn missing_needs() -> Vec<&'static crate::install::Need> {
    use crate::install::{CHROMIUM, CURL, MPI, SLURM, VULKAN};
    let mut missing = Vec::new();
    // ldconfig lives in /sbin, off a normal user's PATH on Debian.
    let loader = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .iter()
        .any(|ldconfig| {
            Command::new(ldconfig)
                .arg("-p")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libvulkan.so.1"))
        });
    let icd = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|dir| {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
        });
    if !loader || !icd {
        missing.push(&VULKAN);
    }
    if Command::new("chromium").arg("--version").output().is_err() {
        missing.push(&CHROMIUM);
    }
    if Command::new("curl").arg("--version").output().is_err() {
        missing.push(&CURL);
    }
    if !mpi_installed() {
        missing.push(&MPI);
    }
    let slurm_tools = ["sbatch", "sinfo", "srun"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    if !slurm_tools {
        missing.push(&SLURM);
    }
    missing
}

fn rust_lints() -> bool {
    ["fmt", "clippy"].iter().all(|tool| {
        crate::cargo_command(Path::new("."), &[tool, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

pub const MPI_INSTALL: &str = "Open MPI and libclang for the multi-process training tests (the `mpi` \
     crate's bindings are generated by bindgen): `apt-get install openmpi-bin libopenmpi-dev \
     libclang-dev`";

/// Whether Open MPI's launcher and compiler wrapper answer and libclang is installed, which
/// building the `mpi` feature and running its tests take.
pub fn mpi_installed() -> bool {
    let answers = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let libclang = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .iter()
        .any(|ldconfig| {
            Command::new(ldconfig).arg("-p").output().is_ok_and(|o| {
                // libclang-14.so, not libclang-cpp.so (which comes without the C API).
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|name| name.starts_with("libclang-") && name.ends_with(".so"))
            })
        });
    answers("mpirun") && answers("mpicc") && libclang
}

/// Whether `sinfo` reaches a Slurm controller with a node.
fn slurm_answers() -> bool {
    Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// [`FORBIDDEN_DIRECT`] against each member's own manifest (dev-dependencies allowed).
fn direct_violations(metadata: &serde_json::Value) -> Vec<String> {
    let mut violations = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        let Some((_, forbidden)) = FORBIDDEN_DIRECT.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let dev = dep["kind"].as_str() == Some("dev");
            if !dev && forbidden.contains(&dep_name) {
                violations.push(format!("{name} names {dep_name} in its Cargo.toml"));
            }
        }
    }
    violations
}

fn boundaries(root: &Path) -> Result<()> {
    let metadata: serde_json::Value = serde_json::from_str(&cargo_output(
        root,
        &["metadata", "--no-deps", "--format-version", "1", "--locked"],
    )?)?;
    let members: Vec<String> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut violations = direct_violations(&metadata);
    for member in &members {
        let mut forbidden: Vec<&str> = FORBIDDEN
            .iter()
            .filter(|(name, _)| name == member)
            .flat_map(|(_, deps)| deps.iter().copied())
            .collect();
        if !LEAVES.contains(&member.as_str()) && member != "xtask" {
            forbidden.extend(LEAVES);
        }
        let tree = cargo_output(
            root,
            &[
                "tree",
                "-p",
                member,
                "-e",
                "normal,build",
                "--all-features",
                "--prefix",
                "none",
                "--format",
                "{p}",
                "--locked",
            ],
        )?;
        let deps: Vec<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
        for bad in forbidden {
            if deps.contains(&bad) {
                violations.push(format!(
                    "{member} depends on {bad} (`cargo tree -p {member} -i {bad}`)"
                ));
            }
        }
    }
    if !violations.is_empty() {
        bail!(
            "crate boundaries crossed:\n  - {}",
            violations.join("\n  - ")
        );
    }
    println!("{} crates checked: {}", members.len(), members.join(", "));
    Ok(())
}
