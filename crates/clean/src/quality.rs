//! Gopher's quality and repetition heuristics (Rae et al. 2021, "Scaling Language Models",
//! appendix A.1.1 and table A1), with the paper's thresholds by default.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Thresholds; a document outside any of them is dropped. `None` turns a rule off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gopher {
    /// Fewest words (whitespace-separated).
    pub min_words: Option<usize>,
    /// Most words.
    pub max_words: Option<usize>,
    /// Shortest mean word length, in characters.
    pub min_mean_word_length: Option<f64>,
    /// Longest mean word length.
    pub max_mean_word_length: Option<f64>,
    /// Most `#` per word, and most ellipses (`...` or `…`) per word.
    pub max_symbol_word_ratio: Option<f64>,
    /// Most lines starting with a bullet.
    pub max_bullet_lines: Option<f64>,
    /// Most lines ending with an ellipsis.
    pub max_ellipsis_lines: Option<f64>,
    /// Fewest words with at least one letter.
    pub min_alphabetic_words: Option<f64>,
    /// Most lines that repeat an earlier line.
    pub max_duplicate_lines: Option<f64>,
    /// Most paragraphs (separated by blank lines) that repeat an earlier one.
    pub max_duplicate_paragraphs: Option<f64>,
    /// Most characters in lines that repeat an earlier line.
    pub max_duplicate_line_chars: Option<f64>,
    /// Most characters in paragraphs that repeat an earlier one.
    pub max_duplicate_paragraph_chars: Option<f64>,
}

impl Default for Gopher {
    fn default() -> Gopher {
        Gopher {
            min_words: Some(50),
            max_words: Some(100_000),
            min_mean_word_length: Some(3.0),
            max_mean_word_length: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines: Some(0.9),
            max_ellipsis_lines: Some(0.3),
            min_alphabetic_words: Some(0.8),
            max_duplicate_lines: Some(0.3),
            max_duplicate_paragraphs: Some(0.3),
            max_duplicate_line_chars: Some(0.2),
            max_duplicate_paragraph_chars: Some(0.2),
        }
    }
}

const BULLETS: &[char] = &['•', '●', '○', '◦', '▪', '▫', '‣', '⁃', '-', '*', '·'];

fn over(value: f64, limit: Option<f64>) -> bool {
    limit.is_some_and(|limit| value > limit)
}

fn under(value: f64, limit: Option<f64>) -> bool {
    limit.is_some_and(|limit| value < limit)
}

/// (repeated units, characters in repeated units, all units, all characters): a unit counts as
/// repeated when an identical one came before it.
fn repetition<'a>(units: impl Iterator<Item = &'a str>) -> (usize, usize, usize, usize) {
    let mut seen = HashSet::new();
    let (mut repeated, mut repeated_chars, mut all, mut chars) = (0, 0, 0, 0);
    for unit in units {
        let n = unit.chars().count();
        all += 1;
        chars += n;
        if !seen.insert(unit) {
            repeated += 1;
            repeated_chars += n;
        }
    }
    (repeated, repeated_chars, all, chars)
}

impl Gopher {
    /// Every rule off.
    pub fn off() -> Gopher {
        Gopher {
            min_words: None,
            max_words: None,
            min_mean_word_length: None,
            max_mean_word_length: None,
            max_symbol_word_ratio: None,
            max_bullet_lines: None,
            max_ellipsis_lines: None,
            min_alphabetic_words: None,
            max_duplicate_lines: None,
            max_duplicate_paragraphs: None,
            max_duplicate_line_chars: None,
            max_duplicate_paragraph_chars: None,
        }
    }

