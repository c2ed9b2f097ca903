//! `metrics.jsonl`: one JSON object per logged iteration (and per evaluation), appended and
//! flushed as training goes so that `tail -f` and a crash both see every line written. A
//! resumed run first drops the lines after the iteration it resumes from: they belong to a
//! future the interruption cancelled.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Iterations completed.
    pub iteration: u64,
    /// Training samples consumed.
    pub consumed_samples: u64,
    /// Mean training loss over the iterations since the last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Learning rate of the last iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Global gradient norm (before clipping) of the last iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Loss scale (fp16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Iterations skipped on overflow since the last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    /// Training tokens per second since the last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Model FLOPs utilisation, when the device's peak is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// Validation loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation perplexity, `exp(val_loss)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ppl: Option<f64>,
    /// Validation bits per byte of text (where the tokenizer's tokens are bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bits_per_byte: Option<f64>,
    /// Validation bits per character of text (the same, over the text's characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bits_per_char: Option<f64>,
    /// Seconds since the run (or resumption) started.
    pub elapsed_seconds: f64,
}

/// (iteration, loss) points.
pub type Curve = Vec<(u64, f64)>;

/// The open log, with the curve so far.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
}

impl MetricsLog {
    /// Opens `path`; keeps the lines up to `resume_from` (iteration) when resuming, else starts
    /// an empty log.
    pub fn open(path: &Path, resume_from: Option<u64>) -> Result<Self> {
        let mut records = Vec::new();
        if let (Some(last), true) = (resume_from, path.is_file()) {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| Error::io(path, e))?;
                if line.trim().is_empty() {
                    continue;
                }
                // A line cut by a crash mid-write is the last one; anything else malformed is
                // not ours to drop silently.
                match serde_json::from_str::<Record>(&line) {
                    Ok(record) if record.iteration <= last => records.push(record),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Error::Checkpoint {
                            path: path.to_path_buf(),
                            reason: format!("line {}: {e}", n + 1),
                        });
                    }
                }
            }
        }
        let mut text = String::new();
        for record in &records {
            text.push_str(&serde_json::to_string(record).unwrap_or_default());
            text.push('\n');
        }
        lmforge_model::checkpoint::write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
            records,
        })
    }

    /// Appends a line.
    pub fn push(&mut self, record: Record) -> Result<()> {
        let mut line = serde_json::to_string(&record).unwrap_or_default();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))?;
        self.records.push(record);
        Ok(())
    }

    /// Every line so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// (iteration, loss) of the training and validation curves.
    pub fn curves(&self) -> (Curve, Curve) {
        let train = self
            .records
            .iter()
            .filter_map(|r| r.loss.map(|l| (r.iteration, l)))
            .collect();
        let valid = self
            .records
            .iter()
            .filter_map(|r| r.val_loss.map(|l| (r.iteration, l)))
            .collect();
        (train, valid)
    }

    /// Writes the loss curve next to the log (`loss.png`).
    pub fn plot(&self) -> Result<PathBuf> {
        let png = self.path.with_file_name("loss.png");
        let (train, valid) = self.curves();
        crate::plot::loss_curve(&png, &train, &valid)?;
        Ok(png)
    }
}

/// Reads a `metrics.jsonl`, every line (for tests and reports).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("line {}: {e}", n + 1),
            })
        })
        .collect()
}
