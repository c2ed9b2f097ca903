use proptest::prelude::*;

use lmforge_clean::minhash::MinHasher;
use lmforge_clean::quality::Gopher;
use lmforge_clean::text::clean_text;
use lmforge_clean::{Cleaner, Config, Dedup, Outcome};

use crate::{run, temp_dir};

fn messy_text() -> impl Strategy<Value = String> {
    // Spaces, newlines, controls, combining marks, no-break spaces and letters, mixed.
    proptest::collection::vec(
        prop_oneof![
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\t".to_string()),
            Just("\u{a0}".to_string()),
            Just("\u{301}".to_string()),
            Just("\u{1}".to_string()),
            Just("\u{feff}".to_string()),
            "[a-zé]{1,6}",
            any::<char>().prop_map(|c| c.to_string()),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cleaning_is_idempotent(text in messy_text()) {
        let once = clean_text(&text);
        prop_assert_eq!(clean_text(&once), once.clone());
        prop_assert!(!once.contains("  ") && !once.contains("\n\n\n"));
        prop_assert!(!once.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn stages_never_panic_and_kept_text_is_clean(text in messy_text()) {
        let cleaner = Cleaner::new(Config { min_chars: 0, ..Config::default() }).unwrap();
        if let Outcome::Kept(kept) = cleaner.filter(&text).outcome {
            prop_assert_eq!(clean_text(&kept), kept);
        }
        let _ = Gopher::default().check(&text);
        let hasher = MinHasher::new(32, 3, 1);
        let signature = hasher.signature(&text);
        prop_assert_eq!(signature.is_some(), text.chars().any(char::is_alphanumeric));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Arbitrary bytes as a corpus file: every line is a document or a counted bad record.
    #[test]
    fn arbitrary_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), zst in any::<bool>()) {
        let dir = temp_dir("arbitrary");
        let input = dir.join(if zst { "x.jsonl.zst" } else { "x.jsonl" });
        std::fs::write(&input, &bytes).unwrap();
        let config = Config { dedup: Dedup::Minhash, min_chars: 0, quality: None, ..Config::default() };
        let report = run(config, std::slice::from_ref(&input), &dir.join("out")).unwrap();
        prop_assert!(report.documents_out <= report.documents_in);
        if !zst {
            let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count() as u64;
            prop_assert_eq!(report.documents_in + report.malformed.records, lines);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
