//! A cleaning run as job arrays over a shared work folder: the same answer as
//! [`Cleaner::run`], byte for byte, for any number of ranks.
//!
//! The input is cut into [`Part`](lmforge_corpus::Part)s that do not depend on the rank count, and rank `r` of `N`
//! reads a contiguous run of them. The steps, each a job array whose tasks are plain
//! `lmforge clean --work W --step S --rank R` processes:
//!
//! | step | tasks | reads | writes (`W/STEP/task-NNNNN/`) |
//! |---|---|---|---|
//! | `signatures` | N | its parts | `counts.json` (documents and lines per part), `exact.bin` (key, local ordinal) grouped by exact task with `exact.idx`, `signatures.bin` (one record per document), `band-BBB.bin` (sorted bucket·ordinal keys) |
//! | `exact` | min(N, 64) | its slice of every rank's `exact.bin` | `dups.bin`: (ordinal, first ordinal) of every exact copy |
//! | `buckets` | min(N, bands) | every rank's `band-B.bin` of its bands (64 at a time), signatures of bucket members | `pairs-BBB.bin`: verified (earlier, later) pairs, `stats.json` |
//! | `cluster` | 1 | every pair, every rank's counts | `dups.bin`/`dups.idx` (every duplicate by ordinal), `roots.bin`/`roots.idx` (the survivors duplicated), `ordinals.json` |
//! | `filter` | N | its parts, its slices of the cluster step's lists | shards, `duplicates.jsonl`, `survivors.jsonl`, `state.json` |
//! | `merge` | 1 | every rank's outputs | the output folder (shards renumbered, `duplicates.jsonl`, `report.json`) |
//!
//! `N` is the ranks that have a part ([`Plan::working`]). No task holds a file or a buffer per
//! rank beyond 64 at once, so open files and memory do not grow with `N`.
//!
//! Ordinals are global input positions: the cluster step turns the `signatures` counts into
//! each rank's first ordinal. Every task writes into a hidden folder and commits it with
//! a marker that names the plan (rank count, configuration, input set); a later step refuses
//! outputs of another plan, naming what differs. Memory of the cluster step is bounded by the
//! pairs (16 bytes per verified pair while the node list is built, then 12 bytes per document
//! that is in a pair) and the duplicates (24 bytes each).

mod buckets;
mod cluster;
mod exact;
mod filter;
mod merge;
mod plan;
mod records;
mod signatures;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lmforge_executor::task::Pending;

use crate::report::Report;
use crate::{Cleaner, Error, Result, io};

pub use crate::report::{ShardedReport, StepTimes};
pub use cluster::Components;
use plan::Marker;
pub use plan::{Fingerprint, InputFile, Plan, Step, task_dir};
use records::read_json;

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
    if plan.finished(work, step, task, &plan.fingerprint())? {
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
        Step::Signatures => signatures::signatures(&plan, &cleaner, task, &out, cancel)?,
        Step::Exact => exact::exact(work, &plan, task, &out)?,
        Step::Buckets => buckets::buckets(work, &plan, task, &out)?,
        Step::Cluster => cluster::cluster(work, &plan, &out)?,
        Step::Filter => filter::filter(work, &plan, &cleaner, task, &out, cancel)?,
        Step::Merge => merge::merge(work, &plan)?,
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
            peak_rss: lmforge_executor::task::peak_rss().unwrap_or(0),
        })
        .map_err(Error::from)
}

/// The report of a finished run (the merge step's `report.json`).
pub fn report(plan: &Plan) -> Result<Report> {
    read_json(&plan.output.join("report.json"))
}
