//! The plan every task reads, the steps, and the markers that say which tasks finished.

use std::path::{Path, PathBuf};

use lmforge_corpus::Part;
use lmforge_executor::task::marker;
use serde::{Deserialize, Serialize};

use super::records::read_json;
use crate::lsh::used_bands;
use crate::run::Progress;
use crate::{Config, Error, Result};

/// The most tasks of the `exact` step.
const EXACT_TASKS: usize = 64;

/// The steps, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Exact keys, MinHash signatures and band keys per rank.
    Signatures,
    /// Exact duplicates, one task per slice of the key space.
    Exact,
    /// Candidate pairs verified per band.
    Buckets,
    /// Union-find over the pairs.
    Cluster,
    /// Stages 3-6 and the shards, per rank.
    Filter,
    /// The one output folder.
    Merge,
}

impl Step {
    /// Every step in order.
    pub const ALL: [Step; 6] = [
        Step::Signatures,
        Step::Exact,
        Step::Buckets,
        Step::Cluster,
        Step::Filter,
        Step::Merge,
    ];

    /// Its name on the command line and in the work folder.
    pub fn name(self) -> &'static str {
        match self {
            Step::Signatures => "signatures",
            Step::Exact => "exact",
            Step::Buckets => "buckets",
            Step::Cluster => "cluster",
            Step::Filter => "filter",
            Step::Merge => "merge",
        }
    }

    /// The step called `name`.
    pub fn parse(name: &str) -> Result<Step> {
        Step::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                Error::Config(format!(
                    "step {name:?}: not one of {}",
                    Step::ALL.map(Step::name).join(", ")
                ))
            })
    }
}

/// An input file as the plan saw it (size, modification time, a hash of both ends).
pub use lmforge_executor::input::Input as InputFile;

/// What every task of a run reads first (`W/plan.json`): the configuration, the inputs cut
/// into parts, the rank count and the output folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Ranks (tasks of the per-rank steps).
    pub ranks: usize,
    /// The cleaning configuration.
    pub config: Config,
    /// The input files in order.
    pub inputs: Vec<InputFile>,
    /// The parts, in input order.
    pub parts: Vec<Part>,
    /// Where the merge step puts the result.
    pub output: PathBuf,
    /// The folder the run was planned in: relative paths above are relative to it, and every
    /// task runs there (a Slurm task may start elsewhere). Kept as the user gave them, the
    /// paths read the same in `duplicates.jsonl` as in a one-process run's.
    #[serde(default)]
    pub dir: PathBuf,
}

/// What a task's marker says it was made for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The plan's rank count.
    pub ranks: usize,
    /// XXH3-128 of the configuration, hex.
    pub config: String,
    /// XXH3-128 of the input files and parts, hex.
    pub inputs: String,
}

/// A finished task's `done.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Marker {
    pub(super) step: String,
    pub(super) task: usize,
    pub(super) plan: Fingerprint,
    /// Seconds since the epoch when it started, and how long it ran.
    pub(super) started: f64,
    pub(super) seconds: f64,
    /// The largest memory it held for the index (signatures, keys, tables), in bytes.
    pub(super) memory: u64,
    pub(super) threads: usize,
    /// Its peak resident memory in bytes, as the system measured it (0: not measured).
    #[serde(default)]
    pub(super) peak_rss: u64,
}

impl Plan {
    /// Plans cleaning `files` into `output` with `ranks` ranks.
    pub fn new(config: Config, files: &[PathBuf], ranks: usize, output: &Path) -> Result<Plan> {
        config.validate()?;
        if ranks == 0 {
            return Err(Error::Config("ranks: must be at least 1".into()));
        }
        let inputs = files
            .iter()
            .map(|f| InputFile::stat(f))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let parts = lmforge_corpus::split(files, config.part_bytes)?;
        Ok(Plan {
            ranks,
            config,
            inputs,
            parts,
            output: output.to_path_buf(),
            dir: std::env::current_dir().unwrap_or_default(),
        })
    }

    /// The ranks that get a task: one per part at most, since a part is never split, so
    /// that ranks beyond the parts cost nothing (no array task is started for them) and a
    /// 1,000-rank plan of a small corpus runs as fast as the corpus allows.
    pub fn working(&self) -> usize {
        self.ranks.min(self.parts.len()).max(1)
    }

    /// Tasks of `step`.
    pub fn tasks(&self, step: Step) -> usize {
        match step {
            Step::Signatures | Step::Filter => self.working(),
            // Each exact task reads its slice of every rank's keys: more tasks than this
            // would multiply the files opened (tasks × ranks) for no gain, as the step is
            // short; its memory is the keys it owns, 17 bytes each.
            Step::Exact => self.working().min(EXACT_TASKS),
            Step::Buckets => {
                let (bands, _) = used_bands(self.config.bands(), self.config.minhash.perms);
                self.working().min(bands).max(1)
            }
            Step::Cluster | Step::Merge => 1,
        }
    }

