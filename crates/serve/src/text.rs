//! Tokens to streamed text: whole characters only (a byte-level token can end inside one),
//! and stop sequences matched across token boundaries without ever streaming part of one.

use lmforge_tokenizer::Tokenizer;

/// The text of a growing generation, released piece by piece.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    tokens: Vec<u32>,
    /// Bytes of the decoded text already released.
    sent: usize,
    stops: Vec<String>,
    /// Whether the stop sequence itself ends the text (Megatron's end-of-line stops) or is cut.
    keep_stop: bool,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>, keep_stop: bool) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            keep_stop,
            ..Self::default()
        }
    }

    /// Whether a stop sequence was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Tokens pushed.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Adds a token; returns the text that can be released now.
    pub fn push(&mut self, token: u32, tokenizer: &dyn Tokenizer) -> String {
        if self.stopped {
            return String::new();
        }
        self.tokens.push(token);
        let text = tokenizer.decode(&self.tokens).unwrap_or_default();
        self.release(&text, false)
    }

    /// The rest of the text once generation is over.
    pub fn finish(&mut self, tokenizer: &dyn Tokenizer) -> String {
        if self.stopped {
            return String::new();
        }
        let text = tokenizer.decode(&self.tokens).unwrap_or_default();
        self.release(&text, true)
    }

    fn release(&mut self, text: &str, last: bool) -> String {
        // A stop can only begin in what was held back: released text has none.
        let from = floor_boundary(text, self.sent.min(text.len()));
        let found = self
            .stops
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()).map(|i| (from + i, s.len())))
            .min();
        if let Some((at, len)) = found {
            self.stopped = true;
            let end = if self.keep_stop { at + len } else { at };
            let out = text.get(from..end).unwrap_or("").to_string();
            self.sent = end;
            return out;
        }
        let mut end = text.len();
        if !last {
            // An incomplete character decodes as U+FFFD until its last byte arrives.
            end = text.trim_end_matches('\u{FFFD}').len();
            // Hold back the longest tail that could start a stop sequence.
            let held = self
                .stops
                .iter()
                .flat_map(|s| {
                    (1..s.len())
                        .filter(|&k| s.is_char_boundary(k))
                        .filter(|&k| text[..end].ends_with(&s[..k]))
                        .max()
                })
                .max()
                .unwrap_or(0);
            end -= held;
        }
        if end <= from {
            return String::new();
        }
        self.sent = end;
        text[from..end].to_string()
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One token per byte: the simplest byte-level tokenizer.
    struct Bytes;

    impl Tokenizer for Bytes {
        fn kind(&self) -> lmforge_tokenizer::Kind {
            lmforge_tokenizer::Kind::Bpe
        }
        fn encode(&self, text: &str) -> lmforge_tokenizer::Result<Vec<u32>> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> lmforge_tokenizer::Result<String> {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        fn vocab_size(&self) -> usize {
            256
        }
        fn token_id(&self, _: &str) -> Option<u32> {
            None
        }
        fn eod_id(&self) -> Option<u32> {
            None
        }
        fn pad_id(&self) -> Option<u32> {
            None
        }
    }

    fn run(text: &str, stops: &[&str], keep: bool) -> (Vec<String>, bool) {
        let mut stream = TextStream::new(stops.iter().map(|s| s.to_string()).collect(), keep);
        let mut pieces = Vec::new();
        for b in text.bytes() {
            pieces.push(stream.push(b as u32, &Bytes));
            if stream.stopped() {
                break;
            }
        }
        pieces.push(stream.finish(&Bytes));
        (pieces, stream.stopped())
    }

    #[test]
    fn a_stop_across_tokens_is_cut_and_never_partly_sent() {
        let (pieces, stopped) = run("Hello\n\nWorld", &["\n\n"], false);
        assert!(stopped);
        assert_eq!(pieces.concat(), "Hello");
        assert!(pieces.iter().all(|p| !p.contains('\n')));
        let (pieces, _) = run("a\nb", &["\n"], true);
        assert_eq!(pieces.concat(), "a\n");
        // A false start is released once it cannot be a stop any more.
        let (pieces, stopped) = run("ab abc", &["abd"], false);
        assert!(!stopped);
        assert_eq!(pieces.concat(), "ab abc");
    }

    #[test]
    fn multibyte_characters_are_released_whole() {
        let (pieces, _) = run("été ñ", &[], false);
        assert_eq!(pieces.concat(), "été ñ");
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }

    proptest! {
        #[test]
        fn pieces_add_up_to_the_text_before_the_first_stop(
            text in "[ab\n é]{0,40}",
            stops in prop::collection::vec("[ab\n é]{1,3}", 0..3),
            keep in any::<bool>(),
        ) {
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let (pieces, stopped) = run(&text, &stop_refs, keep);
            // Generation stops at the first token that completes a stop sequence, cut at the
            // earliest one in the text so far.
            let bytes = text.as_bytes();
            let mut want = (text.clone(), false);
            for end in 1..=bytes.len() {
                let so_far = String::from_utf8_lossy(&bytes[..end]).into_owned();
                let first = stops.iter().filter_map(|s| so_far.find(s.as_str()).map(|i| (i, s.len()))).min();
                if let Some((i, len)) = first {
                    want = (so_far[..if keep { i + len } else { i }].to_string(), true);
                    break;
                }
            }
            prop_assert_eq!(stopped, want.1);
            prop_assert_eq!(pieces.concat(), want.0);
        }
    }
}
