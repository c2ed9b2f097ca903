//! Character classes of the OpenAI patterns (`\p{L}`, `\p{N}`, `\s`, o200k's case classes)
//! and their contractions, for the hand-written scanners: taken from regex-syntax, the tables the regex engine itself uses, so
//! scanner and regex can never disagree on a character.

use std::sync::LazyLock;

use regex_syntax::hir::{Class, HirKind};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum Kind {
    Letter,
    Number,
    Space,
    Other,
}

/// A classification of characters: ranges from regex-syntax's Unicode tables (the ones the
/// regex engine uses, so scanner and regex never disagree), plus a direct table for 1- and
/// 2-byte UTF-8 characters, where nearly all text is.
pub(super) struct Table<T> {
    small: Vec<T>,
    ranges: Vec<(u32, u32, T)>,
    default: T,
}

const SMALL: u32 = 0x800;

fn ranges_of<T: Copy>(pattern: &str, value: T) -> Vec<(u32, u32, T)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .unwrap_or_else(|e| panic!("built-in class {pattern}: {e}"));
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32, value))
            .collect(),
        other => panic!("built-in class {pattern} parsed as {other:?}"),
    }
}

impl<T: Copy> Table<T> {
    /// `classes`: disjoint classes (regex syntax) and their values; other characters get
    /// `default`.
    fn new(classes: &[(&str, T)], default: T) -> Self {
        let mut ranges: Vec<_> = classes
            .iter()
            .flat_map(|&(pattern, value)| ranges_of(pattern, value))
            .collect();
        ranges.sort_unstable_by_key(|r| r.0);
        let mut table = Table {
            small: Vec::new(),
            ranges,
            default,
        };
        table.small = (0..SMALL).map(|c| table.lookup(c)).collect();
        table
    }

    fn lookup(&self, c: u32) -> T {
        let i = self.ranges.partition_point(|r| r.0 <= c);
        match i.checked_sub(1).map(|i| self.ranges[i]) {
            Some((_, end, value)) if c <= end => value,
            _ => self.default,
        }
    }

    #[inline]
    pub(super) fn of(&self, c: char) -> T {
        let c = c as u32;
        if c < SMALL {
            self.small[c as usize]
        } else {
            self.lookup(c)
        }
    }
}

/// `\p{L}`, `\p{N}`, `\s`, or none of them.
pub(super) static CLASSES: LazyLock<Table<Kind>> = LazyLock::new(|| {
    Table::new(
        &[
            (r"\p{L}", Kind::Letter),
            (r"\p{N}", Kind::Number),
            (r"\s", Kind::Space),
        ],
        Kind::Other,
    )
});

/// o200k's letter-case classes, as bits: [`UPPER`] = `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`,
/// [`LOWER`] = `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` (modifier and other letters, and marks, are both).
pub(super) static CASES: LazyLock<Table<u8>> = LazyLock::new(|| {
    Table::new(
        &[
            (r"[\p{Lu}\p{Lt}]", UPPER),
            (r"\p{Ll}", LOWER),
            (r"[\p{Lm}\p{Lo}\p{M}]", UPPER | LOWER),
        ],
        0,
    )
});

pub(super) const UPPER: u8 = 1;
pub(super) const LOWER: u8 = 2;

/// Unicode simple case folding, for the letters the contractions use: only `ſ` (long s)
/// folds onto one of them besides the ASCII capitals.
fn fold(c: char) -> char {
    if c == 'ſ' {
        's'
    } else {
        c.to_ascii_lowercase()
    }
}

/// Length of the contraction suffix (`s`, `ll`, …) at the start of `rest`, if any:
/// `(?i:s|t|re|ve|m|ll|d)` after the apostrophe.
pub(super) fn contraction(rest: &str) -> Option<usize> {
    let mut chars = rest.chars();
    let a = chars.next()?;
    match fold(a) {
        's' | 'd' | 'm' | 't' => Some(a.len_utf8()),
        first @ ('l' | 'v' | 'r') => {
            let b = chars.next()?;
            let want = if first == 'l' { 'l' } else { 'e' };
            (fold(b) == want).then(|| a.len_utf8() + b.len_utf8())
        }
        _ => None,
    }
}

/// End of the run of `kind` from `from`, at most `max` characters.
pub(super) fn run(text: &str, from: usize, kind: Kind, max: usize) -> usize {
    let mut end = from;
    for ch in text[from..].chars().take(max) {
        if CLASSES.of(ch) != kind {
            break;
        }
        end += ch.len_utf8();
    }
    crate::ops::add(end - from);
    end
}

/// A run of whitespace, as the patterns' whitespace alternatives see it.
pub(super) struct SpaceRun {
    /// Where the run ends.
    pub end: usize,
    /// Where it would end without its last character (`\s+(?!\S)` before a non-space).
    pub but_last: usize,
    /// Characters in it.
    pub count: usize,
    /// Just after its last `\r` or `\n`, if it has one (`\s*[\r\n]`).
    pub after_newline: Option<usize>,
}

/// The whitespace run starting at `at`.
pub(super) fn space_run(text: &str, at: usize) -> SpaceRun {
    let mut run = SpaceRun {
        end: at,
        but_last: at,
        count: 0,
        after_newline: None,
    };
    for ch in text[at..].chars() {
        if CLASSES.of(ch) != Kind::Space {
            break;
        }
        run.but_last = run.end;
        run.end += ch.len_utf8();
        run.count += 1;
        if ch == '\r' || ch == '\n' {
            run.after_newline = Some(run.end);
        }
    }
    crate::ops::add(run.count);
    run
}

#[inline]
pub(super) fn char_at(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}
