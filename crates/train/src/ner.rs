//! Entity-level precision, recall and F1 of tagged sentences (`B-PER I-PER O …`), as
//! `seqeval` computes them for NER: tags are cut into entities with its lenient chunking (an
//! `I-` after `O` or after another type starts an entity; `E-` and `S-` are understood), an
//! entity is `(type, first, last)` over the sentences laid end to end, and only an exact match
//! of all three counts.
//!
//! ```
//! use lmforge_train::ner::score;
//!
//! let truth = vec![vec!["B-PER".to_string(), "I-PER".into(), "O".into(), "B-LOC".into()]];
//! let predicted = vec![vec!["B-PER".to_string(), "I-PER".into(), "O".into(), "O".into()]];
//! let s = score(&truth, &predicted);
//! assert_eq!((s.correct, s.predicted, s.relevant), (1, 1, 2));
//! assert_eq!((s.precision, s.recall), (1.0, 0.5));
//! ```

use std::collections::BTreeSet;

/// An entity: its type and its first and last positions (inclusive) over all the sentences.
pub type Entity = (String, usize, usize);

/// What [`score`] counts, and the micro-averaged scores (0 where a denominator is 0, as
/// seqeval reports them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Predicted entities that are true ones.
    pub correct: usize,
    /// Entities predicted.
    pub predicted: usize,
    /// True entities.
    pub relevant: usize,
    /// `correct / predicted`.
    pub precision: f64,
    /// `correct / relevant`.
    pub recall: f64,
    /// Their harmonic mean.
    pub f1: f64,
}

/// seqeval's split of a tag: its first character (`B`, `I`, `E`, `S`, `O`) and the type after
/// the first `-` that follows it (`_` where there is none).
fn parts(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let first = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, k)| k);
    (first, if kind.is_empty() { "_" } else { kind })
}

fn ends(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_kind != kind)
}

fn starts(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_kind != kind)
}

/// The entities of `sentences`, laid end to end with an `O` after each (seqeval's
/// `get_entities`).
pub fn entities<S: AsRef<str>>(sentences: &[Vec<S>]) -> Vec<Entity> {
    let tags = sentences
        .iter()
        .flat_map(|s| s.iter().map(AsRef::as_ref).chain(["O"]))
        .chain(["O"]);
    let mut found = Vec::new();
    let (mut prev, mut prev_kind, mut begin) = ('O', String::new(), 0);
    for (i, tag) in tags.enumerate() {
        let (tag, kind) = parts(tag);
        if ends(prev, tag, &prev_kind, kind) {
            found.push((prev_kind.clone(), begin, i - 1));
        }
        if starts(prev, tag, &prev_kind, kind) {
            begin = i;
        }
        prev = tag;
        prev_kind = kind.to_string();
    }
    found
}

/// Micro-averaged entity scores of `predicted` against `truth` (sentences of tags).
pub fn score<S: AsRef<str>>(truth: &[Vec<S>], predicted: &[Vec<S>]) -> Scores {
    let truth: BTreeSet<Entity> = entities(truth).into_iter().collect();
    let predicted: BTreeSet<Entity> = entities(predicted).into_iter().collect();
    let correct = truth.intersection(&predicted).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (ratio(correct, predicted.len()), ratio(correct, truth.len()));
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Scores {
        correct,
        predicted: predicted.len(),
        relevant: truth.len(),
        precision,
        recall,
        f1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<Vec<String>> {
        vec![s.split(' ').map(str::to_string).collect()]
    }

    #[test]
    fn chunks_as_seqeval_cuts_them() {
        // seqeval's own docstring example.
        let seq = tags("B-PER I-PER O B-LOC");
        assert_eq!(
            entities(&seq),
            [("PER".to_string(), 0, 1), ("LOC".to_string(), 3, 3)]
        );
        // An I- after O, or after another type, starts an entity (lenient mode).
        let seq = tags("O I-MISC I-MISC B-ORG I-PER");
        assert_eq!(
            entities(&seq),
            [
                ("MISC".to_string(), 1, 2),
                ("ORG".to_string(), 3, 3),
                ("PER".to_string(), 4, 4)
            ]
        );
        // Sentences are laid end to end with an O between them.
        let two = vec![vec!["B-LOC".to_string()], vec!["I-LOC".to_string()]];
        assert_eq!(entities(&two).len(), 2);
    }

    #[test]
    fn nothing_predicted_scores_zero() {
        let s = score(&tags("B-PER O"), &tags("O O"));
        assert_eq!((s.precision, s.recall, s.f1), (0.0, 0.0, 0.0));
    }
}
