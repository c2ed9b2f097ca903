//! Step 5, per rank: stages 3-6 and the shards.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::cluster::rank_dups;
use super::plan::{Ordinals, Plan, Step, no_progress, require};
use super::records::{Writer, read_json, write_json};
use crate::config::Dedup;
use crate::run::{FilterState, Filtering, Pass, Reading};
use crate::{Cleaner, Error, Result};

/// A filter rank's results, beside its shards.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct RankState {
    pub(super) state: FilterState,
    pub(super) outputs: Vec<crate::output::OutputFile>,
    pub(super) documents: u64,
}

/// Step 5, rank `rank`: the filter pass over its parts.
pub(super) fn filter(
    work: &Path,
    plan: &Plan,
    cleaner: &Cleaner,
    rank: usize,
    out: &Path,
    cancel: &AtomicBool,
) -> Result<u64> {
    let dir = &require(work, plan, Step::Cluster)?[0];
    let path = dir.join("ordinals.json");
    let Ordinals { offsets, lines } = read_json(&path)?;
    if offsets.len() != plan.tasks(Step::Filter) + 1 || lines.len() != plan.parts.len() {
        return Err(crate::Error::Output {
            file: path,
            reason: format!(
                "{} offsets and {} part line counts, for {} ranks and {} parts",
                offsets.len(),
                lines.len(),
                plan.tasks(Step::Filter),
                plan.parts.len()
            ),
        });
    }
    let range = plan.rank_parts(rank);
    let (lo, hi) = (offsets[rank], offsets[rank + 1]);
    let (dups, roots) = if plan.config.dedup == Dedup::None {
        Default::default()
    } else {
        rank_dups(work, plan, rank)?
    };
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
