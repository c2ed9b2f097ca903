//! `lmforge train` as one process per rank: under `mpirun` (Open MPI) and under Slurm's `srun
//! --mpi=pmix`, against one process with gradient accumulation. Built only with the `mpi`
//! feature, which `cargo xtask test` turns on where Open MPI is installed (always in CI, where
//! its absence is an error, not a skip).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bpe::s;
use crate::train::{data, gpt_flags};
use crate::{fails_with, lmforge, ok};

fn tempdir(name: &str) -> PathBuf {
    crate::tempdir("distributed", name)
}

/// `mpirun -n ranks lmforge ARGS`, one compute thread per rank.
fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["-n", &ranks.to_string(), "-x", "RAYON_NUM_THREADS=1"])
        .arg(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1");
    command
}

fn output(mut command: Command) -> Output {
    command
        .output()
        .expect("mpirun runs (Open MPI: apt-get install openmpi-bin)")
}

/// The training losses of `save`'s metrics.jsonl by iteration.
fn losses(save: &Path) -> Vec<(u64, f64)> {
    fs::read_to_string(save.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| Some((l["iteration"].as_u64()?, l["loss"].as_f64()?)))
        .collect()
}

fn close(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for ((i, x), (j, y)) in a.iter().zip(b) {
        assert_eq!(i, j, "{what}");
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "{what}: iteration {i}: {x} vs {y}"
        );
    }
}

/// The flags of a run of `iters` iterations of 8 samples in micro-batches of 2: one rank
/// accumulates 4, two ranks 2 each, four ranks 1.
fn flags<'a>(data: &'a Path, tokenizer: &'a Path, save: &'a Path, iters: &'a str) -> Vec<&'a str> {
    let mut flags = gpt_flags(data, tokenizer, save);
    flags.extend([
        "--global-batch-size",
        "8",
        "--train-iters",
        iters,
        "--eval-interval",
        "0",
        "--hidden-dropout",
        "0.1",
    ]);
    flags
}

fn model_bytes(save: &Path, iteration: u64) -> Vec<u8> {
    fs::read(save.join(format!("iter_{iteration:07}/model.safetensors"))).unwrap()
}

