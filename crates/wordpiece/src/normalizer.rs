//! BERT's normalizer and pre-tokenizer, fused into one pass over the text.
//!
//! Hugging Face runs them as two stages over a `NormalizedString` (clean control characters →
//! pad CJK ideographs with spaces → NFD and drop non-spacing marks → lowercase; then split on
//! whitespace and isolate punctuation). Here each character goes through all of it at once and
//! lands in the current word, which keeps, for every normalized byte, the original character it
//! came from: that is how token offsets point into the original text, as Hugging Face's do.
//! ASCII takes a table lookup; everything else the Unicode 9 tables Hugging Face uses.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::char::{canonical_combining_class, decompose_canonical};

/// BERT's text normalization (Hugging Face `BertNormalizer`), the same four switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertNormalizer {
    /// Drop control characters, U+0000 and U+FFFD; turn every whitespace into a space.
    pub clean_text: bool,
    /// Make every CJK ideograph a word of its own.
    pub handle_chinese_chars: bool,
    /// Decompose (NFD) and drop non-spacing marks; `None` follows `lowercase`, as in BERT.
    pub strip_accents: Option<bool>,
    /// Lowercase (after stripping accents).
    pub lowercase: bool,
}

impl Default for BertNormalizer {
    /// Uncased BERT: everything on.
    fn default() -> Self {
        Self {
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents: None,
            lowercase: true,
        }
    }
}

impl BertNormalizer {
    /// Cased BERT: no lowercasing, accents kept.
    pub fn cased() -> Self {
        Self {
            lowercase: false,
            ..Self::default()
        }
    }

    /// Whether accents are stripped, once `None` is resolved.
    pub fn strips_accents(&self) -> bool {
        self.strip_accents.unwrap_or(self.lowercase)
    }

    /// The normalized text, as Hugging Face's `normalize_str` gives it, except that combining
    /// marks are decomposed one character at a time, not reordered across characters (what
    /// tokenizing does, offsets included, is exact: see `Splitter`).
    pub fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if let Some(c) = self.clean(c) {
                if self.handle_chinese_chars && is_chinese_char(c) {
                    out.push(' ');
                    self.expand(c, &mut |n| out.push(n));
                    out.push(' ');
                } else {
                    self.expand(c, &mut |n| out.push(n));
                }
            }
        }
        out
    }

    /// `clean_text`: `None` drops the character.
    #[inline]
    fn clean(&self, c: char) -> Option<char> {
        if !self.clean_text {
            Some(c)
        } else if c == '\0' || c == '\u{fffd}' || is_control(c) {
            None
        } else if is_bert_whitespace(c) {
            Some(' ')
        } else {
            Some(c)
        }
    }

    /// Accent stripping and lowercasing of one (clean) character.
    #[inline]
    fn expand(&self, c: char, out: &mut dyn FnMut(char)) {
        let lower = |d: char, out: &mut dyn FnMut(char)| {
            if self.lowercase {
                d.to_lowercase().for_each(&mut *out);
            } else {
                out(d);
            }
        };
        if self.strips_accents() {
            decompose_canonical(c, |d| {
                if !d.is_mark_nonspacing() {
                    lower(d, out);
                }
            });
        } else {
            lower(c, out);
        }
    }

    /// The ASCII fast path: what each byte below 0x80 becomes.
    fn ascii_table(&self) -> [Ascii; 128] {
        let mut table = [Ascii::Space; 128];
        for (b, slot) in table.iter_mut().enumerate() {
            let c = b as u8 as char;
            *slot = match self.clean(c) {
                None => Ascii::Removed,
                Some(c) if c.is_whitespace() => Ascii::Space,
                Some(c) if is_bert_punctuation(c) => Ascii::Punct,
                Some(c) if self.lowercase => Ascii::Word(c.to_ascii_lowercase() as u8),
                Some(c) => Ascii::Word(c as u8),
            };
        }
        table
    }
}

/// What an ASCII byte does under a normalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ascii {
    Removed,
    Space,
    Punct,
    Word(u8),
}

/// BERT's whitespace: Unicode White_Space, tab, newline and carriage return.
pub(crate) fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// BERT's control characters: Cc, Cf and Co, except tab, newline and carriage return.
pub(crate) fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// The CJK ideograph blocks BERT pads with spaces (not Hangul, Hiragana or Katakana).
pub(crate) fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// BERT's punctuation: ASCII punctuation (which includes symbols such as `$` and `+`) and the
/// Unicode P categories.
pub(crate) fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// Where a word's normalized bytes came from in the original text.
pub(crate) enum Align<'a> {
    /// Normalized byte `i` is original byte `base + i` (ASCII that only changed case).
    Identity(usize),
    /// Per normalized byte: the original range of the character it came from.
    Map(&'a [(usize, usize)]),
}

impl Align<'_> {
    /// The original range of normalized bytes `start..end` (on character boundaries).
    #[inline]
    pub(crate) fn span(&self, start: usize, end: usize) -> (usize, usize) {
        match self {
            Align::Identity(base) => (base + start, base + end),
            Align::Map(map) => (map[start].0, map[end - 1].1),
        }
    }
}

