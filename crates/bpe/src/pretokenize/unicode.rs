//! Character classes of the OpenAI patterns, `\p{L}`, `\p{N}` and `\s`, for the
//! hand-written scanners: taken from regex-syntax, the tables the regex engine itself uses, so
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

/// Unicode `\p{L}`, `\p{N}` and `\s` as regex-syntax defines them (the tables the regex
/// engine uses, so the two can never disagree), plus a direct table for 1- and 2-byte
/// UTF-8 characters.
pub(super) struct Classes {
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

pub(super) static CLASSES: LazyLock<Classes> = LazyLock::new(|| {
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
    pub(super) fn of(&self, c: char) -> Kind {
        let c = c as u32;
        if c < SMALL {
            self.small[c as usize]
        } else {
            self.lookup(c)
        }
    }
}

#[inline]
pub(super) fn char_at(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}
