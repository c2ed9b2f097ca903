//! What an evaluation gives: the mean loss per token and, where the tokens' text is known, the
//! bits per byte and per character of that text, which compare across vocabularies (and with
//! character-level models) where a loss per token does not.
//!
//! ```
//! use lmforge_train::score::TokenText;
//!
//! // "é" is two bytes, one character; a token may hold half a character.
//! let text = TokenText::from_tokens([Some("é".as_bytes()), Some(&[0xC3][..]), None]).unwrap();
//! assert_eq!(text.of(0), (2, 1));
//! assert_eq!(text.of(1), (1, 1));
//! assert_eq!(text.of(2), (0, 0)); // the end-of-document token stands for no text
//! ```

use serde::Serialize;

/// The text each token id stands for, counted in bytes and in characters. Empty where it is
/// not known (a vocabulary whose tokens are not byte sequences): then no figure per byte or
/// character is given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenText {
    /// Text bytes of token `id`.
    pub bytes: Vec<u64>,
    /// Characters of token `id`: its bytes that begin a UTF-8 sequence. A byte-level token may
    /// hold part of a character; counting leading bytes gives each character to exactly one
    /// token, so a run of tokens that spells a text counts its characters exactly.
    pub chars: Vec<u64>,
}

impl TokenText {
    /// The counts of each id's bytes, in id order; `None` for a token that stands for no text
    /// (the end-of-document token). `None` when `tokens` is empty.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = Option<&'a [u8]>>) -> Option<Self> {
        let mut text = TokenText::default();
        for token in tokens {
            let bytes = token.unwrap_or_default();
            text.bytes.push(bytes.len() as u64);
            text.chars.push(utf8_chars(bytes));
        }
        (!text.is_empty()).then_some(text)
    }

    /// Every one of `vocab` ids one byte and one character (tests, character-level models).
    pub fn one_byte_each(vocab: usize) -> Self {
        TokenText {
            bytes: vec![1; vocab],
            chars: vec![1; vocab],
        }
    }

    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes and characters of token `id` (none for an id past the table).
    pub fn of(&self, id: u32) -> (u64, u64) {
        let at = |v: &[u64]| v.get(id as usize).copied().unwrap_or(0);
        (at(&self.bytes), at(&self.chars))
    }
}

/// Characters of `bytes` as UTF-8: the bytes that are not continuation bytes (`10xxxxxx`).
pub fn utf8_chars(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u64
}

/// One split's evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Score {
    /// The mean of the batches' mean losses (nats per token), as Megatron reports it.
    pub loss: f64,
    /// Every target's nats over ln 2 and the text bytes of the targets; `None` where the
    /// tokens' text is not known or the targets hold none.
    pub bits_per_byte: Option<f64>,
    /// The same over the targets' characters.
    pub bits_per_char: Option<f64>,
}

impl Score {
    /// The score of `nats` in all over targets of `bytes` and `chars`, beside `loss`.
    pub fn new(loss: f64, nats: f64, bytes: f64, chars: f64) -> Score {
        let bits = |units: f64| (units > 0.0).then(|| nats / std::f64::consts::LN_2 / units);
        Score {
            loss,
            bits_per_byte: bits(bytes),
            bits_per_char: bits(chars),
        }
    }

    /// Perplexity: e to the loss.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ascii_is_a_character_a_byte() {
        let text = TokenText::from_tokens([Some(&b"hello"[..])]).unwrap();
        assert_eq!(text.of(0), (5, 5));
        assert_eq!(text.of(9), (0, 0));
        assert_eq!(TokenText::from_tokens([]), None);
    }

    #[test]
    fn a_score_divides_the_bits() {
        let s = Score::new(1.0, 10.0 * std::f64::consts::LN_2, 5.0, 4.0);
        assert_eq!(s.bits_per_byte, Some(2.0));
        assert_eq!(s.bits_per_char, Some(2.5));
        assert_eq!(Score::new(1.0, 3.0, 0.0, 0.0).bits_per_byte, None);
    }

    proptest! {
        /// However a text's bytes are cut into tokens, their characters add up to the text's.
        #[test]
        fn characters_add_up_over_any_cut(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.extend([0, bytes.len()]);
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let table = TokenText::from_tokens(pieces.iter().map(|p| Some(*p))).unwrap();
            let chars: u64 = (0..pieces.len() as u32).map(|id| table.of(id).1).sum();
            prop_assert_eq!(chars, text.chars().count() as u64);
        }
    }
}
