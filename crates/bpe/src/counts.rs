//! Pre-token count files: what [`BpeTrainer::feed`] counted, written so that many ranks can
//! count their share of a corpus and one training can run on the sum.
//!
//! Layout (little-endian): the magic `LMFBPEC1`; the pre-tokenizer pattern and the special
//! tokens the counts were made with (`u32` length + UTF-8 each, the specials preceded by
//! their number); `u64` texts and bytes fed; `u64` records; then the records
//! `u32 length, UTF-8 pre-token, u64 count`, pre-tokens in strictly increasing byte order.
//! Sorted records make [`reduce`] a streaming merge whose memory is one record per file, and
//! the sum of any split of a corpus the same bytes as counting it whole.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::trainer::BpeTrainer;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"LMFBPEC1";

/// What the counts were made with: counts of different settings cannot be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountSettings {
    /// The pre-tokenizer's pattern.
    pub pattern: String,
    /// The special tokens (cut out of the text before pre-tokenizing).
    pub special_tokens: Vec<String>,
}

/// A count file's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountHeader {
    /// The settings.
    pub settings: CountSettings,
    /// Texts fed.
    pub texts: u64,
    /// Bytes of text fed.
    pub bytes: u64,
    /// Distinct pre-tokens (records).
    pub records: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn format_error(path: &Path, at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Format {
        file: path.display().to_string(),
        at: at.into(),
        reason: reason.into(),
    }
}

/// Writes a count file through a temporary file renamed into place by [`CountWriter::finish`];
/// the record count in the header is filled in at the end, so records can be streamed.
pub struct CountWriter {
    path: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
    records_at: u64,
    records: u64,
    last: Vec<u8>,
}

impl CountWriter {
    /// Starts `path` with the header's settings, texts and bytes.
    pub fn create(path: &Path, settings: &CountSettings, texts: u64, bytes: u64) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&temp).map_err(io_error(&temp))?;
        let mut w = CountWriter {
            path: path.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            records_at: 0,
            records: 0,
            last: Vec::new(),
        };
        w.put(MAGIC)?;
        w.string(&settings.pattern)?;
        w.put(&(settings.special_tokens.len() as u32).to_le_bytes())?;
        for t in &settings.special_tokens {
            w.string(t)?;
        }
        w.put(&texts.to_le_bytes())?;
        w.put(&bytes.to_le_bytes())?;
        w.records_at = 8
            + 4
            + settings.pattern.len() as u64
            + 4
            + settings
                .special_tokens
                .iter()
                .map(|t| 4 + t.len() as u64)
                .sum::<u64>()
            + 16;
        w.put(&0u64.to_le_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes).map_err(io_error(&self.temp)),
            None => Ok(()),
        }
    }

    fn string(&mut self, s: &str) -> Result<()> {
        let len = u32::try_from(s.len())
            .map_err(|_| format_error(&self.path, "header", "a string over 4 GiB"))?;
        self.put(&len.to_le_bytes())?;
        self.put(s.as_bytes())
    }

    /// Appends a record; pre-tokens must come in strictly increasing byte order.
    pub fn push(&mut self, piece: &[u8], count: u64) -> Result<()> {
        if self.records > 0 && piece <= self.last.as_slice() {
            return Err(format_error(
                &self.path,
                format!("record {}", self.records),
                "pre-tokens are not in increasing byte order",
            ));
        }
        let len = u32::try_from(piece.len())
            .map_err(|_| format_error(&self.path, "records", "a pre-token over 4 GiB"))?;
        self.put(&len.to_le_bytes())?;
        self.put(piece)?;
        self.put(&count.to_le_bytes())?;
        self.last.clear();
        self.last.extend_from_slice(piece);
        self.records += 1;
        Ok(())
    }

    /// Fills in the record count, syncs, renames into place; the records written.
    pub fn finish(mut self) -> Result<u64> {
        use std::io::{Seek, SeekFrom};
        let out = self
            .out
            .take()
            .ok_or_else(|| format_error(&self.path, "file", "finished twice"))?;
        let mut file = out
            .into_inner()
            .map_err(|e| io_error(&self.temp)(e.into_error()))?;
        file.seek(SeekFrom::Start(self.records_at))
            .and_then(|_| file.write_all(&self.records.to_le_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&self.temp))?;
        std::fs::rename(&self.temp, &self.path).map_err(io_error(&self.path))?;
        Ok(self.records)
    }
}

