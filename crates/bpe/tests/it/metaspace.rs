//! Oracle for SentencePiece-style BPE (`MetaspaceBpe`): the Rust `tokenizers` crate on the
//! committed fixtures (`benches/peers/tokenizer_fixtures.py`), ids and decoded text alike, on
//! chosen and on arbitrary strings.

use lmforge_bpe::MetaspaceBpe;
use lmforge_tokenizer::Tokenizer;
use proptest::prelude::*;

const FIXTURES: [&str; 3] = [
    "spm-llama.json",
    "spm-metaspace.json",
    "spm-normalized.json",
];

fn load(name: &str) -> (MetaspaceBpe, tokenizers::Tokenizer) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let data = std::fs::read(&path).unwrap();
    let ours = MetaspaceBpe::from_tokenizer_json(&data, name).unwrap();
    let hf = tokenizers::Tokenizer::from_bytes(&data).unwrap();
    (ours, hf)
}

fn check(ours: &MetaspaceBpe, hf: &tokenizers::Tokenizer, text: &str, name: &str) {
    let want = hf.encode(text, false).unwrap().get_ids().to_vec();
    let got = ours.encode(text).unwrap();
    assert_eq!(got, want, "{name}: ids of {text:?}");
    assert_eq!(
        ours.decode(&got).unwrap(),
        hf.decode(&got, false).unwrap(),
        "{name}: text of {text:?}"
    );
}

#[test]
fn sentencepiece_style_files_encode_and_decode_as_hugging_face() {
    let texts = [
        "",
        " ",
        "Il était une fois une tortue",
        "  deux espaces  et  plus   ",
        "emoji 👍🏽 and 日本語, bytes spelled as <0x..> tokens",
        "<s>a document</s><s>another",
        "un <mask> au milieu, <mask>collé et  <mask>  espacé",
        "\ttab\nnewline\r\n",
        "ñ Ñ ü ß ø œ",
        "x",
        "<unk>",
        "une tortue, tortue et tortues</p> puis </p>fin",
        "tortue</p>tortue",
    ];
    for name in FIXTURES {
        let (ours, hf) = load(name);
        assert_eq!(ours.vocab_size(), hf.get_vocab_size(true), "{name}");
        for text in texts {
            check(&ours, &hf, text, name);
        }
        assert_eq!(ours.token_id("</s>"), Some(2));
        assert_eq!(ours.eod_id(), Some(2));
    }
}

#[test]
fn what_is_not_computed_is_refused_by_name() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm-llama.json");
    let text = std::fs::read_to_string(path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["normalizer"] = serde_json::json!({"type": "NFKC"});
    let err = MetaspaceBpe::from_tokenizer_json(json.to_string().as_bytes(), "t.json").unwrap_err();
    assert!(err.to_string().contains("normalizer of type NFKC"), "{err}");
    json["normalizer"] =
        serde_json::json!({"type": "Replace", "pattern": {"Regex": " +"}, "content": "▁"});
    let err = MetaspaceBpe::from_tokenizer_json(json.to_string().as_bytes(), "t.json").unwrap_err();
    assert!(err.to_string().contains("regex"), "{err}");
    // Arbitrary bytes never panic.
    for junk in [&b"{"[..], b"[]", b"{\"model\": {}}", b"\xff\xfe"] {
        assert!(MetaspaceBpe::from_tokenizer_json(junk, "junk.json").is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_match_hugging_face(
        text in "(\\PC|[ \t\n]|<s>|</s>|<mask>|▁| tortue|tortue|</p>){0,40}",
    ) {
        for name in FIXTURES {
            let (ours, hf) = load(name);
            check(&ours, &hf, &text, name);
        }
    }

    #[test]
    fn arbitrary_ids_decode_as_hugging_face(ids in proptest::collection::vec(0u32..601, 0..40)) {
        for name in FIXTURES {
            let (ours, hf) = load(name);
            prop_assert_eq!(ours.decode(&ids).unwrap(), hf.decode(&ids, false).unwrap());
        }
    }
}
