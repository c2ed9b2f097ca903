//! `lmforge bpe` as a user runs it: train from the files users have, encode, decode, convert,
//! and clear errors for bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lmforge;

pub(crate) fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-cli-bpe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn run_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_encode_decode_from_jsonl_gz_and_text() {
    let dir = dir("roundtrip");
    let jsonl = dir.join("corpus.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&jsonl).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..200 {
        writeln!(
            gz,
            "{}",
            serde_json::json!({"text": format!("le chat numéro {i} dort. el gato duerme.")})
        )
        .unwrap();
    }
    writeln!(gz, "{{broken json").unwrap();
    writeln!(gz, "{{\"other\": 1}}").unwrap();
    gz.finish().unwrap();
    let text = dir.join("notes.txt.zst");
    let notes = b"the cat sleeps\nthe dog sleeps\n\xff\xfe not UTF-8\n";
    std::fs::write(&text, zstd::encode_all(&notes[..], 3).unwrap()).unwrap();
    let out_json = dir.join("tokenizer.json");
    let out = lmforge(&[
        "bpe",
        "train",
        "--input",
        s(&jsonl),
        s(&text),
        "--vocab-size",
        "300",
        "--special-tokens",
        "<|endoftext|>,<pad>",
        "--output",
        s(&out_json),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corpus.jsonl.gz:201: malformed JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("corpus.jsonl.gz:202: no string field \"text\""),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.report.json")).unwrap())
            .unwrap();
    assert_eq!(report["vocab_size"], 300);
    assert_eq!(report["input"]["texts"], 202);
    assert_eq!(report["input"]["skipped"], 3);

    let lines = "le chat dort\n¿el gato? <|endoftext|>\n";
    let enc = run_with_stdin(
        &[
            "bpe",
            "encode",
            "--tokenizer",
            s(&out_json),
            "--special",
            "allow",
        ],
        lines,
    );
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let ids = String::from_utf8(enc.stdout).unwrap();
    assert_eq!(ids.lines().count(), 2);
    assert!(ids.lines().nth(1).unwrap().ends_with(" 298"), "{ids}");
    let dec = run_with_stdin(&["bpe", "decode", "--tokenizer", s(&out_json)], &ids);
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert_eq!(String::from_utf8(dec.stdout).unwrap(), lines);

    // Special-token text is refused by default, naming the line.
    let enc = run_with_stdin(&["bpe", "encode", "--tokenizer", s(&out_json)], lines);
    assert!(!enc.status.success());
    assert!(String::from_utf8_lossy(&enc.stderr).contains("<stdin>:2"));

    // Converted to vocab.json + merges.txt, the same ids.
    let vm = dir.join("vm/");
    let conv = lmforge(&[
        "bpe",
        "convert",
        "--tokenizer",
        s(&out_json),
        "--output",
        s(&vm),
    ]);
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let enc2 = run_with_stdin(
        &["bpe", "encode", "--tokenizer", s(&vm), "--special", "text"],
        "le chat dort\n",
    );
    assert_eq!(
        String::from_utf8(enc2.stdout).unwrap().trim(),
        ids.lines().next().unwrap()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_training_input_gets_a_clear_error() {
    let dir = dir("errors");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let out_json = dir.join("tokenizer.json");
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--input", s(&empty)], "nothing to train on"),
        (
            vec!["--input", "/nonexistent/corpus.txt"],
            "/nonexistent/corpus.txt: No such file",
        ),
        (
            vec!["--input", s(&empty), "--vocab-size", "100"],
            "below 256 bytes + 1 special tokens",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["bpe", "train", "--output", s(&out_json)];
        all.extend(args);
        let out = lmforge(&all);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{message:?} not in {stderr}");
        assert!(!out_json.exists(), "nothing written on failure");
    }
    let dec = run_with_stdin(
        &["bpe", "decode", "--tokenizer", "/nonexistent/t.json"],
        "1 2\n",
    );
    assert!(String::from_utf8_lossy(&dec.stderr).contains("/nonexistent/t.json"));
    std::fs::remove_dir_all(dir).unwrap();
}
