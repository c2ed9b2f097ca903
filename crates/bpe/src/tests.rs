use proptest::prelude::*;

use crate::merge::{PairMap, merge_heap, merge_scan};
use crate::pretokenize::{CL100K, GPT2, O200K, Pretokenizer};
use crate::{Allowed, Bpe, BpeTrainer, Error};

fn pieces<'a>(pre: &Pretokenizer, text: &'a str) -> Vec<&'a str> {
    pre.split(text).map(|(s, e)| &text[s..e]).collect()
}

#[track_caller]
fn check_split(pattern: &str, text: &str, expected: &[&str]) {
    let pre = Pretokenizer::new(pattern).unwrap();
    assert_eq!(pieces(&pre, text), expected, "fast path");
    assert_eq!(pieces(&pre.regex_only(), text), expected, "regex");
}

#[test]
fn gpt2_pieces() {
    check_split(GPT2, "Hello world", &["Hello", " world"]);
    check_split(GPT2, "I'm here", &["I", "'m", " here"]);
    check_split(GPT2, "a  b", &["a", " ", " b"]);
    check_split(GPT2, "a \n\n b", &["a", " \n\n", " b"]);
    check_split(GPT2, "x\n\ny", &["x", "\n", "\n", "y"]);
    check_split(GPT2, "end  ", &["end", "  "]);
    check_split(GPT2, "n° 42!!", &["n", "°", " 42", "!!"]);
    check_split(GPT2, "l'été", &["l", "'", "été"]);
    check_split(GPT2, " '''s", &[" '''", "s"]);
    check_split(GPT2, "", &[]);
}

#[test]
fn cl100k_and_o200k_pieces() {
    check_split(
        CL100K,
        "Hello 12345 world\n\n  x",
        &["Hello", " ", "123", "45", " world", "\n\n", " ", " x"],
    );
    check_split(
        O200K,
        "HTTPServer's camelCase",
        &["HTTPServer's", " camel", "Case"],
    );
}

#[test]
fn unsupported_look_around_is_an_error() {
    let err = Pretokenizer::new(r"(?=a)b").unwrap_err();
    assert!(matches!(err, Error::Pattern { .. }), "{err}");
}

#[test]
fn text_outside_a_custom_pattern_is_kept_as_pieces() {
    let pre = Pretokenizer::new(r"[a-z]+").unwrap();
    assert_eq!(pieces(&pre, "ab, cd!"), ["ab", ", ", "cd", "!"]);
}

/// A vocabulary trained on a small text with every byte reachable.
fn small() -> Bpe {
    let mut trainer = BpeTrainer::builder()
        .vocab_size(600)
        .min_frequency(1)
        .build()
        .unwrap();
    trainer.feed(&[
        "aaaa abab the cat sat on the mat, the hat; l'école d'été était là",
        "banana bandana 1234512345 ¿qué? ¡sí! 日本語 日本",
    ]);
    trainer.train().unwrap().0
}

#[test]
fn scan_and_heap_merge_agree_on_long_pieces() {
    let bpe = small();
    let pairs: &PairMap = bpe.pairs_for_tests();
    for text in [
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababababababababababababababababababa",
        "thethethecatcatmatmatthehatbanana",
    ] {
        let ids: Vec<u32> = text.bytes().map(|b| bpe.byte_ids[b as usize]).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        merge_scan(pairs, ids.clone(), &mut a);
        merge_heap(pairs, ids, &mut b);
        assert_eq!(a, b, "{text}");
    }
}

#[test]
fn vocab_size_below_the_alphabet_is_refused() {
    let err = BpeTrainer::builder().vocab_size(256).build().unwrap_err();
    assert!(
        err.to_string()
            .contains("256 bytes + 1 special tokens = 257"),
        "{err}"
    );
}

#[test]
fn empty_corpus_is_an_error() {
    let trainer = BpeTrainer::builder().build().unwrap();
    assert!(matches!(trainer.train(), Err(Error::EmptyCorpus)));
}

#[test]
fn special_tokens_are_cut_out_of_training_text() {
    let mut trainer = BpeTrainer::builder()
        .vocab_size(400)
        .min_frequency(1)
        .build()
        .unwrap();
    trainer.feed(&["<|endoftext|><|endoftext|><|endoftext|>ab"]);
    let (bpe, _) = trainer.train().unwrap();
    assert!(bpe.token_id(b"<|").is_none());
    assert_eq!(
        bpe.encode("ab<|endoftext|>", Allowed::All).unwrap().len(),
        2
    );
}

