//! Reading the text corpora users have, record by record: jsonl (one JSON object per line, the
//! text under one or more keys), plain text (one record per line), each optionally `.gz` or
//! `.zst`, and parquet (the text in string columns). Inputs are files, directories (every
//! corpus file below them, in name order) or glob patterns.
//!
//! Memory stays flat however large the corpus: a [`Reader`] holds one line, or one parquet
//! record batch, at a time. A bad record (invalid UTF-8, malformed JSON, a missing or
//! non-string field, a null cell) is an [`Error::Record`] naming the file, line and field,
//! which a caller skips and counts; an unreadable or truncated file is fatal
//! ([`Error::is_fatal`]).
//!
//! ```
//! use lmforge_corpus::Reader;
//!
//! let dir = std::env::temp_dir().join(format!("lmforge-corpus-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let file = dir.join("docs.jsonl");
//! std::fs::write(&file, "{\"text\": \"Bonjour\"}\nnot json\n{\"text\": \"Hola\"}\n")?;
//!
//! let mut texts = Vec::new();
//! let mut skipped = Vec::new();
//! for record in Reader::new(vec![file], &["text"]) {
//!     match record {
//!         Ok(record) => texts.push(record.fields[0].clone()),
//!         Err(e) if !e.is_fatal() => skipped.push(e.to_string()),
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! assert_eq!(texts, ["Bonjour", "Hola"]);
//! assert!(skipped[0].contains("docs.jsonl:2"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod parquet_rows;
mod part;

pub use part::{Part, Span, assign, split};

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read to its end (fatal).
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that is not what its name says (a corrupt parquet footer …; fatal).
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// An input pattern that names nothing, or a glob that does not parse (fatal).
    #[error("{0}")]
    Input(String),
    /// One unusable record; the reader goes on after it.
    #[error("{file}:{line}: {reason}")]
    Record {
        /// The file.
        file: PathBuf,
        /// 1-based line (jsonl, text) or row (parquet).
        line: u64,
        /// What is wrong, naming the field.
        reason: String,
    },
}

