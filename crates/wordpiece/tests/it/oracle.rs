//! The committed reference of Python `tokenizers` with all-MiniLM-L6-v2
//! (`test_data/minilm_reference.json.gz`, written by `benches/peers/wordpiece_reference.py`):
//! ids, type ids, masks, offsets and decoded text must be reproduced exactly.

use lmforge_wordpiece::Encoding;
use serde_json::Value;

use crate::{minilm, read_maybe_gz};

/// Python's offsets count characters; ours count bytes.
fn char_offset(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

fn as_u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Byte offsets as Python's character offsets (type id 1: into the second text).
fn char_offsets(enc: &Encoding, text: &str, pair: Option<&str>) -> Vec<(usize, usize)> {
    enc.offsets
        .iter()
        .zip(&enc.type_ids)
        .map(|(&(s, e), &t)| {
            let source = if t == 1 { pair.unwrap() } else { text };
            (char_offset(source, s), char_offset(source, e))
        })
        .collect()
}

fn offsets_of(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

#[track_caller]
fn check_windows(ours: &[Encoding], theirs: &Value, text: &str, pair: Option<&str>, what: &str) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "overflowing windows of {what}");
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(o.ids, as_u32s(&t["ids"]), "window ids of {what}");
        assert_eq!(
            o.type_ids,
            as_u32s(&t["type_ids"]),
            "window type ids of {what}"
        );
        assert_eq!(
            char_offsets(o, text, pair),
            offsets_of(&t["offsets"]),
            "window offsets of {what}"
        );
        check_windows(&o.overflowing, &t["overflowing"], text, pair, what);
    }
}

#[test]
fn minilm_matches_python_tokenizers() {
    let Some((ours, _)) = minilm() else { return };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/minilm_reference.json.gz");
    let reference: Value = serde_json::from_slice(&read_maybe_gz(&path)).unwrap();
    let mut checked = 0;
    let mut windows = 0;
    for kind in ["single", "pair"] {
        for case in reference[kind].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let pair = case.get("pair").and_then(Value::as_str);
            let enc = match pair {
                Some(b) => ours.encode_pair(text, b).unwrap(),
                None => ours.encode(text).unwrap(),
            };
            let what = format!("{kind} {text:?} / {pair:?}");
            assert_eq!(enc.ids, as_u32s(&case["ids"]), "ids of {what}");
            assert_eq!(
                enc.type_ids,
                as_u32s(&case["type_ids"]),
                "type ids of {what}"
            );
            assert_eq!(
                enc.attention_mask,
                as_u32s(&case["attention_mask"]),
                "{what}"
            );
            assert_eq!(
                enc.special_tokens_mask,
                as_u32s(&case["special_tokens_mask"]),
                "{what}"
            );
            let offsets = char_offsets(&enc, text, pair);
            let expected = offsets_of(&case["offsets"]);
            assert_eq!(offsets, expected, "offsets of {what}");
            let words: Vec<Option<u32>> = case["word_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().map(|w| w as u32))
                .collect();
            assert_eq!(enc.word_ids, words, "word ids of {what}");
            check_windows(&enc.overflowing, &case["overflowing"], text, pair, &what);
            windows += enc.overflowing.len();
            assert_eq!(
                ours.decode(&enc.ids, true).unwrap(),
                case["decoded"].as_str().unwrap(),
                "decoded {what}"
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} cases in the reference");
    assert!(
        windows > 50,
        "only {windows} overflowing windows in the reference"
    );
}