#[test]
fn training_is_deterministic_across_batching() {
    let texts = [
        "the cat sat on the mat",
        "the hat",
        "a mat, a hat and a cat",
        "zzz zz z",
    ];
    let train = |batches: &[&[&str]]| {
        let mut t = BpeTrainer::builder()
            .vocab_size(300)
            .min_frequency(1)
            .build()
            .unwrap();
        for b in batches {
            t.feed(b);
        }
        t.train().unwrap().0.to_tokenizer_json()
    };
    assert_eq!(
        train(&[&texts]),
        train(&[&texts[..1], &texts[1..3], &texts[3..]])
    );
}

#[test]
fn max_token_length_is_respected() {
    let mut t = BpeTrainer::builder()
        .vocab_size(400)
        .min_frequency(1)
        .max_token_length(Some(3))
        .build()
        .unwrap();
    t.feed(&["abcdefgh abcdefgh abcdefgh"]);
    let (bpe, report) = t.train().unwrap();
    assert_eq!(report.longest_token, 3);
    assert!(bpe.encode_ordinary("abcdefgh").len() >= 3);
}

#[test]
fn stream_decoder_holds_back_partial_characters() {
    let bpe = small();
    let text = "日本語 👍🏽 été";
    let ids = bpe.encode_ordinary(text);
    let mut stream = bpe.decode_stream();
    let mut out = String::new();
    for &id in &ids {
        let piece = stream.step(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'));
        out.push_str(&piece);
    }
    assert_eq!(stream.finish(), "");
    assert_eq!(out, text);
}

#[test]
fn stream_decoder_never_stalls_on_invalid_bytes() {
    let bpe = small();
    let mut stream = bpe.decode_stream();
    // 0xff can never start a character; 0xe6 alone is an unfinished one.
    let ff = bpe.byte_ids[0xff];
    let e6 = bpe.byte_ids[0xe6];
    assert_eq!(stream.step(ff).unwrap(), "\u{FFFD}");
    assert_eq!(stream.step(e6).unwrap(), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
}

#[test]
fn unknown_ids_are_errors_naming_the_position() {
    let bpe = small();
    let err = bpe.decode(&[1, 2, 999_999]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "id 999999 at position 2 is not in the vocabulary"
    );
}

#[test]
fn offsets_cover_the_input() {
    let bpe = small();
    let text = "the cat<|endoftext|> 日本";
    let enc = bpe.encode_with_offsets(text, Allowed::All).unwrap();
    assert_eq!(enc.ids, bpe.encode(text, Allowed::All).unwrap());
    let mut at = 0;
    for &(s, e) in &enc.offsets {
        assert_eq!(s, at);
        at = e;
    }
    assert_eq!(at, text.len());
}

#[test]
fn count_till_limit_stops_early() {
    let bpe = small();
    let text = "the cat sat on the mat";
    let n = bpe.count(text);
    assert_eq!(bpe.count_till_limit(text, n), Some(n));
    assert_eq!(bpe.count_till_limit(text, n - 1), None);
}

fn pattern_text() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        " ", "  ", "\n", "\t", "\r\n", "\u{a0}", "\u{3000}", "a", "Z", "é", "ß", "日", "'", "'s",
        "'ll", "'S", "1", "٣", "²", "½", ".", "!", "?", "-", "👍", "\u{301}", "x", "\u{2028}",
        "\r", "'LL", "'ſ", "'Ve", "'rE", "'d", "'M", "'t", "/", "\u{212a}", "12345", "A", "HTTP",
        "ǅ", "ʰ", "日本", "\u{300}", "\u{903}", "Σ", "ς", "\n/", "Ab", "aB",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn scanners_equal_the_regex(text in pattern_text()) {
        for pattern in [GPT2, CL100K, O200K] {
            let pre = Pretokenizer::new(pattern).unwrap();
            prop_assert_eq!(pieces(&pre, &text), pieces(&pre.clone().regex_only(), &text));
        }
    }

    #[test]
    fn scanners_equal_the_regex_on_any_string(text in any::<String>()) {
        for pattern in [GPT2, CL100K, O200K] {
            let pre = Pretokenizer::new(pattern).unwrap();
            prop_assert_eq!(pieces(&pre, &text), pieces(&pre.clone().regex_only(), &text));
        }
    }

    #[test]
    fn pieces_cover_the_text(text in any::<String>()) {
        // The built-in patterns (scanners and regex) and custom ones that leave gaps, match
        // empty strings, or use the look-ahead tail.
        for pattern in [GPT2, CL100K, O200K, r"[a-z]+", r"\s*", r"x?", r"\p{L}+|\s+(?!\S)|\s+"] {
            let pre = Pretokenizer::new(pattern).unwrap();
            for pre in [pre.clone(), pre.regex_only()] {
                let pieces = pieces(&pre, &text);
                prop_assert!(pieces.iter().all(|p| !p.is_empty()), "{pattern}");
                prop_assert_eq!(pieces.concat(), text.clone(), "{}", pattern);
            }
        }
    }
}

/// Encoding steps per input byte, for `text` made of `n` repetitions of `unit`.
fn steps_per_byte(bpe: &Bpe, unit: &str, n: usize) -> f64 {
    let text = unit.repeat(n);
    crate::ops::take();
    let ids = bpe.encode_ordinary(&text);
    assert_eq!(bpe.decode_bytes(&ids).unwrap(), text.as_bytes());
    crate::ops::take() as f64 / text.len() as f64
}

#[test]
fn adversarial_inputs_encode_in_near_linear_steps() {
    let bpe = small();
    let letters: String = {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (b'a' + (x % 26) as u8) as char
            })
            .collect()
    };
    for (unit, name) in [
        ("a", "one repeated letter"),
        (letters.as_str(), "letters, no space"),
        (" ", "one space run"),
        ("ab", "two letters"),
    ] {
        let small = steps_per_byte(&bpe, unit, 1_000_000 / unit.len() / 8);
        let large = steps_per_byte(&bpe, unit, 1_000_000 / unit.len());
        // A quadratic merge would take ~n steps per byte (10^6); n log n takes ~log n.
        assert!(large < 64.0, "{name}: {large} steps per byte");
        assert!(
            large < small * 1.5,
            "{name}: {small} -> {large} steps per byte at 8x the size"
        );
    }
}

