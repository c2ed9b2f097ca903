//! A hand-written scanner for cl100k_base's pattern, as `gpt2.rs` is for GPT-2's (checked
//! against the regex on arbitrary strings in `tests.rs`). In its runnable spelling:
//!
//! `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+$|\s*[\r\n]|\s+(?!\S)|\s`

use super::unicode::{CLASSES, Kind, char_at, contraction, run, space_run};

/// End of the piece that starts at `at` (< `text.len()`).
pub(super) fn piece_end(text: &str, at: usize) -> usize {
    let classes = &*CLASSES;
    let Some(c) = char_at(text, at) else {
        return text.len();
    };
    let after = at + c.len_utf8();
    if c == '\''
        && let Some(n) = contraction(&text[after..])
    {
        return after + n;
    }
    let kind = classes.of(c);
    let next = char_at(text, after);
    let next_kind = next.map(|n| classes.of(n));
    let next_end = after + next.map_or(0, char::len_utf8);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if kind == Kind::Letter {
        return run(text, after, Kind::Letter, usize::MAX);
    }
    if kind != Kind::Number && c != '\r' && c != '\n' && next_kind == Some(Kind::Letter) {
        return run(text, next_end, Kind::Letter, usize::MAX);
    }
    // \p{N}{1,3}
    if kind == Kind::Number {
        return run(text, after, Kind::Number, 2);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other_from = if kind == Kind::Other {
        Some(after)
    } else if c == ' ' && next_kind == Some(Kind::Other) {
        Some(next_end)
    } else {
        None
    };
    if let Some(from) = other_from {
        let end = run(text, from, Kind::Other, usize::MAX);
        let newlines = text[end..]
            .bytes()
            .take_while(|&b| b == b'\r' || b == b'\n')
            .count();
        return end + newlines;
    }
    // A whitespace run: `\s+$`, then `\s*[\r\n]` (up to its last newline), then `\s+(?!\S)`
    // (all but its last character), then `\s` (one character).
    let run = space_run(text, at);
    if run.end == text.len() {
        run.end
    } else if let Some(newline) = run.after_newline {
        newline
    } else if run.count >= 2 {
        run.but_last
    } else {
        run.end
    }
}
