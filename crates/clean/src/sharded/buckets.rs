//! Step 3, per band: candidate pairs, verified.

use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use super::exact::exact_dups;
use super::plan::{Plan, Step, rank_counts, require};
use super::records::{Records, Writer, write_json};
use crate::config::Dedup;
use crate::lsh::{needed_agreement, used_bands, verify_bucket};
use crate::{Error, Result, io};

/// Signatures of every rank, read by global ordinal.
pub(super) struct Signatures {
    files: Vec<(PathBuf, File)>,
    offsets: Vec<u64>,
    perms: usize,
}

impl Signatures {
    pub(super) fn open(work: &Path, plan: &Plan, offsets: Vec<u64>) -> Result<Signatures> {
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

    pub(super) fn get(&self, ordinal: u64) -> Result<Vec<u32>> {
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
pub(super) struct BandStats {
    pub(super) band: usize,
    pub(super) indexed: u64,
    pub(super) candidates: u64,
    pub(super) verified: u64,
}

/// Step 3, task `task`: bands `task`, `task + tasks`, …: each band's buckets merged from every
/// rank in input order, exact copies left out (one process never indexes them), members
/// verified against the bucket's representatives.
pub(super) fn buckets(work: &Path, plan: &Plan, task: usize, out: &Path) -> Result<u64> {
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
