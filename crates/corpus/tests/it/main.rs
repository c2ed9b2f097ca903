//! Integration tests of lmforge-corpus: every format, damaged files, input expansion.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray};
use lmforge_corpus::{Error, Reader, expand};
use proptest::prelude::*;

mod parts;

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-corpus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn texts(files: Vec<PathBuf>, keys: &[&str]) -> (Vec<Vec<String>>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for record in Reader::new(files, keys) {
        match record {
            Ok(r) => ok.push(r.fields),
            Err(e) => bad.push(e.to_string()),
        }
    }
    (ok, bad)
}

#[test]
fn compressed_jsonl_and_text() {
    let dir = temp_dir("compressed");
    let lines = "{\"text\": \"un\"}\n{\"text\": \"deux\"}\n";
    let gz = dir.join("a.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, lines.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zst = dir.join("b.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(lines.as_bytes(), 3).unwrap()).unwrap();
    let txt = dir.join("c.txt");
    std::fs::write(&txt, b"line one\nline \xff two\nthree").unwrap();
    let files = vec![gz, zst, txt];
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let mut reader = Reader::new(files.clone(), &["text"]);
    assert_eq!(reader.bytes_read(), 0);
    reader.next();
    assert!(reader.bytes_read() > 0);
    while reader.next().is_some() {}
    assert_eq!(reader.bytes_read(), total, "every stored byte counted once");
    assert!(reader.next().is_none());
    assert_eq!(reader.bytes_read(), total);
    let (ok, bad) = texts(files, &["text"]);
    let flat: Vec<&str> = ok.iter().map(|f| f[0].as_str()).collect();
    assert_eq!(flat, ["un", "deux", "un", "deux", "line one\n", "three"]);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].ends_with("c.txt:2: invalid UTF-8 at byte 5"),
        "{}",
        bad[0]
    );
}

#[test]
fn parquet_columns_in_key_order_with_nulls() {
    let dir = temp_dir("parquet");
    let file = dir.join("docs.parquet");
    let text: ArrayRef = Arc::new(StringArray::from(vec![Some("alpha"), None, Some("gamma")]));
    let title: ArrayRef = Arc::new(LargeStringArray::from(vec!["A", "B", "C"]));
    let id: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    write_parquet(&file, vec![("id", id), ("text", text), ("title", title)]);
    let (ok, bad) = texts(vec![file.clone()], &["title", "text"]);
    assert_eq!(ok, [["A", "alpha"], ["C", "gamma"]]);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].ends_with("docs.parquet:2: field \"text\" is null"),
        "{}",
        bad[0]
    );

    let err = Reader::new(vec![file.clone()], &["body"])
        .next()
        .unwrap()
        .unwrap_err();
    assert!(err.is_fatal());
    assert!(
        err.to_string()
            .contains("no column \"body\" (columns: id, text, title)"),
        "{err}"
    );
    let err = Reader::new(vec![file], &["id"])
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("column \"id\" is Int64, not a string"),
        "{err}"
    );
}

#[test]
fn damaged_parquet_is_fatal_and_named() {
    let dir = temp_dir("damaged");
    let file = dir.join("cut.parquet");
    let text: ArrayRef = Arc::new(StringArray::from(vec!["x"; 100]));
    write_parquet(&file, vec![("text", text)]);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let mut reader = Reader::new(vec![file, dir.join("never.jsonl")], &["text"]);
    let err = reader.next().unwrap().unwrap_err();
    assert!(err.is_fatal());
    assert!(matches!(err, Error::File { .. }), "{err}");
    assert!(err.to_string().contains("cut.parquet"), "{err}");
    assert!(reader.next().is_none(), "a fatal error ends the reader");
}

#[test]
fn truncated_gzip_is_fatal() {
    let dir = temp_dir("gz");
    let file = dir.join("a.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..10_000 {
        std::io::Write::write_all(&mut enc, format!("{{\"text\": \"{i}\"}}\n").as_bytes()).unwrap();
    }
    let bytes = enc.finish().unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 20]).unwrap();
    let results: Vec<_> = Reader::new(vec![file], &["text"]).collect();
    let last = results.last().unwrap().as_ref().unwrap_err();
    assert!(
        last.is_fatal() && last.to_string().contains("a.jsonl.gz"),
        "{last}"
    );
}

