//! Blacklists: one term list per language, matched case-insensitively on word boundaries with
//! Aho-Corasick; a document with at least `max` distinct terms is dropped.

use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::{Error, Result, io};

/// One list of terms.
pub struct List {
    /// The language it is for (`None`: every document).
    pub language: Option<String>,
    /// Where it came from.
    pub file: PathBuf,
    terms: Vec<String>,
    automaton: AhoCorasick,
}

impl List {
    /// A list from terms (lowercased, trimmed; blank lines and `#` comments dropped).
    pub fn new(language: Option<String>, file: PathBuf, terms: &[&str]) -> Result<List> {
        let mut clean: Vec<String> = terms
            .iter()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty() && !t.starts_with('#'))
            .collect();
        clean.sort();
        clean.dedup();
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&clean)
            .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
        Ok(List {
            language,
            file,
            terms: clean,
            automaton,
        })
    }

    /// Reads a list file, one term per line. A file named after a language (`fr.txt`) is for
    /// documents identified as that language; any other name applies to every document.
    pub fn load(path: &Path) -> Result<List> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let language = crate::language::parse(&stem)
            .ok()
            .map(crate::language::code)
            .map(str::to_string);
        let terms: Vec<&str> = text.lines().collect();
        List::new(language, path.to_path_buf(), &terms)
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether the list has no term.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The distinct terms of `lowercase_text` found on word boundaries, stopping at `stop`.
    pub fn distinct_matches(&self, lowercase_text: &str, stop: usize) -> Vec<&str> {
        let mut found: Vec<usize> = Vec::new();
        let bytes = lowercase_text;
        for m in self.automaton.find_overlapping_iter(bytes) {
            if found.contains(&m.pattern().as_usize()) {
                continue;
            }
            let before = bytes[..m.start()].chars().next_back();
            let after = bytes[m.end()..].chars().next();
            if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric)
            {
                continue;
            }
            found.push(m.pattern().as_usize());
            if found.len() >= stop {
                break;
            }
        }
        found.iter().map(|&i| self.terms[i].as_str()).collect()
    }
}

/// Loads `--blacklist` arguments: a file is one list; a directory gives `<lang>.txt` for each
/// of `languages` (every `*.txt` in it when `languages` is empty).
pub fn load_all(paths: &[PathBuf], languages: &[String]) -> Result<Vec<List>> {
    let mut lists = Vec::new();
    for path in paths {
        if path.is_dir() {
            if languages.is_empty() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(io(path))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "txt"))
                    .collect();
                files.sort();
                for file in files {
                    lists.push(List::load(&file)?);
                }
            } else {
                for language in languages {
                    let file = path.join(format!("{language}.txt"));
                    if file.exists() {
                        lists.push(List::load(&file)?);
                    }
                }
            }
        } else {
            lists.push(List::load(path)?);
        }
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(terms: &[&str]) -> List {
        List::new(None, PathBuf::from("t.txt"), terms).unwrap()
    }

    #[test]
    fn word_boundaries_and_distinct_terms() {
        let l = list(&["con", "merde", "two words", "# comment", ""]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.distinct_matches("un con, deux cons, conte", 9), ["con"]);
        assert!(l.distinct_matches("raconter", 9).is_empty());
        assert_eq!(l.distinct_matches("merde! con. merde", 9), ["merde", "con"]);
        assert_eq!(l.distinct_matches("these two words here", 9), ["two words"]);
        assert_eq!(l.distinct_matches("merde con", 1).len(), 1);
        // Accented letters are word characters: "conçu" does not contain the word "con".
        assert!(l.distinct_matches("conçu", 9).is_empty());
    }

    #[test]
    fn terms_are_lowercased() {
        let l = list(&["Putain"]);
        assert_eq!(l.distinct_matches("oh putain", 9), ["putain"]);
    }

    #[test]
    fn file_names_give_the_language() {
        let dir = std::env::temp_dir().join(format!("lmforge-clean-bl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fr.txt"), "merde\n").unwrap();
        std::fs::write(dir.join("es.txt"), "mierda\n").unwrap();
        std::fs::write(dir.join("extra.txt"), "spam\n").unwrap();
        let all = load_all(std::slice::from_ref(&dir), &[]).unwrap();
        let langs: Vec<_> = all.iter().map(|l| l.language.clone()).collect();
        assert_eq!(langs, [Some("es".into()), None, Some("fr".into())]);
        let fr = load_all(std::slice::from_ref(&dir), &["fr".into()]).unwrap();
        assert_eq!(fr.len(), 1);
        let missing = load_all(&[dir.join("nope.txt")], &[]).err().unwrap();
        assert!(missing.to_string().contains("nope.txt"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
