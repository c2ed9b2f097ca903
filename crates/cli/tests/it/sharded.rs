//! `lmforge clean --ranks N` as a cluster user runs it: job arrays through the local process
//! pool and through a real Slurm, the same bytes as one process, `kill -9` of any task then
//! a re-run, and a failed rank named with its log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bpe::s;
use crate::{lmforge, ok, tempdir};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The French and Spanish default corpus as one plain jsonl (about 9 MB), so that
/// `--part-mb 1` cuts it by byte range into parts that split lines.
fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.jsonl");
    let mut all = Vec::new();
    for name in ["fr.jsonl.gz", "es.jsonl.gz"] {
        let file = std::fs::File::open(root().join("datasets/default").join(name)).unwrap();
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut all)
            .unwrap();
    }
    // A malformed line in the middle: counted with its file:line in the merged report.
    let middle = all.len() / 2
        + all[all.len() / 2..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap();
    all.splice(middle + 1..middle + 1, b"{not json\n".iter().copied());
    std::fs::write(&path, all).unwrap();
    path
}

/// The first `lines` lines of [`corpus`] as files of `per` lines: whole files for ranks.
fn part_files(dir: &Path, lines: usize, per: usize) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(corpus(dir)).unwrap();
    let lines: Vec<&str> = text.lines().take(lines).collect();
    let mut files = Vec::new();
    for (i, chunk) in lines.chunks(per).enumerate() {
        let path = dir.join(format!("part-{i:05}.jsonl"));
        std::fs::write(&path, chunk.join("\n") + "\n").unwrap();
        files.push(path);
    }
    files
}

const FLAGS: &[&str] = &["--languages", "fr,es", "--part-mb", "1", "--shard-mb", "1"];

fn clean(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["clean", "--input", s(input), "--output", s(output)];
    args.extend_from_slice(FLAGS);
    args.extend_from_slice(extra);
    lmforge(&args)
}

/// The run failed on exact task 1, reading rank 2's damaged keys: the error names the task and
/// its log, and the log names the file and what is wrong with it.
fn exact_task_1_failed(failed: &std::process::Output, work: &Path) {
    let stderr = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(!failed.status.success(), "{stderr}");
    assert!(
        stderr.contains("job `clean-exact`: 1 of its tasks failed: task 1")
            && stderr.contains("logs/clean-exact/task-00001.log"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(work.join("logs/clean-exact/task-00001.log")).unwrap();
    assert!(
        log.contains("task-00002/exact.bin") && log.contains("whole number"),
        "{log}"
    );
}

/// Every file of a clean output, report.json reduced to its counts.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut bytes = std::fs::read(&path).unwrap();
        if name == "report.json" {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let o = v.as_object_mut().unwrap();
            for key in [
                "output",
                "threads",
                "index_seconds",
                "filter_seconds",
                "seconds",
                "documents_per_second",
                "mb_per_second",
                "sharded",
            ] {
                o.remove(key);
            }
            for key in ["index_bytes", "index_bytes_per_document", "cluster_seconds"] {
                o["dedup"].as_object_mut().unwrap().remove(key);
            }
            bytes = serde_json::to_vec_pretty(&v).unwrap();
        }
        out.push((name, bytes));
    }
    out.sort();
    out
}

fn same(a: &Path, b: &Path, what: &str) {
    let (a, b) = (snapshot(a), snapshot(b));
    let names = |s: &[(String, Vec<u8>)]| s.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: file names");
    for (x, y) in a.iter().zip(&b) {
        assert!(x.1 == y.1, "{what}: {} differs", x.0);
    }
}

