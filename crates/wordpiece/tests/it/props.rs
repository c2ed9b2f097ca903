//! Property tests: LinMaxMatch is BERT's greedy match, pieces spell the word, ids are in range,
//! offsets point into the text, files roundtrip, and nothing panics.

use lmforge_wordpiece::{
    BertNormalizer, Direction, Padding, PaddingStrategy, Truncation, TruncationStrategy, WordPiece,
};
use proptest::prelude::*;

/// A vocabulary over a tiny alphabet (so that words hit it and miss it), with BERT's
/// specials; `#` in the alphabet exercises words that contain the prefix itself.
fn vocab() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("(##)?[ab#é]{1,4}", 1..40).prop_map(|set| {
        let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .map(String::from)
            .to_vec();
        v.extend(set);
        v
    })
}

fn tokenizer(vocab: Vec<String>) -> WordPiece {
    WordPiece::from_vocab(vocab, BertNormalizer::cased()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn linmaxmatch_is_greedy_longest_match_first(vocab in vocab(), word in "[ab#é]{1,12}") {
        let wp = tokenizer(vocab);
        prop_assert_eq!(wp.word_pieces(&word), wp.greedy_pieces(&word));
    }

    #[test]
    fn pieces_spell_the_word(vocab in vocab(), word in "[abé]{1,12}") {
        let wp = tokenizer(vocab);
        if let Some(pieces) = wp.word_pieces(&word) {
            let mut spelled = String::new();
            let mut at = 0;
            for (i, &(id, start, end)) in pieces.iter().enumerate() {
                prop_assert_eq!(start, at);
                at = end;
                let token = wp.token(id).unwrap();
                let piece = if i == 0 { token } else { token.strip_prefix("##").unwrap() };
                prop_assert_eq!(piece, &word[start..end]);
                spelled.push_str(piece);
            }
            prop_assert_eq!(spelled, word);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_and_stays_in_range(vocab in vocab(), text in ".{0,80}") {
        let wp = tokenizer(vocab);
        let enc = wp.encode(&text).unwrap();
        let n = wp.vocab_size() as u32;
        prop_assert!(enc.ids.iter().all(|&id| id < n));
        for &(s, e) in &enc.offsets {
            prop_assert!(s <= e && e <= text.len());
            prop_assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
        }
        prop_assert!(wp.decode(&enc.ids, true).is_ok());
    }

    #[test]
    fn minilm_pieces_of_known_words_spell_the_normalized_word(text in "[a-zA-Zàéèçñü ]{0,60}") {
        if let Some((wp, _)) = crate::minilm() {
            let normalizer = wp.normalizer().unwrap();
            for word in normalizer.normalize(&text).split_whitespace() {
                if let Some(pieces) = wp.word_pieces(word) {
                    let spelled: String = pieces
                        .iter()
                        .enumerate()
                        .map(|(i, &(id, _, _))| {
                            let t = wp.token(id).unwrap();
                            if i == 0 { t } else { t.strip_prefix("##").unwrap() }
                        })
                        .collect();
                    prop_assert_eq!(spelled, word);
                }
            }
        }
    }

    #[test]
    fn minilm_offsets_are_ordered_char_ranges(text in ".{0,200}") {
        if let Some((wp, _)) = crate::minilm() {
            let enc = wp.encode_ordinary(&text);
            let full = wp.clone().with_truncation(None).unwrap().with_padding(None).encode(&text).unwrap();
            prop_assert_eq!(&full.ids[1..full.len() - 1], &enc[..]);
            // Starts and ends never go back (two tokens from one character share its range).
            let mut last = (0, 0);
            for &(s, e) in &full.offsets[1..full.len() - 1] {
                prop_assert!(s >= last.0 && e >= last.1, "offsets go back: {:?} then {:?}", last, (s, e));
                prop_assert!(s < e && e <= text.len() && text.is_char_boundary(s) && text.is_char_boundary(e));
                last = (s, e);
            }
        }
    }

    #[test]
    fn plain_words_decode_back(words in proptest::collection::vec("[a-z]{1,10}", 0..12)) {
        if let Some((wp, _)) = crate::minilm() {
            let text = words.join(" ");
            let enc = wp.encode_ordinary(&text);
            if !enc.contains(&wp.unk_id()) {
                prop_assert_eq!(wp.decode(&enc, true).unwrap(), text);
            }
        }
    }

    #[test]
    fn tokenizer_json_roundtrips(
        vocab in vocab(),
        flags in any::<(bool, bool, Option<bool>, bool)>(),
        max_length in proptest::option::of(3usize..20),
        stride in 0usize..4,
        fixed in proptest::option::of(0usize..24),
        left in any::<(bool, bool)>(),
        strategy in 0..3u8,
        text in prop_oneof![".{0,40}", "[aAbBé#Ë. \u{301}]{0,40}"],
        pair in proptest::option::of(prop_oneof![".{0,40}", "[aAbBé#Ë. \u{301}]{0,40}"]),
        added in proptest::collection::vec(("[aAbé# ]{1,4}", any::<(bool, bool, bool, bool)>()), 0..3),
    ) {
        let normalizer = BertNormalizer {
            clean_text: flags.0,
            handle_chinese_chars: flags.1,
            strip_accents: flags.2,
            lowercase: flags.3,
        };
        let direction = |l: bool| if l { Direction::Left } else { Direction::Right };
        let wp = WordPiece::from_vocab(vocab, normalizer)
            .unwrap()
            .with_truncation(max_length.map(|max_length| Truncation {
                max_length,
                strategy: [
                    TruncationStrategy::LongestFirst,
                    TruncationStrategy::OnlyFirst,
                    TruncationStrategy::OnlySecond,
                ][strategy as usize],
                stride,
                direction: direction(left.0),
            }))
            .unwrap()
            .with_padding(Some(Padding {
                strategy: fixed.map_or(PaddingStrategy::BatchLongest, PaddingStrategy::Fixed),
                direction: direction(left.1),
                pad_to_multiple_of: None,
                pad_id: 0,
                pad_type_id: 0,
                pad_token: "[PAD]".into(),
            }));
        // Added tokens of every kind, matched in the raw or the normalized text.
        let mut root: serde_json::Value = serde_json::from_str(&wp.to_tokenizer_json()).unwrap();
        let first_new = wp.vocab_size();
        let mut seen = std::collections::HashSet::new();
        for (content, (normalized, single_word, lstrip, rstrip)) in &added {
            if wp.token_id(content).is_some() || !seen.insert(content.clone()) {
                continue;
            }
            let id = first_new + seen.len() - 1;
            root["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({
                "id": id, "content": content, "single_word": single_word, "lstrip": lstrip,
                "rstrip": rstrip, "normalized": normalized, "special": false
            }));
        }
        let wp = WordPiece::from_tokenizer_json(root.to_string().as_bytes(), "t.json").unwrap();
        let json = wp.to_tokenizer_json();
        let again = WordPiece::from_tokenizer_json(json.as_bytes(), "t.json").unwrap();
        prop_assert_eq!(again.to_tokenizer_json(), json.clone());
        let ours = wp.encode_with(&text, pair.as_deref(), true);
        prop_assert_eq!(
            format!("{:?}", again.encode_with(&text, pair.as_deref(), true)),
            format!("{ours:?}")
        );
        // Hugging Face agrees, errors included (a sequence too short to truncate).
        let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let input: tokenizers::EncodeInput<'_> = match &pair {
            Some(b) => (text.as_str(), b.as_str()).into(),
            None => text.as_str().into(),
        };
        // Hugging Face panics where a window cannot advance (stride too large): ours errs.
        let theirs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hf.encode(input, true)));
        match (ours, theirs) {
            (Ok(ours), Ok(Ok(theirs))) => crate::hf::assert_same(&ours, &theirs, &text),
            (Err(_), Err(_) | Ok(Err(_))) => {}
            (ours, theirs) => prop_assert!(false, "ours {ours:?}, Hugging Face {:?}", theirs.ok()),
        }
    }

    #[test]
    fn vocab_txt_roundtrips(vocab in vocab()) {
        let wp = tokenizer(vocab);
        let txt = wp.to_vocab_txt().unwrap();
        let again = WordPiece::from_vocab_txt(txt.as_bytes(), "vocab.txt", BertNormalizer::cased()).unwrap();
        prop_assert_eq!(again.vocab(), wp.vocab());
    }

    #[test]
    fn damaged_files_are_errors_not_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = WordPiece::from_tokenizer_json(&data, "t.json");
        let _ = WordPiece::from_vocab_txt(&data, "vocab.txt", BertNormalizer::default());
    }
}
