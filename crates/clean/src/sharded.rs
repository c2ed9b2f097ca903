//! A cleaning run as job arrays over a shared work folder: the same answer as
//! [`Cleaner::run`], byte for byte, for any number of ranks.
//!
//! The input is cut into [`Part`]s that do not depend on the rank count, and rank `r` of `N`
//! reads a contiguous run of them. The steps, each a job array whose tasks are plain
//! `lmforge clean --work W --step S --rank R` processes:
//!
//! | step | tasks | reads | writes (`W/STEP/task-NNNNN/`) |
//! |---|---|---|---|
//! | `signatures` | N | its parts | `counts.json` (documents and lines per part), `exact-TTTTT.bin` (key, local ordinal) per exact task, `signatures.bin` (one record per document), `band-BBB.bin` (sorted bucket·ordinal keys) |
//! | `exact` | N | every rank's `exact-T.bin` | `dups.bin`: (ordinal, first ordinal) of every exact copy |
//! | `buckets` | min(N, bands) | every rank's `band-B.bin` of its bands, signatures of bucket members | `pairs-BBB.bin`: verified (earlier, later) pairs, `stats.json` |
//! | `cluster` | 1 | every pair | `near.bin`: (ordinal, survivor, similarity) |
//! | `filter` | N | its parts, the duplicates | shards, `duplicates.jsonl`, `survivors.jsonl`, `state.json` |
//! | `merge` | 1 | every rank's outputs | the output folder (shards renumbered, `duplicates.jsonl`, `report.json`) |
//!
//! Ordinals are global input positions: a rank knows its first one from the `signatures`
//! counts of the ranks before it. Every task writes into a hidden folder and commits it with
//! a marker that names the plan (rank count, configuration, input set); a later step refuses
//! outputs of another plan, naming what differs. Memory of the cluster step is bounded by the
//! pairs: 16 bytes per verified pair while the node list is built, then 12 bytes per document
//! that is in a pair.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lmforge_corpus::Part;
use lmforge_executor::task::{Pending, marker};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::config::Dedup;
use crate::lsh::{bucket, needed_agreement, used_bands, verify_bucket};
use crate::report::{DedupReport, Report};
use crate::run::{Dup, FilterState, Filtering, Item, Pass, Progress, Reading, write_report};
use crate::{Cleaner, Config, Error, Result, io};

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
struct Marker {
    step: String,
    task: usize,
    plan: Fingerprint,
    /// Seconds since the epoch when it started, and how long it ran.
    started: f64,
    seconds: f64,
    /// The largest memory it held for the index (signatures, keys, tables), in bytes.
    memory: u64,
    threads: usize,
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
}