#[test]
fn ranks_equal_one_process_with_accumulation_and_repeat_bit_for_bit() {
    let dir = tempdir("equal");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let one = dir.join("one");
    let out = lmforge(&flags(&prefix, &tokenizer, &one, "6"));
    ok(&out);
    let reference = losses(&one);
    for ranks in [2, 4] {
        let save = dir.join(format!("ranks-{ranks}"));
        let out = output(mpirun(ranks, &flags(&prefix, &tokenizer, &save, "6")));
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        for rank in 0..ranks {
            assert!(
                err.contains(&format!("rank {rank}/{ranks} on ")),
                "each rank says where it runs: {err}"
            );
        }
        let got = losses(&save);
        close(&reference, &got, &format!("{ranks} ranks vs one"));
        // The first step's loss is summed in one order whatever the world size: exact.
        assert_eq!(reference[0], got[0], "{ranks} ranks: the first loss");
        let report: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(save.join("train_report.json")).unwrap())
                .unwrap();
        let valid = report["valid_loss"].as_f64().unwrap();
        let single: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(one.join("train_report.json")).unwrap())
                .unwrap();
        let single = single["valid_loss"].as_f64().unwrap();
        assert!(
            (valid - single).abs() <= 1e-5 * single,
            "{valid} vs {single}"
        );
    }
    // The same world size again: the same bytes.
    let again = dir.join("ranks-2-again");
    ok(&output(mpirun(2, &flags(&prefix, &tokenizer, &again, "6"))));
    assert!(
        model_bytes(&again, 6) == model_bytes(&dir.join("ranks-2"), 6),
        "two 2-rank runs differ"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bert_masks_follow_the_samples_not_the_ranks() {
    let dir = tempdir("bert");
    let (tokenizer, prefix) = data(&dir, "wordpiece");
    let args = |save: &Path| -> Vec<String> {
        [
            "train",
            "bert",
            "--data-path",
            s(&prefix),
            "--tokenizer",
            s(&tokenizer),
            "--split",
            "80,10,10",
            "--num-layers",
            "1",
            "--hidden-size",
            "32",
            "--num-attention-heads",
            "2",
            "--max-position-embeddings",
            "32",
            "--micro-batch-size",
            "2",
            "--global-batch-size",
            "4",
            "--train-iters",
            "3",
            "--log-interval",
            "1",
            "--eval-interval",
            "0",
            "--eval-iters",
            "1",
            "--device",
            "flex",
            "--save",
            s(save),
        ]
        .map(String::from)
        .to_vec()
    };
    let one = dir.join("one");
    let one_args = args(&one);
    ok(&lmforge(
        &one_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let two = dir.join("two");
    let two_args = args(&two);
    ok(&output(mpirun(
        2,
        &two_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )));
    let (a, b) = (losses(&one), losses(&two));
    close(&a, &b, "BERT, 2 ranks vs one");
    assert_eq!(a[0], b[0], "the same masks on the same samples");
    fs::remove_dir_all(&dir).unwrap();
}

/// A running `mpirun`, killed with its ranks if the test fails before it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // mpirun passes SIGTERM on to its ranks (a SIGKILL would orphan them).
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

/// Starts `mpirun`, its stderr into `log`.
fn spawn(mut command: Command, log: &Path) -> Running {
    let file = fs::File::create(log).unwrap();
    Running(
        command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("mpirun runs"),
    )
}

/// The pid rank `rank` printed in its start line, once it has.
fn pid_of(log: &Path, rank: usize, world: usize) -> u32 {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tag = format!("rank {rank}/{world} on ");
        if let Some(at) = text.find(&tag)
            && let Some(pid) = text[at..]
                .split("(pid ")
                .nth(1)
                .and_then(|r| r.split(')').next())
        {
            return pid.parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no start line: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn latest(save: &Path) -> u64 {
    fs::read_to_string(save.join("latest_checkpointed_iteration.txt"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn wait(child: &mut Running, limit: Duration, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once `save` holds iteration 2's checkpoint, `kill -9 victim`; the launcher must then end
/// non-zero. Returns what it printed after the kill: every rank has printed its start-up line
/// ("rank 1/2 …") by then, so what names the dead rank must come after it.
fn kill_after_checkpoint(child: &mut Running, log: &Path, save: &Path, victim: u32) -> String {
    let started = Instant::now();
    while latest(save) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = fs::metadata(log).unwrap().len() as usize;
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait(
        child,
        Duration::from_secs(60),
        "the launcher after a kill -9",
    );
    assert!(!status.success());
    let bytes = fs::read(log).unwrap();
    String::from_utf8_lossy(&bytes[before.min(bytes.len())..]).into_owned()
}

#[test]
fn a_killed_rank_stops_the_run_and_any_world_size_resumes_it() {
    let dir = tempdir("kill");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let iters = "40";
    let one = dir.join("one");
    ok(&lmforge(&flags(&prefix, &tokenizer, &one, iters)));
    let save = dir.join("killed");
    let mut run = flags(&prefix, &tokenizer, &save, iters);
    run.extend(["--save-interval", "2"]);
    let log = dir.join("mpirun.log");
    let mut child = spawn(mpirun(2, &run), &log);
    let victim = pid_of(&log, 1, 2);
    let after = kill_after_checkpoint(&mut child, &log, &save, victim);
    assert!(
        after.contains("rank 1") && after.contains("signal 9"),
        "after the kill, the launcher names the dead rank and its signal: {after}"
    );
    let at = latest(&save);
    assert!(
        (2..40).contains(&at),
        "killed at iteration {at}: the run was too short to kill"
    );
    // Relaunched on four ranks it resumes from the last checkpoint; then on one.
    let resumed = output(mpirun(4, &run));
    ok(&resumed);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(err.contains(&format!("iteration {at}")), "{err}");
    close(
        &losses(&one),
        &losses(&save),
        "killed, resumed on 4 ranks, vs one rank",
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rank_that_hangs_is_caught_by_the_timeout() {
    let dir = tempdir("hang");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let save = dir.join("run");
    let mut run = flags(&prefix, &tokenizer, &save, "5000");
    // 3 s.
    run.extend(["--distributed-timeout-minutes", "0.05"]);
    let log = dir.join("mpirun.log");
    let mut child = spawn(mpirun(2, &run), &log);
    let victim = pid_of(&log, 1, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        Command::new("kill")
            .args(["-STOP", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = wait(
        &mut child,
        Duration::from_secs(60),
        "rank 0 after rank 1 stopped",
    );
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    assert!(!status.success());
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("rank 0: ") && text.contains("waited 3 s for the other ranks"),
        "{text}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_process_per_device_and_a_launcher_without_mpi_are_refused() {
    let dir = tempdir("refused");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let save = dir.join("run");
    let mut run = flags(&prefix, &tokenizer, &save, "2");
    run.extend(["--device", "flex,flex"]);
    let out = output(mpirun(2, &run));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one device per process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A torchrun world: refused with what to run instead.
    let out = Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(flags(&prefix, &tokenizer, &save, "2"))
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    fails_with(&out, "launch with `mpirun -n 2 lmforge");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn srun_with_pmix_trains_as_mpirun_does() {
    // A missing Slurm fails under LMFORGE_REQUIRE_SLURM (always set in CI).
    if !crate::sharded::slurm() {
        return;
    }
    let dir = tempdir("srun");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let by_mpirun = dir.join("mpirun");
    ok(&output(mpirun(
        2,
        &flags(&prefix, &tokenizer, &by_mpirun, "4"),
    )));
    let by_srun = dir.join("srun");
    let out = Command::new("srun")
        .args([
            "--mpi=pmix",
            "-n",
            "2",
            "--kill-on-bad-exit=1",
            "--time=00:10:00",
        ])
        .arg(env!("CARGO_BIN_EXE_lmforge"))
        .args(flags(&prefix, &tokenizer, &by_srun, "4"))
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("launched by Slurm"), "{err}");
    assert!(
        model_bytes(&by_srun, 4) == model_bytes(&by_mpirun, 4),
        "srun and mpirun, same world size, differ"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_rank_under_srun_stops_the_run_naming_it() {
    // A missing Slurm fails under LMFORGE_REQUIRE_SLURM (always set in CI).
    if !crate::sharded::slurm() {
        return;
    }
    let dir = tempdir("srun-kill");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let save = dir.join("killed");
    let mut run = flags(&prefix, &tokenizer, &save, "2000");
    run.extend(["--save-interval", "2"]);
    let log = dir.join("srun.log");
    let mut srun = Command::new("srun");
    srun.args([
        "--mpi=pmix",
        "-n",
        "2",
        "--kill-on-bad-exit=1",
        "--time=00:10:00",
    ])
    .arg(env!("CARGO_BIN_EXE_lmforge"))
    .args(&run)
    .env("RAYON_NUM_THREADS", "1");
    let mut child = spawn(srun, &log);
    let victim = pid_of(&log, 1, 2);
    let after = kill_after_checkpoint(&mut child, &log, &save, victim);
    // Slurm numbers tasks as MPI numbers ranks: "srun: error: HOST: task 1: Killed".
    assert!(
        after.contains("task 1: Killed"),
        "after the kill, srun names the dead rank: {after}"
    );
    assert!(
        latest(&save) < 2000,
        "the run ended although a rank was killed"
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// The weights, gradient, optimizer and step-buffer bytes `lmforge model info` counts per rank
/// for `save`'s model in `dtype`, its optimizer sharded over `ranks`.
fn info_bytes(save: &Path, dtype: &str, ranks: usize) -> (u64, u64, u64, u64) {
    let config = save.join("gpt-config.json");
    let meta = save
        .join(format!("iter_{:07}", latest(save)))
        .join("lmforge.json");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(meta).unwrap()).unwrap();
    fs::write(&config, checkpoint["config"].to_string()).unwrap();
    let out = lmforge(&[
        "model",
        "info",
        "--config",
        s(&config),
        "--json",
        "--use-distributed-optimizer",
        "--data-parallel-size",
        &ranks.to_string(),
    ]);
    ok(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = info["memory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["dtype"] == dtype)
        .unwrap_or_else(|| panic!("no {dtype} row: {info}"));
    (
        row["weights"].as_f64().unwrap() as u64,
        row["gradients"].as_f64().unwrap() as u64,
        row["optimizer"].as_f64().unwrap() as u64,
        row["step_buffers"].as_f64().unwrap() as u64,
    )
}

/// What `save`'s report says rank 0 held: weights, gradient, optimizer and step-buffer bytes;
/// every rank's measured peak resident memory must hold at least that much (on flex the state
/// is host memory).
fn held(save: &Path, ranks: usize) -> (u64, u64, u64, u64) {
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(save.join("train_report.json")).unwrap()).unwrap();
    let memory = &report["memory"];
    assert_eq!(memory["optimizer_sharded_over"], ranks, "{report}");
    let held = (
        memory["weights_bytes"].as_u64().unwrap(),
        memory["gradient_bytes"].as_u64().unwrap(),
        memory["optimizer_bytes"].as_u64().unwrap(),
        memory["step_buffer_bytes"].as_u64().unwrap(),
    );
    let peaks: Vec<u64> = report["peak_rss_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(peaks.len(), ranks, "{report}");
    let state = held.0 + held.1 + held.2 + held.3;
    assert!(
        peaks.iter().all(|&p| p > state),
        "{peaks:?} against {state}"
    );
    // Every rank's counted peak starts from what it held before its first step and adds the
    // state: never above what it measured over the steps (the count leaves out activations
    // and what the allocator keeps), and not far below it on a model this small.
    let bytes = |key: &str| -> Vec<u64> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect()
    };
    let (expected, baseline, steps) = (
        bytes("expected_peak_bytes"),
        bytes("baseline_rss_bytes"),
        bytes("step_peak_rss_bytes"),
    );
    for r in 0..ranks {
        assert!(
            baseline[r] > held.0 && expected[r] >= baseline[r] + held.1,
            "rank {r}: {report}"
        );
        let ratio = steps[r] as f64 / expected[r] as f64;
        eprintln!("rank {r}: measured / counted peak {ratio:.3}");
        assert!((0.85..2.0).contains(&ratio), "rank {r}: {ratio}: {report}");
    }
    held
}

#[test]
fn the_distributed_optimizer_shards_moments_and_any_world_size_resumes_them() {
    let dir = tempdir("zero");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let one = dir.join("one");
    ok(&lmforge(&flags(&prefix, &tokenizer, &one, "6")));
    let sharded = dir.join("sharded");
    let mut run = flags(&prefix, &tokenizer, &sharded, "6");
    run.extend(["--use-distributed-optimizer", "--save-interval", "3"]);
    let out = output(mpirun(4, &run));
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(sharded over 4 ranks)"), "{err}");
    assert!(
        err.contains("peak resident memory by rank: counted "),
        "{err}"
    );
    close(&losses(&one), &losses(&sharded), "4 sharded ranks vs one");
    let mut names: Vec<String> = fs::read_dir(sharded.join("iter_0000006"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("optimizer"))
        .collect();
    names.sort();
    let expected: Vec<String> = (0..4)
        .map(|r| format!("optimizer-{r:05}-of-00004.safetensors"))
        .collect();
    assert_eq!(names, expected);
    // Rank 0's share is what `lmforge model info` counts per rank; in bf16 the master weights
    // are sharded too and the model is held in bf16.
    assert_eq!(held(&sharded, 4), info_bytes(&sharded, "f32", 4));
    let half = dir.join("bf16");
    let mut run = flags(&prefix, &tokenizer, &half, "2");
    run.extend(["--use-distributed-optimizer", "--bf16"]);
    ok(&output(mpirun(2, &run)));
    assert_eq!(held(&half, 2), info_bytes(&half, "bf16", 2));
    // Iteration 3's shards resumed on 2 ranks, sharded, and on one, whole.
    for (ranks, sharded_again) in [(2, true), (1, false)] {
        let resumed = dir.join(format!("resumed-{ranks}"));
        let load = sharded.join("iter_0000003");
        let mut args = flags(&prefix, &tokenizer, &resumed, "6");
        let at = args.iter().position(|a| *a == "--load").unwrap();
        args[at + 1] = crate::bpe::s(&load);
        if sharded_again {
            args.push("--use-distributed-optimizer");
        }
        let out = if ranks == 1 {
            lmforge(&args)
        } else {
            output(mpirun(ranks, &args))
        };
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("iteration 3"), "{err}");
        close(
            &losses(&one)[3..],
            &losses(&resumed),
            &format!("4 sharded ranks' checkpoint resumed on {ranks}"),
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensor_parallel_ranks_equal_one_process_and_save_one_whole_model() {
    let dir = tempdir("tp");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let one = dir.join("one");
    ok(&lmforge(&flags(&prefix, &tokenizer, &one, "6")));
    let report = |save: &Path| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(save.join("train_report.json")).unwrap()).unwrap()
    };
    let single = report(&one)["valid_loss"].as_f64().unwrap();
    // TP 2 on two ranks, and TP 2 × DP 2 on four, with and without the distributed optimizer.
    for (ranks, sharded) in [(2, false), (4, false), (4, true)] {
        let save = dir.join(format!("tp2-{ranks}-{sharded}"));
        let mut run = flags(&prefix, &tokenizer, &save, "6");
        run.extend(["--tensor-model-parallel-size", "2", "--save-interval", "3"]);
        if sharded {
            run.push("--use-distributed-optimizer");
        }
        let out = output(mpirun(ranks, &run));
        ok(&out);
        let what = format!("TP 2 on {ranks} ranks (sharded: {sharded}) vs one process");
        close(&losses(&one), &losses(&save), &what);
        let r = report(&save);
        assert_eq!(r["tensor_model_parallel_size"], 2);
        let valid = r["valid_loss"].as_f64().unwrap();
        assert!(
            (valid - single).abs() <= 1e-5 * single,
            "{what}: {valid} vs {single}"
        );
        // The checkpoint is the whole model, the same size as one process's.
        let bytes = |save: &Path| {
            fs::metadata(save.join("iter_0000006/model.safetensors"))
                .unwrap()
                .len()
        };
        assert_eq!(bytes(&save), bytes(&one), "{what}: the checkpoint is whole");
    }
    // In bf16 the ranks' partial sums are rounded before they are added: close, not equal.
    let half = |save: &Path, ranks: usize| {
        let mut run = flags(&prefix, &tokenizer, save, "6");
        run.push("--bf16");
        if ranks > 1 {
            run.extend(["--tensor-model-parallel-size", "2"]);
            ok(&output(mpirun(ranks, &run)));
        } else {
            ok(&lmforge(&run));
        }
        losses(save)
    };
    let (a, b) = (
        half(&dir.join("bf16-one"), 1),
        half(&dir.join("bf16-tp2"), 2),
    );
    assert_eq!(a.len(), b.len());
    for ((i, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 2e-3 * x,
            "bf16, TP 2 vs one: iteration {i}: {x} vs {y}"
        );
    }
    // Any command loads it; one process resumes its iteration 3 whole.
    let tp = dir.join("tp2-2-false");
    let out = lmforge(&[
        "eval",
        "--checkpoint",
        s(&tp.join("iter_0000006")),
        "--data-path",
        s(&prefix),
        "--eval-iters",
        "1",
        "--device",
        "flex",
        "--json",
    ]);
    ok(&out);
    ok(&lmforge(&[
        "generate",
        "--checkpoint",
        s(&tp.join("iter_0000006")),
        "--prompt",
        "the",
        "--tokens",
        "4",
        "--device",
        "flex",
    ]));
    let quantized = dir.join("quantized");
    ok(&lmforge(&[
        "quantize",
        "--checkpoint",
        s(&tp.join("iter_0000006")),
        "--scheme",
        "int8",
        "--output",
        s(&quantized),
        "--device",
        "flex",
    ]));
    let resumed = dir.join("resumed");
    let load = tp.join("iter_0000003");
    let mut args = flags(&prefix, &tokenizer, &resumed, "6");
    let at = args.iter().position(|a| *a == "--load").unwrap();
    args[at + 1] = s(&load);
    let out = lmforge(&args);
    ok(&out);
    close(
        &losses(&one)[3..],
        &losses(&resumed),
        "TP 2's checkpoint resumed whole",
    );
    fs::remove_dir_all(&dir).unwrap();
}