impl Error {
    /// Whether reading must stop (everything but a bad record).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Error::Record { .. })
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// How a file is read, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One record per line, the line itself (its newline kept).
    Text,
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    Jsonl,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

impl Format {
    /// The format a file name says (`.gz`/`.zst` looked through).
    pub fn of(path: &Path) -> Format {
        let name = path.to_string_lossy();
        let name = name
            .strip_suffix(".gz")
            .or_else(|| name.strip_suffix(".zst"))
            .unwrap_or(&name);
        if name.ends_with(".parquet") {
            Format::Parquet
        } else if name.ends_with(".jsonl") || name.ends_with(".json") || name.ends_with(".ndjson") {
            Format::Jsonl
        } else {
            Format::Text
        }
    }
}

/// Counts the bytes read from a file (before decompression) for progress reporting.
struct Counting<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file for reading, decompressing `.gz` (multi-member, as `bgzip` and `cat a.gz b.gz`
/// make them) and `.zst`.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    open_counted(path, Arc::default())
}

fn open_counted(
    path: &Path,
    count: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Box<dyn BufRead + Send>> {
    let io = |source| Error::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = Counting {
        inner: File::open(path).map_err(io)?,
        count,
    };
    let name = path.to_string_lossy();
    let reader: Box<dyn Read + Send> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(zstd::Decoder::new(file).map_err(io)?)
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

fn is_corpus_file(path: &Path) -> bool {
    let name = path.to_string_lossy();
    let name = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    // Not `.json`: beside a corpus that is metadata (stats.json, dataset_info.json).
    [".jsonl", ".ndjson", ".parquet", ".txt"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The files the inputs name, in order: a file as given, a directory as every corpus file
/// below it (`.jsonl`, `.ndjson`, `.parquet`, `.txt`, each maybe `.gz`/`.zst`; hidden entries
/// and `.json` metadata skipped) in name order, a pattern with `*`, `?` or `[` as its glob matches
/// in name order. An input that names nothing is an error, not an empty corpus.
pub fn expand<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let input = input.as_ref();
        let path = Path::new(input);
        if path.is_dir() {
            let before = files.len();
            walk(path, &mut files)?;
            if files.len() == before {
                return Err(Error::Input(format!(
                    "{input}: a directory with no corpus files (.jsonl, .parquet, .txt, maybe .gz/.zst)"
                )));
            }
        } else if path.exists() || !input.contains(['*', '?', '[']) {
            if !path.is_file() {
                return Err(Error::Input(format!("{input}: no such file")));
            }
            files.push(path.to_path_buf());
        } else {
            // As a shell expands it: `*` does not match a leading dot.
            let options = glob::MatchOptions {
                require_literal_leading_dot: true,
                ..glob::MatchOptions::new()
            };
            let matches = glob::glob_with(input, options)
                .map_err(|e| Error::Input(format!("{input}: not a glob pattern ({e})")))?;
            let mut found: Vec<PathBuf> = Vec::new();
            for entry in matches {
                let entry = entry.map_err(|e| Error::Io {
                    file: e.path().to_path_buf(),
                    source: e.into(),
                })?;
                if entry.is_file() {
                    found.push(entry);
                }
            }
            if found.is_empty() {
                return Err(Error::Input(format!(
                    "{input}: the pattern matches no file"
                )));
            }
            found.sort();
            files.extend(found);
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| Error::Io {
        file: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if is_corpus_file(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// One record: the requested fields' text, in the order the keys were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The file it came from.
    pub file: Arc<PathBuf>,
    /// 1-based line (jsonl, text) or row (parquet).
    pub line: u64,
    /// One text per key.
    pub fields: Vec<String>,
    /// One value per optional key ([`Reader::optional`]): absent or null is `None`, a number
    /// is its decimal text (ids are often integers).
    pub optional: Vec<Option<String>>,
    /// Bytes read for it: the whole line (as Megatron counts), or the fields' text (parquet).
    pub bytes: u64,
}

enum Open {
    Lines {
        reader: Box<dyn BufRead + Send>,
        format: Format,
        line: u64,
        buf: Vec<u8>,
        /// Offset of the next line and where lines stop starting (a [`Span::Bytes`] part).
        range: Option<(u64, u64)>,
    },
    Parquet(parquet_rows::Rows),
}

/// Records of the files in order (see the crate docs for the formats). Plain-text files give
/// the line as the one field whatever the keys. After a fatal error the reader ends.
pub struct Reader {
    parts: std::vec::IntoIter<Part>,
    keys: Vec<String>,
    optional: Vec<String>,
    current: Option<(Arc<PathBuf>, Open)>,
    failed: bool,
    /// Lines before the first part's first line, when the caller knows them.
    first_line: Option<u64>,
    /// The last part opened (file, span) and the line (or row) number reached in it.
    last: Option<(PathBuf, Span)>,
    line: u64,
    /// Bytes of the files before the current one, and of the current one so far.
    done_bytes: u64,
    current_bytes: Arc<std::sync::atomic::AtomicU64>,
    current_size: u64,
}

impl Reader {
    /// A reader of `files` taking the fields `keys` (at least one) of each record.
    pub fn new<S: AsRef<str>>(files: Vec<PathBuf>, keys: &[S]) -> Reader {
        let parts = files
            .into_iter()
            .map(|file| Part {
                file,
                span: Span::Whole,
                bytes: 0,
            })
            .collect();
        Reader::parts(parts, keys)
    }

    /// A reader of the records in `parts` ([`split`]). Line numbers run on across adjacent
    /// byte parts of one file; a byte part read first starts at [`Reader::first_line`], or,
    /// without it, after counting the lines before it.
    pub fn parts<S: AsRef<str>>(parts: Vec<Part>, keys: &[S]) -> Reader {
        Reader {
            parts: parts.into_iter(),
            keys: keys.iter().map(|k| k.as_ref().to_string()).collect(),
            optional: Vec::new(),
            current: None,
            failed: false,
            first_line: None,
            last: None,
            line: 0,
            done_bytes: 0,
            current_bytes: Arc::default(),
            current_size: 0,
        }
    }

    /// Also take `keys` where a record has them (an id, metadata), in
    /// [`Record::optional`]; a record without them is not an error. Plain-text files have none.
    pub fn optional<S: AsRef<str>>(mut self, keys: &[S]) -> Reader {
        self.optional = keys.iter().map(|k| k.as_ref().to_string()).collect();
        self
    }

    /// The first part starts after `lines` lines of its file (what an earlier task counted),
    /// so that a byte part's records are numbered as in the whole file without a scan.
    pub fn first_line(mut self, lines: u64) -> Reader {
        self.first_line = Some(lines);
        self
    }

    /// The line (or row) number of the last record read: after the last part, how many lines
    /// the reader went through (with [`Reader::first_line`]'s offset).
    pub fn line(&self) -> u64 {
        match &self.current {
            Some((_, Open::Lines { line, .. })) => *line,
            Some((_, Open::Parquet(rows))) => rows.row(),
            None => self.line,
        }
    }

    /// Bytes of the input files read so far, as stored (compressed): with the files' sizes, a
    /// progress fraction. A parquet file counts when it is opened.
    pub fn bytes_read(&self) -> u64 {
        let current = self
            .current_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(self.current_size);
        self.done_bytes + current
    }

    fn open_next(&mut self) -> Option<Result<()>> {
        self.done_bytes += std::mem::take(&mut self.current_size);
        let part = self.parts.next()?;
        let path = part.file.clone();
        let format = Format::of(&path);
        self.current_size = match part.span {
            Span::Whole => std::fs::metadata(&path).map_or(0, |m| m.len()),
            _ => part.bytes,
        };
        self.current_bytes = Arc::default();
        if format == Format::Parquet {
            // Parquet is read by column chunk, not front to back: count it whole.
            self.current_bytes
                .store(self.current_size, std::sync::atomic::Ordering::Relaxed);
        }
        // Lines before this part: the caller's count for the first, the previous part's end
        // for the next byte part of the same file, else counted.
        let adjacent = match (&self.last, part.span) {
            (Some((file, Span::Bytes { end, .. })), Span::Bytes { start, .. }) => {
                *file == path && *end == start
            }
            _ => false,
        };
        let before = match part.span {
            Span::Whole => Ok(0),
            Span::RowGroups { first_row, .. } => Ok(first_row),
            Span::Bytes { start, .. } => match (self.last.is_none(), self.first_line, adjacent) {
                (_, _, true) => Ok(self.line),
                (true, Some(lines), _) => Ok(lines),
                _ => lines_before(&path, start),
            },
        };
        self.last = Some((path.clone(), part.span));
        let opened = before.and_then(|before| match (format, part.span) {
            (Format::Parquet, span) => {
                let groups = match span {
                    Span::RowGroups { start, end, .. } => Some(start..end),
                    _ => None,
                };
                parquet_rows::Rows::open(&path, &self.keys, &self.optional, groups, before)
                    .map(Open::Parquet)
            }
            (_, span) => {
                open_range(&path, span, self.current_bytes.clone()).map(|(reader, range)| {
                    Open::Lines {
                        reader,
                        format,
                        line: before,
                        buf: Vec::new(),
                        range,
                    }
                })
            }
        });
        Some(opened.map(|open| self.current = Some((Arc::new(path), open))))
    }
}

/// A file's lines, decompressed.
type Lines = Box<dyn BufRead + Send>;

/// Opens a file at a part's first line: for a byte part, the line that contains the byte
/// before `start` is skipped (it belongs to the part before).
fn open_range(
    path: &Path,
    span: Span,
    count: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Lines, Option<(u64, u64)>)> {
    let Span::Bytes { start, end } = span else {
        return open_counted(path, count).map(|r| (r, None));
    };
    let io = |source| Error::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let from = start.saturating_sub(1);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from)).map_err(io)?;
    let mut reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(
        1 << 20,
        Counting { inner: file, count },
    ));
    let mut offset = from;
    if start > 0 {
        let mut skipped = Vec::new();
        offset += reader.read_until(b'\n', &mut skipped).map_err(io)? as u64;
    }
    Ok((reader, Some((offset, end))))
}

/// Lines that start before byte `start` of `path` (0 at the start of the file).
fn lines_before(path: &Path, start: u64) -> Result<u64> {
    if start == 0 {
        return Ok(0);
    }
    let io = |source| Error::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut reader =
        BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?.take(start - 1));
    let mut lines = 0;
    loop {
        let buf = reader.fill_buf().map_err(io)?;
        if buf.is_empty() {
            break;
        }
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
    // Line k + 1 starts after the k-th newline; the line holding byte start - 1 started
    // before `start` too.
    Ok(lines + 1)
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        loop {
            if self.current.is_none() {
                match self.open_next()? {
                    Ok(()) => {}
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            let (file, open) = self.current.as_mut()?;
            let item = match open {
                Open::Parquet(rows) => rows.next_record(file),
                Open::Lines {
                    reader,
                    format,
                    line,
                    buf,
                    range,
                } => next_line(
                    file,
                    reader,
                    *format,
                    (line, range),
                    buf,
                    (&self.keys, &self.optional),
                ),
            };
            match item {
                None => {
                    self.line = match &self.current {
                        Some((_, Open::Lines { line, .. })) => *line,
                        Some((_, Open::Parquet(rows))) => rows.row(),
                        None => self.line,
                    };
                    self.current = None;
                }
                Some(Err(e)) if e.is_fatal() => {
                    self.failed = true;
                    self.line = self.line();
                    self.current = None;
                    return Some(Err(e));
                }
                Some(item) => return Some(item),
            }
        }
    }
}

fn next_line(
    file: &Arc<PathBuf>,
    reader: &mut Box<dyn BufRead + Send>,
    format: Format,
    (line, range): (&mut u64, &mut Option<(u64, u64)>),
    buf: &mut Vec<u8>,
    (keys, optional_keys): (&[String], &[String]),
) -> Option<Result<Record>> {
    loop {
        if let Some((offset, end)) = range
            && *offset >= *end
        {
            return None;
        }
        buf.clear();
        match reader.read_until(b'\n', buf) {
            Ok(0) => return None,
            Ok(n) => {
                if let Some((offset, _)) = range {
                    *offset += n as u64;
                }
            }
            Err(source) => {
                return Some(Err(Error::Io {
                    file: file.to_path_buf(),
                    source: std::io::Error::new(
                        source.kind(),
                        format!("read failed after line {line}: {source}"),
                    ),
                }));
            }
        }
        *line += 1;
        let bad = |reason: String| {
            Some(Err(Error::Record {
                file: file.to_path_buf(),
                line: *line,
                reason,
            }))
        };
        let bytes = buf.len() as u64;
        if format == Format::Text {
            return match std::str::from_utf8(buf) {
                Ok(text) => Some(Ok(Record {
                    file: file.clone(),
                    line: *line,
                    fields: vec![text.to_string()],
                    optional: vec![None; optional_keys.len()],
                    bytes,
                })),
                Err(e) => bad(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
            };
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc: serde_json::Value = match serde_json::from_slice(buf) {
            Ok(doc) => doc,
            Err(e) => {
                return bad(match std::str::from_utf8(buf) {
                    Err(utf8) => format!("invalid UTF-8 at byte {}", utf8.valid_up_to()),
                    Ok(_) => format!("malformed JSON ({e})"),
                });
            }
        };
        let mut fields = Vec::with_capacity(keys.len());
        for key in keys {
            match doc.get(key) {
                Some(serde_json::Value::String(text)) => fields.push(text.clone()),
                Some(other) => {
                    return bad(format!(
                        "field {key:?} is {}, not a string",
                        json_kind(other)
                    ));
                }
                None => return bad(format!("no field {key:?}")),
            }
        }
        let mut optional = Vec::with_capacity(optional_keys.len());
        for key in optional_keys {
            optional.push(match doc.get(key) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(text)) => Some(text.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(other) => {
                    return bad(format!(
                        "field {key:?} is {}, not a string or number",
                        json_kind(other)
                    ));
                }
            });
        }
        return Some(Ok(Record {
            file: file.clone(),
            line: *line,
            fields,
            optional,
            bytes,
        }));
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(Format::of(Path::new("a.jsonl.zst")), Format::Jsonl);
        assert_eq!(Format::of(Path::new("a.json.gz")), Format::Jsonl);
        assert_eq!(Format::of(Path::new("a.parquet")), Format::Parquet);
        assert_eq!(Format::of(Path::new("notes.txt.gz")), Format::Text);
        assert!(is_corpus_file(Path::new("x.ndjson.gz")));
        assert!(!is_corpus_file(Path::new("stats.json")));
        assert!(!is_corpus_file(Path::new("x.idx")));
    }

    #[test]
    fn json_fields_must_be_strings() {
        let dir = std::env::temp_dir().join(format!("lmforge-corpus-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.jsonl");
        std::fs::write(
            &file,
            "{\"text\": 3}\n\n{\"title\": \"t\"}\n{\"text\": \"ok\", \"title\": \"T\"}\n",
        )
        .unwrap();
        let got: Vec<_> = Reader::new(vec![file], &["text", "title"]).collect();
        assert_eq!(got.len(), 3);
        let e0 = got[0].as_ref().unwrap_err().to_string();
        assert!(
            e0.ends_with("a.jsonl:1: field \"text\" is a number, not a string"),
            "{e0}"
        );
        let e1 = got[1].as_ref().unwrap_err().to_string();
        assert!(e1.ends_with("a.jsonl:3: no field \"text\""), "{e1}");
        let ok = got[2].as_ref().unwrap();
        assert_eq!(
            (ok.line, ok.fields.clone()),
            (4, vec!["ok".into(), "T".into()])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
