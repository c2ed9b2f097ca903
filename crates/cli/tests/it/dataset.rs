//! `lmforge convert` and `lmforge dataset` as a user runs them: a BPE trained by `lmforge bpe
//! train`, a corpus with a bad line, Megatron's file names, merge, samples, clear errors.

use std::io::Write;

use crate::bpe::{dir, s};
use crate::{lmforge, ok};

#[test]
fn convert_inspect_merge_samples() {
    let dir = dir("convert");
    let corpus = dir.join("corpus.jsonl");
    let mut f = std::fs::File::create(&corpus).unwrap();
    for i in 0..200 {
        let text = format!("Il était une fois une tortue numéro {i} qui vivait dans un jardin.");
        writeln!(f, "{}", serde_json::json!({ "text": text, "id": i })).unwrap();
    }
    writeln!(f, "{{\"id\": 7}}").unwrap();
    drop(f);
    let tokenizer = dir.join("tok.json");
    ok(&lmforge(&[
        "bpe",
        "train",
        "--input",
        s(&corpus),
        "--vocab-size",
        "300",
        "--output",
        s(&tokenizer),
    ]));
    let prefix = dir.join("data/corpus");
    let out = lmforge(&[
        "convert",
        "--input",
        s(&corpus),
        "--tokenizer",
        s(&tokenizer),
        "--output-prefix",
        s(&prefix),
        "--append-eod",
        "--workers",
        "2",
    ]);
    let stdout = ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("corpus.jsonl:201: no field \"text\""));
    assert!(stdout.contains("200 documents"), "{stdout}");
    let data = dir.join("data/corpus_text_document");
    assert!(data.with_extension("bin").exists() && data.with_extension("idx").exists());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/corpus.report.json")).unwrap())
            .unwrap();
    assert_eq!(
        (report["documents"].as_u64(), report["skipped"].as_u64()),
        (Some(200), Some(1))
    );

    let stdout = ok(&lmforge(&[
        "dataset",
        "inspect",
        "--data-path",
        s(&data),
        "--tokenizer",
        s(&tokenizer),
        "--show",
        "1",
    ]));
    assert!(stdout.contains("\"documents\": 200"), "{stdout}");
    assert!(
        stdout.contains("tortue numéro 0 qui vivait dans un jardin.<|endoftext|>"),
        "{stdout}"
    );

    let merged = dir.join("merged");
    let stdout = ok(&lmforge(&[
        "dataset",
        "merge",
        "--input",
        s(&data),
        s(&data),
        "--output-prefix",
        s(&merged),
    ]));
    assert!(stdout.contains("400 documents"), "{stdout}");
    let merge_report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("merged.report.json")).unwrap()).unwrap();
    assert_eq!(merge_report["output"]["documents"], 400);

    let stdout = ok(&lmforge(&[
        "dataset",
        "samples",
        "--data-path",
        s(&merged),
        "--seq-length",
        "32",
        "--split",
        "9,1",
        "--micro-batch-size",
        "4",
        "--batches",
        "10",
        "--tokenizer",
        s(&tokenizer),
    ]));
    assert!(stdout.contains("samples of 32 tokens"), "{stdout}");
    assert!(
        dir.join("merged_cache").is_dir(),
        "index cache beside the data"
    );
}

#[test]
fn bad_arguments_are_named() {
    let dir = dir("convert-errors");
    let out = lmforge(&[
        "convert",
        "--input",
        s(&dir.join("missing.jsonl")),
        "--vocab-file",
        "v.json",
        "--merge-file",
        "m.txt",
        "--output-prefix",
        s(&dir.join("x")),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("v.json"), "{stderr}");
    let out = lmforge(&["convert", "--input", "a.jsonl", "--output-prefix", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokenizer"));
    let idx = dir.join("broken.idx");
    std::fs::write(&idx, b"MMIDIDX\x00\x00garbage").unwrap();
    std::fs::write(dir.join("broken.bin"), b"").unwrap();
    let out = lmforge(&["dataset", "inspect", "--data-path", s(&dir.join("broken"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("broken.idx"),
        "{stderr}"
    );
}
