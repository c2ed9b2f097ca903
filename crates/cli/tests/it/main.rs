//! The `lmforge` binary as a user runs it.

mod bpe;
mod clean;
mod dataset;
#[cfg(feature = "mpi")]
mod distributed;
mod model;
mod sharded;
mod train;
mod wordpiece;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh temporary folder for one test (`area` and `name` keep tests apart).
pub fn tempdir(area: &str, name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lmforge-cli-{area}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Stdout of a run that must succeed (its stderr in the failure message).
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run that must fail with `message` on stderr.
pub fn fails_with(out: &std::process::Output, message: &str) {
    assert!(!out.status.success(), "succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message), "{message:?} not in {err}");
}

/// Runs the `lmforge` binary with `args`.
pub fn lmforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_subcommands() {
    let out = lmforge(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("device"), "{text}");
}

/// Runs `lmforge device` on `device` with a small batch and returns its JSON report.
fn device_report(device: &str) -> serde_json::Value {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lmforge-cli-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("device.json");
    let out = lmforge(&[
        "device",
        "--device",
        device,
        "--batch",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "2",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    report
}

#[test]
fn device_trains_a_step_on_flex_and_writes_its_report() {
    let report = device_report("flex");
    assert_eq!(report["requested"], "flex");
    assert_eq!(report["device"], "flex");
    let initial = report["initial_loss"].as_f64().unwrap();
    // Uniform random tokens over 8192 ids: an untrained model sits near ln(8192) ≈ 9.01.
    assert!((initial - 8192f64.ln()).abs() < 0.5, "{initial}");
    assert!(report["final_loss"].as_f64().unwrap() < initial);
    assert!(report["tokens_per_second"].as_f64().unwrap() > 0.0);
}

/// The same seed gives the same model and batch on every backend, so `lmforge device` prints
/// the same losses on wgpu as on flex (`cargo xtask test` sets LMFORGE_REQUIRE_WGPU).
#[test]
fn device_reports_the_same_losses_on_wgpu_as_on_flex() {
    if std::env::var_os("LMFORGE_REQUIRE_WGPU").is_none() {
        eprintln!("skipped: set LMFORGE_REQUIRE_WGPU=1 where a Vulkan driver is installed");
        return;
    }
    let (flex, wgpu) = (device_report("flex"), device_report("wgpu"));
    assert_eq!(wgpu["device"], "wgpu");
    for key in ["initial_loss", "final_loss"] {
        let (a, b) = (flex[key].as_f64().unwrap(), wgpu[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-3, "{key}: flex {a}, wgpu {b}");
    }
}

#[test]
fn a_bad_device_is_a_clear_error() {
    let out = lmforge(&["device", "--device", "tpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown device `tpu`"), "{err}");
    for (flag, value) in [("--batch", "0"), ("--seq-len", "257"), ("--steps", "0")] {
        let out = lmforge(&["device", "--device", "flex", flag, value]);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(flag) && err.contains(value),
            "{flag} {value}: {err}"
        );
    }
}
