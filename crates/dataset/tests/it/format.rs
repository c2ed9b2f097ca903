//! The format under damage and at random: every corruption is an error naming the file and
//! field, never a panic or a read out of bounds; writer → reader is the identity.

use std::path::Path;

use lmforge_dataset::indexed::{self, HEADER_LEN};
use lmforge_dataset::{Builder, DType, IndexedDataset, merge};
use proptest::prelude::*;

use crate::temp_dir;

fn write(prefix: &Path, dtype: DType, docs: &[Vec<Vec<u32>>]) {
    let mut builder = Builder::create(prefix, dtype).unwrap();
    for doc in docs {
        let lengths: Vec<usize> = doc.iter().map(Vec::len).collect();
        builder.add_document(&doc.concat(), &lengths).unwrap();
    }
    builder.finish().unwrap();
}

fn read_all(prefix: &Path) -> Vec<Vec<Vec<u32>>> {
    let data = IndexedDataset::open(prefix).unwrap();
    (0..data.num_documents())
        .map(|d| data.document(d).map(|s| data.get(s).to_vec()).collect())
        .collect()
}

fn damaged(prefix: &Path, ext: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let (bin, idx) = indexed::paths(prefix);
    let file = if ext == "bin" { bin } else { idx };
    let original = std::fs::read(&file).unwrap();
    let mut bytes = original.clone();
    edit(&mut bytes);
    std::fs::write(&file, &bytes).unwrap();
    let err = IndexedDataset::open(prefix).err().map(|e| e.to_string());
    std::fs::write(&file, original).unwrap();
    err.unwrap_or_else(|| panic!("damaged .{ext} opened"))
}

/// A damage done to a file's bytes.
type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;

