//! Language identification with whatlang: 70 languages from trigram profiles compiled into the
//! crate, pure Rust and deterministic, with no model file to download. lingua is more accurate
//! on short texts but ~35 times slower in its high-accuracy mode and ships ~300 MB of models;
//! our documents are long (the seed keeps nothing under 256 characters), where trigram
//! profiles are reliable.

use whatlang::{Detector, Lang};

use crate::{Error, Result};

/// whatlang's languages with their ISO 639-1 code (the code a user types and the report uses);
/// the 639-3 code is whatlang's own.
const CODES: &[(&str, &str)] = &[
    ("af", "afr"),
    ("ak", "aka"),
    ("am", "amh"),
    ("ar", "ara"),
    ("az", "aze"),
    ("be", "bel"),
    ("bg", "bul"),
    ("bn", "ben"),
    ("ca", "cat"),
    ("cs", "ces"),
    ("cy", "cym"),
    ("da", "dan"),
    ("de", "deu"),
    ("el", "ell"),
    ("en", "eng"),
    ("eo", "epo"),
    ("es", "spa"),
    ("et", "est"),
    ("fa", "pes"),
    ("fi", "fin"),
    ("fr", "fra"),
    ("gu", "guj"),
    ("he", "heb"),
    ("hi", "hin"),
    ("hr", "hrv"),
    ("hu", "hun"),
    ("hy", "hye"),
    ("id", "ind"),
    ("it", "ita"),
    ("ja", "jpn"),
    ("jv", "jav"),
    ("ka", "kat"),
    ("km", "khm"),
    ("kn", "kan"),
    ("ko", "kor"),
    ("la", "lat"),
    ("lt", "lit"),
    ("lv", "lav"),
    ("mk", "mkd"),
    ("ml", "mal"),
    ("mr", "mar"),
    ("my", "mya"),
    ("nb", "nob"),
    ("ne", "nep"),
    ("nl", "nld"),
    ("or", "ori"),
    ("pa", "pan"),
    ("pl", "pol"),
    ("pt", "por"),
    ("ro", "ron"),
    ("ru", "rus"),
    ("si", "sin"),
    ("sk", "slk"),
    ("sl", "slv"),
    ("sn", "sna"),
    ("sr", "srp"),
    ("sv", "swe"),
    ("ta", "tam"),
    ("te", "tel"),
    ("th", "tha"),
    ("tk", "tuk"),
    ("tl", "tgl"),
    ("tr", "tur"),
    ("uk", "ukr"),
    ("ur", "urd"),
    ("uz", "uzb"),
    ("vi", "vie"),
    ("yi", "yid"),
    ("zh", "cmn"),
    ("zu", "zul"),
];

/// The short code of a detected language (639-1, or whatlang's 639-3 where none exists).
pub fn code(lang: Lang) -> &'static str {
    let long = lang.code();
    CODES
        .iter()
        .find(|(_, l)| *l == long)
        .map_or(long, |(short, _)| short)
}

/// Parses a language code as users write it: 639-1 (`fr`) or 639-3 (`fra`).
pub fn parse(code: &str) -> Result<Lang> {
    let code = code.trim().to_ascii_lowercase();
    let long = CODES
        .iter()
        .find(|(short, _)| *short == code)
        .map_or(code.as_str(), |(_, long)| long);
    Lang::from_code(long).ok_or_else(|| {
        Error::Config(format!(
            "--languages: unknown language {code:?} (whatlang knows: {})",
            CODES.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(",")
        ))
    })
}

/// The detector: one per run, shared by the threads.
pub struct Identifier {
    detector: Detector,
    sample_bytes: usize,
}

/// A detection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detected {
    /// The language.
    pub lang: Lang,
    /// whatlang's confidence, 0 to 1.
    pub confidence: f64,
}

impl Identifier {
    /// Looks at the first `sample_bytes` of each text (trigram statistics settle long before
    /// that; detection time grows with the text).
    pub fn new(sample_bytes: usize) -> Identifier {
        Identifier {
            detector: Detector::new(),
            sample_bytes: sample_bytes.max(64),
        }
    }

    /// The language of `text`, or `None` when it has no letters to judge.
    pub fn detect(&self, text: &str) -> Option<Detected> {
        let mut end = text.len().min(self.sample_bytes);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.detector.detect(&text[..end]).map(|info| Detected {
            lang: info.lang(),
            confidence: info.confidence(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_cover_whatlang_both_ways() {
        for &lang in Lang::all() {
            assert_eq!(parse(code(lang)).unwrap(), lang, "{lang:?}");
            assert_eq!(
                code(lang).len(),
                2,
                "{lang:?} has no 639-1 code in the table"
            );
        }
        assert_eq!(parse("FRA").unwrap(), Lang::Fra);
        assert_eq!(parse(" es ").unwrap(), Lang::Spa);
        assert!(parse("xx").unwrap_err().to_string().contains("\"xx\""));
    }

    #[test]
    fn detects_the_seed_languages() {
        let id = Identifier::new(4096);
        let fr = "Il était une fois une tortue qui vivait dans un grand jardin au bord de la \
                  rivière, et chaque matin elle regardait passer les bateaux.";
        let es = "Había una vez una tortuga que vivía en un gran jardín a la orilla del río, y \
                  cada mañana miraba pasar los barcos.";
        let en = "Once upon a time there was a tortoise who lived in a large garden by the \
                  river, and every morning she watched the boats go by.";
        assert_eq!(id.detect(fr).unwrap().lang, Lang::Fra);
        assert_eq!(id.detect(es).unwrap().lang, Lang::Spa);
        assert_eq!(id.detect(en).unwrap().lang, Lang::Eng);
        assert!(id.detect("12345 !!! ...").is_none());
        // The sample cut never splits a character.
        let tiny = Identifier::new(65);
        assert!(tiny.detect(&"é".repeat(100)).is_some());
    }
}
