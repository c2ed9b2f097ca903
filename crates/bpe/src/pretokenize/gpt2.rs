//! A hand-written scanner for GPT-2's pattern, the default: the same pieces as the regex
//! (`tests.rs` checks it against the regex on arbitrary strings), at several times the speed,
//! because it classifies each character once and never searches backwards for a match start.
//!
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

use std::sync::LazyLock;

use regex_syntax::hir::{Class, HirKind};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Letter,
    Number,
    Space,
    Other,
}

/// Unicode `\p{L}`, `\p{N}` and `\s` as regex-syntax defines them (the tables the regex
/// engine uses, so the two can never disagree), plus a direct table for 1- and 2-byte
/// UTF-8 characters.
struct Classes {
    small: Vec<Kind>,
    ranges: Vec<(u32, u32, Kind)>,
}

const SMALL: u32 = 0x800;

fn ranges_of(pattern: &str, kind: Kind) -> Vec<(u32, u32, Kind)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .unwrap_or_else(|e| panic!("built-in class {pattern}: {e}"));
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32, kind))
            .collect(),
        other => panic!("built-in class {pattern} parsed as {other:?}"),
    }
}

static CLASSES: LazyLock<Classes> = LazyLock::new(|| {
    let mut ranges = ranges_of(r"\p{L}", Kind::Letter);
    ranges.extend(ranges_of(r"\p{N}", Kind::Number));
    ranges.extend(ranges_of(r"\s", Kind::Space));
    ranges.sort_unstable_by_key(|r| r.0);
    let mut classes = Classes {
        small: Vec::new(),
        ranges,
    };
    classes.small = (0..SMALL).map(|c| classes.lookup(c)).collect();
    classes
});

impl Classes {
    fn lookup(&self, c: u32) -> Kind {
        let i = self.ranges.partition_point(|r| r.0 <= c);
        match i.checked_sub(1).map(|i| self.ranges[i]) {
            Some((_, end, kind)) if c <= end => kind,
            _ => Kind::Other,
        }
    }

    #[inline]
    fn of(&self, c: char) -> Kind {
        let c = c as u32;
        if c < SMALL {
            self.small[c as usize]
        } else {
            self.lookup(c)
        }
    }
}

#[inline]
fn char_at(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

/// End of the piece that starts at `at` (< `text.len()`).
pub(super) fn piece_end(text: &str, at: usize) -> usize {
    let classes = &*CLASSES;
    let bytes = text.as_bytes();
    let Some(c) = char_at(text, at) else {
        return text.len();
    };
    if c == '\'' {
        let rest = &bytes[at + 1..];
        for suffix in [&b"s"[..], b"t", b"re", b"ve", b"m", b"ll", b"d"] {
            if rest.starts_with(suffix) {
                return at + 1 + suffix.len();
            }
        }
    }
    let mut kind = classes.of(c);
    let mut from = at + c.len_utf8();
    if c == ' '
        && let Some(next) = char_at(text, from)
    {
        let next_kind = classes.of(next);
        if next_kind != Kind::Space {
            kind = next_kind;
            from += next.len_utf8();
        }
    }
    if kind != Kind::Space {
        let mut end = from;
        for ch in text[from..].chars() {
            if classes.of(ch) != kind {
                break;
            }
            end += ch.len_utf8();
        }
        crate::ops::add(end - at);
        return end;
    }
    // A whitespace run: whole at the end of the text; followed by a non-space, it leaves its
    // last character to start the next piece (the `(?!\S)` look-ahead), unless it is just one.
    let mut end = at;
    let mut last = 0;
    let mut count = 0;
    for ch in text[at..].chars() {
        if classes.of(ch) != Kind::Space {
            break;
        }
        last = ch.len_utf8();
        end += last;
        count += 1;
    }
    crate::ops::add(count);
    if end == text.len() || count == 1 {
        end
    } else {
        end - last
    }
}
