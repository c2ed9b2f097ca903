//! A hand-written scanner for o200k_base's pattern, as `gpt2.rs` is for GPT-2's (checked
//! against the regex on arbitrary strings in `tests.rs`):
//!
//! ```text
//! [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! The first two alternatives ("upper* lower+", "upper+ lower*") overlap (modifier and other
//! letters and marks are both), so the scanner follows a backtracking engine's order: the
//! optional prefix taken before not, the upper run longest first.

use super::unicode::{CASES, CLASSES, Kind, LOWER, UPPER, char_at, contraction, run, space_run};

/// End of the run of characters having case bit `bit`, from `from`.
fn case_run(text: &str, from: usize, bit: u8) -> usize {
    let mut end = from;
    for ch in text[from..].chars() {
        if CASES.of(ch) & bit == 0 {
            break;
        }
        end += ch.len_utf8();
    }
    crate::ops::add(end - from);
    end
}

/// The optional contraction after a word.
fn with_contraction(text: &str, end: usize) -> usize {
    if text[end..].starts_with('\'')
        && let Some(n) = contraction(&text[end + 1..])
    {
        end + 1 + n
    } else {
        end
    }
}

/// `upper* lower+` from `from`: the longest upper run, given back one character at a time
/// until a lower character follows.
fn upper_then_lower(text: &str, from: usize) -> Option<usize> {
    let upper_end = case_run(text, from, UPPER);
    if char_at(text, upper_end).is_some_and(|c| CASES.of(c) & LOWER != 0) {
        return Some(case_run(text, upper_end, LOWER));
    }
    crate::ops::add(upper_end - from);
    let (at, _) = text[from..upper_end]
        .char_indices()
        .rev()
        .find(|&(_, c)| CASES.of(c) & LOWER != 0)?;
    Some(case_run(text, from + at, LOWER))
}

/// End of the piece that starts at `at` (< `text.len()`).
pub(super) fn piece_end(text: &str, at: usize) -> usize {
    let classes = &*CLASSES;
    let Some(c) = char_at(text, at) else {
        return text.len();
    };
    let after = at + c.len_utf8();
    let kind = classes.of(c);
    // The optional `[^\r\n\p{L}\p{N}]` prefix: taken first, then not.
    let prefixed = c != '\r' && c != '\n' && kind != Kind::Letter && kind != Kind::Number;
    let starts: &[usize] = if prefixed { &[after, at] } else { &[at] };
    for &from in starts {
        if let Some(end) = upper_then_lower(text, from) {
            return with_contraction(text, end);
        }
    }
    for &from in starts {
        let upper_end = case_run(text, from, UPPER);
        if upper_end > from {
            return with_contraction(text, case_run(text, upper_end, LOWER));
        }
    }
    // \p{N}{1,3}
    if kind == Kind::Number {
        return run(text, after, Kind::Number, 2);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
    let next = char_at(text, after);
    let next_end = after + next.map_or(0, char::len_utf8);
    let other_from = if kind == Kind::Other {
        Some(after)
    } else if c == ' ' && next.is_some_and(|n| classes.of(n) == Kind::Other) {
        Some(next_end)
    } else {
        None
    };
    if let Some(from) = other_from {
        let end = run(text, from, Kind::Other, usize::MAX);
        let tail = text[end..]
            .bytes()
            .take_while(|&b| matches!(b, b'\r' | b'\n' | b'/'))
            .count();
        return end + tail;
    }
    // A whitespace run: `\s*[\r\n]+` (up to its last newline), then `\s+(?!\S)` (all of it at
    // the end of the text, else all but its last character), then `\s+` (one character).
    let run = space_run(text, at);
    if let Some(newline) = run.after_newline {
        newline
    } else if run.end == text.len() || run.count == 1 {
        run.end
    } else {
        run.but_last
    }
}