impl Drop for CountWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A count file opened for reading its records in order.
pub struct CountReader {
    path: PathBuf,
    input: BufReader<File>,
    header: CountHeader,
    read: u64,
    last: Option<Vec<u8>>,
    piece: Vec<u8>,
}

impl CountReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<CountReader> {
        let file = File::open(path).map_err(io_error(path))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic, path, "magic")?;
        if &magic != MAGIC {
            return Err(format_error(
                path,
                "magic",
                "not an lmforge pre-token count file (no LMFBPEC1 magic)",
            ));
        }
        let pattern = read_string(&mut input, path, "pattern")?;
        let n = read_u32(&mut input, path, "special tokens")?;
        let mut special_tokens = Vec::new();
        for i in 0..n {
            special_tokens.push(read_string(
                &mut input,
                path,
                &format!("special token {i}"),
            )?);
        }
        let texts = read_u64(&mut input, path, "texts")?;
        let bytes = read_u64(&mut input, path, "bytes")?;
        let records = read_u64(&mut input, path, "records")?;
        Ok(CountReader {
            path: path.to_path_buf(),
            input,
            header: CountHeader {
                settings: CountSettings {
                    pattern,
                    special_tokens,
                },
                texts,
                bytes,
                records,
            },
            read: 0,
            last: None,
            piece: Vec::new(),
        })
    }

    /// The header.
    pub fn header(&self) -> &CountHeader {
        &self.header
    }

    /// The next record (pre-token bytes, count); `None` after the last. A record out of
    /// order, not UTF-8, with a zero count, or cut short is an error naming its index, and
    /// so are bytes after the announced records.
    pub fn next_record(&mut self) -> Result<Option<(&[u8], u64)>> {
        if self.read == self.header.records {
            let mut extra = [0u8; 1];
            return match self.input.read(&mut extra) {
                Ok(0) => Ok(None),
                Ok(_) => Err(format_error(
                    &self.path,
                    format!("after record {}", self.read),
                    "bytes after the announced records",
                )),
                Err(e) => Err(io_error(&self.path)(e)),
            };
        }
        let at = format!("record {}", self.read);
        let len = read_u32(&mut self.input, &self.path, &at)? as usize;
        if len > 1 << 30 {
            return Err(format_error(
                &self.path,
                at,
                format!("length {len} is not plausible"),
            ));
        }
        if let Some(last) = self.last.as_mut() {
            std::mem::swap(last, &mut self.piece);
        } else {
            self.last = Some(std::mem::take(&mut self.piece));
        }
        self.piece.resize(len, 0);
        read_exact(&mut self.input, &mut self.piece, &self.path, &at)?;
        let count = read_u64(&mut self.input, &self.path, &at)?;
        if std::str::from_utf8(&self.piece).is_err() {
            return Err(format_error(&self.path, at, "the pre-token is not UTF-8"));
        }
        if count == 0 {
            return Err(format_error(&self.path, at, "a count of zero"));
        }
        if self.read > 0
            && let Some(last) = &self.last
            && last.as_slice() >= self.piece.as_slice()
        {
            return Err(format_error(
                &self.path,
                at,
                "pre-tokens are not in increasing byte order",
            ));
        }
        self.read += 1;
        Ok(Some((&self.piece, count)))
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], path: &Path, at: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format_error(path, at, "the file ends here (truncated)")
        } else {
            io_error(path)(e)
        }
    })
}

