//! Sharded runs: any number of ranks gives the one-process run's bytes, a re-run redoes only
//! what is missing, and outputs of another plan are refused by name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use lmforge_clean::sharded::{Plan, Step, run_task, task_dir};
use lmforge_clean::synthetic::{self, Options};
use lmforge_clean::{Config, Dedup, OutputFormat};

use crate::{run, temp_dir};

/// A corpus that crosses every part boundary there is: a plain jsonl cut by byte range (ids
/// missing on some lines, so `file:line` ids must be numbered right), malformed lines, exact
/// and near copies across files, a zstd file (one part) and a parquet file cut by row group.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let docs = synthetic::generate(&Options {
        documents: 3000,
        seed: 11,
        ..Options::default()
    });
    let line = |i: usize, d: &synthetic::Document| {
        if i % 7 == 3 {
            serde_json::json!({"text": d.text})
        } else {
            serde_json::json!({"id": d.id, "text": d.text})
        }
    };
    let plain = dir.join("a.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&plain).unwrap());
    for (i, d) in docs[..1500].iter().enumerate() {
        writeln!(out, "{}", line(i, d)).unwrap();
        if i % 97 == 5 {
            writeln!(out, "{{\"text\": broken").unwrap();
            writeln!(out).unwrap();
        }
        if i % 113 == 7 {
            // An exact copy (case and spacing differ) of an earlier document.
            let copy = docs[i / 2].text.to_uppercase().replace(' ', "  ");
            writeln!(out, "{}", serde_json::json!({"text": copy})).unwrap();
        }
    }
    drop(out);
    let mut zst = Vec::new();
    for (i, d) in docs[1500..2200].iter().enumerate() {
        writeln!(zst, "{}", line(i, d)).unwrap();
    }
    writeln!(zst, "{}", serde_json::json!({"text": docs[10].text})).unwrap();
    let zst_path = dir.join("b.jsonl.zst");
    std::fs::write(&zst_path, zstd::encode_all(zst.as_slice(), 3).unwrap()).unwrap();

    let parquet = dir.join("c.parquet");
    let texts: Vec<&str> = docs[2200..].iter().map(|d| d.text.as_str()).collect();
    let ids: Vec<&str> = docs[2200..].iter().map(|d| d.id.as_str()).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("text", Arc::new(StringArray::from(texts)) as ArrayRef),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let file = std::fs::File::create(&parquet).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    vec![plain, zst_path, parquet]
}

fn config(dedup: Dedup, format: OutputFormat) -> Config {
    Config {
        dedup,
        format,
        min_chars: 100,
        language: None,
        // Small parts and shards, so that both cut often.
        part_bytes: 60_000,
        shard_bytes: 150_000,
        ..Config::default()
    }
}

/// Every task of every step, in order, as the executors run them.
fn run_sharded(work: &Path, cancel: &AtomicBool) {
    let plan = Plan::read(work).unwrap();
    for step in Step::ALL {
        for task in 0..plan.tasks(step) {
            run_task(work, step, task, cancel).unwrap();
        }
    }
}

/// report.json without what measures the machine (times, memory, threads) or names the run.
fn counts(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
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
    let d = o["dedup"].as_object_mut().unwrap();
    for key in ["index_bytes", "index_bytes_per_document", "cluster_seconds"] {
        d.remove(key);
    }
    v
}