#[test]
fn damaged_files_are_named_errors() {
    let dir = temp_dir("damaged");
    let prefix = dir.join("d");
    write(
        &prefix,
        DType::U16,
        &[vec![vec![1, 2, 3]], vec![vec![4], vec![5, 6]]],
    );
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "idx",
            Box::new(|b| b.truncate(20)),
            "shorter than the 34-byte header",
        ),
        ("idx", Box::new(|b| b[0] = b'X'), "magic"),
        ("idx", Box::new(|b| b[9] = 2), "version 2"),
        ("idx", Box::new(|b| b[17] = 9), "dtype code 9"),
        ("idx", Box::new(|b| b[17] = 7), "holds no token ids"),
        (
            "idx",
            Box::new(|b| b.truncate(b.len() - 1)),
            "truncated or not an index",
        ),
        (
            "idx",
            Box::new(|b| b[18] = 200),
            "truncated or not an index",
        ),
        // Sequence 0's length 3 → 30: past the end of the .bin.
        ("idx", Box::new(|b| b[HEADER_LEN] = 30), "past the end"),
        (
            "idx",
            Box::new(|b| b[HEADER_LEN + 3] = 0x80),
            "negative length",
        ),
        // Sequence 1's pointer → odd: not a u16 offset.
        (
            "idx",
            Box::new(|b| b[HEADER_LEN + 12 + 8] = 3),
            "is not a U16 offset",
        ),
        // Document index entries: [0, 1, 3] → [0, 2, 1].
        (
            "idx",
            Box::new(|b| {
                let at = HEADER_LEN + 12 * 3 + 8;
                b[at] = 2;
                b[at + 8] = 1;
            }),
            "must rise",
        ),
        (
            "idx",
            Box::new(|b| {
                let at = HEADER_LEN + 12 * 3 + 16;
                b[at] = 2;
            }),
            "ends at 2",
        ),
        (
            "bin",
            Box::new(|b| b.truncate(b.len() - 2)),
            "truncated .bin",
        ),
        (
            "bin",
            Box::new(|b| b.truncate(b.len() - 1)),
            "not a whole number",
        ),
    ];
    for (ext, edit, expected) in cases {
        let err = damaged(&prefix, ext, edit);
        assert!(
            err.contains(expected),
            "{ext}: expected {expected:?} in {err:?}"
        );
        assert!(err.contains(&format!("d.{ext}")), "{err} names the file");
    }
    let err = IndexedDataset::open(dir.join("missing"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.idx"), "{err}");
    // The undamaged dataset still reads.
    assert_eq!(
        read_all(&prefix),
        [vec![vec![1, 2, 3]], vec![vec![4], vec![5, 6]]]
    );
}

#[test]
fn ids_that_do_not_fit_and_nothing_half_written() {
    let dir = temp_dir("fit");
    let prefix = dir.join("x");
    let mut builder = Builder::create(&prefix, DType::U16).unwrap();
    builder.add_document(&[1, 2], &[2]).unwrap();
    let err = builder
        .add_document(&[70_000], &[1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("70000") && err.contains("U16"), "{err}");
    let err = builder.add_document(&[1, 2], &[1]).unwrap_err().to_string();
    assert!(err.contains("adding up to 1"), "{err}");
    drop(builder);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        left.is_empty(),
        "a dropped builder leaves nothing: {left:?}"
    );
}

#[test]
fn empty_dataset_and_empty_documents() {
    let dir = temp_dir("empty");
    let prefix = dir.join("e");
    write(&prefix, DType::I32, &[]);
    let data = IndexedDataset::open(&prefix).unwrap();
    assert_eq!(
        (data.len(), data.num_documents(), data.num_tokens()),
        (0, 0, 0)
    );
    // Empty .bin files of every id type (the case a fresh clone's CI caught: an empty slice
    // is not aligned for u16).
    for dtype in [DType::U8, DType::U16, DType::I32, DType::I64] {
        write(&prefix, dtype, &[vec![], vec![vec![]]]);
        let data = IndexedDataset::open(&prefix).unwrap();
        assert_eq!(
            (data.len(), data.num_documents(), data.num_tokens()),
            (1, 2, 0)
        );
        assert!(data.tokens().is_empty() && data.get(0).is_empty());
    }
    write(&prefix, DType::I32, &[vec![], vec![vec![7]], vec![]]);
    assert_eq!(read_all(&prefix), [vec![], vec![vec![7]], vec![]]);
}

#[test]
fn merge_is_concatenation() {
    let dir = temp_dir("merge");
    let a = [vec![vec![1, 2]], vec![vec![3], vec![4, 5]]];
    let b = [vec![], vec![vec![6, 7, 8]]];
    write(&dir.join("a"), DType::U16, &a);
    write(&dir.join("b"), DType::U16, &b);
    write(&dir.join("c"), DType::I32, &b);
    let summary = merge(&[dir.join("a"), dir.join("b")], &dir.join("ab")).unwrap();
    assert_eq!(
        (summary.documents, summary.sequences, summary.tokens),
        (4, 4, 8)
    );
    let all: Vec<_> = a.iter().chain(&b).cloned().collect();
    assert_eq!(read_all(&dir.join("ab")), all);
    // Byte-identical to writing the documents in one go.
    write(&dir.join("direct"), DType::U16, &all);
    for ext in ["bin", "idx"] {
        assert_eq!(
            std::fs::read(dir.join(format!("ab.{ext}"))).unwrap(),
            std::fs::read(dir.join(format!("direct.{ext}"))).unwrap()
        );
    }
    let err = merge(&[dir.join("a"), dir.join("c")], &dir.join("ac"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be merged"), "{err}");
    assert!(!dir.join("ac.idx").exists() && !dir.join("ac.bin").exists());
}

fn documents() -> impl Strategy<Value = Vec<Vec<Vec<u32>>>> {
    let seq = proptest::collection::vec(0u32..70_000, 0..20);
    proptest::collection::vec(proptest::collection::vec(seq, 0..4), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Writer → reader is the identity, and the .idx has Megatron's size.
    #[test]
    fn roundtrip(docs in documents(), wide in any::<bool>()) {
        let dir = temp_dir("prop-roundtrip");
        let dtype = if wide { DType::I32 } else { DType::U16 };
        let docs: Vec<Vec<Vec<u32>>> = if wide {
            docs
        } else {
            docs.into_iter()
                .map(|d| d.into_iter().map(|s| s.into_iter().map(|t| t % 65_536).collect()).collect())
                .collect()
        };
        let prefix = dir.join("p");
        write(&prefix, dtype, &docs);
        prop_assert_eq!(read_all(&prefix), docs.clone());
        let s: usize = docs.iter().map(Vec::len).sum();
        let idx_len = std::fs::metadata(indexed::paths(&prefix).1).unwrap().len() as usize;
        prop_assert_eq!(idx_len, 34 + 12 * s + 8 * (docs.len() + 1));
    }

    /// Arbitrary bytes as .idx/.bin never panic: a dataset or a named error.
    #[test]
    fn arbitrary_files(idx in proptest::collection::vec(any::<u8>(), 0..200),
                       bin in proptest::collection::vec(any::<u8>(), 0..64),
                       keep_header in any::<bool>()) {
        let dir = temp_dir("prop-arbitrary");
        let prefix = dir.join("r");
        let mut idx = idx;
        if keep_header && idx.len() >= 18 {
            idx[..9].copy_from_slice(indexed::MAGIC);
            idx[9..17].copy_from_slice(&1u64.to_le_bytes());
            idx[17] = 8;
        }
        let (bin_path, idx_path) = indexed::paths(&prefix);
        std::fs::write(&idx_path, &idx).unwrap();
        std::fs::write(&bin_path, &bin).unwrap();
        match IndexedDataset::open(&prefix) {
            Ok(data) => {
                for i in 0..data.len() {
                    let _ = data.get(i).to_vec();
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("r.")),
        }
    }
}
