use crate::normalizer::BertNormalizer;
use crate::{Direction, Truncation, TruncationStrategy, WordPiece};

fn wp(vocab: &[&str]) -> WordPiece {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    v.extend(vocab.iter().map(|s| s.to_string()));
    WordPiece::from_vocab(v, BertNormalizer::default()).unwrap()
}

fn words(text: &str) -> Vec<String> {
    let splitter = crate::normalizer::Splitter::new(Some(BertNormalizer::default()));
    let mut out = Vec::new();
    splitter.split(text, 0, &mut Default::default(), |w, _, _| {
        out.push(w.to_string())
    });
    out
}

#[test]
fn bert_normalizer_and_pre_tokenizer() {
    // Hugging Face's own examples (normalizers/bert.rs, pre_tokenizers/bert.rs).
    assert_eq!(
        words("Hey friend!     How are you?!?"),
        ["hey", "friend", "!", "how", "are", "you", "?", "!", "?"]
    );
    assert_eq!(
        words("野口里佳 Noguchi"),
        ["野", "口", "里", "佳", "noguchi"]
    );
    assert_eq!(
        words("Héllò\u{0}\u{7} wörld\u{a0}x"),
        ["hello", "world", "x"]
    );
    assert_eq!(words("a\u{200b}b"), ["ab"], "Cf characters are removed");
    let n = BertNormalizer::default();
    assert_eq!(
        n.normalize("İstanbul"),
        "istanbul",
        "İ decomposes to I + U+0307"
    );
    assert_eq!(
        n.normalize("ÑANDÚ"),
        "nandu",
        "accents are stripped, then lowercased"
    );
    assert_eq!(BertNormalizer::cased().normalize("Héllo\tW"), "Héllo W");
}

#[test]
fn linmaxmatch_on_the_papers_example() {
    // Song et al. 2021, figure 1: vocabulary {a, abcdx, ##b, ##c, ##cdy, ##dz}.
    let wp = wp(&["a", "abcdx", "##b", "##c", "##cdy", "##dz"]);
    let pieces = |w: &str| {
        wp.word_pieces(w).map(|p| {
            p.iter()
                .map(|&(id, _, _)| wp.token(id).unwrap().to_string())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(pieces("abcdz").unwrap(), ["a", "##b", "##c", "##dz"]);
    assert_eq!(pieces("abcdx").unwrap(), ["abcdx"]);
    assert_eq!(pieces("abcdy").unwrap(), ["a", "##b", "##cdy"]);
    assert_eq!(
        pieces("abcz"),
        None,
        "##z is no token, so the word is unknown"
    );
    assert_eq!(wp.greedy_pieces("abcdz"), wp.word_pieces("abcdz"));
}

#[test]
fn unknown_and_overlong_words() {
    let wp = wp(&["a", "##a", "b"]);
    let enc = wp.encode_ordinary("aaa ab c");
    assert_eq!(enc, [5, 6, 6, 1, 1]);
    let long = "a".repeat(101);
    assert_eq!(wp.encode_ordinary(&long), [1], "over 100 characters");
    assert_eq!(wp.encode_ordinary(&long[..100]).len(), 100);
}

#[test]
fn decoder_cleans_up_like_hugging_face() {
    let wp = wp(&[
        "i", "do", "not", "don", "'", "t", ",", ".", "##s", "cat", "s",
    ]);
    let ids = wp.encode_ordinary("I do not, cats don't.");
    // Hugging Face cleans up each token on its own: " ," and " ." go, " do not" never
    // occurs inside one token.
    assert_eq!(wp.decode(&ids, true).unwrap(), "i do not, cats don ' t.");
    assert!(wp.decode(&[999], true).is_err());
}

#[test]
fn truncation_longest_first_and_only_second() {
    let wp = wp(&["a", "b"]);
    let long = |n: usize| vec!["a"; n].join(" ");
    let set = |strategy| {
        wp.clone()
            .with_truncation(Some(Truncation {
                max_length: 9,
                strategy,
                stride: 0,
                direction: Direction::Right,
            }))
            .unwrap()
    };
    let lf = set(TruncationStrategy::LongestFirst);
    // 9 - 3 specials = 6: 4 + 10 → 3 + 3.
    let enc = lf.encode_pair(&long(4), &long(10)).unwrap();
    assert_eq!(enc.type_ids.iter().filter(|&&t| t == 0).count(), 5);
    assert_eq!(enc.len(), 9);
    // 2 + 10 → 2 + 4.
    let enc = lf.encode_pair(&long(2), &long(10)).unwrap();
    assert_eq!(enc.type_ids.iter().filter(|&&t| t == 1).count(), 5);
    let os = set(TruncationStrategy::OnlySecond);
    assert!(os.encode("a").is_ok());
    assert!(os.encode(&long(10)).is_err(), "nothing second to truncate");
    assert!(
        os.encode_pair(&long(7), "a").is_err(),
        "the second is too short"
    );
}

#[test]
fn linmaxmatch_steps_are_linear_where_greedy_is_quadratic() {
    // From every position the greedy match first tries the whole rest of the word; the
    // automaton reads each byte once and pops each token once.
    for n in [1_000, 10_000, 100_000] {
        let long = format!("{}b", "a".repeat(n));
        let wp = wp(&["a", "##a", &long, &format!("##{long}")]);
        let word = "a".repeat(n);
        crate::ops::take();
        let pieces = wp.word_pieces(&word).unwrap();
        let steps = crate::ops::take();
        assert_eq!(pieces.len(), n);
        assert!(steps <= 3 * n as u64 + 3, "{steps} steps for {n} bytes");
    }
}
