//! What a run does: every stage's switch and parameters, validated up front.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::minhash::Bands;
use crate::quality::Gopher;
use crate::{Error, Result};

/// Which dedup runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// No dedup: one pass over the input.
    None,
    /// Exact dedup only.
    Exact,
    /// Exact, then MinHash-LSH near dedup.
    Minhash,
}

/// Output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `part-NNNNN.jsonl.zst`.
    Jsonl,
    /// `part-NNNNN.parquet` (zstd-compressed pages).
    Parquet,
}

/// Near-dedup parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Minhash {
    /// Jaccard threshold: the banding is chosen for it, and candidates are kept as duplicates
    /// when their signatures agree on at least this fraction.
    pub threshold: f64,
    /// Signature length.
    pub perms: usize,
    /// Words per shingle.
    pub ngram: usize,
    /// Banding; `None`: chosen from the threshold ([`Bands::optimal`]).
    pub bands: Option<Bands>,
}

impl Default for Minhash {
    fn default() -> Minhash {
        Minhash {
            threshold: 0.8,
            perms: 128,
            ngram: 5,
            bands: None,
        }
    }
}

/// Language-identification parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Language {
    /// Languages kept (ISO 639-1 or 639-3); empty keeps every language (documents are still
    /// labelled).
    pub languages: Vec<String>,
    /// Lowest whatlang confidence kept.
    pub threshold: f64,
    /// Bytes from the start of each document that are looked at.
    pub sample_bytes: usize,
}

impl Default for Language {
    fn default() -> Language {
        Language {
            languages: Vec::new(),
            threshold: 0.5,
            sample_bytes: 4096,
        }
    }
}

/// A whole run's configuration. `Config::default()` is the seed's recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The text field of jsonl objects or parquet column.
    pub text_field: String,
    /// The id field; a document without one gets `file:line`.
    pub id_field: String,
    /// Other fields copied to the output when present (strings or numbers).
    pub keep_fields: Vec<String>,
    /// Stages 1-2.
    pub dedup: Dedup,
    /// Stage 2's parameters.
    pub minhash: Minhash,
    /// Stage 3 (`None`: off).
    pub language: Option<Language>,
    /// Stage 4: the general cleaning of [`crate::text::clean_text`].
    pub cleaning: bool,
    /// Stage 4: fewest characters after cleaning (0: no minimum).
    pub min_chars: usize,
    /// Stage 4: most characters after cleaning.
    pub max_chars: Option<usize>,
    /// Stage 5: blacklist files or directories (empty: stage off).
    pub blacklists: Vec<PathBuf>,
    /// Stage 5: a document with this many distinct blacklisted terms is dropped.
    pub max_blacklisted: usize,
    /// Stage 6 (`None`: off).
    pub quality: Option<Gopher>,
    /// Seed of the MinHash permutations.
    pub seed: u64,
    /// Output format.
    pub format: OutputFormat,
    /// A shard is closed once this many bytes of text are in it.
    pub shard_bytes: u64,
    /// The input is cut into parts of about this many stored bytes ([`lmforge_corpus::split`]:
    /// compressed files whole, plain files by byte range, parquet by row group). A part is
    /// the unit a sharded run's ranks share out, and a shard never spans two parts, so the
    /// output files are the same whether one process or many wrote them.
    pub part_bytes: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            text_field: "text".into(),
            id_field: "id".into(),
            keep_fields: Vec::new(),
            dedup: Dedup::Minhash,
            minhash: Minhash::default(),
            language: Some(Language::default()),
            cleaning: true,
            min_chars: 256,
            max_chars: None,
            blacklists: Vec::new(),
            max_blacklisted: 2,
            quality: Some(Gopher::default()),
            seed: 0,
            format: OutputFormat::Jsonl,
            shard_bytes: 256 << 20,
            part_bytes: 256 << 20,
        }
    }
}