/// The word being built, reused from word to word.
#[derive(Default)]
pub(crate) struct WordBuf {
    text: String,
    chars: usize,
    base: usize,
    /// Empty while the word is `Align::Identity(base)`.
    map: Vec<(usize, usize)>,
    nfd: Nfd,
    /// Collect the whole normalized text, whitespace and punctuation included, unsplit.
    raw: bool,
}

impl WordBuf {
    #[inline]
    fn push_ascii(&mut self, b: u8, at: usize) {
        if self.text.is_empty() {
            self.base = at;
            self.map.clear();
        }
        if self.map.is_empty() && at == self.base + self.text.len() {
            self.text.push(b as char);
        } else {
            self.materialize();
            self.text.push(b as char);
            self.map.push((at, at + 1));
        }
        self.chars += 1;
    }

    #[inline]
    fn push(&mut self, c: char, from: (usize, usize)) {
        if self.text.is_empty() {
            self.base = from.0;
            self.map.clear();
        }
        if self.map.is_empty()
            && from.0 == self.base + self.text.len()
            && from.1 - from.0 == c.len_utf8()
        {
            self.text.push(c);
        } else {
            self.materialize();
            self.text.push(c);
            self.map.extend(std::iter::repeat_n(from, c.len_utf8()));
        }
        self.chars += 1;
    }

    /// Leaves identity mode: writes the map of the bytes so far.
    fn materialize(&mut self) {
        if self.map.is_empty() {
            let base = self.base;
            self.map
                .extend((0..self.text.len()).map(|i| (base + i, base + i + 1)));
        }
    }

    #[inline]
    fn flush(&mut self, emit: &mut impl FnMut(&str, usize, Align<'_>)) {
        if !self.text.is_empty() {
            let align = if self.map.is_empty() {
                Align::Identity(self.base)
            } else {
                Align::Map(&self.map)
            };
            emit(&self.text, self.chars, align);
            self.text.clear();
            self.map.clear();
            self.chars = 0;
        }
    }
}

/// Canonical decomposition of a stream of characters, as Hugging Face's
/// `unicode-normalization-alignments` does it, alignments included: a run of non-starters is
/// sorted by combining class (stably) before it is released, and the k-th character that
/// starts a decomposition takes the k-th input character's range, wherever sorting put it;
/// the others take the range of the last input character consumed. Marks are almost always
/// dropped afterwards, but the sorting can still move which range a surviving character gets.
#[derive(Default)]
struct Nfd {
    /// Non-starters since the last starter: (combining class, character, starts a decomposition).
    pending: Vec<(u8, char, bool)>,
    /// Ranges of input characters whose first output is still pending.
    inputs: std::collections::VecDeque<(usize, usize)>,
    /// Range of the last input character consumed.
    last: (usize, usize),
}

/// Normalizes and splits text into words, BERT's way.
#[derive(Clone, Debug)]
pub(crate) struct Splitter {
    normalizer: Option<BertNormalizer>,
    ascii: [Ascii; 128],
}

impl Splitter {
    pub(crate) fn new(normalizer: Option<BertNormalizer>) -> Self {
        let ascii = normalizer.unwrap_or(BertNormalizer {
            clean_text: false,
            handle_chinese_chars: false,
            strip_accents: Some(false),
            lowercase: false,
        });
        Self {
            normalizer,
            ascii: ascii.ascii_table(),
        }
    }

    pub(crate) fn normalizer(&self) -> Option<BertNormalizer> {
        self.normalizer
    }

    /// Calls `emit(word, chars in word, alignment)` for each word of `text`, whose first byte is
    /// at `offset` in the original text.
    pub(crate) fn split(
        &self,
        text: &str,
        offset: usize,
        buf: &mut WordBuf,
        mut emit: impl FnMut(&str, usize, Align<'_>),
    ) {
        let bytes = text.as_bytes();
        buf.nfd.last = (offset, offset);
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] < 0x80 {
                i = self.ascii_run(bytes, i, offset, buf, &mut emit);
                continue;
            }
            let c = text[i..].chars().next().expect("a character starts here");
            let from = (offset + i, offset + i + c.len_utf8());
            i += c.len_utf8();
            self.push_char(c, from, buf, &mut emit);
        }
        self.release(buf, &mut emit);
        buf.flush(&mut emit);
    }

