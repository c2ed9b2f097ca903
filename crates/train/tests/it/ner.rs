//! Entity scores against `seqeval` itself: 60 seeded cases written by
//! `benches/peers/seqeval_fixture.py` (seqeval 1.2.2 from PyPI), and arbitrary tags never panic.

use lmforge_train::ner::{entities, score};
use proptest::prelude::*;

#[test]
fn scores_equal_seqeval_on_its_own_cases() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seqeval.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), 60);
    let sentences =
        |v: &serde_json::Value| -> Vec<Vec<String>> { serde_json::from_value(v.clone()).unwrap() };
    for (i, case) in cases.iter().enumerate() {
        let s = score(&sentences(&case["true"]), &sentences(&case["pred"]));
        for (ours, key) in [
            (s.precision, "precision"),
            (s.recall, "recall"),
            (s.f1, "f1"),
        ] {
            let want = case[key].as_f64().unwrap();
            assert!(
                (ours - want).abs() < 1e-12,
                "case {i} {key}: {ours} against {want}"
            );
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_tags_chunk_within_bounds(
        tags in proptest::collection::vec(proptest::collection::vec("[BIESO.X]?(-[A-Z]{0,3})?", 0..10), 0..5),
    ) {
        let total: usize = tags.iter().map(|s| s.len() + 1).sum();
        for (_, first, last) in entities(&tags) {
            prop_assert!(first <= last && last <= total);
        }
        let s = score(&tags, &tags);
        prop_assert!(s.correct == s.relevant && s.predicted == s.relevant);
    }
}
