//! Oracle 1: with the real GPT-2, cl100k_base and o200k_base vocabularies, ids equal
//! tiktoken's (the committed fixture `test_data/tiktoken_reference.json.gz`, written by
//! `benches/peers/tiktoken_reference.py`).

use lmforge_bpe::{Allowed, Bpe, Flavour};
use serde_json::Value;

use crate::{fixture, read_maybe_gz};

fn reference() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data/tiktoken_reference.json.gz");
    serde_json::from_slice(&read_maybe_gz(&path)).unwrap()
}

pub fn load(name: &str) -> Option<Bpe> {
    let file = match name {
        "gpt2" => "gpt2.tiktoken",
        "cl100k_base" => "cl100k_base.tiktoken.gz",
        "o200k_base" => "o200k_base.tiktoken.gz",
        _ => unreachable!(),
    };
    let path = fixture(file)?;
    let flavour: Flavour = name.parse().unwrap();
    Some(Bpe::from_tiktoken_flavour(&read_maybe_gz(&path), file, flavour).unwrap())
}

fn check(name: &str) {
    let Some(bpe) = load(name) else { return };
    let reference = reference();
    let texts = reference["texts"].as_array().unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut mismatches = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        let want = ids(&reference[name][i]);
        let got = bpe.encode_ordinary(text);
        if got != want {
            mismatches.push(format!(
                "text {i} {text:?}:\n  got  {got:?}\n  want {want:?}"
            ));
        }
        assert_eq!(bpe.count(text), want.len());
        let want_allowed = ids(&reference[format!("{name}/allowed_all")][i]);
        assert_eq!(
            bpe.encode(text, Allowed::All).unwrap(),
            want_allowed,
            "text {i}"
        );
        assert_eq!(bpe.decode_bytes(&got).unwrap(), text.as_bytes());
    }
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} texts differ from tiktoken:\n{}",
        mismatches.len(),
        texts.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
}

#[test]
fn gpt2_ids_equal_tiktoken() {
    check("gpt2");
}

#[test]
fn cl100k_ids_equal_tiktoken() {
    check("cl100k_base");
}

#[test]
fn o200k_ids_equal_tiktoken() {
    check("o200k_base");
}

#[test]
fn disallowed_special_is_an_error_naming_it() {
    let Some(bpe) = load("gpt2") else { return };
    let err = bpe.encode("hi <|endoftext|>", Allowed::None).unwrap_err();
    assert!(err.to_string().contains("<|endoftext|>"), "{err}");
    assert!(err.to_string().contains("byte 3"), "{err}");
    assert_eq!(
        bpe.encode("hi <|endoftext|>", Allowed::Only(&["<|endoftext|>"]))
            .unwrap(),
        [5303, 220, 50256]
    );
}
