//! `lmforge wordpiece` as a user runs it: train, encode through the file's own template,
//! truncation and padding, decode, and clear errors for bad input.

use std::io::Write;

use crate::bpe::{dir, run_with_stdin, s};
use crate::lmforge;

#[test]
fn train_encode_decode() {
    let dir = dir("wordpiece");
    let corpus = dir.join("corpus.jsonl");
    let mut f = std::fs::File::create(&corpus).unwrap();
    for i in 0..300 {
        let text = format!("Le Chat numéro {i} dort. El gato duerme, ¿verdad? The cat sleeps.");
        writeln!(f, "{}", serde_json::json!({ "text": text })).unwrap();
    }
    writeln!(f, "{{broken").unwrap();
    drop(f);
    let tokenizer = dir.join("bert.json");
    let vocab = dir.join("vocab.txt");
    let out = lmforge(&[
        "wordpiece",
        "train",
        "--input",
        s(&corpus),
        "--vocab-size",
        "100",
        "--lowercase",
        "--max-length",
        "8",
        "--output",
        s(&tokenizer),
        "--vocab-txt",
        s(&vocab),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("corpus.jsonl:301"),
        "the bad line is named: {stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bert.report.json")).unwrap()).unwrap();
    assert_eq!(report["vocab_size"], 100);
    assert_eq!(report["input"]["skipped"], 1);
    assert_eq!(
        std::fs::read_to_string(&vocab).unwrap().lines().count(),
        100
    );

    // The file's truncation (8, [CLS] and [SEP] included) applies; --plain leaves it out.
    let out = run_with_stdin(
        &["wordpiece", "encode", "--tokenizer", s(&tokenizer)],
        "le chat\nel gato duerme y el chat dort y el gato duerme\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<u32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines[1].len(), 8);
    assert_eq!(lines[0][0], 2, "[CLS]");
    let ids: String = lines[0]
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let out = run_with_stdin(&["wordpiece", "decode", "--tokenizer", s(&tokenizer)], &ids);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "le chat\n");
    // vocab.txt encodes like the tokenizer.json (uncased by default).
    let plain = |t: &str| {
        let out = run_with_stdin(
            &["wordpiece", "encode", "--plain", "--tokenizer", t],
            "Le CHAT dort",
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(plain(s(&vocab)), plain(s(&tokenizer)));
    // And converted to tokenizer.json, it is the same tokenizer again.
    let converted = dir.join("converted.json");
    let out = lmforge(&[
        "wordpiece",
        "convert",
        "--tokenizer",
        s(&vocab),
        "--output",
        s(&converted),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(plain(s(&converted)), plain(s(&tokenizer)));
    // The exact likelihood gain trains too: another vocabulary from the same corpus.
    let gain = dir.join("gain.json");
    let gain_vocab = dir.join("gain.txt");
    let out = lmforge(&[
        "wordpiece",
        "train",
        "--input",
        s(&corpus),
        "--vocab-size",
        "100",
        "--lowercase",
        "--score",
        "gain",
        "--output",
        s(&gain),
        "--vocab-txt",
        s(&gain_vocab),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        std::fs::read(&gain).unwrap(),
        std::fs::read(&tokenizer).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = dir("wordpiece-bad");
    let missing = lmforge(&[
        "wordpiece",
        "encode",
        "--tokenizer",
        s(&dir.join("nope.json")),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.json"));
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, "[UNK]\nchat\n").unwrap();
    let out = run_with_stdin(
        &["wordpiece", "encode", "--tokenizer", s(&vocab)],
        "chat\n\u{0}ok\n",
    );
    assert!(out.status.success());
    let mut bytes = b"chat\n".to_vec();
    bytes.extend_from_slice(b"\xff\n");
    let input = dir.join("in.txt");
    std::fs::write(&input, bytes).unwrap();
    let out = lmforge(&[
        "wordpiece",
        "encode",
        "--tokenizer",
        s(&vocab),
        "--input",
        s(&input),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in.txt:2: invalid UTF-8"));
    let out = run_with_stdin(&["wordpiece", "decode", "--tokenizer", s(&vocab)], "0 7\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("id 7 at position 1"));
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let out = lmforge(&[
        "wordpiece",
        "train",
        "--input",
        s(&empty),
        "--output",
        s(&dir.join("t.json")),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to train on"));
    assert!(!dir.join("t.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
