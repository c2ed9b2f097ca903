//! Hugging Face `tokenizers` (the Rust crate Python's wraps) as the oracle: the same
//! tokenizer.json, the same text, the same ids, type ids, masks and offsets.

use lmforge_wordpiece::{Encoding, WordPiece};
use proptest::prelude::*;

use crate::minilm;

#[track_caller]
fn same(ours: &WordPiece, theirs: &tokenizers::Tokenizer, a: &str, b: Option<&str>) {
    let mine: Encoding = match b {
        Some(b) => ours.encode_pair(a, b).unwrap(),
        None => ours.encode(a).unwrap(),
    };
    let input: tokenizers::EncodeInput<'_> = match b {
        Some(b) => (a, b).into(),
        None => a.into(),
    };
    let hf = theirs.encode(input, true).unwrap();
    assert_same(&mine, &hf, &format!("{a:?} / {b:?}"));
    let decoded = ours.decode(&mine.ids, true).unwrap();
    assert_eq!(
        decoded,
        theirs.decode(hf.get_ids(), true).unwrap(),
        "decode of {a:?}"
    );
}

/// Every field, overflowing windows included, equals Hugging Face's.
#[track_caller]
pub fn assert_same(mine: &Encoding, hf: &tokenizers::Encoding, what: &str) {
    assert_eq!(mine.ids, hf.get_ids(), "ids of {what}");
    assert_eq!(mine.type_ids, hf.get_type_ids(), "type ids of {what}");
    assert_eq!(
        mine.attention_mask,
        hf.get_attention_mask(),
        "mask of {what}"
    );
    assert_eq!(
        mine.special_tokens_mask,
        hf.get_special_tokens_mask(),
        "special mask of {what}"
    );
    assert_eq!(mine.offsets, hf.get_offsets(), "offsets of {what}");
    assert_eq!(mine.word_ids, hf.get_word_ids(), "word ids of {what}");
    assert_eq!(
        mine.overflowing.len(),
        hf.get_overflowing().len(),
        "overflowing of {what}"
    );
    for (m, h) in mine.overflowing.iter().zip(hf.get_overflowing()) {
        assert_same(m, h, &format!("an overflowing window of {what}"));
    }
}

const TEXTS: &[&str] = &[
    "Hello, world! How are you?",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "¿Dónde está la biblioteca? ¡Allí!",
    "ÉCOLE Élève naïve façade œuvre Straße İstanbul ǅ",
    "野口里佳 Noguchi Rika 東京都 한국어 テスト",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "punctuation!!!??? ... --- (((x))) «quoted» “smart” ‘quotes’",
    "tabs\tand\nnewlines\r\nand\u{a0}nbsp\u{2003}em-space",
    "control\u{0}chars\u{7}here\u{fffd}\u{200b}zero-width\u{feff}bom",
    "[CLS] literal [SEP] specials [MASK] inside [PAD][UNK]",
    "a supercalifragilisticexpialidociousantidisestablishmentarianismfloccinaucinihilipilificationpneumonoultramicroscopicsilicovolcanoconiosis word",
    "combining e\u{301} a\u{300}\u{316} n\u{303} decomposed; ﬁ ligature; Ⅻ roman; ² superscript",
    "numbers 3.14159 1,000,000 12:30 2026-11-23 $100 50% #hashtag @user",
    "\u{951}\u{1e94a} reordered marks x\u{951}\u{1e94a}\u{301} \u{f73}\u{f75} \u{344} a\u{328}\u{301}\u{323}",
    "",
    "   ",
];

#[test]
fn minilm_matches_hugging_face_on_varied_text() {
    let Some((ours, theirs)) = minilm() else {
        return;
    };
    let hello = ours.encode("Hello, world!").unwrap();
    assert_eq!(hello.ids[..6], [101, 7592, 1010, 2088, 999, 102]);
    assert_eq!(hello.len(), 128, "padded to the file's fixed 128");
    for text in TEXTS {
        same(ours, theirs, text, None);
        same(ours, written().unwrap(), text, None);
    }
    for pair in TEXTS.windows(2) {
        same(ours, theirs, pair[0], Some(pair[1]));
    }
    let long = "mot ".repeat(300);
    same(ours, theirs, &long, None);
    same(ours, theirs, &long, Some("short"));
    same(ours, theirs, "short", Some(&long));
    same(ours, theirs, &long, Some(&long));
}

#[test]
fn minilm_matches_hugging_face_on_the_corpus() {
    let Some((ours, theirs)) = minilm() else {
        return;
    };
    let mut theirs = theirs.clone();
    theirs.with_truncation(None).unwrap();
    theirs.with_padding(None);
    let ours = ours
        .clone()
        .with_truncation(None)
        .unwrap()
        .with_padding(None);
    for text in crate::corpus_texts(200_000) {
        same(&ours, &theirs, &text, None);
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[a-zA-Z0-9 .,!?'#-]{0,40}",
        "[a-zàâçéèêëîïôûùüÿñæœ ÀÉÈÑ¿¡]{0,40}",
        "[\\p{Han}\\p{Hangul}\\p{Hiragana} a-z]{0,20}",
        "(\\[CLS\\]|\\[SEP\\]|\\[MASK\\]|[a-z ]{0,5}){0,6}",
        "[\\p{M}\\p{P}\\p{S}\\p{Z}\\p{C}a-e]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn minilm_matches_hugging_face_on_arbitrary_text(a in text(), b in text(), pair in any::<bool>()) {
        if let Some((ours, theirs)) = minilm() {
            same(ours, theirs, &a, pair.then_some(b.as_str()));
        }
    }

    #[test]
    fn our_tokenizer_json_loads_in_hugging_face(a in text()) {
        if let (Some((ours, _)), Some(reloaded)) = (minilm(), written()) {
            same(ours, reloaded, &a, None);
        }
    }
}

/// Hugging Face's tokenizer loaded from the tokenizer.json we write for MiniLM.
fn written() -> Option<&'static tokenizers::Tokenizer> {
    static CELL: std::sync::OnceLock<Option<tokenizers::Tokenizer>> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        let json = minilm()?.0.to_tokenizer_json();
        Some(tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap())
    })
    .as_ref()
}

#[test]
fn vocab_txt_is_the_same_tokenizer() {
    let (Some((ours, _)), Some(vocab)) = (minilm(), crate::fixture("minilm-vocab.txt")) else {
        return;
    };
    let from_txt =
        WordPiece::from_vocab_file(&vocab, lmforge_wordpiece::BertNormalizer::default()).unwrap();
    assert_eq!(from_txt.vocab(), ours.vocab());
    assert_eq!(
        from_txt.to_vocab_txt().unwrap().as_bytes(),
        std::fs::read(&vocab).unwrap()
    );
    for text in TEXTS {
        assert_eq!(
            from_txt.encode_ordinary(text),
            ours.encode_ordinary(text),
            "{text:?}"
        );
    }
}
