//! Corpus → Megatron dataset, what `tools/preprocess_data.py` does: every record's text
//! under each key tokenized and written as one document of one sequence to
//! `{prefix}_{key}_document.{bin,idx}`, in input order.
//!
//! Reading and decompression run on their own thread, a batch ahead; each batch is tokenized
//! by a rayon pool of `workers` threads and collected in order, so the output does not
//! depend on the thread count. Bad records are skipped, counted and named in the report; a
//! fatal input error stops the conversion with nothing written at the prefix.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lmforge_corpus::{Reader, Record};
use lmforge_tokenizer::Tokenizer;
use rayon::prelude::*;

use crate::indexed::{Builder, DType, Summary};
use crate::{Error, Result};

/// How to convert.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertOptions {
    /// The fields to tokenize (`--json-keys`); one output dataset each.
    pub json_keys: Vec<String>,
    /// Append the tokenizer's end-of-document id to each non-empty document (`--append-eod`).
    pub append_eod: bool,
    /// Tokenizing threads (`--workers`); 0 is one per core.
    pub workers: usize,
    /// Text read ahead per batch.
    pub batch_bytes: usize,
    /// Write empty datasets when no document is found instead of failing: a rank of a
    /// sharded conversion whose share holds none (the whole conversion still needs one).
    #[serde(skip)]
    pub allow_empty: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            json_keys: vec!["text".into()],
            append_eod: false,
            workers: 0,
            batch_bytes: 8 << 20,
            allow_empty: false,
        }
    }
}

/// Where a conversion is, for a progress bar.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Records done.
    pub documents: u64,
    /// Input bytes done.
    pub bytes: u64,
    /// Tokens written.
    pub tokens: u64,
    /// Bytes of the input files read, as stored (compressed): against their sizes, a fraction.
    pub file_bytes: u64,
}

/// What a conversion did: the JSON report written next to the output.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertReport {
    /// Input files, in order.
    pub inputs: Vec<PathBuf>,
    /// One dataset per key.
    pub outputs: Vec<Summary>,
    /// The options.
    pub options: ConvertOptions,
    /// The tokenizer's vocabulary size (it chose the dtype).
    pub vocab_size: usize,
    /// Records converted.
    pub documents: u64,
    /// Records skipped as unusable.
    pub skipped: u64,
    /// The first few skipped records, file:line and why.
    pub skipped_examples: Vec<String>,
    /// Token ids written, all keys.
    pub tokens: u64,
    /// Input bytes read (whole jsonl lines, as Megatron counts them).
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Input megabytes (10⁶ bytes) per second.
    pub mb_per_s: f64,
    /// Tokenizing threads used.
    pub workers: usize,
}

const EXAMPLES: usize = 10;

/// The dataset prefix Megatron names for `key`: `{prefix}_{key}_document`.
pub fn output_prefix(prefix: &Path, key: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!("_{key}_document"));
    PathBuf::from(name)
}

/// Records, the first few bad ones' reasons, how many were bad, file bytes read so far.
type Batch = (Vec<Record>, Vec<String>, u64, u64);

