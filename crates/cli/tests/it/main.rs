//! The `lmforge` binary as a user runs it.

use std::process::Command;

fn lmforge(args: &[&str]) -> std::process::Output {
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

#[test]
fn device_trains_a_step_on_flex_and_writes_its_report() {
    let dir = std::env::temp_dir().join(format!("lmforge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("device.json");
    let out = lmforge(&[
        "device",
        "--device",
        "flex",
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
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["requested"], "flex");
    let initial = report["initial_loss"].as_f64().unwrap();
    // Uniform random tokens over 8192 ids: an untrained model sits near ln(8192) ≈ 9.01.
    assert!((initial - 8192f64.ln()).abs() < 0.5, "{initial}");
    assert!(report["tokens_per_second"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_device_is_a_clear_error() {
    let out = lmforge(&["device", "--device", "tpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown device `tpu`"), "{err}");
}
