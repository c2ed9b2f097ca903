//! `report.json`: what each stage received, kept and dropped, per language, and how fast.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::minhash::Bands;
use crate::output::OutputFile;

/// The stages, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// 1.
    ExactDedup,
    /// 2.
    NearDedup,
    /// 3.
    Language,
    /// 4.
    Cleaning,
    /// 5.
    Blacklist,
    /// 6.
    Quality,
}

impl Stage {
    /// All stages, in order.
    pub const ALL: [Stage; 6] = [
        Stage::ExactDedup,
        Stage::NearDedup,
        Stage::Language,
        Stage::Cleaning,
        Stage::Blacklist,
        Stage::Quality,
    ];

    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            Stage::ExactDedup => "exact_dedup",
            Stage::NearDedup => "near_dedup",
            Stage::Language => "language",
            Stage::Cleaning => "cleaning",
            Stage::Blacklist => "blacklist",
            Stage::Quality => "quality",
        }
    }
}

/// One stage's counters. Bytes are UTF-8 bytes of text: as read before cleaning, as cleaned
/// from the cleaning stage on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Its name.
    pub stage: String,
    /// Whether it ran (a stage that is off passes everything).
    pub enabled: bool,
    /// Documents that reached it.
    pub documents_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Documents it passed on.
    pub documents_out: u64,
    /// Their bytes (after it).
    pub bytes_out: u64,
    /// Documents it dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// Counters for one detected language (`und`: nothing detected or language stage off).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LanguageReport {
    /// Documents detected as it (that reached the language stage).
    pub documents: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Documents of it written.
    pub documents_out: u64,
    /// Bytes of it written.
    pub bytes_out: u64,
}

/// Records and files that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Malformed {
    /// Bad records skipped (malformed JSON, missing field, invalid UTF-8, null cell).
    pub records: u64,
    /// Files that stopped early (unreadable, truncated, corrupt); their earlier records count.
    pub files: u64,
    /// The first messages, each naming the file and line.
    pub examples: Vec<String>,
}

/// Dedup details.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupReport {
    /// Documents dropped as exact copies.
    pub exact_duplicates: u64,
    /// Documents dropped as near duplicates.
    pub near_duplicates: u64,
    /// The banding (near dedup).
    pub bands: Option<Bands>,
    /// Documents in the LSH index.
    pub indexed: u64,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Candidate pairs compared.
    pub candidates: u64,
    /// Candidate pairs verified as duplicates.
    pub verified: u64,
    /// Bytes held by the dedup index at its largest (signatures, exact-key table, verdicts).
    pub index_bytes: u64,
    /// `index_bytes` per document read.
    pub index_bytes_per_document: f64,
    /// Seconds spent clustering (after the signatures were computed).
    pub cluster_seconds: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Input files.
    pub inputs: Vec<PathBuf>,
    /// Output directory.
    pub output: PathBuf,
    /// The configuration run.
    pub config: Config,
    /// Documents read.
    pub documents_in: u64,
    /// Bytes of text read.
    pub bytes_in: u64,
    /// Bytes of the input files as stored.
    pub file_bytes: u64,
    /// Documents written.
    pub documents_out: u64,
    /// Bytes of text written.
    pub bytes_out: u64,
    /// Per stage, in order.
    pub stages: Vec<StageReport>,
    /// Per detected language.
    pub languages: BTreeMap<String, LanguageReport>,
    /// Bad input.
    pub malformed: Malformed,
    /// Dedup.
    pub dedup: DedupReport,
    /// Files written.
    pub outputs: Vec<OutputFile>,
    /// Threads.
    pub threads: usize,
    /// Seconds of the dedup pass (reading, hashing, signatures, clustering).
    pub index_seconds: f64,
    /// Seconds of the filtering and writing pass.
    pub filter_seconds: f64,
    /// Wall time.
    pub seconds: f64,
    /// Documents read per second of wall time.
    pub documents_per_second: f64,
    /// MB (10⁶ bytes) of text read per second of wall time.
    pub mb_per_second: f64,
    /// A sharded run's ranks and steps (absent when one process ran it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharded: Option<ShardedReport>,
}

impl Report {
    /// The short table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<12} {:>10} {:>10} {:>10} {:>10}  dropped by",
            "stage", "docs in", "docs out", "MB in", "MB out"
        );
        for stage in &self.stages {
            let reasons: Vec<String> = stage
                .dropped
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "{:<12} {:>10} {:>10} {:>10.2} {:>10.2}  {}",
                if stage.enabled {
                    stage.stage.clone()
                } else {
                    format!("{} (off)", stage.stage)
                },
                stage.documents_in,
                stage.documents_out,
                stage.bytes_in as f64 / 1e6,
                stage.bytes_out as f64 / 1e6,
                reasons.join(", ")
            );
        }
        let langs: Vec<String> = self
            .languages
            .iter()
            .map(|(l, r)| format!("{l} {}/{}", r.documents_out, r.documents))
            .collect();
        let _ = writeln!(s, "languages (written/detected): {}", langs.join(", "));
        let _ = writeln!(
            s,
            "{} documents in, {} out ({:.1} MB of text), {} malformed records, {} bad files; \
             {:.1} s, {:.0} docs/s, {:.1} MB/s on {} threads",
            self.documents_in,
            self.documents_out,
            self.bytes_out as f64 / 1e6,
            self.malformed.records,
            self.malformed.files,
            self.seconds,
            self.documents_per_second,
            self.mb_per_second,
            self.threads
        );
        s
    }
}

/// How a sharded run went, in its `report.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardedReport {
    /// Ranks.
    pub ranks: usize,
    /// Input parts.
    pub parts: usize,
    /// Per step: tasks, the longest task's seconds and all tasks' seconds together.
    pub steps: Vec<StepTimes>,
}

/// One step's tasks and times.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// The step.
    pub step: String,
    /// Its tasks.
    pub tasks: usize,
    /// The longest task.
    pub max_seconds: f64,
    /// Every task together.
    pub task_seconds: f64,
    /// The largest peak resident memory of its tasks, in bytes (0: not measured). The merge
    /// task's own is not known when it writes the report.
    #[serde(default)]
    pub peak_rss: u64,
}
