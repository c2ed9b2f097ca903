//! Step 3, per band: candidate pairs, verified.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::exact::exact_dups;
use super::plan::{Plan, Step, rank_counts, require};
use super::records::{FAN_IN, Records, Writer, write_json};
use crate::config::Dedup;
use crate::lsh::{needed_agreement, used_bands, verify_bucket};
use crate::{Error, Result, io};

/// Signatures of every rank, read by global ordinal. At most [`FAN_IN`] files are open at
/// once: a full set is closed before another is opened.
pub(super) struct Signatures {
    paths: Vec<PathBuf>,
    open: RefCell<FxHashMap<usize, File>>,
    offsets: Vec<u64>,
    perms: usize,
}

impl Signatures {
    /// Over the `signatures` step's task folders (`require`d once by the caller).
    pub(super) fn open(dirs: &[PathBuf], offsets: Vec<u64>, perms: usize) -> Signatures {
        Signatures {
            paths: dirs.iter().map(|dir| dir.join("signatures.bin")).collect(),
            open: RefCell::default(),
            offsets,
            perms,
        }
    }

    pub(super) fn get(&self, ordinal: u64) -> Result<Vec<u32>> {
        let rank = self.offsets.partition_point(|&o| o <= ordinal) - 1;
        let local = ordinal - self.offsets[rank];
        let path = &self.paths[rank];
        let mut open = self.open.borrow_mut();
        if !open.contains_key(&rank) {
            if open.len() >= FAN_IN {
                open.clear();
            }
            open.insert(rank, File::open(path).map_err(io(path))?);
        }
        let mut bytes = vec![0u8; self.perms * 4];
        open[&rank]
            .read_exact_at(&mut bytes, local * self.perms as u64 * 4)
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
/// verified against the bucket's representatives. Memory is the exact copies' set, one
/// bucket's members and the merge's buffers; the pairs go to disk bucket by bucket.
pub(super) fn buckets(work: &Path, plan: &Plan, task: usize, out: &Path) -> Result<u64> {
    let mut stats = Vec::new();
    if plan.config.dedup == Dedup::Minhash {
        let (_, offsets) = rank_counts(work, plan)?;
        let excluded: FxHashSet<u64> = exact_dups(work, plan)?.into_iter().map(|d| d.0).collect();
        let dirs = require(work, plan, Step::Signatures)?;
        let signatures = Signatures::open(&dirs, offsets.clone(), plan.config.minhash.perms);
        let need = needed_agreement(plan.config.minhash.threshold, plan.config.minhash.perms);
        let (bands, _) = used_bands(plan.config.bands(), plan.config.minhash.perms);
        for band in (task..bands).step_by(plan.tasks(Step::Buckets)) {
            let runs = dirs
                .iter()
                .zip(&offsets)
                .map(|(d, &offset)| Run::Band {
                    path: d.join(format!("band-{band:03}.bin")),
                    offset,
                })
                .collect();
            let mut band_stats = BandStats {
                band,
                ..BandStats::default()
            };
            let mut w = Writer::create(out.join(format!("pairs-{band:03}.bin")))?;
            let mut pairs = Vec::new();
            let mut members: Vec<u64> = Vec::new();
            let mut current: Option<u64> = None;
            let mut indexed = 0;
            let mut flush = |members: &mut Vec<u64>, w: &mut Writer| {
                if members.len() > 1 {
                    let mut signed = Vec::with_capacity(members.len());
                    for ordinal in members.iter() {
                        signed.push((*ordinal, signatures.get(*ordinal)?));
                    }
                    band_stats.candidates += verify_bucket(&signed, need, &mut pairs);
                    band_stats.verified += pairs.len() as u64;
                    for (a, b) in pairs.drain(..) {
                        w.put(&[a, b])?;
                    }
                }
                members.clear();
                Ok::<(), Error>(())
            };
            merge_runs(runs, out, |bucket, ordinal| {
                if excluded.contains(&ordinal) {
                    return Ok(());
                }
                indexed += 1;
                if current != Some(bucket) {
                    flush(&mut members, &mut w)?;
                    current = Some(bucket);
                }
                members.push(ordinal);
                Ok(())
            })?;
            flush(&mut members, &mut w)?;
            band_stats.indexed = indexed;
            w.finish()?;
            stats.push(band_stats);
        }
    }
    write_json(&out.join("stats.json"), &stats)?;
    Ok(0)
}

/// A sorted run of (bucket, ordinal) records: a rank's band file of (bucket, local ordinal)
/// keys, made global with the rank's first ordinal, or a run spilled by an earlier round.
enum Run {
    Band { path: PathBuf, offset: u64 },
    Spill(PathBuf),
}

enum Reader {
    Band(Records<1>, u64),
    Spill(Records<2>),
}

impl Reader {
    fn open(run: &Run) -> Result<Reader> {
        Ok(match run {
            Run::Band { path, offset } => Reader::Band(Records::open(path.clone())?, *offset),
            Run::Spill(path) => Reader::Spill(Records::open(path.clone())?),
        })
    }

    fn next(&mut self) -> Result<Option<(u64, u64)>> {
        Ok(match self {
            Reader::Band(records, offset) => records
                .next()?
                .map(|[key]| (key >> 32, *offset + (key & u64::from(u32::MAX)))),
            Reader::Spill(records) => records.next()?.map(|[bucket, ordinal]| (bucket, ordinal)),
        })
    }
}

/// Calls `each` on every record of `runs` in (bucket, ordinal) order, which within a bucket
/// is input order. At most [`FAN_IN`] runs are read at once: past that, groups of them are
/// merged into spilled runs under `dir` first (removed once read), round after round, so
/// open files and buffers stay the same for 10 ranks or 10,000.
fn merge_runs(
    mut runs: Vec<Run>,
    dir: &Path,
    mut each: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let mut round = 0;
    while runs.len() > FAN_IN {
        let mut next = Vec::with_capacity(runs.len().div_ceil(FAN_IN));
        for (group, chunk) in runs.chunks(FAN_IN).enumerate() {
            let path = dir.join(format!("spill-{round}-{group:05}.bin"));
            let mut w = Writer::create(path.clone())?;
            merge_few(chunk, |bucket, ordinal| w.put(&[bucket, ordinal]))?;
            w.finish()?;
            next.push(Run::Spill(path));
        }
        remove_spilled(&runs)?;
        runs = next;
        round += 1;
    }
    merge_few(&runs, &mut each)?;
    remove_spilled(&runs)
}

/// The heap merge of at most [`FAN_IN`] runs.
fn merge_few(runs: &[Run], mut each: impl FnMut(u64, u64) -> Result<()>) -> Result<()> {
    let mut readers = runs.iter().map(Reader::open).collect::<Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (at, reader) in readers.iter_mut().enumerate() {
        if let Some((bucket, ordinal)) = reader.next()? {
            heap.push(Reverse((bucket, ordinal, at)));
        }
    }
    while let Some(Reverse((bucket, ordinal, at))) = heap.pop() {
        if let Some((b, o)) = readers[at].next()? {
            heap.push(Reverse((b, o, at)));
        }
        each(bucket, ordinal)?;
    }
    Ok(())
}

fn remove_spilled(runs: &[Run]) -> Result<()> {
    for run in runs {
        if let Run::Spill(path) = run {
            std::fs::remove_file(path).map_err(io(path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Past FAN_IN runs the merge spills in rounds; the order is the one sort of all.
        #[test]
        fn merged_runs_are_one_sorted_stream(
            runs in proptest::collection::vec(
                proptest::collection::vec((0u64..40, 0u64..1000), 0..12),
                0..(FAN_IN * 2 + 10),
            ),
        ) {
            let dir = std::env::temp_dir().join(format!(
                "lmforge-merge-runs-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut offset = 0;
            let mut expected = Vec::new();
            let mut specs = Vec::new();
            for (rank, records) in runs.iter().enumerate() {
                let mut keys: Vec<u64> = records.iter().map(|&(b, l)| (b << 32) | l).collect();
                keys.sort_unstable();
                keys.dedup();
                let path = dir.join(format!("band-{rank}.bin"));
                let mut w = Writer::create(path.clone()).unwrap();
                w.put(&keys).unwrap();
                w.finish().unwrap();
                expected.extend(keys.iter().map(|k| (k >> 32, offset + (k & 0xffff_ffff))));
                specs.push(Run::Band { path, offset });
                offset += 1000;
            }
            expected.sort_unstable();
            let mut got = Vec::new();
            merge_runs(specs, &dir, |b, o| {
                got.push((b, o));
                Ok(())
            })
            .unwrap();
            prop_assert_eq!(got, expected);
            let spilled = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("spill"))
                .count();
            prop_assert_eq!(spilled, 0);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