fn read_u32(input: &mut impl Read, path: &Path, at: &str) -> Result<u32> {
    let mut b = [0u8; 4];
    read_exact(input, &mut b, path, at)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(input: &mut impl Read, path: &Path, at: &str) -> Result<u64> {
    let mut b = [0u8; 8];
    read_exact(input, &mut b, path, at)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(input: &mut impl Read, path: &Path, at: &str) -> Result<String> {
    let len = read_u32(input, path, at)? as usize;
    if len > 1 << 20 {
        return Err(format_error(
            path,
            at,
            format!("length {len} is not plausible"),
        ));
    }
    let mut b = vec![0u8; len];
    read_exact(input, &mut b, path, at)?;
    String::from_utf8(b).map_err(|_| format_error(path, at, "not UTF-8"))
}

impl BpeTrainer {
    /// Writes the pre-token counts fed so far to `path` (sorted; temporary file + rename).
    pub fn write_counts(&self, path: &Path) -> Result<()> {
        let mut words: Vec<(&str, u64)> =
            self.words().iter().map(|(w, &c)| (w.as_str(), c)).collect();
        words.sort_unstable();
        let (texts, bytes) = self.fed();
        let mut w = CountWriter::create(path, &self.count_settings(), texts, bytes)?;
        for (word, count) in words {
            w.push(word.as_bytes(), count)?;
        }
        w.finish().map(|_| ())
    }

    /// Adds the counts in `path`, as if its texts had been fed here, and returns its header;
    /// a file made with another pattern or other special tokens is refused, naming both.
    pub fn read_counts(&mut self, path: &Path) -> Result<CountHeader> {
        let mut reader = CountReader::open(path)?;
        check_settings(path, &reader.header().settings, &self.count_settings())?;
        let header = reader.header().clone();
        let mut added = Vec::new();
        while let Some((piece, count)) = reader.next_record()? {
            // The reader checked UTF-8.
            added.push((String::from_utf8_lossy(piece).into_owned(), count));
        }
        self.add_counts(added, header.texts, header.bytes);
        Ok(header)
    }
}

fn check_settings(path: &Path, found: &CountSettings, wanted: &CountSettings) -> Result<()> {
    if found.pattern != wanted.pattern {
        return Err(format_error(
            path,
            "pattern",
            format!(
                "counted with the pattern {:?}, not {:?}",
                found.pattern, wanted.pattern
            ),
        ));
    }
    if found.special_tokens != wanted.special_tokens {
        return Err(format_error(
            path,
            "special tokens",
            format!(
                "counted with the special tokens {:?}, not {:?}",
                found.special_tokens, wanted.special_tokens
            ),
        ));
    }
    Ok(())
}

/// Sums count files into one at `output`: a streaming merge of the sorted records (memory:
/// one record per input). Every input must have the first one's settings.
pub fn reduce(inputs: &[PathBuf], output: &Path) -> Result<CountHeader> {
    let Some(first) = inputs.first() else {
        return Err(Error::Config {
            field: "counts",
            reason: "no count files to reduce".into(),
        });
    };
    let mut readers = inputs
        .iter()
        .map(|p| CountReader::open(p))
        .collect::<Result<Vec<_>>>()?;
    let settings = readers[0].header().settings.clone();
    let mut header = CountHeader {
        settings: settings.clone(),
        texts: 0,
        bytes: 0,
        records: 0,
    };
    for (reader, path) in readers.iter().zip(inputs) {
        check_settings(path, &reader.header().settings, &settings).map_err(|e| match e {
            Error::Format { file, at, reason } => Error::Format {
                file,
                at,
                reason: format!("{reason} (as {} has)", first.display()),
            },
            other => other,
        })?;
        // A damaged header can claim any count: a sum past u64 names the file, not a panic.
        let overflow = || format_error(path, "header", "text and byte counts past 2^64 in all");
        header.texts = header
            .texts
            .checked_add(reader.header().texts)
            .ok_or_else(overflow)?;
        header.bytes = header
            .bytes
            .checked_add(reader.header().bytes)
            .ok_or_else(overflow)?;
    }
    let mut out = CountWriter::create(output, &settings, header.texts, header.bytes)?;
    let mut heads: Vec<Option<(Vec<u8>, u64)>> = readers
        .iter_mut()
        .map(|r| r.next_record().map(|o| o.map(|(p, c)| (p.to_vec(), c))))
        .collect::<Result<_>>()?;
    while let Some(smallest) = heads.iter().flatten().map(|(p, _)| p).min().cloned() {
        let mut total = 0u64;
        for (head, reader) in heads.iter_mut().zip(readers.iter_mut()) {
            if let Some((piece, count)) = head
                && *piece == smallest
            {
                total = total.saturating_add(*count);
                *head = reader.next_record()?.map(|(p, c)| (p.to_vec(), c));
            }
        }
        out.push(&smallest, total)?;
    }
    header.records = out.finish()?;
    Ok(header)
}