fn hex128(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

fn json_bytes(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
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

    /// Tasks of `step`.
    pub fn tasks(&self, step: Step) -> usize {
        match step {
            Step::Signatures | Step::Exact | Step::Filter => self.ranks,
            Step::Buckets => {
                let (bands, _) = used_bands(self.config.bands(), self.config.minhash.perms);
                self.ranks.min(bands).max(1)
            }
            Step::Cluster | Step::Merge => 1,
        }
    }

    /// What its tasks' markers must say.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            ranks: self.ranks,
            config: hex128(&json_bytes(&self.config)),
            inputs: hex128(&json_bytes(&(&self.inputs, &self.parts, &self.dir))),
        }
    }

    /// Writes `W/plan.json`; an existing plan must be this one (the same rank count,
    /// configuration, inputs and output), else the work folder belongs to another run.
    pub fn write(&self, work: &Path) -> Result<()> {
        std::fs::create_dir_all(work).map_err(io(work))?;
        let path = work.join("plan.json");
        if path.exists() {
            let old = Plan::read(work)?;
            if old != *self {
                // A changed input is named; anything else is told by the fingerprints.
                let why = lmforge_executor::input::differences(&old.inputs, &self.inputs)
                    .or_else(|| differences(&old.fingerprint(), &self.fingerprint()))
                    .unwrap_or_else(|| "its output folder differs".into());
                return Err(Error::Config(format!(
                    "{}: the work folder holds another run's plan ({why}); \
                     use another --work folder or remove this one",
                    path.display(),
                )));
            }
            return Ok(());
        }
        let temp = work.join(format!(".plan.json.tmp-{}", std::process::id()));
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Output {
            file: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&temp, json + "\n").map_err(io(&temp))?;
        std::fs::rename(&temp, &path).map_err(io(&path))
    }

    /// Reads `W/plan.json`.
    pub fn read(work: &Path) -> Result<Plan> {
        let path = work.join("plan.json");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| Error::Output {
            file: path,
            reason: format!("not a sharded cleaning plan ({e})"),
        })
    }

    /// Tasks of `step` without a finished marker of this plan: what a (re-)run must do. The
    /// merge writes outside its task folder: with its output's `report.json` gone (the output
    /// folder deleted), it is redone whatever its marker says.
    pub fn pending(&self, work: &Path, step: Step) -> Result<Vec<usize>> {
        let fingerprint = self.fingerprint();
        let mut pending = Vec::new();
        for task in 0..self.tasks(step) {
            let done: Option<Marker> = marker(&task_dir(work, step, task))?;
            let output_gone =
                step == Step::Merge && !self.dir.join(&self.output).join("report.json").exists();
            if output_gone || done.is_none_or(|m| m.plan != fingerprint) {
                pending.push(task);
            }
        }
        Ok(pending)
    }

    /// The parts of rank `rank`.
    fn rank_parts(&self, rank: usize) -> std::ops::Range<usize> {
        lmforge_corpus::assign(&self.parts, self.ranks)[rank].clone()
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
fn require(work: &Path, plan: &Plan, step: Step) -> Result<Vec<PathBuf>> {
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
struct Counts {
    /// (documents, lines) per part.
    parts: Vec<(u64, u64)>,
    documents: u64,
}

/// Runs task `task` of `step` of the plan in `work`; a task already finished for this plan
/// is left as it is. `cancel` stops it at the next batch with nothing committed.
pub fn run_task(work: &Path, step: Step, task: usize, cancel: &AtomicBool) -> Result<()> {
    let work = &std::path::absolute(work).map_err(io(work))?;
    let plan = Plan::read(work)?;
    if !plan.dir.as_os_str().is_empty()
        && std::env::current_dir().ok().as_deref() != Some(&plan.dir)
    {
        std::env::set_current_dir(&plan.dir).map_err(io(&plan.dir))?;
    }
    let tasks = plan.tasks(step);
    if task >= tasks {
        return Err(Error::Config(format!(
            "step `{}` has {tasks} tasks; there is no task {task}",
            step.name()
        )));
    }
    if plan.pending(work, step)?.binary_search(&task).is_err() {
        return Ok(());
    }
    let started = Instant::now();
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let cleaner = Cleaner::new(plan.config.clone())?;
    let pending = Pending::begin(&task_dir(work, step, task))?;
    let out = pending.dir().to_path_buf();
    let memory = match step {
        Step::Signatures => signatures(&plan, &cleaner, task, &out, cancel)?,
        Step::Exact => exact(work, &plan, task, &out)?,
        Step::Buckets => buckets(work, &plan, task, &out)?,
        Step::Cluster => cluster(work, &plan, &out)?,
        Step::Filter => filter(work, &plan, &cleaner, task, &out, cancel)?,
        Step::Merge => merge(work, &plan)?,
    };
    pending
        .commit(&Marker {
            step: step.name().into(),
            task,
            plan: plan.fingerprint(),
            started: epoch,
            seconds: started.elapsed().as_secs_f64(),
            memory,
            threads: rayon::current_num_threads(),
        })
        .map_err(Error::from)
}

/// Little-endian u64 records.
struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Writer {
    fn create(path: PathBuf) -> Result<Writer> {
        let file = File::create(&path).map_err(io(&path))?;
        Ok(Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            path,
        })
    }

    fn put(&mut self, values: &[u64]) -> Result<()> {
        for v in values {
            self.out
                .write_all(&v.to_le_bytes())
                .map_err(io(&self.path))?;
        }
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(io(&self.path))
    }

    fn finish(self) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| io(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io(&self.path))
    }
}

/// Reads records of `N` u64s; a file whose length is not a whole number of records is
/// damaged (a task killed mid-write cannot leave one: its folder was never committed).
struct Records<const N: usize> {
    path: PathBuf,
    input: BufReader<File>,
}

impl<const N: usize> Records<N> {
    fn open(path: PathBuf) -> Result<Records<N>> {
        let file = File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len % (N as u64 * 8) != 0 {
            return Err(Error::Output {
                file: path,
                reason: format!(
                    "{len} bytes is not a whole number of {}-byte records",
                    N * 8
                ),
            });
        }
        Ok(Records {
            input: BufReader::with_capacity(1 << 20, file),
            path,
        })
    }

    fn next(&mut self) -> Result<Option<[u64; N]>> {
        let mut record = [0u64; N];
        let mut buf = [0u8; 8];
        for (i, value) in record.iter_mut().enumerate() {
            match self.input.read_exact(&mut buf) {
                Ok(()) => *value = u64::from_le_bytes(buf),
                Err(e) if i == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None);
                }
                Err(e) => return Err(io(&self.path)(e)),
            }
        }
        Ok(Some(record))
    }
}

