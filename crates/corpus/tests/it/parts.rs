//! Parts: reading a corpus piece by piece gives exactly the records of reading it whole.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use lmforge_corpus::{Part, Reader, Span, split};
use proptest::prelude::*;

use crate::temp_dir;

/// (line, fields or the error) of every item.
fn items(reader: Reader) -> Vec<(u64, Result<Vec<String>, String>)> {
    reader
        .map(|r| match r {
            Ok(r) => (r.line, Ok(r.fields)),
            Err(e) => (0, Err(e.to_string())),
        })
        .collect()
}

/// Each part read by a reader of its own, numbered from the lines counted before it (as a
/// task of a sharded run gets them from the tasks before).
fn by_parts(parts: &[Part]) -> Vec<(u64, Result<Vec<String>, String>)> {
    let mut out = Vec::new();
    let mut lines = 0;
    let mut previous: Option<PathBuf> = None;
    for part in parts {
        if previous.as_ref() != Some(&part.file) {
            lines = 0;
        }
        let mut reader = Reader::parts(vec![part.clone()], &["text"]).first_line(lines);
        out.extend(items_of(&mut reader));
        lines = reader.line();
        previous = Some(part.file.clone());
    }
    out
}

fn items_of(reader: &mut Reader) -> Vec<(u64, Result<Vec<String>, String>)> {
    let mut out = Vec::new();
    for r in reader.by_ref() {
        out.push(match r {
            Ok(r) => (r.line, Ok(r.fields)),
            Err(e) => (0, Err(e.to_string())),
        });
    }
    out
}

#[test]
fn byte_parts_split_lines_by_their_first_byte() {
    let dir = temp_dir("parts-bytes");
    let file = dir.join("a.jsonl");
    let lines = "{\"text\": \"one\"}\n\n{\"text\": \"a much longer second line\"}\nnot json\n{\"text\": \"last\"}";
    std::fs::write(&file, lines).unwrap();
    let whole = items(Reader::new(vec![file.clone()], &["text"]));
    assert_eq!(whole.len(), 4);
    for size in 1..=lines.len() as u64 + 1 {
        let parts = split(std::slice::from_ref(&file), size).unwrap();
        let covered: u64 = parts.iter().map(|p| p.bytes).sum();
        assert_eq!(covered, lines.len() as u64);
        assert_eq!(
            by_parts(&parts),
            whole,
            "parts of {size} bytes, read one by one"
        );
        assert_eq!(
            items(Reader::parts(parts, &["text"])),
            whole,
            "parts of {size} bytes, read by one reader"
        );
    }
    // A part read first without a count scans for the lines before it.
    let parts = split(std::slice::from_ref(&file), 20).unwrap();
    let last = items(Reader::parts(parts[parts.len() - 1..].to_vec(), &["text"]));
    assert_eq!(last, whole[whole.len() - 1..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compressed_files_are_whole_and_parquet_splits_by_row_group() {
    let dir = temp_dir("parts-parquet");
    let gz = dir.join("a.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, "{\"text\": \"x\"}\n".repeat(100).as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert_eq!(
        split(std::slice::from_ref(&gz), 1).unwrap()[0].span,
        Span::Whole
    );

    let parquet = dir.join("b.parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(10))
        .build();
    let file = std::fs::File::create(&parquet).unwrap();
    let texts: Vec<String> = (0..35).map(|i| format!("row {i}")).collect();
    let text: ArrayRef = Arc::new(StringArray::from(texts.clone()));
    let batch = RecordBatch::try_from_iter(vec![("text", text)]).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let whole = items(Reader::new(vec![parquet.clone()], &["text"]));
    assert_eq!(whole.len(), 35);
    let parts = split(std::slice::from_ref(&parquet), 1).unwrap();
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert_eq!(
        parts[2].span,
        Span::RowGroups {
            start: 2,
            end: 3,
            first_row: 20
        }
    );
    assert_eq!(by_parts(&parts), whole);
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes (long lines, blank lines, invalid UTF-8, no final newline) cut at any
    /// size read as the same records with the same line numbers as the whole file.
    #[test]
    fn any_cut_reads_like_the_whole(
        lines in prop::collection::vec(
            prop_oneof![
                "[a-z ]{0,40}".prop_map(|t| format!("{{\"text\": \"{t}\"}}").into_bytes()),
                Just(Vec::new()),
                prop::collection::vec(any::<u8>(), 0..30),
            ],
            0..30,
        ),
        final_newline in any::<bool>(),
        size in 1u64..200,
    ) {
        let dir = temp_dir("parts-prop");
        let mut bytes = lines.join(&b'\n');
        if final_newline {
            bytes.push(b'\n');
        }
        for (name, _) in [("p.jsonl", 0), ("p.txt", 1)] {
            let file = dir.join(name);
            std::fs::write(&file, &bytes).unwrap();
            let whole = items(Reader::new(vec![file.clone()], &["text"]));
            let parts = split(std::slice::from_ref(&file), size).unwrap();
            prop_assert_eq!(&by_parts(&parts), &whole);
            prop_assert_eq!(&items(Reader::parts(parts, &["text"])), &whole);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
