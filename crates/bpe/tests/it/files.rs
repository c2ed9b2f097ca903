//! File formats: roundtrips through each, and every damaged file is an error that names the
//! file, never a panic.

use std::sync::LazyLock;

use lmforge_bpe::{Allowed, Bpe, BpeTrainer, pretokenize};
use proptest::prelude::*;

static BPE: LazyLock<Bpe> = LazyLock::new(|| {
    let mut trainer = BpeTrainer::builder()
        .vocab_size(500)
        .special_tokens(["<|endoftext|>", "<pad>"])
        .build()
        .unwrap();
    trainer.feed(&crate::corpus_texts(30_000));
    trainer.train().unwrap().0
});

const SAMPLE: &str = "Le chat, el gato & the cat — 2024 ! <|endoftext|><pad>";

fn ids(bpe: &Bpe) -> Vec<u32> {
    bpe.encode(SAMPLE, Allowed::All).unwrap()
}

#[test]
fn tokenizer_json_roundtrips() {
    let json = BPE.to_tokenizer_json();
    let again = Bpe::from_tokenizer_json(json.as_bytes(), "tokenizer.json").unwrap();
    assert_eq!(ids(&again), ids(&BPE));
    assert_eq!(again.to_tokenizer_json(), json, "writing is deterministic");
}

#[test]
fn behind_the_shared_tokenizer_trait() {
    use lmforge_tokenizer::{Kind, Tokenizer};
    let json = BPE.to_tokenizer_json();
    assert_eq!(
        Kind::of_tokenizer_json(json.as_bytes(), "t.json").unwrap(),
        Kind::Bpe
    );
    let t: &dyn Tokenizer = &*BPE;
    assert_eq!(t.encode(SAMPLE).unwrap(), ids(&BPE));
    assert_eq!(t.encode_batch(&[SAMPLE]).unwrap(), [ids(&BPE)]);
    assert_eq!(t.decode(&ids(&BPE)).unwrap(), SAMPLE);
    assert_eq!(t.eod_id(), BPE.special_id("<|endoftext|>"));
    assert_eq!(t.token_id("<pad>"), BPE.special_id("<pad>"));
    assert_eq!(t.token_id("e"), BPE.token_id(b"e"));
    assert_eq!(t.vocab_size(), 500);
}

#[test]
fn tokenizer_json_reads_both_merge_spellings() {
    let json = BPE.to_tokenizer_json();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let merges = value["model"]["merges"].as_array_mut().unwrap();
    for m in merges.iter_mut() {
        let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
        *m = serde_json::json!([a, b]);
    }
    let pairs = serde_json::to_vec(&value).unwrap();
    let again = Bpe::from_tokenizer_json(&pairs, "pairs.json").unwrap();
    assert_eq!(ids(&again), ids(&BPE));
}