/// Which exact task owns a key.
fn exact_task(key: u64, tasks: usize) -> usize {
    ((u128::from(key) * tasks as u128) >> 64) as usize
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Output {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string(value).map_err(|e| Error::Output {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(lmforge_executor::task::write_synced(
        path,
        (json + "\n").as_bytes(),
    )?)
}

fn no_progress(_: &Progress) {}

/// Every rank's counts, and the first global ordinal of each rank.
fn rank_counts(work: &Path, plan: &Plan) -> Result<(Vec<Counts>, Vec<u64>)> {
    let mut counts = Vec::with_capacity(plan.ranks);
    let mut offsets = Vec::with_capacity(plan.ranks + 1);
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

/// Step 1 of rank `rank`: exact keys by exact task, signatures, band keys.
fn signatures(
    plan: &Plan,
    cleaner: &Cleaner,
    rank: usize,
    out: &Path,
    cancel: &AtomicBool,
) -> Result<u64> {
    let range = plan.rank_parts(rank);
    let parts = &plan.parts[range];
    for input in &plan.inputs {
        if parts.iter().any(|p| p.file == input.file)
            && let Some(why) = input.changed()?
        {
            return Err(Error::InputChanged(why));
        }
    }
    let config = &plan.config;
    let near = config.dedup == Dedup::Minhash;
    let dedup = config.dedup != Dedup::None;
    let perms = config.minhash.perms;
    let (bands, rows) = used_bands(cleaner.bands(), perms);
    let exact_tasks = plan.tasks(Step::Exact);
    let mut exact: Vec<Writer> = Vec::new();
    if dedup {
        for t in 0..exact_tasks {
            exact.push(Writer::create(out.join(format!("exact-{t:05}.bin")))?);
        }
    }
    let mut signatures = if near {
        Some(Writer::create(out.join("signatures.bin"))?)
    } else {
        None
    };
    let mut keys: Vec<Vec<u64>> = vec![Vec::new(); if near { bands } else { 0 }];
    let mut counts = Counts {
        parts: vec![(0, 0); parts.len()],
        documents: 0,
    };
    let text_key = [config.text_field.clone()];
    let reading = Reading {
        parts,
        lines: None,
        keys: &text_key,
        optional: &[],
        cancel,
        pass: Pass::Dedup,
        file_bytes: parts.iter().map(|p| p.bytes).sum(),
        progress: &no_progress,
    };
    let zero = vec![0u8; perms * 4];
    let mut record = Vec::with_capacity(perms * 4);
    reading.each_batch(|batch| {
        let docs = batch
            .items
            .iter()
            .filter(|i| matches!(i, Item::Doc(_)))
            .count() as u64;
        counts.parts[batch.part].0 += docs;
        if let Some(lines) = batch.lines {
            counts.parts[batch.part].1 = lines;
        }
        if dedup {
            for (key, signature) in cleaner.hash_batch(&batch.items).into_iter().flatten() {
                let local = counts.documents;
                counts.documents += 1;
                exact[exact_task(key, exact_tasks)].put(&[key, local])?;
                let Some(w) = signatures.as_mut() else {
                    continue;
                };
                match signature {
                    None => w.bytes(&zero)?,
                    Some(signature) => {
                        let local = u32::try_from(local).map_err(|_| {
                            Error::Config(
                                "a rank holds at most 4,294,967,295 documents; use more ranks"
                                    .into(),
                            )
                        })?;
                        record.clear();
                        for v in &signature {
                            record.extend_from_slice(&v.to_le_bytes());
                        }
                        w.bytes(&record)?;
                        for (band, keys) in keys.iter_mut().enumerate() {
                            let b = bucket(&signature, band, rows);
                            keys.push((u64::from(b) << 32) | u64::from(local));
                        }
                    }
                }
            }
        } else {
            counts.documents += docs;
        }
        Ok(counts.documents)
    })?;
    let memory = keys.iter().map(|k| k.capacity() * 8).sum::<usize>() as u64;
    for w in exact {
        w.finish()?;
    }
    if let Some(w) = signatures {
        w.finish()?;
    }
    for (band, mut keys) in keys.into_iter().enumerate() {
        keys.sort_unstable();
        let mut w = Writer::create(out.join(format!("band-{band:03}.bin")))?;
        w.put(&keys)?;
        w.finish()?;
    }
    write_json(&out.join("counts.json"), &counts)?;
    Ok(memory)
}

/// Step 2, task `task`: the exact copies among the keys it owns, the first copy surviving.
fn exact(work: &Path, plan: &Plan, task: usize, out: &Path) -> Result<u64> {
    let (_, offsets) = rank_counts(work, plan)?;
    let mut dups = Writer::create(out.join("dups.bin"))?;
    let mut first: FxHashMap<u64, u64> = FxHashMap::default();
    if plan.config.dedup != Dedup::None {
        for (rank, dir) in require(work, plan, Step::Signatures)?.iter().enumerate() {
            let mut records = Records::<2>::open(dir.join(format!("exact-{task:05}.bin")))?;
            while let Some([key, local]) = records.next()? {
                let ordinal = offsets[rank] + local;
                match first.entry(key) {
                    std::collections::hash_map::Entry::Occupied(f) => {
                        dups.put(&[ordinal, *f.get()])?;
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(ordinal);
                    }
                }
            }
        }
    }
    dups.finish()?;
    Ok(first.capacity() as u64 * 17)
}

/// Every exact copy (ordinal → first ordinal), from every exact task.
fn exact_dups(work: &Path, plan: &Plan) -> Result<Vec<(u64, u64)>> {
    let mut all = Vec::new();
    for dir in require(work, plan, Step::Exact)? {
        let mut records = Records::<2>::open(dir.join("dups.bin"))?;
        while let Some([ordinal, of]) = records.next()? {
            all.push((ordinal, of));
        }
    }
    all.sort_unstable();
    Ok(all)
}

/// Signatures of every rank, read by global ordinal.
struct Signatures {
    files: Vec<(PathBuf, File)>,
    offsets: Vec<u64>,
    perms: usize,
}

impl Signatures {
    fn open(work: &Path, plan: &Plan, offsets: Vec<u64>) -> Result<Signatures> {
        let files = require(work, plan, Step::Signatures)?
            .into_iter()
            .map(|dir| {
                let path = dir.join("signatures.bin");
                let file = File::open(&path).map_err(io(&path))?;
                Ok((path, file))
            })
            .collect::<Result<_>>()?;
        Ok(Signatures {
            files,
            offsets,
            perms: plan.config.minhash.perms,
        })
    }

    fn get(&self, ordinal: u64) -> Result<Vec<u32>> {
        let rank = self.offsets.partition_point(|&o| o <= ordinal) - 1;
        let local = ordinal - self.offsets[rank];
        let (path, file) = &self.files[rank];
        let mut bytes = vec![0u8; self.perms * 4];
        file.read_exact_at(&mut bytes, local * self.perms as u64 * 4)
            .map_err(io(path))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// Per band, what the `buckets` step found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct BandStats {
    band: usize,
    indexed: u64,
    candidates: u64,
    verified: u64,
}

/// Step 3, task `task`: bands `task`, `task + tasks`, …: each band's buckets merged from every
/// rank in input order, exact copies left out (one process never indexes them), members
/// verified against the bucket's representatives.
fn buckets(work: &Path, plan: &Plan, task: usize, out: &Path) -> Result<u64> {
    let mut stats = Vec::new();
    if plan.config.dedup == Dedup::Minhash {
        let (_, offsets) = rank_counts(work, plan)?;
        let excluded: FxHashSet<u64> = exact_dups(work, plan)?.into_iter().map(|d| d.0).collect();
        let signatures = Signatures::open(work, plan, offsets.clone())?;
        let need = needed_agreement(plan.config.minhash.threshold, plan.config.minhash.perms);
        let (bands, _) = used_bands(plan.config.bands(), plan.config.minhash.perms);
        let dirs = require(work, plan, Step::Signatures)?;
        for band in (task..bands).step_by(plan.tasks(Step::Buckets)) {
            let mut inputs = dirs
                .iter()
                .map(|d| Records::<1>::open(d.join(format!("band-{band:03}.bin"))))
                .collect::<Result<Vec<_>>>()?;
            // Smallest (bucket, rank, local) first: within a bucket, input order.
            let mut heap = BinaryHeap::new();
            for (rank, input) in inputs.iter_mut().enumerate() {
                if let Some([key]) = input.next()? {
                    heap.push(std::cmp::Reverse((key >> 32, rank, key as u32)));
                }
            }
            let mut pairs = Vec::new();
            let mut band_stats = BandStats {
                band,
                ..BandStats::default()
            };
            let mut members: Vec<u64> = Vec::new();
            let mut current: Option<u64> = None;
            let mut flush = |members: &mut Vec<u64>, pairs: &mut Vec<(u64, u64)>| {
                if members.len() > 1 {
                    let mut signed = Vec::with_capacity(members.len());
                    for ordinal in members.iter() {
                        signed.push((*ordinal, signatures.get(*ordinal)?));
                    }
                    band_stats.candidates += verify_bucket(&signed, need, pairs);
                }
                members.clear();
                Ok::<(), Error>(())
            };
            while let Some(std::cmp::Reverse((bucket, rank, local))) = heap.pop() {
                if let Some([key]) = inputs[rank].next()? {
                    heap.push(std::cmp::Reverse((key >> 32, rank, key as u32)));
                }
                let ordinal = offsets[rank] + u64::from(local);
                if excluded.contains(&ordinal) {
                    continue;
                }
                band_stats.indexed += 1;
                if current != Some(bucket) {
                    flush(&mut members, &mut pairs)?;
                    current = Some(bucket);
                }
                members.push(ordinal);
            }
            flush(&mut members, &mut pairs)?;
            band_stats.verified = pairs.len() as u64;
            let mut w = Writer::create(out.join(format!("pairs-{band:03}.bin")))?;
            for (a, b) in pairs {
                w.put(&[a, b])?;
            }
            w.finish()?;
            stats.push(band_stats);
        }
    }
    write_json(&out.join("stats.json"), &stats)?;
    Ok(0)
}

/// What the `cluster` step found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ClusterStats {
    indexed: u64,
    candidates: u64,
    verified: u64,
    clusters: u64,
    near_duplicates: u64,
    seconds: f64,
}

/// Step 4: connected components of every verified pair, the smallest ordinal as root; the
/// nodes are only the documents in a pair, so memory follows the pairs, not the corpus.
fn cluster(work: &Path, plan: &Plan, out: &Path) -> Result<u64> {
    let started = Instant::now();
    let mut stats = ClusterStats::default();
    let mut w = Writer::create(out.join("near.bin"))?;
    let mut memory = 0;
    if plan.config.dedup == Dedup::Minhash {
        let dirs = require(work, plan, Step::Buckets)?;
        let mut pair_files = Vec::new();
        for dir in &dirs {
            let band_stats: Vec<BandStats> = read_json(&dir.join("stats.json"))?;
            for s in band_stats {
                if s.band == 0 {
                    stats.indexed = s.indexed;
                }
                stats.candidates += s.candidates;
                stats.verified += s.verified;
                pair_files.push(dir.join(format!("pairs-{:03}.bin", s.band)));
            }
        }
        let mut components = Components::of(&pair_files)?;
        memory = components.bytes();
        let Components { nodes, parent } = &mut components;
        let (_, offsets) = rank_counts(work, plan)?;
        let signatures = Signatures::open(work, plan, offsets)?;
        let mut root_signature: Option<(u32, Vec<u32>)> = None;
        for at in 0..nodes.len() as u32 {
            let root = crate::lsh::find(parent, at);
            if root == at {
                // Every node is in a pair, so every root heads a cluster of two or more.
                stats.clusters += 1;
                continue;
            }
            let signature = signatures.get(nodes[at as usize])?;
            if root_signature.as_ref().is_none_or(|(r, _)| *r != root) {
                root_signature = Some((root, signatures.get(nodes[root as usize])?));
            }
            let of = root_signature.as_ref().map_or(&signature, |(_, s)| s);
            let similarity = crate::minhash::similarity(&signature, of) as f32;
            w.put(&[nodes[at as usize], nodes[root as usize]])?;
            w.bytes(&u64::from(similarity.to_bits()).to_le_bytes())?;
            stats.near_duplicates += 1;
        }
    }
    w.finish()?;
    stats.seconds = started.elapsed().as_secs_f64();
    write_json(&out.join("stats.json"), &stats)?;
    Ok(memory)
}

/// The connected components of candidate pairs (files of `(u64, u64)` ordinal records):
/// the nodes are only the ordinals that occur in a pair, sorted (8 bytes each), and a
/// union-find forest over their indices (4 bytes each), whose roots are the smallest ordinals
/// of their components. Memory: the pairs' 16 bytes each while the nodes are collected, then
/// 12 bytes per node.
pub struct Components {
    /// The ordinals in a pair, ascending.
    pub nodes: Vec<u64>,
    /// The forest over indices into `nodes`; [`Components::root`] compresses it.
    pub parent: Vec<u32>,
}

impl Components {
    /// Reads every pair twice: once for the nodes, once for the unions.
    pub fn of(pair_files: &[PathBuf]) -> Result<Components> {
        // Sized from the files: a doubling vector would peak at twice the pairs' bytes.
        let mut records = 0u64;
        for path in pair_files {
            records += std::fs::metadata(path).map_err(io(path))?.len() / 16;
        }
        let mut nodes: Vec<u64> = Vec::with_capacity((records * 2) as usize);
        for path in pair_files {
            let mut records = Records::<2>::open(path.clone())?;
            while let Some([a, b]) = records.next()? {
                nodes.push(a);
                nodes.push(b);
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        nodes.shrink_to_fit();
        if nodes.len() > u32::MAX as usize {
            return Err(Error::Output {
                file: pair_files.first().cloned().unwrap_or_default(),
                reason: format!("{} documents in pairs: more than 2^32", nodes.len()),
            });
        }
        let lookup = Lookup::new(&nodes);
        let mut parent: Vec<u32> = (0..nodes.len() as u32).collect();
        for path in pair_files {
            let mut records = Records::<2>::open(path.clone())?;
            while let Some([a, b]) = records.next()? {
                let (a, b) = (lookup.index(&nodes, a), lookup.index(&nodes, b));
                crate::lsh::union(&mut parent, a, b);
            }
        }
        Ok(Components { nodes, parent })
    }

    /// The root ordinal of ordinal `nodes[at]`'s component.
    pub fn root(&mut self, at: u32) -> u64 {
        self.nodes[crate::lsh::find(&mut self.parent, at) as usize]
    }

    /// The bytes the nodes and the forest hold (the lookup's half byte per node aside).
    pub fn bytes(&self) -> u64 {
        (self.nodes.capacity() * 8 + self.parent.capacity() * 4) as u64
    }
}

/// Where an ordinal is in the sorted nodes: the top bits of its offset from the smallest
/// pick a slice (about four nodes on average for spread-out ordinals), searched in; a plain
/// binary search over 20 M nodes misses the cache at every level and took 12 of 18 s on
/// 10 M pairs. At most two bytes per node.
struct Lookup {
    min: u64,
    shift: u32,
    starts: Vec<u32>,
}

impl Lookup {
    fn new(nodes: &[u64]) -> Lookup {
        let (Some(&min), Some(&max)) = (nodes.first(), nodes.last()) else {
            return Lookup {
                min: 0,
                shift: 0,
                starts: vec![0, 0],
            };
        };
        let bits = (usize::BITS - (nodes.len() / 4).max(1).leading_zeros()).min(32);
        let span = u64::BITS - (max - min).leading_zeros();
        let shift = span.saturating_sub(bits);
        let slots = (((max - min) >> shift) + 2) as usize;
        let mut starts = vec![0u32; slots];
        let mut at = 0usize;
        for (slot, start) in starts.iter_mut().enumerate() {
            while at < nodes.len() && (((nodes[at] - min) >> shift) as usize) < slot {
                at += 1;
            }
            *start = at as u32;
        }
        Lookup { min, shift, starts }
    }

    /// The index of `ordinal`, which must be one of `nodes`.
    fn index(&self, nodes: &[u64], ordinal: u64) -> u32 {
        let slot = (ordinal.wrapping_sub(self.min) >> self.shift) as usize;
        let lo = self.starts.get(slot).copied().unwrap_or_default() as usize;
        let hi = self
            .starts
            .get(slot + 1)
            .map_or(nodes.len(), |&h| h as usize);
        let within = nodes.get(lo..hi).unwrap_or_default();
        (lo + within.binary_search(&ordinal).unwrap_or_default()) as u32
    }
}

/// Every duplicate, exact and near, by ordinal.
fn all_dups(work: &Path, plan: &Plan) -> Result<Vec<(u64, Dup)>> {
    let mut dups: Vec<(u64, Dup)> = exact_dups(work, plan)?
        .into_iter()
        .map(|(o, of)| {
            (
                o,
                Dup {
                    of,
                    near: false,
                    similarity: 1.0,
                },
            )
        })
        .collect();
    let dir = &require(work, plan, Step::Cluster)?[0];
    let mut records = Records::<3>::open(dir.join("near.bin"))?;
    while let Some([o, of, similarity]) = records.next()? {
        dups.push((
            o,
            Dup {
                of,
                near: true,
                similarity: f32::from_bits(similarity as u32),
            },
        ));
    }
    dups.sort_unstable_by_key(|d| d.0);
    Ok(dups)
}

/// A filter rank's results, beside its shards.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RankState {
    state: FilterState,
    outputs: Vec<crate::output::OutputFile>,
    documents: u64,
}

/// Step 5, rank `rank`: the filter pass over its parts.
fn filter(
    work: &Path,
    plan: &Plan,
    cleaner: &Cleaner,
    rank: usize,
    out: &Path,
    cancel: &AtomicBool,
) -> Result<u64> {
    let (counts, offsets) = rank_counts(work, plan)?;
    let range = plan.rank_parts(rank);
    // Lines before each part, from the counts of the parts before it in the same file.
    let part_counts: Vec<(u64, u64)> = counts.iter().flat_map(|c| c.parts.clone()).collect();
    let mut lines = Vec::with_capacity(plan.parts.len());
    for (at, part) in plan.parts.iter().enumerate() {
        lines.push(match at.checked_sub(1) {
            Some(prev) if plan.parts[prev].file == part.file => lines[prev] + part_counts[prev].1,
            _ => 0,
        });
    }
    let (lo, hi) = (offsets[rank], offsets[rank + 1]);
    let mut dups: FxHashMap<u64, Dup> = FxHashMap::default();
    let mut roots: FxHashSet<u64> = FxHashSet::default();
    if plan.config.dedup != Dedup::None {
        for (o, dup) in all_dups(work, plan)? {
            if (lo..hi).contains(&dup.of) {
                roots.insert(dup.of);
            }
            if (lo..hi).contains(&o) {
                dups.insert(o, dup);
            }
        }
    }
    let mut filtering = Filtering::new(cleaner, out, &dups, roots, lo)?;
    let parts = &plan.parts[range.clone()];
    let reading = Reading {
        parts,
        lines: Some(&lines[range]),
        keys: &filtering.keys(),
        optional: &filtering.optional(),
        cancel,
        pass: Pass::Filter,
        file_bytes: parts.iter().map(|p| p.bytes).sum(),
        progress: &no_progress,
    };
    reading.each_batch(|batch| filtering.batch(batch))?;
    let done = filtering.finish()?;
    if done.documents != hi - lo {
        return Err(Error::InputChanged(format!(
            "rank {rank}: the signatures step read {} documents and the filter step {}: \
             an input file changed during the run",
            hi - lo,
            done.documents
        )));
    }
    let survivors = out.join("survivors.jsonl");
    let mut w = Writer::create(survivors)?;
    for (ordinal, id) in &done.survivors {
        let line = serde_json::json!([ordinal, id]).to_string() + "\n";
        w.bytes(line.as_bytes())?;
    }
    w.finish()?;
    write_json(
        &out.join("state.json"),
        &RankState {
            state: done.state,
            outputs: done.outputs,
            documents: done.documents,
        },
    )?;
    Ok(dups.capacity() as u64 * 25)
}

/// Step 6: the output folder, as one process would have written it.
fn merge(work: &Path, plan: &Plan) -> Result<u64> {
    let staging = crate::output::Staging::new(&plan.output)?;
    let config = &plan.config;
    let ranks = require(work, plan, Step::Filter)?;
    let mut total = FilterState::default();
    let mut outputs = Vec::new();
    let mut documents = 0;
    for dir in &ranks {
        let rank: RankState = read_json(&dir.join("state.json"))?;
        documents += rank.documents;
        total.add(rank.state);
        for mut file in rank.outputs {
            let ext = file.file.split_once('.').map_or("", |(_, e)| e).to_string();
            let name = format!("part-{:05}.{ext}", outputs.len());
            let from = dir.join(&file.file);
            let to = staging.dir().join(&name);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(io(&from))?;
            }
            file.file = name;
            outputs.push(file);
        }
    }
    if config.dedup != Dedup::None {
        let mut survivors: FxHashMap<u64, String> = FxHashMap::default();
        for dir in &ranks {
            let path = dir.join("survivors.jsonl");
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            for line in text.lines() {
                let (ordinal, id): (u64, String) =
                    serde_json::from_str(line).map_err(|e| Error::Output {
                        file: path.clone(),
                        reason: e.to_string(),
                    })?;
                survivors.insert(ordinal, id);
            }
        }
        let path = staging.dir().join("duplicates.jsonl");
        let mut w = Writer::create(path)?;
        for dir in &ranks {
            let from = dir.join("duplicates.jsonl");
            let text = std::fs::read_to_string(&from).map_err(io(&from))?;
            for line in text.lines() {
                // The line is kept as written (a float read back by serde_json need not print
                // the same); only an unknown survivor's id is filled in.
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| Error::Output {
                        file: from.clone(),
                        reason: e.to_string(),
                    })?;
                let mut line = line.to_string();
                if value["duplicate_of"].is_null() {
                    let of = value["duplicate_of_ordinal"].as_u64().unwrap_or_default();
                    let id = serde_json::Value::from(survivors.get(&of).cloned()).to_string();
                    // Quotes inside string values are escaped, so this is the key itself.
                    line = line.replacen(
                        "\"duplicate_of\":null",
                        &format!("\"duplicate_of\":{id}"),
                        1,
                    );
                }
                w.bytes((line + "\n").as_bytes())?;
            }
        }
        w.finish()?;
    }

    // The dedup counts, and the times of every step from the task markers.
    let mut dedup = DedupReport::default();
    let mut memory = 0u64;
    let mut steps = Vec::new();
    let (mut first, mut last) = (f64::MAX, 0f64);
    let mut span = |step: Step| -> Result<(f64, f64)> {
        let mut times = StepTimes {
            step: step.name().into(),
            tasks: plan.tasks(step),
            ..StepTimes::default()
        };
        let (mut a, mut b) = (f64::MAX, 0f64);
        for dir in require(work, plan, step)? {
            let m: Marker = marker(&dir)?.unwrap_or_else(|| Marker {
                step: String::new(),
                task: 0,
                plan: plan.fingerprint(),
                started: 0.0,
                seconds: 0.0,
                memory: 0,
                threads: 0,
            });
            times.max_seconds = times.max_seconds.max(m.seconds);
            times.task_seconds += m.seconds;
            memory = memory.max(m.memory);
            a = a.min(m.started);
            b = b.max(m.started + m.seconds);
        }
        steps.push(times);
        first = first.min(a);
        last = last.max(b);
        Ok((a, b))
    };
    let (index_start, _) = span(Step::Signatures)?;
    span(Step::Exact)?;
    span(Step::Buckets)?;
    let (_, index_end) = span(Step::Cluster)?;
    let (filter_start, filter_end) = span(Step::Filter)?;
    if config.dedup != Dedup::None {
        // Every exact copy was read by a filter rank and counted there.
        dedup.exact_duplicates = total
            .stages
            .first()
            .and_then(|s| s.dropped.get("duplicate"))
            .copied()
            .unwrap_or(0);
    }
    if config.dedup == Dedup::Minhash {
        let dir = &require(work, plan, Step::Cluster)?[0];
        let c: ClusterStats = read_json(&dir.join("stats.json"))?;
        dedup.bands = Some(config.bands());
        dedup.indexed = c.indexed;
        dedup.clusters = c.clusters;
        dedup.candidates = c.candidates;
        dedup.verified = c.verified;
        dedup.near_duplicates = c.near_duplicates;
        dedup.cluster_seconds = c.seconds;
    }
    dedup.index_bytes = memory;
    if documents > 0 {
        dedup.index_bytes_per_document = memory as f64 / documents as f64;
    }
    let seconds = (last - first).max(0.0);
    let report = Report {
        inputs: plan.inputs.iter().map(|i| i.file.clone()).collect(),
        output: plan.output.clone(),
        config: config.clone(),
        documents_in: total.documents_in,
        bytes_in: total.bytes_in,
        file_bytes: plan.parts.iter().map(|p| p.bytes).sum(),
        documents_out: total.documents_out,
        bytes_out: total.bytes_out,
        stages: total.stages,
        languages: total.languages,
        malformed: total.malformed,
        dedup,
        outputs,
        threads: rayon::current_num_threads(),
        index_seconds: (index_end - index_start).max(0.0),
        filter_seconds: (filter_end - filter_start).max(0.0),
        seconds,
        documents_per_second: total.documents_in as f64 / seconds.max(1e-9),
        mb_per_second: total.bytes_in as f64 / 1e6 / seconds.max(1e-9),
        sharded: Some(ShardedReport {
            ranks: plan.ranks,
            parts: plan.parts.len(),
            steps,
        }),
    };
    write_report(&staging.dir().join("report.json"), &report)?;
    staging.commit()?;
    Ok(0)
}

/// The report of a finished run (the merge step's `report.json`).
pub fn report(plan: &Plan) -> Result<Report> {
    read_json(&plan.output.join("report.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(pairs: &[(u64, u64)]) -> std::collections::BTreeMap<u64, u64> {
        let mut root: std::collections::BTreeMap<u64, u64> = Default::default();
        for &(a, b) in pairs {
            root.entry(a).or_insert(a);
            root.entry(b).or_insert(b);
        }
        // Relabel to the smallest member until nothing changes: slow, obviously right.
        loop {
            let mut changed = false;
            for &(a, b) in pairs {
                let m = root[&a].min(root[&b]);
                for x in [a, b] {
                    if root[&x] != m {
                        root.insert(x, m);
                        changed = true;
                    }
                }
            }
            for x in root.keys().copied().collect::<Vec<_>>() {
                let r = root[&root[&x]];
                if r != root[&x] {
                    root.insert(x, r);
                    changed = true;
                }
            }
            if !changed {
                return root;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn components_are_the_connected_components(
            pairs in proptest::collection::vec(
                (prop_oneof![0u64..50, (u64::MAX - 50)..u64::MAX, any::<u64>()],
                 prop_oneof![0u64..50, (u64::MAX - 50)..u64::MAX, any::<u64>()]),
                0..120,
            ),
            split in 0usize..120,
        ) {
            let dir = std::env::temp_dir().join(format!(
                "lmforge-components-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let split = split.min(pairs.len());
            let mut files = Vec::new();
            for (i, part) in [&pairs[..split], &pairs[split..]].iter().enumerate() {
                let path = dir.join(format!("pairs-{i}.bin"));
                let mut w = Writer::create(path.clone()).unwrap();
                for &(a, b) in part.iter() {
                    w.put(&[a, b]).unwrap();
                }
                w.finish().unwrap();
                files.push(path);
            }
            let mut components = Components::of(&files).unwrap();
            let expected = naive(&pairs);
            prop_assert_eq!(components.nodes.len(), expected.len());
            for at in 0..components.nodes.len() as u32 {
                let node = components.nodes[at as usize];
                prop_assert_eq!(components.root(at), expected[&node]);
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