/// Every file but report.json, by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "report.json")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn any_rank_count_writes_the_one_process_bytes() {
    let dir = temp_dir("sharded");
    let inputs = corpus(&dir);
    let parts = lmforge_corpus::split(&inputs, 60_000).unwrap();
    assert!(parts.len() >= 8, "{} parts", parts.len());
    for (dedup, format) in [
        (Dedup::Minhash, OutputFormat::Jsonl),
        (Dedup::Exact, OutputFormat::Parquet),
        (Dedup::None, OutputFormat::Jsonl),
    ] {
        let single = dir.join(format!("single-{dedup:?}"));
        let report = run(config(dedup, format), &inputs, &single).unwrap();
        assert!(report.malformed.records > 10);
        if dedup == Dedup::Minhash {
            assert!(report.dedup.near_duplicates > 100, "{:?}", report.dedup);
        }
        if dedup != Dedup::None {
            assert!(report.dedup.exact_duplicates > 10, "{:?}", report.dedup);
        }
        assert!(report.outputs.len() > parts.len() / 2);
        let expected = files(&single);
        let expected_counts = counts(&single);
        for ranks in [1, 2, 3, 7] {
            let work = dir.join(format!("work-{dedup:?}-{ranks}"));
            let out = dir.join(format!("out-{dedup:?}-{ranks}"));
            Plan::new(config(dedup, format), &inputs, ranks, &out)
                .unwrap()
                .write(&work)
                .unwrap();
            run_sharded(&work, &AtomicBool::new(false));
            assert!(
                files(&out) == expected,
                "{dedup:?}, {ranks} ranks: output files differ from one process's"
            );
            assert_eq!(counts(&out), expected_counts, "{dedup:?}, {ranks} ranks");
            let sharded = lmforge_clean::sharded::report(&Plan::read(&work).unwrap()).unwrap();
            assert_eq!(sharded.sharded.unwrap().ranks, ranks);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rerun_redoes_only_missing_tasks_and_refuses_another_plan() {
    let dir = temp_dir("sharded-rerun");
    let inputs = corpus(&dir);
    let single = dir.join("single");
    run(
        config(Dedup::Minhash, OutputFormat::Jsonl),
        &inputs,
        &single,
    )
    .unwrap();
    let work = dir.join("work");
    let out = dir.join("out");
    let plan = Plan::new(
        config(Dedup::Minhash, OutputFormat::Jsonl),
        &inputs,
        3,
        &out,
    )
    .unwrap();
    plan.write(&work).unwrap();
    run_sharded(&work, &AtomicBool::new(false));
    for step in Step::ALL {
        assert!(plan.pending(&work, step).unwrap().is_empty());
    }

    // A task killed mid-way: its folder gone, a half-written hidden one left behind.
    let killed = task_dir(&work, Step::Filter, 1);
    std::fs::remove_dir_all(&killed).unwrap();
    let stale = work.join("filter/.task-00001.tmp-4242");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("part-00000.jsonl.zst"), b"half").unwrap();
    let merged = task_dir(&work, Step::Merge, 0);
    std::fs::remove_dir_all(&merged).unwrap();
    assert_eq!(plan.pending(&work, Step::Filter).unwrap(), [1]);
    let signatures = task_dir(&work, Step::Signatures, 0).join("done.json");
    let before = std::fs::metadata(&signatures).unwrap().modified().unwrap();
    // The merge cannot run before the filter rank it lacks.
    let e = run_task(&work, Step::Merge, 0, &AtomicBool::new(false)).unwrap_err();
    assert!(
        e.to_string()
            .contains("step `filter` task 1 has not finished"),
        "{e}"
    );
    run_sharded(&work, &AtomicBool::new(false));
    assert!(!stale.exists());
    assert_eq!(
        std::fs::metadata(&signatures).unwrap().modified().unwrap(),
        before,
        "finished tasks are not redone"
    );
    assert!(files(&out) == files(&single));

    // A rank's outputs from a run with another rank count are refused, naming them.
    let other = dir.join("work-other");
    Plan::new(
        config(Dedup::Minhash, OutputFormat::Jsonl),
        &inputs,
        2,
        &out,
    )
    .unwrap()
    .write(&other)
    .unwrap();
    run_task(&other, Step::Signatures, 0, &AtomicBool::new(false)).unwrap();
    let foreign = task_dir(&work, Step::Signatures, 0);
    std::fs::remove_dir_all(&foreign).unwrap();
    std::fs::rename(task_dir(&other, Step::Signatures, 0), &foreign).unwrap();
    let e = run_task(&work, Step::Exact, 0, &AtomicBool::new(false));
    assert!(e.is_ok(), "exact task 0 had finished: it is not re-run");
    std::fs::remove_dir_all(task_dir(&work, Step::Exact, 0)).unwrap();
    let e = run_task(&work, Step::Exact, 0, &AtomicBool::new(false)).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("signatures/task-00000") && message.contains("2 ranks there, 3 here"),
        "{message}"
    );
    // A plan with other parameters cannot take over the work folder.
    let e = Plan::new(config(Dedup::Exact, OutputFormat::Jsonl), &inputs, 3, &out)
        .unwrap()
        .write(&work)
        .unwrap_err();
    assert!(
        e.to_string().contains("different cleaning parameters"),
        "{e}"
    );
    // A changed input is named.
    let fresh = dir.join("work-changed");
    Plan::new(
        config(Dedup::Minhash, OutputFormat::Jsonl),
        &inputs,
        2,
        &out,
    )
    .unwrap()
    .write(&fresh)
    .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&inputs[0])
        .unwrap()
        .write_all(b"{\"text\": \"late\"}\n")
        .unwrap();
    let e = run_task(&fresh, Step::Signatures, 0, &AtomicBool::new(false)).unwrap_err();
    assert!(
        e.to_string().contains("a.jsonl") && e.to_string().contains("planned"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