#[test]
fn expand_files_directories_globs() {
    let dir = temp_dir("expand");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for name in [
        "b.jsonl",
        "a.parquet",
        "sub/c.txt.zst",
        "skip.idx",
        ".hidden.jsonl",
    ] {
        std::fs::write(dir.join(name), b"").unwrap();
    }
    let d = dir.to_string_lossy().to_string();
    let names = |files: Vec<PathBuf>| -> Vec<String> {
        files
            .iter()
            .map(|f| f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(expand(&[&d]).unwrap()),
        ["a.parquet", "b.jsonl", "sub/c.txt.zst"]
    );
    assert_eq!(
        names(expand(&[format!("{d}/*.jsonl")]).unwrap()),
        ["b.jsonl"]
    );
    let err = expand(&[format!("{d}/*.csv")]).unwrap_err().to_string();
    assert!(err.contains("matches no file"), "{err}");
    let err = expand(&[format!("{d}/missing.jsonl")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.jsonl: no such file"), "{err}");
    let err = expand(&[dir.join("sub/none").to_string_lossy()]).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any text survives jsonl and parquet; records keep their order and line numbers.
    #[test]
    fn roundtrip(docs in proptest::collection::vec(any::<String>(), 0..40)) {
        let dir = temp_dir("roundtrip");
        let jsonl = dir.join("d.jsonl");
        let mut body = String::new();
        for d in &docs {
            body.push_str(&serde_json::json!({ "text": d }).to_string());
            body.push('\n');
        }
        std::fs::write(&jsonl, body).unwrap();
        let pq = dir.join("d.parquet");
        let col: ArrayRef = Arc::new(StringArray::from(docs.clone()));
        write_parquet(&pq, vec![("text", col)]);
        for file in [jsonl, pq] {
            let records: Vec<_> = Reader::new(vec![file], &["text"]).map(Result::unwrap).collect();
            prop_assert_eq!(records.len(), docs.len());
            for (i, (r, d)) in records.iter().zip(&docs).enumerate() {
                prop_assert_eq!(&r.fields[0], d);
                prop_assert_eq!(r.line, i as u64 + 1);
            }
        }
    }

    /// Arbitrary bytes never panic: every line is a record or a named error.
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let dir = temp_dir("bytes");
        for name in ["x.jsonl", "x.txt", "x.parquet", "x.jsonl.gz", "x.jsonl.zst"] {
            let file = dir.join(name);
            std::fs::write(&file, &bytes).unwrap();
            for record in Reader::new(vec![file], &["text"]) {
                if let Err(e) = record {
                    prop_assert!(e.to_string().contains(name));
                }
            }
        }
    }
}

#[test]
fn optional_fields_may_be_absent_null_or_numbers() {
    let dir = temp_dir("optional");
    let jsonl = dir.join("docs.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"a\", \"id\": \"x1\"}\n{\"text\": \"b\", \"id\": 42}\n{\"text\": \"c\"}\n\
         {\"text\": \"d\", \"id\": null}\n{\"text\": \"e\", \"id\": [1]}\n",
    )
    .unwrap();
    let got: Vec<_> = Reader::new(vec![jsonl], &["text"])
        .optional(&["id", "url"])
        .collect();
    let ok: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
    let ids: Vec<Option<&str>> = ok.iter().map(|r| r.optional[0].as_deref()).collect();
    assert_eq!(ids, [Some("x1"), Some("42"), None, None]);
    assert!(ok.iter().all(|r| r.optional[1].is_none()));
    let bad = got[4].as_ref().unwrap_err().to_string();
    assert!(
        bad.ends_with("docs.jsonl:5: field \"id\" is an array, not a string or number"),
        "{bad}"
    );

    let parquet = dir.join("docs.parquet");
    let text: ArrayRef = Arc::new(StringArray::from(vec!["alpha", "beta"]));
    let id: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None]));
    write_parquet(&parquet, vec![("id", id), ("text", text)]);
    let rows: Vec<_> = Reader::new(vec![parquet], &["text"])
        .optional(&["id", "url"])
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows[0].optional, [Some("7".to_string()), None]);
    assert_eq!(rows[1].optional, [None, None]);
    assert_eq!(rows[1].fields, ["beta"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
