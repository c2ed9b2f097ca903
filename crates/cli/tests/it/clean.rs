//! `lmforge clean` as a user runs it: the default corpus with the seed's languages and
//! blacklists, `--explain`, and flags that are errors.

use crate::bpe::{dir, s};
use crate::lmforge;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn clean_the_default_corpus() {
    let dir = dir("clean");
    let out_dir = dir.join("clean");
    let out = lmforge(&[
        "clean",
        "--input",
        s(&root().join("datasets/default")),
        "--output",
        s(&out_dir),
        "--languages",
        "fr,es",
        "--blacklist",
        s(&root().join("datasets/blacklists")),
        "--keep-fields",
        "source",
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("16 bands x 8 rows"), "{stderr}");
    for needle in [
        "exact_dedup",
        "near_dedup",
        "language",
        "blacklist",
        "quality",
        "languages (written/detected)",
    ] {
        assert!(stdout.contains(needle), "{needle} not in\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["documents_in"].as_u64(), Some(801));
    assert!(report["documents_out"].as_u64().unwrap() > 400);
    assert!(out_dir.join("part-00000.jsonl.zst").exists());
    assert!(out_dir.join("duplicates.jsonl").exists());
    let first = lmforge_corpus::Reader::new(
        vec![out_dir.join("part-00000.jsonl.zst")],
        &["id", "text", "language", "source"],
    )
    .next()
    .unwrap()
    .unwrap();
    assert!(["fr", "es"].contains(&first.fields[2].as_str()));
    assert!(!first.fields[3].is_empty());
}

#[test]
fn explain_and_bad_flags() {
    let out = lmforge(&[
        "clean",
        "--explain",
        "--languages",
        "fr",
        "--blacklist",
        s(&root().join("datasets/blacklists")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "1. exact dedup",
        "16 bands x 8 rows",
        "keep fr",
        "fr.txt: 91 terms, for fr",
        "6. quality (Gopher)",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    let dir = dir("clean-bad");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"x\"}\n").unwrap();
    let output = dir.join("o");
    for (args, needle) in [
        (vec!["--languages", "tlh"], "unknown language \"tlh\""),
        (vec!["--minhash-threshold", "1.5"], "minhash.threshold"),
        (
            vec!["--bands", "20", "--rows", "8"],
            "does not fit 128 permutations",
        ),
        (vec!["--dedup", "fuzzy"], "fuzzy"),
    ] {
        let mut all = vec!["clean", "--input", s(&input), "--output", s(&output)];
        all.extend(args);
        let out = lmforge(&all);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
    }
    assert!(!output.exists());
}