    /// What its tasks' markers must say.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            ranks: self.ranks,
            config: lmforge_executor::plan::id(&self.config),
            inputs: lmforge_executor::plan::id(&(&self.inputs, &self.parts, &self.dir)),
        }
    }

    /// Writes `W/plan.json`; an existing plan must be this one (the same rank count,
    /// configuration, inputs and output), else the work folder belongs to another run.
    pub fn write(&self, work: &Path) -> Result<()> {
        lmforge_executor::plan::write(work, self, |old, new| {
            // A changed input is named; anything else is told by the fingerprints.
            let why = lmforge_executor::input::differences(&old.inputs, &new.inputs)
                .or_else(|| differences(&old.fingerprint(), &new.fingerprint()))
                .unwrap_or_else(|| "its output folder differs".into());
            Some(why)
        })
        .map_err(Error::from)
    }

    /// Reads `W/plan.json`.
    pub fn read(work: &Path) -> Result<Plan> {
        lmforge_executor::plan::read(work, "a sharded cleaning plan").map_err(Error::from)
    }

    /// Tasks of `step` without a finished marker of this plan: what a (re-)run must do. The
    /// merge writes outside its task folder: with its output's `report.json` gone (the output
    /// folder deleted), it is redone whatever its marker says.
    pub fn pending(&self, work: &Path, step: Step) -> Result<Vec<usize>> {
        let fingerprint = self.fingerprint();
        let mut pending = Vec::new();
        for task in 0..self.tasks(step) {
            if !self.finished(work, step, task, &fingerprint)? {
                pending.push(task);
            }
        }
        Ok(pending)
    }

    /// Whether task `task` of `step` finished for this plan (one marker read: a task asks
    /// this of itself, and reading every task's would cost ranks² reads in all).
    pub(super) fn finished(
        &self,
        work: &Path,
        step: Step,
        task: usize,
        fingerprint: &Fingerprint,
    ) -> Result<bool> {
        let done: Option<Marker> = marker(&task_dir(work, step, task))?;
        let output_gone =
            step == Step::Merge && !self.dir.join(&self.output).join("report.json").exists();
        Ok(!output_gone && done.is_some_and(|m| m.plan == *fingerprint))
    }

    /// The parts of rank `rank`.
    pub(super) fn rank_parts(&self, rank: usize) -> std::ops::Range<usize> {
        lmforge_corpus::assign(&self.parts, self.working())[rank].clone()
    }
}

/// What differs between two fingerprints, or `None` when nothing does.
fn differences(a: &Fingerprint, b: &Fingerprint) -> Option<String> {
    let mut out = Vec::new();
    if a.ranks != b.ranks {
        out.push(format!("{} ranks there, {} here", a.ranks, b.ranks));
    }
    if a.config != b.config {
        out.push("different cleaning parameters".to_string());
    }
    if a.inputs != b.inputs {
        out.push("a different input set".to_string());
    }
    (!out.is_empty()).then(|| out.join(", "))
}

/// `W/STEP/task-NNNNN`.
pub fn task_dir(work: &Path, step: Step, task: usize) -> PathBuf {
    work.join(step.name()).join(format!("task-{task:05}"))
}

/// Every task of `step` must have finished for this plan: their folders, in task order.
pub(super) fn require(work: &Path, plan: &Plan, step: Step) -> Result<Vec<PathBuf>> {
    let fingerprint = plan.fingerprint();
    (0..plan.tasks(step))
        .map(|task| {
            let dir = task_dir(work, step, task);
            match marker::<Marker>(&dir)? {
                None => Err(Error::Config(format!(
                    "step `{}` task {task} has not finished (no {}); run it first",
                    step.name(),
                    dir.join(lmforge_executor::task::MARKER).display()
                ))),
                Some(m) => match differences(&m.plan, &fingerprint) {
                    Some(why) => Err(Error::Config(format!(
                        "{} was written for another plan than {} ({why}); \
                         re-run step `{}`",
                        dir.display(),
                        work.join("plan.json").display(),
                        step.name()
                    ))),
                    None => Ok(dir),
                },
            }
        })
        .collect()
}

/// Per part of a rank: what the `signatures` step counted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Counts {
    /// (documents, lines) per part.
    pub(super) parts: Vec<(u64, u64)>,
    pub(super) documents: u64,
}

pub(super) fn no_progress(_: &Progress) {}

/// Every rank's counts, and the first global ordinal of each rank.
pub(super) fn rank_counts(work: &Path, plan: &Plan) -> Result<(Vec<Counts>, Vec<u64>)> {
    let mut counts = Vec::with_capacity(plan.working());
    let mut offsets = Vec::with_capacity(plan.working() + 1);
    let mut total = 0;
    for dir in require(work, plan, Step::Signatures)? {
        let c: Counts = read_json(&dir.join("counts.json"))?;
        offsets.push(total);
        total += c.documents;
        counts.push(c);
    }
    offsets.push(total);
    Ok((counts, offsets))
}

/// Where each rank's documents and each part's lines begin: what a filter rank needs of the
/// other ranks' counts, written once by the cluster step (`ordinals.json`) so that each
/// filter task reads one file, not every rank's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Ordinals {
    /// The first global ordinal of each rank, and the total last.
    pub(super) offsets: Vec<u64>,
    /// Lines of its file before each part.
    pub(super) lines: Vec<u64>,
}

impl Ordinals {
    pub(super) fn of(work: &Path, plan: &Plan) -> Result<Ordinals> {
        let (counts, offsets) = rank_counts(work, plan)?;
        // Lines before each part, from the counts of the parts before it in the same file.
        let part_counts: Vec<(u64, u64)> = counts.iter().flat_map(|c| c.parts.clone()).collect();
        let mut lines = Vec::with_capacity(plan.parts.len());
        for (at, part) in plan.parts.iter().enumerate() {
            lines.push(match at.checked_sub(1) {
                Some(prev) if plan.parts[prev].file == part.file => {
                    lines[prev] + part_counts[prev].1
                }
                _ => 0,
            });
        }
        Ok(Ordinals { offsets, lines })
    }
}
