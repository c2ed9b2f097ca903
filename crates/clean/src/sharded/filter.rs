//! Step 5, per rank: stages 3-6 and the shards.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::exact::exact_dups;
use super::plan::{Plan, Step, no_progress, rank_counts, require};
use super::records::{Records, Writer, write_json};
use crate::config::Dedup;
use crate::run::{Dup, FilterState, Filtering, Pass, Reading};
use crate::{Cleaner, Error, Result};

/// Every duplicate, exact and near, by ordinal.
pub(super) fn all_dups(work: &Path, plan: &Plan) -> Result<Vec<(u64, Dup)>> {
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
