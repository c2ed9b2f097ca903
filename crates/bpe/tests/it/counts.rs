//! Pre-token count files: counts of any split of a corpus, reduced, are the bytes of counting
//! it whole, and train the same tokenizer; damaged files are errors naming the file, never
//! panics.

use std::path::{Path, PathBuf};

use lmforge_bpe::BpeTrainer;
use lmforge_bpe::counts::{CountReader, reduce};
use proptest::prelude::*;

fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lmforge-bpe-counts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn trainer() -> BpeTrainer {
    BpeTrainer::builder()
        .vocab_size(300)
        .min_frequency(1)
        .build()
        .unwrap()
}

/// Counts `texts` cut into `pieces` runs into one count file each, reduced into `out`.
fn counted(dir: &Path, texts: &[String], cuts: &[usize], out: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut start = 0;
    for (i, &end) in cuts.iter().chain(std::iter::once(&texts.len())).enumerate() {
        let end = end.clamp(start, texts.len());
        let mut t = trainer();
        t.feed(&texts[start..end]);
        let path = dir.join(format!("rank-{i}.counts"));
        t.write_counts(&path).unwrap();
        files.push(path);
        start = end;
    }
    reduce(&files, out).unwrap();
    files
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_split_reduces_to_the_whole(
        texts in prop::collection::vec("[a-c ]{0,12}|\\PC{0,6}", 0..40),
        mut cuts in prop::collection::vec(0usize..40, 0..6),
    ) {
        cuts.sort_unstable();
        let dir = temp("prop");
        let whole = dir.join("whole.counts");
        let mut t = trainer();
        t.feed(&texts);
        t.write_counts(&whole).unwrap();
        let reduced = dir.join("reduced.counts");
        counted(&dir, &texts, &cuts, &reduced);
        prop_assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&reduced).unwrap());
        // Reading a count file into a trainer is feeding it.
        let mut from_file = trainer();
        from_file.read_counts(&reduced).unwrap();
        match (t.train(), from_file.train()) {
            (Ok((a, ra)), Ok((b, rb))) => {
                prop_assert_eq!(a.to_tokenizer_json(), b.to_tokenizer_json());
                prop_assert_eq!(ra, rb);
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Any prefix of a count file, and any byte changed, is an error or a valid file: never
    /// a panic.
    #[test]
    fn damaged_files_never_panic(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
        let dir = temp("damaged");
        let path = dir.join("a.counts");
        let mut t = trainer();
        t.feed(&["le chat est sur le tapis", "el gato está en la alfombra"]);
        t.write_counts(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        if flip < bytes.len() {
            bytes[flip] = byte;
        }
        bytes.truncate(cut.min(bytes.len()));
        std::fs::write(&path, &bytes).unwrap();
        let mut fresh = trainer();
        let _ = fresh.read_counts(&path);
        let _ = reduce(&[path.clone(), path.clone()], &dir.join("out.counts"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_files_are_named() {
    let dir = temp("bad");
    let path = dir.join("a.counts");
    let mut t = trainer();
    t.feed(&["one two three", "two three"]);
    t.write_counts(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header = CountReader::open(&path).unwrap().header().clone();
    assert_eq!((header.texts, header.records), (2, 4));

    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    let e = trainer().read_counts(&path).unwrap_err().to_string();
    assert!(
        e.contains("a.counts") && e.contains("record 3") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&path, b"GIF89a..").unwrap();
    let e = trainer().read_counts(&path).unwrap_err().to_string();
    assert!(e.contains("not an lmforge pre-token count file"), "{e}");
    let mut extra = good.clone();
    extra.push(0);
    std::fs::write(&path, &extra).unwrap();
    let e = trainer().read_counts(&path).unwrap_err().to_string();
    assert!(e.contains("bytes after the announced records"), "{e}");

    // Counts made with other settings are refused, naming the settings.
    std::fs::write(&path, &good).unwrap();
    let other = dir.join("b.counts");
    let mut t = BpeTrainer::builder()
        .vocab_size(300)
        .special_tokens(["<s>"])
        .build()
        .unwrap();
    t.feed(&["one"]);
    t.write_counts(&other).unwrap();
    let e = reduce(&[path.clone(), other.clone()], &dir.join("c.counts"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("b.counts") && e.contains("special tokens"),
        "{e}"
    );
    let e = trainer().read_counts(&other).unwrap_err().to_string();
    assert!(e.contains("<s>"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