/// Converts `files` with `tokenizer` into datasets at `prefix` (see the module docs);
/// `progress` is called after every batch.
pub fn convert(
    files: Vec<PathBuf>,
    tokenizer: &dyn Tokenizer,
    prefix: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ConvertReport> {
    if options.json_keys.is_empty() {
        return Err(Error::Invalid("no --json-keys to convert".into()));
    }
    let eod = if options.append_eod {
        Some(tokenizer.eod_id().ok_or_else(|| {
            Error::Invalid(
                "--append-eod: the tokenizer has no end-of-document token (<|endoftext|> or [SEP])"
                    .into(),
            )
        })?)
    } else {
        None
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.workers)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {} workers: {e}", options.workers)))?;
    let dtype = DType::for_vocab_size(tokenizer.vocab_size());
    let mut builders: Vec<Builder> = options
        .json_keys
        .iter()
        .map(|key| Builder::create(output_prefix(prefix, key), dtype))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    let mut done = Progress::default();
    let mut skipped = 0u64;
    let mut skipped_examples = Vec::new();
    let mut note_example = |why: String| {
        if skipped_examples.len() < EXAMPLES {
            eprintln!("warning: skipped {why}");
            skipped_examples.push(why);
        }
    };

    let (send, receive) = std::sync::mpsc::sync_channel::<Batch>(2);
    let keys = options.json_keys.clone();
    let batch_bytes = options.batch_bytes.max(1);
    let reader_files = files.clone();
    let outcome: Result<()> = std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<()> {
            let mut batch = Vec::new();
            let mut bad = Vec::new();
            let mut bad_count = 0u64;
            let mut size = 0;
            let mut reader = Reader::new(reader_files, &keys);
            while let Some(record) = reader.next() {
                match record {
                    Ok(record) => {
                        size += record.bytes as usize;
                        batch.push(record);
                    }
                    Err(e) if e.is_fatal() => return Err(Error::Corpus(e)),
                    Err(e) => {
                        bad_count += 1;
                        if bad.len() < EXAMPLES {
                            bad.push(e.to_string());
                        }
                    }
                }
                if size >= batch_bytes {
                    let full = (
                        std::mem::take(&mut batch),
                        std::mem::take(&mut bad),
                        bad_count,
                        reader.bytes_read(),
                    );
                    bad_count = 0;
                    size = 0;
                    if send.send(full).is_err() {
                        return Ok(());
                    }
                }
            }
            let _ = send.send((batch, bad, bad_count, reader.bytes_read()));
            Ok(())
        });
        let mut failure = None;
        for (records, bad, bad_count, file_bytes) in receive.iter() {
            done.file_bytes = file_bytes;
            skipped += bad_count;
            for why in bad {
                note_example(why);
            }
            let encoded: Vec<std::result::Result<Vec<Vec<u32>>, String>> = pool.install(|| {
                records
                    .par_iter()
                    .map(|record| {
                        record
                            .fields
                            .iter()
                            .map(|text| {
                                let mut ids = tokenizer.encode(text).map_err(|e| {
                                    format!("{}:{}: {e}", record.file.display(), record.line)
                                })?;
                                if let Some(eod) = eod
                                    && !ids.is_empty()
                                {
                                    ids.push(eod);
                                }
                                Ok(ids)
                            })
                            .collect()
                    })
                    .collect()
            });
            for (record, ids) in records.iter().zip(encoded) {
                match ids {
                    Ok(per_key) => {
                        for (builder, ids) in builders.iter_mut().zip(&per_key) {
                            // One sequence per document; an empty text is a document with
                            // none, as preprocess_data.py writes it.
                            let lengths: &[usize] = if ids.is_empty() { &[] } else { &[ids.len()] };
                            if let Err(e) = builder.add_document(ids, lengths) {
                                failure = Some(e);
                                break;
                            }
                            done.tokens += ids.len() as u64;
                        }
                        done.documents += 1;
                    }
                    Err(why) => {
                        skipped += 1;
                        note_example(why);
                    }
                }
                done.bytes += record.bytes;
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
            progress(done);
        }
        drop(receive);
        let read = reader
            .join()
            .map_err(|_| Error::Invalid("the corpus reader thread panicked".into()))?;
        match failure {
            Some(e) => Err(e),
            None => read,
        }
    });
    outcome?;
    if done.documents == 0 && !options.allow_empty {
        return Err(Error::Invalid(format!(
            "no documents in {} input file(s) ({skipped} skipped): nothing written",
            files.len()
        )));
    }
    let outputs = builders
        .into_iter()
        .map(Builder::finish)
        .collect::<Result<Vec<_>>>()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(ConvertReport {
        inputs: files,
        outputs,
        options: options.clone(),
        vocab_size: tokenizer.vocab_size(),
        documents: done.documents,
        skipped,
        skipped_examples,
        tokens: done.tokens,
        bytes: done.bytes,
        seconds,
        mb_per_s: done.bytes as f64 / 1e6 / seconds.max(1e-9),
        workers: pool.current_num_threads(),
    })
}
