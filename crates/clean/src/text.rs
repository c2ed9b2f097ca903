//! Text normalisation: the general-cleaning stage, the exact-dedup key, and the words MinHash
//! shingles.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// The general-cleaning stage: control characters removed (a tab becomes a space, `\r\n`, `\r`
/// and the Unicode line separators become `\n`, the byte-order mark and zero-width space go),
/// Unicode NFC, runs of two or more spaces collapsed to one space, lines trimmed, three or more
/// newlines collapsed to two, the whole trimmed. Cleaning cleaned text changes nothing.
pub fn clean_text(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    plain.push('\n');
                }
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => plain.push('\n'),
            '\t' => plain.push(' '),
            '\u{feff}' | '\u{200b}' => {}
            c if c.is_control() => {}
            c => plain.push(c),
        }
    }
    // Removing a control character can join a letter and a combining mark, so NFC comes after.
    let nfc;
    let plain = if is_nfc_quick(plain.chars()) == IsNormalized::Yes {
        plain
    } else {
        nfc = plain.nfc().collect::<String>();
        nfc
    };

    let mut out = String::with_capacity(plain.len());
    let mut blank_lines = 0usize;
    let mut line_buf = String::new();
    for line in plain.split('\n') {
        line_buf.clear();
        collapse_spaces(line, &mut line_buf);
        let line = line_buf.trim();
        if line.is_empty() {
            blank_lines += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        out.push_str(line);
    }
    out
}

/// A lone space character is kept as it is (French puts a no-break space before `;`); a run
/// of two or more becomes one ASCII space.
fn collapse_spaces(line: &str, out: &mut String) {
    let mut run: Option<char> = None;
    let mut run_len = 0;
    let flush = |out: &mut String, run: Option<char>, len: usize| match (run, len) {
        (Some(c), 1) => out.push(c),
        (Some(_), _) => out.push(' '),
        (None, _) => {}
    };
    for c in line.chars() {
        if c.is_whitespace() {
            run.get_or_insert(c);
            run_len += 1;
        } else {
            flush(out, run.take(), run_len);
            run_len = 0;
            out.push(c);
        }
    }
    flush(out, run, run_len);
}

/// The exact-dedup key: XXH3-64 of the text lowercased with its whitespace runs made single
/// spaces (each word followed by one), so copies differing only in case or spacing are the
/// same document. The normalised text is built in one buffer and hashed in one call: hashing
/// word by word spent more time in the streaming hasher's bookkeeping than in hashing (a
/// quarter of the sharded signatures step).
pub fn exact_key(text: &str) -> u64 {
    let mut out = Vec::with_capacity(text.len() + 1);
    if text.is_ascii() {
        // `char::is_whitespace` on ASCII: tab, line feed, vertical tab, form feed, CR, space.
        // Whole words at a time: a sized slice copy the compiler vectorises, where a push per
        // byte was most of the key's time.
        let words = text
            .as_bytes()
            .split(|b| matches!(b, b'\t'..=b'\r' | b' '))
            .filter(|w| !w.is_empty());
        for word in words {
            out.extend(word.iter().map(u8::to_ascii_lowercase));
            out.push(b' ');
        }
    } else {
        for word in text.split_whitespace() {
            if word.is_ascii() {
                out.extend(word.bytes().map(|b| b.to_ascii_lowercase()));
            } else {
                out.extend_from_slice(word.to_lowercase().as_bytes());
            }
            out.push(b' ');
        }
    }
    xxhash_rust::xxh3::xxh3_64(&out)
}

/// Calls `f` with each word of `text`, lowercased: a maximal run of alphanumeric characters
/// (punctuation and spacing do not change which shingles a document has). `buf` is scratch.
pub fn for_each_word(text: &str, buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) {
    let bytes = text.as_bytes();
    buf.clear();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if b.is_ascii_alphanumeric() {
                buf.push(b.to_ascii_lowercase());
            } else if !buf.is_empty() {
                f(buf);
                buf.clear();
            }
            i += 1;
            continue;
        }
        // `i` only ever advances by whole characters, so it is a boundary.
        let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        if c.is_alphanumeric() {
            let mut utf8 = [0u8; 4];
            for lower in c.to_lowercase() {
                buf.extend_from_slice(lower.encode_utf8(&mut utf8).as_bytes());
            }
        } else if !buf.is_empty() {
            f(buf);
            buf.clear();
        }
        i += c.len_utf8();
    }
    if !buf.is_empty() {
        f(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(clean_text(input), expected, "{input:?}");
        assert_eq!(
            clean_text(expected),
            expected,
            "not idempotent on {expected:?}"
        );
    }

    #[test]
    fn general_cleaning() {
        check("  Bonjour   le\tmonde  ", "Bonjour le monde");
        check("a\r\nb\rc", "a\nb\nc");
        check("one\n\n\n\n two \n", "one\n\ntwo");
        check("x\n \n\t\n y", "x\n\ny");
        check("bell\u{7}s and\u{0}nul", "bells andnul");
        check("\u{feff}zero\u{200b}width", "zerowidth");
        // A lone no-break space stays (French typography); with a space beside it, one space.
        check("Quoi\u{a0}?", "Quoi\u{a0}?");
        check("Quoi\u{a0} ?", "Quoi ?");
        // e + combining acute: NFC composes it, also when a control character stood between.
        check("cafe\u{301}", "caf\u{e9}");
        check("cafe\u{1}\u{301}", "caf\u{e9}");
        check("", "");
        check(" \n\t\r\n", "");
    }

    /// The key as it was first defined: word by word through the streaming hasher.
    fn streamed_key(text: &str) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for word in text.split_whitespace() {
            hasher.update(word.to_lowercase().as_bytes());
            hasher.update(b" ");
        }
        hasher.digest()
    }

    proptest::proptest! {
        #[test]
        fn exact_key_is_the_streamed_key(text in "(\\PC|[ \t\n\x0b\x0c\r\u{85}\u{a0}\u{3000}AbC]){0,80}") {
            proptest::prop_assert_eq!(exact_key(&text), streamed_key(&text));
        }
    }

    #[test]
    fn exact_key_ignores_case_and_spacing() {
        for text in [
            "Hello  World\n",
            "\x0bTab\tand\x0cfeed\r\n",
            "ÉTÉ chaud ",
            "",
            "   ",
        ] {
            assert_eq!(exact_key(text), streamed_key(text), "{text:?}");
        }
        assert_eq!(exact_key("Hello  World\n"), exact_key("hello world"));
        assert_eq!(exact_key("ÉTÉ chaud"), exact_key("été   chaud"));
        assert_ne!(exact_key("hello world"), exact_key("hello, world"));
        assert_ne!(exact_key("ab c"), exact_key("a bc"));
    }

    #[test]
    fn words_are_lowercased_alphanumeric_runs() {
        let mut words = Vec::new();
        let mut buf = Vec::new();
        for_each_word("L'Été, 2024 — déjà-vu!", &mut buf, |w| {
            words.push(String::from_utf8(w.to_vec()).unwrap())
        });
        assert_eq!(words, ["l", "été", "2024", "déjà", "vu"]);
    }
}
