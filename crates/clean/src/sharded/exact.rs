//! Step 2, per slice of the key space: exact copies.

use std::path::Path;

use rustc_hash::FxHashMap;

use super::plan::{Plan, Step, rank_counts, require};
use super::records::{Records, Writer, index_range};
use crate::Result;
use crate::config::Dedup;

/// Which exact task owns a key.
pub(super) fn exact_task(key: u64, tasks: usize) -> usize {
    ((u128::from(key) * tasks as u128) >> 64) as usize
}
/// Step 2, task `task`: the exact copies among the keys it owns, the first copy surviving.
pub(super) fn exact(work: &Path, plan: &Plan, task: usize, out: &Path) -> Result<u64> {
    let (_, offsets) = rank_counts(work, plan)?;
    let mut dups = Writer::create(out.join("dups.bin"))?;
    let mut first: FxHashMap<u64, u64> = FxHashMap::default();
    if plan.config.dedup != Dedup::None {
        for (rank, dir) in require(work, plan, Step::Signatures)?.iter().enumerate() {
            let range = index_range(&dir.join("exact.idx"), task)?;
            let mut records = Records::<2>::slice(dir.join("exact.bin"), range)?;
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
pub(super) fn exact_dups(work: &Path, plan: &Plan) -> Result<Vec<(u64, u64)>> {
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
