//! The file formats: what is read, what is written, and damaged files as errors that name the
//! file and the field or line.

use lmforge_wordpiece::{BertNormalizer, Error, WordPiece};

fn small() -> WordPiece {
    let vocab = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "!",
    ];
    WordPiece::from_vocab(vocab.map(String::from).to_vec(), BertNormalizer::default()).unwrap()
}

#[track_caller]
fn json_error(json: &str) -> String {
    WordPiece::from_tokenizer_json(json.as_bytes(), "bad.json")
        .unwrap_err()
        .to_string()
}

/// The small tokenizer's JSON with one part replaced.
fn with(key: &str, value: serde_json::Value) -> String {
    let mut root: serde_json::Value = serde_json::from_str(&small().to_tokenizer_json()).unwrap();
    let mut target = &mut root;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        target = &mut target[*part];
    }
    target[parts[parts.len() - 1]] = value;
    root.to_string()
}

#[test]
fn damaged_tokenizer_json_names_file_and_field() {
    use serde_json::json;
    let cases = [
        ("{", "bad.json: line 1"),
        ("[]", "not a JSON object"),
        ("{}", "bad.json: model: missing"),
        (
            &with("model.type", json!("BPE")),
            "unsupported model of type \"BPE\"",
        ),
        (
            &with("model.vocab", json!([1])),
            "model.vocab: missing or not an object",
        ),
        (
            &with("model.vocab", json!({"a": -1, "[UNK]": 0})),
            "model.vocab[\"a\"]",
        ),
        (
            &with("model.vocab", json!({"a": 0})),
            "unk_token: \"[UNK]\" is not in the vocabulary",
        ),
        (
            &with("model.vocab", json!({"a": 0, "[UNK]": 0})),
            "id 0 is already",
        ),
        (
            &with("model.unk_token", json!(7)),
            "model.unk_token: not a string",
        ),
        (
            &with("normalizer.type", json!("NFKC")),
            "unsupported normalizer \"NFKC\"",
        ),
        (
            &with("normalizer.lowercase", json!("yes")),
            "normalizer.lowercase: not a boolean",
        ),
        (
            &with("pre_tokenizer", json!(null)),
            "unsupported a missing pre_tokenizer",
        ),
        (
            &with("pre_tokenizer.type", json!("Whitespace")),
            "unsupported pre_tokenizer",
        ),
        (
            &with("decoder.type", json!("ByteLevel")),
            "unsupported decoder",
        ),
        (
            &with("added_tokens", json!([{"id": 1}])),
            "added_tokens[0].content",
        ),
        (
            &with("added_tokens", json!([{"id": 1, "content": 5}])),
            "added_tokens[0].content",
        ),
        (
            &with(
                "added_tokens",
                json!([{"id": 1, "content": "x", "lstrip": 1}]),
            ),
            "added_tokens[0].lstrip: not a boolean",
        ),
        (
            &with("post_processor.type", json!("RobertaProcessing")),
            "post_processor of type RobertaProcessing",
        ),
        (
            &with("post_processor.single", json!([{"Foo": 1}])),
            "post_processor.single[0]",
        ),
        (
            &with(
                "post_processor.single",
                json!([{"SpecialToken": {"id": "[BOS]"}}]),
            ),
            "special_tokens[\"[BOS]\"]",
        ),
        (
            &with("truncation", json!({"max_length": 1})),
            "truncation.max_length",
        ),
        (
            &with("truncation", json!({"max_length": 9, "strategy": "Middle"})),
            "truncation.strategy",
        ),
        (
            &with("padding", json!({"strategy": {"Fixed": "x"}})),
            "padding.strategy.Fixed",
        ),
        (
            &with("padding", json!({"direction": "Up"})),
            "padding.direction",
        ),
    ];
    for (json, expected) in cases {
        let msg = json_error(json);
        assert!(msg.contains("bad.json"), "{msg:?} does not name the file");
        assert!(msg.contains(expected), "{msg:?} does not say {expected:?}");
    }
}