impl Config {
    /// Checks every parameter, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        if self.text_field.is_empty() {
            return bad("text_field", "empty".into());
        }
        let m = &self.minhash;
        if !(m.threshold > 0.0 && m.threshold <= 1.0) {
            return bad(
                "minhash.threshold",
                format!("{} is not in (0, 1]", m.threshold),
            );
        }
        if !(1..=4096).contains(&m.perms) {
            return bad("minhash.perms", format!("{} is not in 1..=4096", m.perms));
        }
        if !(1..=64).contains(&m.ngram) {
            return bad("minhash.ngram", format!("{} is not in 1..=64", m.ngram));
        }
        if let Some(b) = m.bands
            && (b.bands == 0 || b.rows == 0 || b.bands * b.rows > m.perms)
        {
            return bad(
                "minhash.bands",
                format!(
                    "{} bands x {} rows does not fit {} permutations",
                    b.bands, b.rows, m.perms
                ),
            );
        }
        if let Some(l) = &self.language {
            if !(0.0..=1.0).contains(&l.threshold) {
                return bad(
                    "language.threshold",
                    format!("{} is not in [0, 1]", l.threshold),
                );
            }
            for code in &l.languages {
                crate::language::parse(code)?;
            }
        }
        if let Some(max) = self.max_chars
            && max < self.min_chars
        {
            return bad(
                "max_chars",
                format!("{max} is below min_chars {}", self.min_chars),
            );
        }
        if self.max_blacklisted == 0 {
            return bad("max_blacklisted", "must be at least 1".into());
        }
        if self.shard_bytes == 0 {
            return bad("shard_bytes", "must be at least 1".into());
        }
        if self.part_bytes == 0 {
            return bad("part_bytes", "must be at least 1".into());
        }
        Ok(())
    }

    /// The banding near dedup uses.
    pub fn bands(&self) -> Bands {
        self.minhash
            .bands
            .unwrap_or_else(|| Bands::optimal(self.minhash.threshold, self.minhash.perms))
    }

    /// The stages in the order they run, with their parameters, as `lmforge clean --explain`
    /// prints them.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let on = |b: bool| if b { "" } else { " (off)" };
        let _ = writeln!(
            s,
            "input: field {:?}, id field {:?} (file:line when absent)",
            self.text_field, self.id_field
        );
        let _ = writeln!(
            s,
            "1. exact dedup{}: XXH3-64 of the lowercased, whitespace-normalised text; the first copy is kept",
            on(self.dedup != Dedup::None)
        );
        let m = &self.minhash;
        let b = self.bands();
        let _ = writeln!(
            s,
            "2. near dedup{}: MinHash of word {}-grams, {} permutations, seed {}; LSH {} bands x {} rows \
             (P[candidate] = {:.3} at J = {}, {:.3} at J = 0.5); candidates kept as duplicates when \
             signatures agree >= {}; clusters by union-find, the first document survives",
            on(self.dedup == Dedup::Minhash),
            m.ngram,
            m.perms,
            self.seed,
            b.bands,
            b.rows,
            b.probability(m.threshold),
            m.threshold,
            b.probability(0.5),
            m.threshold
        );
        match &self.language {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "3. language: whatlang on the first {} bytes; keep {} with confidence >= {}",
                    l.sample_bytes,
                    if l.languages.is_empty() {
                        "every language".to_string()
                    } else {
                        l.languages.join(",")
                    },
                    l.threshold
                );
            }
            None => {
                let _ = writeln!(s, "3. language (off)");
            }
        }
        let _ = writeln!(
            s,
            "4. cleaning{}: control characters, NFC, spaces, blank lines, trimmed lines; then {} <= characters{}",
            on(self.cleaning),
            self.min_chars,
            self.max_chars.map_or(String::new(), |m| format!(" <= {m}"))
        );
        let _ = writeln!(
            s,
            "5. blacklist{}: drop at >= {} distinct terms, case-insensitive, whole words; lists: {}",
            on(!self.blacklists.is_empty()),
            self.max_blacklisted,
            if self.blacklists.is_empty() {
                "none".to_string()
            } else {
                self.blacklists
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        match &self.quality {
            Some(g) => {
                let _ = writeln!(
                    s,
                    "6. quality (Gopher): {}",
                    serde_json::to_string(g).unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(s, "6. quality (off)");
            }
        }
        let _ = writeln!(
            s,
            "output: {:?} shards of <= {} bytes of text, a new one for every input part of ~{} bytes",
            self.format, self.shard_bytes, self.part_bytes
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_explained() {
        let c = Config::default();
        c.validate().unwrap();
        let text = c.explain();
        for needle in [
            "1. exact dedup",
            "2. near dedup: MinHash of word 5-grams, 128 permutations",
            "3. language",
            "4. cleaning",
            "256 <= characters",
            "5. blacklist (off)",
            "6. quality (Gopher)",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = Config::default();
        c.minhash.threshold = 1.5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("minhash.threshold")
        );
        let mut c = Config::default();
        c.minhash.bands = Some(Bands { bands: 20, rows: 8 });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("20 bands x 8 rows")
        );
        let c = Config {
            max_chars: Some(10),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("max_chars")
        );
        let c = Config {
            language: Some(Language {
                languages: vec!["fr".into(), "klingon".into()],
                ..Language::default()
            }),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("klingon"));
    }

    #[test]
    fn config_reads_from_json_with_defaults() {
        let c: Config = serde_json::from_str(r#"{"dedup": "exact", "min_chars": 10}"#).unwrap();
        assert_eq!(c.dedup, Dedup::Exact);
        assert_eq!(c.minhash.perms, 128);
        assert!(serde_json::from_str::<Config>(r#"{"min_char": 10}"#).is_err());
    }
}