    /// The first rule `text` breaks, as the report names it; `None` keeps it.
    pub fn check(&self, text: &str) -> Option<&'static str> {
        let mut words = 0usize;
        let mut word_chars = 0usize;
        let mut alphabetic = 0usize;
        for word in text.split_whitespace() {
            words += 1;
            word_chars += word.chars().count();
            if word.chars().any(char::is_alphabetic) {
                alphabetic += 1;
            }
        }
        if self.min_words.is_some_and(|m| words < m) {
            return Some("too_few_words");
        }
        if self.max_words.is_some_and(|m| words > m) {
            return Some("too_many_words");
        }
        let per_word = |n: usize| n as f64 / words.max(1) as f64;
        let mean = per_word(word_chars);
        if under(mean, self.min_mean_word_length) {
            return Some("short_words");
        }
        if over(mean, self.max_mean_word_length) {
            return Some("long_words");
        }
        let hashes = text.matches('#').count();
        let ellipses = text.matches("...").count() + text.matches('…').count();
        if over(per_word(hashes), self.max_symbol_word_ratio)
            || over(per_word(ellipses), self.max_symbol_word_ratio)
        {
            return Some("symbols");
        }
        if under(per_word(alphabetic), self.min_alphabetic_words) {
            return Some("non_alphabetic_words");
        }

        let lines: Vec<&str> = text
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let per_line = |n: usize| n as f64 / lines.len().max(1) as f64;
        let bullets = lines.iter().filter(|l| l.starts_with(BULLETS)).count();
        if over(per_line(bullets), self.max_bullet_lines) {
            return Some("bullet_lines");
        }
        let ellipsis_lines = lines
            .iter()
            .filter(|l| l.ends_with("...") || l.ends_with('…'))
            .count();
        if over(per_line(ellipsis_lines), self.max_ellipsis_lines) {
            return Some("ellipsis_lines");
        }
        let (rep, rep_chars, all, chars) = repetition(lines.iter().copied());
        if over(rep as f64 / all.max(1) as f64, self.max_duplicate_lines) {
            return Some("duplicate_lines");
        }
        if over(
            rep_chars as f64 / chars.max(1) as f64,
            self.max_duplicate_line_chars,
        ) {
            return Some("duplicate_line_chars");
        }
        let paragraphs = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
        let (rep, rep_chars, all, chars) = repetition(paragraphs);
        if over(
            rep as f64 / all.max(1) as f64,
            self.max_duplicate_paragraphs,
        ) {
            return Some("duplicate_paragraphs");
        }
        if over(
            rep_chars as f64 / chars.max(1) as f64,
            self.max_duplicate_paragraph_chars,
        ) {
            return Some("duplicate_paragraph_chars");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prose(words: usize) -> String {
        let pool = [
            "the", "garden", "river", "morning", "tortoise", "watched", "boats", "quietly",
            "under", "willow", "branches", "while",
        ];
        let mut lines = Vec::new();
        for l in 0..words.div_ceil(8) {
            let line: Vec<&str> = (0..8)
                .map(|i| pool[(l * 8 + i * 5 + l) % pool.len()])
                .collect();
            lines.push(format!("{} {l}x.", line.join(" ")));
        }
        lines.join("\n")
    }

    #[test]
    fn paper_defaults_keep_prose_and_name_the_rule_broken() {
        let g = Gopher::default();
        let good = prose(120);
        assert_eq!(g.check(&good), None, "{good}");
        assert_eq!(g.check("a few words only"), Some("too_few_words"));
        assert_eq!(g.check(&"a b c ".repeat(30)), Some("short_words"));
        assert_eq!(
            g.check(&"incomprehensibilities ".repeat(60)),
            Some("long_words")
        );
        assert_eq!(
            g.check(&format!("{good} {}", "#tag ".repeat(40))),
            Some("symbols")
        );
        assert_eq!(
            g.check(&format!("{good}\n{}", "1234 5678\n".repeat(60))),
            Some("non_alphabetic_words")
        );
        let bullets: String = (0..60)
            .map(|i| format!("• item number here{}\n", " and more".repeat(i % 3)))
            .collect();
        assert_eq!(g.check(&bullets), Some("bullet_lines"));
        let trailing: String = (0..60)
            .map(|i| format!("and then the long story of the old garden went quietly on {i}...\n"))
            .collect();
        assert_eq!(g.check(&trailing), Some("ellipsis_lines"));
        let repeated = format!(
            "{good}\n{}",
            "Subscribe to our newsletter today\n".repeat(40)
        );
        assert_eq!(g.check(&repeated), Some("duplicate_lines"));
        assert_eq!(Gopher::off().check("x"), None);
    }

    #[test]
    fn repetition_counts_later_copies_only() {
        assert_eq!(repetition(["a", "bb", "a", "a"].into_iter()), (2, 2, 4, 5));
    }
}