#[test]
fn damaged_vocab_txt_names_the_line() {
    let err = |data: &[u8]| {
        WordPiece::from_vocab_txt(data, "vocab.txt", BertNormalizer::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(b"[UNK]\n\nb\n"), "vocab.txt: line 2: empty token");
    assert_eq!(err(b"[UNK]\na\n\xff\n"), "vocab.txt: line 3: invalid UTF-8");
    assert_eq!(err(b""), "vocab.txt: line 1: no tokens");
    assert!(err(b"a\nb\n").contains("[UNK]"));
}

#[test]
fn added_tokens_matched_after_normalization() {
    // "UnAff" is normalized to "unaff" before it is looked for, so "UNAFF" matches it too;
    // "[CLS]" (special) is looked for in the raw text only.
    let json = with(
        "added_tokens",
        serde_json::json!([
            {"id": 2, "content": "[CLS]", "special": true, "normalized": false,
             "single_word": false, "lstrip": false, "rstrip": false},
            {"id": 9, "content": "UnAff", "special": false, "normalized": true,
             "single_word": false, "lstrip": false, "rstrip": false}
        ]),
    );
    let wp = WordPiece::from_tokenizer_json(json.as_bytes(), "t.json").unwrap();
    let enc = wp.encode_with("UNAFFable [CLS]", None, false).unwrap();
    // After the added token, "able" starts a word of its own: not "##able", so unknown.
    assert_eq!(enc.ids, [9, 1, 2]);
    assert_eq!(enc.offsets, [(0, 5), (5, 9), (10, 15)]);
    assert_eq!(enc.word_ids, [Some(0), Some(1), Some(2)]);
    let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    let theirs = hf.encode("UNAFFable [CLS]", false).unwrap();
    assert_eq!(theirs.get_ids(), enc.ids);
    assert_eq!(theirs.get_offsets(), enc.offsets);
}

#[test]
fn bert_processing_and_older_files_load() {
    let json = with(
        "post_processor",
        serde_json::json!({"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}),
    );
    let wp = WordPiece::from_tokenizer_json(json.as_bytes(), "old.json").unwrap();
    assert_eq!(wp.encode_pair("un", "!").unwrap().ids, [2, 5, 3, 8, 3]);
    assert_eq!(wp.encode_pair("un", "!").unwrap().type_ids, [0, 0, 0, 1, 1]);
}

#[test]
fn files_are_written_atomically_and_read_back() {
    let dir = std::env::temp_dir().join(format!("lmforge-wordpiece-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wp = small();
    wp.save(dir.join("tokenizer.json")).unwrap();
    wp.save_vocab(dir.join("vocab.txt")).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "temporary files left behind: {names:?}");
    for file in ["tokenizer.json", "vocab.txt"] {
        let again = WordPiece::from_file(dir.join(file)).unwrap();
        assert_eq!(
            again.encode("unaffable!").unwrap(),
            wp.encode("unaffable!").unwrap()
        );
    }
    let missing = WordPiece::from_file(dir.join("nope.json")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }) && missing.to_string().contains("nope.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn behind_the_shared_tokenizer_trait() {
    use lmforge_tokenizer::{Kind, Tokenizer};
    let wp = small();
    let json = wp.to_tokenizer_json();
    assert_eq!(
        Kind::of_tokenizer_json(json.as_bytes(), "t.json").unwrap(),
        Kind::WordPiece
    );
    let t: &dyn Tokenizer = &wp;
    assert_eq!(t.encode("unaffable!").unwrap(), [5, 6, 7, 8]);
    assert_eq!(t.encode_batch(&["un", "!"]).unwrap(), [vec![5], vec![8]]);
    assert_eq!(t.decode(&[2, 5, 6, 3]).unwrap(), "[CLS] unaff [SEP]");
    assert_eq!(t.eod_id(), Some(3));
    assert_eq!(t.token_id("##able"), Some(7));
    assert_eq!(t.vocab_size(), 9);
    assert!(t.decode(&[99]).unwrap_err().to_string().contains("99"));
}