#[test]
fn local_ranks_equal_one_process_and_survive_kill_9() {
    let dir = tempdir("sharded", "local");
    let input = corpus(&dir);
    let single = dir.join("single");
    ok(&clean(&input, &single, &[]));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(single.join("report.json")).unwrap())
            .unwrap();
    assert!(report["outputs"].as_array().unwrap().len() >= 8, "{report}");
    assert!(
        report["malformed"]["examples"][0]
            .as_str()
            .unwrap()
            .contains("corpus.jsonl:")
    );

    let out = dir.join("out");
    let work = dir.join("work");
    let run = || {
        clean(
            &input,
            &out,
            &["--ranks", "4", "--work", s(&work), "--parallel", "2"],
        )
    };
    let stdout = ok(&run());
    assert!(stdout.contains("near_dedup"), "{stdout}");
    same(&single, &out, "4 local ranks");
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(merged["sharded"]["ranks"], 4);
    assert!(work.join("logs/clean-filter/task-00003.log").exists());

    // Nothing to do on a second run.
    let again = run();
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    ok(&again);
    assert!(
        stderr.contains("clean-filter: all 4 tasks finished earlier"),
        "{stderr}"
    );
    // The output folder deleted under a finished merge: the merge is redone, not reported
    // as finished.
    std::fs::remove_dir_all(&out).unwrap();
    let again = run();
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    ok(&again);
    assert!(
        !stderr.contains("clean-merge: all 1 tasks finished earlier"),
        "{stderr}"
    );
    same(&single, &out, "the merge redone for a deleted output");

    // kill -9 of a task at some moment of each step, then a re-run: the same bytes.
    let program = env!("CARGO_BIN_EXE_lmforge");
    for (at, (step, task)) in [
        ("signatures", 1),
        ("exact", 2),
        ("buckets", 0),
        ("cluster", 0),
        ("filter", 3),
        ("merge", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let task_dir = work.join(step).join(format!("task-{task:05}"));
        std::fs::remove_dir_all(&task_dir).unwrap();
        std::fs::remove_dir_all(work.join("merge/task-00000")).ok();
        let mut child = Command::new(program)
            .args(["clean", "--work", s(&work), "--step", step, "--rank"])
            .arg(task.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + 70 * at as u64));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        ok(&run());
        same(
            &single,
            &out,
            &format!("after kill -9 of {step} task {task}"),
        );
        for folder in [work.join(step), dir.clone()] {
            let hidden: Vec<_> = std::fs::read_dir(&folder)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.file_name())
                .collect();
            assert!(hidden.is_empty(), "{step}: a killed task left {hidden:?}");
        }
    }

    // Faults that land where they say (`LMFORGE_FAULT`): a task of each step aborts with its
    // largest file half written, or complete but not renamed into place; the merge's output
    // likewise. The run fails; the re-run gives the same bytes and leaves nothing hidden.
    for (target, point) in [
        ("signatures/task-00001", "mid-write"),
        ("exact/task-00002", "before-rename"),
        ("buckets/task-00000", "mid-write"),
        ("cluster/task-00000", "before-rename"),
        ("filter/task-00003", "mid-write"),
        ("merge/task-00000", "before-rename"),
        ("out", "mid-write"),
        ("out", "before-rename"),
    ] {
        let step = if target == "out" {
            "merge"
        } else {
            target.split('/').next().unwrap()
        };
        if target != "out" {
            std::fs::remove_dir_all(work.join(target)).unwrap();
        }
        std::fs::remove_dir_all(work.join("merge/task-00000")).ok();
        let failed = Command::new(program)
            .args(["clean", "--input", s(&input), "--output", s(&out)])
            .args(FLAGS)
            .args(["--ranks", "4", "--work", s(&work), "--parallel", "2"])
            .env("LMFORGE_FAULT", format!("{target}:{point}"))
            .output()
            .unwrap();
        assert!(!failed.status.success(), "{target}:{point} did not fail");
        let log = std::fs::read_dir(work.join("logs").join(format!("clean-{step}")))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>();
        assert!(
            log.contains("LMFORGE_FAULT: aborting at"),
            "{target}:{point}: {log}"
        );
        ok(&run());
        same(&single, &out, &format!("after a fault at {target}:{point}"));
        for folder in [work.join(step), dir.clone()] {
            let hidden: Vec<_> = std::fs::read_dir(&folder)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.file_name())
                .collect();
            assert!(hidden.is_empty(), "{target}:{point} left {hidden:?}");
        }
    }

    // A rank that fails is named with its log, and the run stops before the later steps.
    std::fs::remove_dir_all(work.join("exact/task-00001")).unwrap();
    std::fs::write(work.join("signatures/task-00002/exact.bin"), b"trunc").unwrap();
    std::fs::remove_dir_all(work.join("merge/task-00000")).unwrap();
    let failed = run();
    exact_task_1_failed(&failed, &work);

    // An input edited in place, its size kept: the re-run is refused, naming it.
    let mut text = std::fs::read(&input).unwrap();
    let at = text.iter().position(|&b| b == b'a').unwrap();
    text[at] = b'b';
    std::fs::write(&input, &text).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3);
    std::fs::File::options()
        .write(true)
        .open(&input)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let refused = run();
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success());
    assert!(
        stderr.contains("corpus.jsonl: modified since the run was planned"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Peak resident memory of each step's largest task, from a sharded run's report.
fn step_peaks(out: &Path) -> Vec<(String, f64)> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    report["sharded"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["peak_rss"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// 1,000 ranks that each have a part, under a limit of 128 open files per process: every
/// task's open files and memory must not grow with the rank count (a file per rank per task
/// ran out of descriptors). Then 1,000 ranks over a corpus of a few parts: only the ranks
/// with parts get tasks.
#[test]
fn a_thousand_ranks_under_a_small_file_limit_equal_one_process() {
    let dir = tempdir("sharded", "thousand");
    let input = corpus(&dir);
    let flags = [
        "--languages",
        "fr,es",
        "--shard-mb",
        "1",
        "--part-mb",
        "0.008",
    ];
    let single = dir.join("single");
    let mut args = vec!["clean", "--input", s(&input), "--output", s(&single)];
    args.extend(flags);
    ok(&lmforge(&args));
    let run = |ranks: &str, out: &Path, part_mb: &str| {
        let work = out.with_extension("work");
        let mut flags = flags.to_vec();
        *flags.last_mut().unwrap() = part_mb;
        Command::new("sh")
            .args(["-c", "ulimit -n 128 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_lmforge"))
            .args(["clean", "--input", s(&input), "--output", s(out)])
            .args(flags)
            .args(["--ranks", ranks, "--work", s(&work)])
            .output()
            .unwrap()
    };
    let ten = dir.join("ten");
    ok(&run("10", &ten, "0.008"));
    same(&single, &ten, "10 ranks");
    let thousand = dir.join("thousand");
    let out = run("1000", &thousand, "0.008");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        stderr.contains("clean-filter: 1000 of 1000 tasks to run"),
        "{stderr}"
    );
    same(&single, &thousand, "1,000 ranks");
    // Every step's largest task at 1,000 ranks against 10: flat, whatever the ranks.
    for ((step, at_ten), (_, at_thousand)) in
        step_peaks(&ten).into_iter().zip(step_peaks(&thousand))
    {
        assert!(
            at_ten > 0.0 && at_thousand <= at_ten * 1.2,
            "{step}: peak resident memory {at_thousand} bytes at 1,000 ranks, {at_ten} at 10"
        );
    }

    // Ranks beyond the parts start no task.
    let few = dir.join("few");
    let out = run("1000", &few, "1");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    let plan: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(few.with_extension("work").join("plan.json")).unwrap(),
    )
    .unwrap();
    let parts = plan["parts"].as_array().unwrap().len();
    assert!(parts < 20, "{parts} parts");
    assert!(
        stderr.contains(&format!("({parts} ranks have parts and run)"))
            && stderr.contains(&format!(
                "clean-signatures: {parts} of {parts} tasks to run"
            )),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether this machine has a Slurm that answers; under CI a missing one fails the test.
pub fn slurm() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        assert!(
            std::env::var_os("LMFORGE_REQUIRE_SLURM").is_none(),
            "LMFORGE_REQUIRE_SLURM is set but no Slurm answers (sinfo): start one with \
             `.ci/slurm up`"
        );
        eprintln!("skipped: no Slurm here (start one with `.ci/slurm up`)");
    }
    up
}

#[test]
fn slurm_job_arrays_equal_one_process() {
    if !slurm() {
        return;
    }
    let dir = tempdir("sharded", "slurm");
    let input = corpus(&dir);
    let single = dir.join("single");
    ok(&clean(&input, &single, &[]));
    let out = dir.join("out");
    let work = dir.join("work");
    let run = || {
        clean(
            &input,
            &out,
            &[
                "--ranks",
                "4",
                "--work",
                s(&work),
                "--executor",
                "slurm",
                "--parallel",
                "4",
                "--slurm-time",
                "00:10:00",
                "--slurm-cpus-per-task",
                "1",
            ],
        )
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    ok(&first);
    assert!(stderr.contains("as Slurm job"), "{stderr}");
    same(&single, &out, "4 Slurm ranks");
    let script = std::fs::read_to_string(work.join("logs/clean-filter/job.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3%4"), "{script}");
    assert!(script.contains("#SBATCH --time=00:10:00"), "{script}");
    // A re-run submits only what is missing.
    std::fs::remove_dir_all(work.join("filter/task-00002")).unwrap();
    std::fs::remove_dir_all(work.join("merge/task-00000")).unwrap();
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    ok(&second);
    assert!(
        stderr.contains("clean-filter: 1 of 4 tasks to run"),
        "{stderr}"
    );
    assert!(
        stderr.contains("clean-signatures: all 4 tasks finished earlier"),
        "{stderr}"
    );
    let script = std::fs::read_to_string(work.join("logs/clean-filter/job.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=2%4"), "{script}");
    same(&single, &out, "after resubmitting one rank");

    // An array task that exits 1 under Slurm: the run fails naming the task and its log, the
    // later arrays are never run; the re-run submits that task alone.
    let keys = work.join("signatures/task-00002/exact.bin");
    let good = std::fs::read(&keys).unwrap();
    std::fs::write(&keys, b"trunc").unwrap();
    std::fs::remove_dir_all(work.join("exact/task-00001")).unwrap();
    std::fs::remove_dir_all(work.join("merge/task-00000")).unwrap();
    let failed = run();
    exact_task_1_failed(&failed, &work);
    assert!(!work.join("merge/task-00000").exists());
    std::fs::write(&keys, good).unwrap();
    let again = run();
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    ok(&again);
    assert!(
        stderr.contains("clean-exact: 1 of 4 tasks to run"),
        "{stderr}"
    );
    let script = std::fs::read_to_string(work.join("logs/clean-exact/job.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=1%4"), "{script}");
    same(&single, &out, "after the failed task re-ran");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenizer_counts_and_conversion_by_rank_equal_one_process() {
    let dir = tempdir("sharded", "tokenizer");
    let files = part_files(&dir, 600, 130);
    let inputs: Vec<&str> = files.iter().map(|f| s(f)).collect();
    let train = |extra: &[&str], output: &Path| {
        let mut args = vec!["bpe", "train", "--vocab-size", "600", "--output", s(output)];
        args.extend_from_slice(extra);
        ok(&lmforge(&args));
    };
    let whole = dir.join("whole.json");
    let mut with_input = vec!["--input"];
    with_input.extend(&inputs);
    train(&with_input, &whole);

    let mut counts = Vec::new();
    for rank in 0..3 {
        let path = dir.join(format!("rank-{rank}.counts"));
        let rank = rank.to_string();
        let mut args = vec![
            "bpe",
            "count",
            "--output",
            s(&path),
            "--rank",
            &rank,
            "--ranks",
            "3",
            "--input",
        ];
        args.extend(&inputs);
        ok(&lmforge(&args));
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("rank-{rank}.counts.report.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["ranks"], 3);
        counts.push(path);
    }
    let all = dir.join("all.counts");
    let mut args = vec!["bpe", "reduce", "--output", s(&all), "--counts"];
    args.extend(counts.iter().map(|c| s(c)));
    ok(&lmforge(&args));
    let reduced = dir.join("reduced.json");
    train(&["--counts", s(&all)], &reduced);
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&reduced).unwrap(),
        "tokenizer.json from the reduced counts"
    );

    // Conversion: ranks, then `dataset merge` in rank order, is the one-process dataset.
    let convert = |prefix: &Path, extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--tokenizer",
            s(&whole),
            "--append-eod",
            "--output-prefix",
            s(prefix),
        ];
        args.extend_from_slice(extra);
        args.push("--input");
        args.extend(&inputs);
        ok(&lmforge(&args));
    };
    let one = dir.join("one/corpus");
    convert(&one, &[]);
    let mut prefixes = Vec::new();
    for rank in 0..3 {
        let prefix = dir.join(format!("rank-{rank}/corpus"));
        let r = rank.to_string();
        convert(&prefix, &["--rank", &r, "--ranks", "3"]);
        prefixes.push(dir.join(format!("rank-{rank}/corpus_text_document")));
    }
    let merged = dir.join("merged/corpus_text_document");
    let mut args = vec!["dataset", "merge", "--output-prefix", s(&merged), "--input"];
    args.extend(prefixes.iter().map(|p| s(p)));
    ok(&lmforge(&args));
    for ext in ["bin", "idx"] {
        assert!(
            std::fs::read(dir.join(format!("one/corpus_text_document.{ext}"))).unwrap()
                == std::fs::read(merged.with_extension(ext)).unwrap(),
            "merged .{ext} differs from one process's"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bpe_train_and_convert_as_job_arrays_equal_one_process_for_any_rank_count() {
    let dir = tempdir("sharded", "arrays");
    let files = part_files(&dir, 500, 100);
    let inputs: Vec<&str> = files.iter().map(|f| s(f)).collect();
    let train = |output: &Path, extra: &[&str]| {
        let mut args = vec!["bpe", "train", "--vocab-size", "500", "--output", s(output)];
        args.extend_from_slice(extra);
        args.push("--input");
        args.extend(&inputs);
        lmforge(&args)
    };
    let convert = |tokenizer: &Path, prefix: &Path, extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--tokenizer",
            s(tokenizer),
            "--append-eod",
            "--output-prefix",
            s(prefix),
        ];
        args.extend_from_slice(extra);
        args.push("--input");
        args.extend(&inputs);
        lmforge(&args)
    };
    let whole = dir.join("whole.json");
    ok(&train(&whole, &[]));
    ok(&convert(&whole, &dir.join("one/corpus"), &[]));
    let data = |prefix: &Path| {
        ["bin", "idx"]
            .map(|ext| std::fs::read(format!("{}_text_document.{ext}", prefix.display())).unwrap())
    };
    let one = data(&dir.join("one/corpus"));
    // 7 ranks over 5 files: the two ranks without a file start no task.
    for ranks in ["1", "2", "7"] {
        let tokenizer = dir.join(format!("r{ranks}/tokenizer.json"));
        std::fs::create_dir_all(tokenizer.parent().unwrap()).unwrap();
        let trained = train(&tokenizer, &["--ranks", ranks, "--parallel", "2"]);
        ok(&trained);
        let tasks = ranks.parse::<usize>().unwrap().min(5);
        let stderr = String::from_utf8_lossy(&trained.stderr);
        assert!(
            stderr.contains(&format!("bpe-count: {tasks} of {tasks} tasks to run")),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&tokenizer).unwrap(),
            "tokenizer.json from {ranks} count ranks"
        );
        let prefix = dir.join(format!("r{ranks}/data/corpus"));
        let converted = convert(&tokenizer, &prefix, &["--ranks", ranks]);
        ok(&converted);
        let stderr = String::from_utf8_lossy(&converted.stderr);
        assert!(
            stderr.contains(&format!("convert: {tasks} of {tasks} tasks to run")),
            "{stderr}"
        );
        assert!(data(&prefix) == one, "{ranks} conversion ranks differ");
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{}.report.json", prefix.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(report["ranks"].as_u64(), Some(ranks.parse().unwrap()));
        // The malformed line corpus() plants is counted with its file:line, as by one process.
        assert_eq!(report["documents"].as_u64(), Some(499), "{report}");
        assert_eq!(report["skipped"].as_u64(), Some(1), "{report}");
        let example = report["skipped_examples"][0].as_str().unwrap_or_default();
        assert!(
            example.contains("part-00003.jsonl:42: malformed JSON"),
            "{report}"
        );
    }

    // A rank killed (its folder never committed) is the only one the re-run does.
    let tokenizer = dir.join("r2/tokenizer.json");
    let work = dir.join("r2/tokenizer.json.work");
    std::fs::remove_dir_all(work.join("bpe-count/task-00001")).unwrap();
    let again = train(&tokenizer, &["--ranks", "2"]);
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("bpe-count: 1 of 2 tasks to run"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&tokenizer).unwrap()
    );
    let prefix = dir.join("r2/data/corpus");
    let work = dir.join("r2/data/corpus.work");
    std::fs::remove_dir_all(work.join("convert/task-00000")).unwrap();
    let again = convert(&tokenizer, &prefix, &["--ranks", "2"]);
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("convert: 1 of 2 tasks to run"), "{stderr}");
    assert!(data(&prefix) == one, "after redoing one rank");

    // Faults that land where they say (`LMFORGE_FAULT`): a count or conversion task aborted
    // with its largest file half written, or complete but not renamed into place; the re-run
    // gives the same bytes and leaves nothing hidden.
    let program = env!("CARGO_BIN_EXE_lmforge");
    let faulty = |args: Vec<&str>, target: &str, point: &str| {
        let out = Command::new(program)
            .args(args)
            .env("LMFORGE_FAULT", format!("{target}:{point}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{target}:{point} did not fail");
    };
    let hidden = |folder: &Path| -> Vec<std::ffi::OsString> {
        std::fs::read_dir(folder)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect()
    };
    let count_work = dir.join("r2/tokenizer.json.work");
    for point in ["mid-write", "before-rename"] {
        std::fs::remove_dir_all(count_work.join("bpe-count/task-00000")).unwrap();
        let mut args = vec![
            "bpe",
            "train",
            "--vocab-size",
            "500",
            "--output",
            s(&tokenizer),
        ];
        args.extend(["--ranks", "2", "--input"]);
        args.extend(&inputs);
        faulty(args, "bpe-count/task-00000", point);
        let log = count_work.join("logs/bpe-count/task-00000.log");
        let log = std::fs::read_to_string(log).unwrap();
        assert!(log.contains("LMFORGE_FAULT: aborting at"), "{log}");
        ok(&train(&tokenizer, &["--ranks", "2"]));
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&tokenizer).unwrap(),
            "bpe count after a fault {point}"
        );
        assert!(hidden(&count_work.join("bpe-count")).is_empty(), "{point}");

        std::fs::remove_dir_all(work.join("convert/task-00001")).unwrap();
        let mut args = vec!["convert", "--tokenizer", s(&tokenizer), "--append-eod"];
        args.extend(["--output-prefix", s(&prefix), "--ranks", "2", "--input"]);
        args.extend(&inputs);
        faulty(args, "convert/task-00001", point);
        let log = std::fs::read_to_string(work.join("logs/convert/task-00001.log")).unwrap();
        assert!(log.contains("LMFORGE_FAULT: aborting at"), "{log}");
        ok(&convert(&tokenizer, &prefix, &["--ranks", "2"]));
        assert!(data(&prefix) == one, "convert after a fault {point}");
        assert!(hidden(&work.join("convert")).is_empty(), "{point}");
    }

    // The same work folder with another rank count is refused, naming the difference.
    let refused = convert(&tokenizer, &prefix, &["--ranks", "3"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("2 ranks there, 3 here"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