#[test]
fn add_prefix_space_from_tokenizer_json() {
    let bpe = small();
    let json = bpe
        .to_tokenizer_json()
        .replace("\"add_prefix_space\": false", "\"add_prefix_space\": true");
    let prefixed = Bpe::from_tokenizer_json(json.as_bytes(), "prefix.json").unwrap();
    let text = "the cat<|endoftext|>sat";
    let ids = prefixed.encode(text, Allowed::All).unwrap();
    let mut want = bpe.encode_ordinary(" the cat");
    want.push(bpe.special_id("<|endoftext|>").unwrap());
    want.extend(bpe.encode_ordinary(" sat"));
    assert_eq!(ids, want);
    let enc = prefixed.encode_with_offsets(text, Allowed::All).unwrap();
    assert_eq!(enc.offsets.first().unwrap().0, 0);
    assert_eq!(enc.offsets.last().unwrap().1, text.len());
    for w in enc.offsets.windows(2) {
        assert_eq!(w[0].1, w[1].0);
    }
}

#[test]
fn scanners_take_linear_steps_on_adversarial_text() {
    for pattern in [GPT2, CL100K, O200K] {
        let pre = Pretokenizer::new(pattern).unwrap();
        for unit in [
            "A",
            "日A",
            "Aa",
            " ",
            " \n",
            "'s",
            "1",
            "!",
            "\u{301}",
            "a\u{301}B",
        ] {
            let steps = |n: usize| {
                let text = unit.repeat(n);
                crate::ops::take();
                let covered: usize = pre.split(&text).map(|(s, e)| e - s).sum();
                assert_eq!(covered, text.len());
                crate::ops::take() as f64 / text.len() as f64
            };
            let (small, large) = (steps(20_000), steps(160_000));
            assert!(large < 8.0, "{pattern} on {unit:?}: {large} steps per byte");
            assert!(
                large < small * 1.5 + 0.1,
                "{pattern} on {unit:?}: {small} -> {large}"
            );
        }
    }
}