#[test]
fn vocab_merges_roundtrip() {
    let dir = tempdir("vocab-merges");
    BPE.save_vocab_merges(&dir).unwrap();
    let again = Bpe::from_vocab_merges_files(
        dir.join("vocab.json"),
        dir.join("merges.txt"),
        &["<|endoftext|>", "<pad>"],
        pretokenize::GPT2,
    )
    .unwrap();
    assert_eq!(ids(&again), ids(&BPE));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn gpt2_converts_to_every_format_with_the_same_ids() {
    let Some(gpt2) = crate::oracle::load("gpt2") else {
        return;
    };
    let text = "Hello world, ça va? ¿Qué tal? 日本語 <|endoftext|>";
    let want = gpt2.encode(text, Allowed::All).unwrap();
    let json = Bpe::from_tokenizer_json(gpt2.to_tokenizer_json().as_bytes(), "gpt2.json").unwrap();
    assert_eq!(json.encode(text, Allowed::All).unwrap(), want);
    let dir = tempdir("gpt2");
    gpt2.save_vocab_merges(&dir).unwrap();
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    assert!(
        merges.starts_with("#version: 0.2\nĠ t\nĠ a\nh e\n"),
        "GPT-2's own merges.txt order"
    );
    let vm = Bpe::from_vocab_merges_files(
        dir.join("vocab.json"),
        dir.join("merges.txt"),
        &["<|endoftext|>"],
        pretokenize::GPT2,
    )
    .unwrap();
    assert_eq!(vm.encode(text, Allowed::All).unwrap(), want);
    assert_eq!(vm.special_id("<|endoftext|>"), Some(50256));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tiktoken_file_encodes_like_the_merges() {
    let mut trainer = BpeTrainer::builder().vocab_size(8000).build().unwrap();
    trainer.feed(&crate::corpus_texts(1_000_000));
    let (bpe, _) = trainer.train().unwrap();
    let ranks = bpe.to_tiktoken();
    let eot = bpe.special_id("<|endoftext|>").unwrap();
    let tk = Bpe::from_tiktoken(
        ranks.as_bytes(),
        "t.tiktoken",
        &[("<|endoftext|>", eot)],
        pretokenize::GPT2,
    )
    .unwrap();
    let texts = crate::corpus_texts(300_000);
    let (mut same, mut total) = (0, 0);
    for text in texts.iter().flat_map(|t| t.lines()) {
        total += 1;
        same += usize::from(tk.encode_ordinary(text) == bpe.encode_ordinary(text));
    }
    assert_eq!(same, total, "lines encoded alike under tiktoken's ranking");
}

#[test]
fn damaged_files_are_errors_naming_the_place() {
    let json = BPE.to_tokenizer_json();
    let cases: Vec<(String, &str)> = vec![
        (json[..json.len() / 2].to_string(), "line"),
        (
            json.replacen("\"type\": \"BPE\"", "\"type\": \"WordPiece\"", 1),
            "model of type WordPiece",
        ),
        (
            json.replacen("\"merges\": [", "\"merges\": [\"nope\",", 1),
            "model.merges[0]",
        ),
        (
            json.replacen("\"Ġ\": ", "\"Ġ\": 999999, \"unused\": ", 1),
            "model.vocab",
        ),
        ("[]".into(), "not a JSON object"),
    ];
    for (data, needle) in cases {
        let err = Bpe::from_tokenizer_json(data.as_bytes(), "broken.json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("broken.json"), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let err = Bpe::from_tiktoken(
        b"IQ== 0\nnot-base64! 1\n",
        "x.tiktoken",
        &[],
        pretokenize::GPT2,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("x.tiktoken: line 2"), "{err}");
    let err = Bpe::from_tokenizer_json_file("/nonexistent/tokenizer.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
}

#[test]
fn saving_replaces_the_file_whole() {
    let dir = tempdir("save");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, "old").unwrap();
    BPE.save(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        BPE.to_tokenizer_json()
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-bpe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn mutated_tokenizer_json_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut data = BPE.to_tokenizer_json().into_bytes();
        let i = at.index(data.len());
        data[i] = byte;
        let _ = Bpe::from_tokenizer_json(&data, "m.json");
        data.truncate(cut.index(data.len()));
        prop_assert!(Bpe::from_tokenizer_json(&data, "t.json").is_err());
    }

    #[test]
    fn mutated_tiktoken_and_merges_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut ranks = String::new();
        for (id, bytes) in (0..BPE.vocab_size() as u32 - 2).filter_map(|id| BPE.token_bytes(id).map(|b| (id, b))) {
            use base64::Engine;
            ranks.push_str(&format!("{} {id}\n", base64::engine::general_purpose::STANDARD.encode(bytes)));
        }
        let mut data = ranks.into_bytes();
        let i = at.index(data.len());
        data[i] = byte;
        let _ = Bpe::from_tiktoken(&data, "m.tiktoken", &[], pretokenize::GPT2);
        let _ = Bpe::from_vocab_merges(&data, "v.json", &data, "m.txt", &[], pretokenize::GPT2);
    }
}