    /// The ASCII bytes from `start` on, by table; returns where they end. Per run, not per
    /// byte: releasing the marks before the run (ASCII characters are starters) and noting
    /// the last character consumed, which the decomposition of what follows may need.
    #[inline]
    fn ascii_run(
        &self,
        bytes: &[u8],
        start: usize,
        offset: usize,
        buf: &mut WordBuf,
        emit: &mut impl FnMut(&str, usize, Align<'_>),
    ) -> usize {
        let mut i = start;
        if !buf.nfd.pending.is_empty() {
            while i < bytes.len()
                && bytes[i] < 0x80
                && self.ascii[bytes[i] as usize] == Ascii::Removed
            {
                i += 1;
            }
            if i < bytes.len() && bytes[i] < 0x80 {
                self.release(buf, emit);
            }
        }
        while i < bytes.len() && bytes[i] < 0x80 {
            let b = bytes[i];
            match self.ascii[b as usize] {
                Ascii::Word(n) => buf.push_ascii(n, offset + i),
                Ascii::Space => buf.flush(emit),
                Ascii::Punct => {
                    buf.flush(emit);
                    buf.push_ascii(b, offset + i);
                    buf.flush(emit);
                }
                Ascii::Removed => {}
            }
            i += 1;
        }
        if let Some(k) = bytes[start..i]
            .iter()
            .rposition(|&b| self.ascii[b as usize] != Ascii::Removed)
        {
            let at = offset + start + k;
            buf.nfd.last = (at, at + 1);
        }
        i
    }

    #[cold]
    fn push_char(
        &self,
        c: char,
        from: (usize, usize),
        buf: &mut WordBuf,
        emit: &mut impl FnMut(&str, usize, Align<'_>),
    ) {
        let Some(n) = self.normalizer else {
            return place(c, from, buf, emit);
        };
        let Some(c) = n.clean(c) else { return };
        let chinese = n.handle_chinese_chars && is_chinese_char(c);
        if chinese {
            // Padded with spaces, which are starters and end the word.
            self.release(buf, emit);
            pad(from, buf, emit);
        }
        if n.strips_accents() {
            buf.nfd.inputs.push_back(from);
            let mut first = true;
            decompose_canonical(c, |d| {
                let class = canonical_combining_class(d);
                if class == 0 {
                    self.release(buf, emit);
                    self.output(d, first, buf, emit);
                } else {
                    buf.nfd.pending.push((class, d, first));
                }
                first = false;
            });
        } else {
            self.lower(c, from, buf, emit);
        }
        if chinese {
            self.release(buf, emit);
            pad(from, buf, emit);
        }
    }

    /// The normalized text of `text` (whose first byte is at `offset`), unsplit, with each
    /// byte's original range: for added tokens that are matched after normalization.
    pub(crate) fn normalize_aligned(
        &self,
        text: &str,
        offset: usize,
        buf: &mut WordBuf,
    ) -> (String, Vec<(usize, usize)>) {
        let mut never = |_: &str, _: usize, _: Align<'_>| {};
        buf.raw = true;
        buf.nfd.last = (offset, offset);
        for (i, c) in text.char_indices() {
            self.push_char(c, (offset + i, offset + i + c.len_utf8()), buf, &mut never);
        }
        self.release(buf, &mut never);
        buf.raw = false;
        buf.materialize();
        buf.chars = 0;
        (std::mem::take(&mut buf.text), std::mem::take(&mut buf.map))
    }

    /// Sorts and releases the pending non-starters.
    fn release(&self, buf: &mut WordBuf, emit: &mut impl FnMut(&str, usize, Align<'_>)) {
        if buf.nfd.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut buf.nfd.pending);
        pending.sort_by_key(|p| p.0);
        for &(_, d, first) in &pending {
            self.output(d, first, buf, emit);
        }
        pending.clear();
        buf.nfd.pending = pending;
    }

    /// One character out of the decomposition: its range, then mark stripping and lowercase.
    fn output(
        &self,
        d: char,
        first: bool,
        buf: &mut WordBuf,
        emit: &mut impl FnMut(&str, usize, Align<'_>),
    ) {
        let from = if first {
            let next = buf.nfd.inputs.pop_front();
            buf.nfd.last = next.unwrap_or(buf.nfd.last);
            buf.nfd.last
        } else {
            buf.nfd.last
        };
        if !d.is_mark_nonspacing() {
            self.lower(d, from, buf, emit);
        }
    }

    fn lower(
        &self,
        d: char,
        from: (usize, usize),
        buf: &mut WordBuf,
        emit: &mut impl FnMut(&str, usize, Align<'_>),
    ) {
        if self.normalizer.is_some_and(|n| n.lowercase) {
            for l in d.to_lowercase() {
                place(l, from, buf, emit);
            }
        } else {
            place(d, from, buf, emit);
        }
    }
}

/// The space BERT puts on either side of a CJK ideograph.
fn pad(from: (usize, usize), buf: &mut WordBuf, emit: &mut impl FnMut(&str, usize, Align<'_>)) {
    if buf.raw {
        buf.push(' ', from);
    } else {
        buf.flush(emit);
    }
}

/// Puts one normalized character where the pre-tokenizer sends it.
#[inline]
fn place(
    d: char,
    from: (usize, usize),
    buf: &mut WordBuf,
    emit: &mut impl FnMut(&str, usize, Align<'_>),
) {
    if buf.raw {
        buf.push(d, from);
    } else if d.is_whitespace() {
        buf.flush(emit);
    } else if is_bert_punctuation(d) {
        buf.flush(emit);
        buf.push(d, from);
        buf.flush(emit);
    } else {
        buf.push(d, from);
    }
}
