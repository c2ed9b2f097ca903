//! Reading training text from the files users have: plain text, jsonl (one JSON object per
//! line, the text under `--json-key`), each optionally `.gz` or `.zst`, streamed in batches so
//! memory stays flat however large the corpus.
//!
//! A bad line (invalid UTF-8, malformed JSON, no text field) is skipped with a warning naming
//! the file and line, and counted; an unreadable file stops the command before any output is
//! written.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

/// What reading saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReadStats {
    pub files: usize,
    pub texts: u64,
    pub bytes: u64,
    /// Lines skipped as unusable, with the first few reasons.
    pub skipped: u64,
    pub skipped_examples: Vec<String>,
}

const EXAMPLES: usize = 10;

impl ReadStats {
    fn skip(&mut self, why: String) {
        if self.skipped_examples.len() < EXAMPLES {
            eprintln!("warning: skipped {why}");
            self.skipped_examples.push(why);
        }
        self.skipped += 1;
    }
}

/// Calls `each` with batches of texts of about `batch_bytes`, file after file, and the reading
/// statistics so far. Text files give one text per line (newline kept: it is text the tokenizer
/// must learn); jsonl files one per object. Reading (decompression, JSON) runs on a thread of
/// its own, one batch ahead of `each`.
pub fn read_batches(
    files: &[PathBuf],
    json_key: &str,
    batch_bytes: usize,
    mut each: impl FnMut(&[String], &ReadStats),
) -> Result<ReadStats> {
    let (send, receive) = std::sync::mpsc::sync_channel::<(Vec<String>, ReadStats)>(1);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            read(files, json_key, batch_bytes, |batch, stats| {
                // The receiver only goes away when `each` panicked; nothing is left to do.
                let _ = send.send((batch, stats.clone()));
            })
        });
        for (batch, stats) in receive {
            each(&batch, &stats);
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the corpus reader thread panicked"))?
    })
}

fn read(
    files: &[PathBuf],
    json_key: &str,
    batch_bytes: usize,
    mut each: impl FnMut(Vec<String>, &ReadStats),
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut batch: Vec<String> = Vec::new();
    let mut batch_len = 0;
    for path in files {
        let mut reader = lmforge_corpus::open(path)?;
        let jsonl = lmforge_corpus::Format::of(path) == lmforge_corpus::Format::Jsonl;
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("{}: read failed after line {number}", path.display()))?;
            if n == 0 {
                break;
            }
            number += 1;
            let at = || format!("{}:{number}", path.display());
            let text = if jsonl {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<serde_json::Value>(&line) {
                    Ok(doc) => match doc.get(json_key).and_then(|v| v.as_str()) {
                        Some(text) => text.to_string(),
                        None => {
                            stats.skip(format!("{}: no string field {json_key:?}", at()));
                            continue;
                        }
                    },
                    Err(e) => {
                        stats.skip(format!("{}: malformed JSON ({e})", at()));
                        continue;
                    }
                }
            } else {
                match String::from_utf8(std::mem::take(&mut line)) {
                    Ok(text) => text,
                    Err(e) => {
                        line = e.into_bytes();
                        stats.skip(format!("{}: invalid UTF-8", at()));
                        continue;
                    }
                }
            };
            stats.texts += 1;
            stats.bytes += text.len() as u64;
            batch_len += text.len();
            batch.push(text);
            if batch_len >= batch_bytes {
                each(std::mem::take(&mut batch), &stats);
                batch_len = 0;
            }
        }
        stats.files += 1;
    }
    if !batch.is_empty() {
        each(batch, &stats);
    }
    Ok(stats)
}
