//! The committed reference of Python `tokenizers` with all-MiniLM-L6-v2
//! (`test_data/minilm_reference.json.gz`, written by `benches/peers/wordpiece_reference.py`):
//! ids, type ids, masks, offsets and decoded text must be reproduced exactly.

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

#[test]
fn minilm_matches_python_tokenizers() {
    let Some((ours, _)) = minilm() else { return };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/minilm_reference.json.gz");
    let reference: Value = serde_json::from_slice(&read_maybe_gz(&path)).unwrap();
    let mut checked = 0;
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
            let offsets: Vec<(usize, usize)> = enc
                .offsets
                .iter()
                .zip(&enc.type_ids)
                .map(|(&(s, e), &t)| {
                    let source = if t == 1 { pair.unwrap() } else { text };
                    (char_offset(source, s), char_offset(source, e))
                })
                .collect();
            let expected: Vec<(usize, usize)> = case["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o[0].as_u64().unwrap() as usize,
                        o[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            assert_eq!(offsets, expected, "offsets of {what}");
            let words: Vec<Option<u32>> = case["word_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().map(|w| w as u32))
                .collect();
            assert_eq!(enc.word_ids, words, "word ids of {what}");
            assert_eq!(
                ours.decode(&enc.ids, true).unwrap(),
                case["decoded"].as_str().unwrap(),
                "decoded {what}"
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} cases in the reference");
}
