//! Step 4, one task: the union-find over every verified pair.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::buckets::{BandStats, Signatures};
use super::exact::exact_dups;
use super::plan::{Ordinals, Plan, Step, require};
use super::records::{Records, Writer, index_range, read_json, write_index, write_json};
use crate::config::Dedup;
use crate::run::Dup;
use crate::{Error, Result, io};

/// What the `cluster` step found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct ClusterStats {
    pub(super) indexed: u64,
    pub(super) candidates: u64,
    pub(super) verified: u64,
    pub(super) clusters: u64,
    pub(super) near_duplicates: u64,
    pub(super) seconds: f64,
}

/// Step 4: connected components of every verified pair, the smallest ordinal as root (the
/// nodes are only the documents in a pair, so that memory follows the pairs, not the
/// corpus); then every duplicate, exact and near, in two lists that each filter rank reads
/// only its own range of: `dups.bin` by ordinal and `roots.bin` (the survivors that others
/// duplicate) by ordinal, indexed per rank by `dups.idx` and `roots.idx`. Memory: 12 bytes
/// per node in a pair, then 24 bytes per duplicate and 8 per root.
pub(super) fn cluster(work: &Path, plan: &Plan, out: &Path) -> Result<u64> {
    let started = Instant::now();
    let mut stats = ClusterStats::default();
    let mut memory = 0;
    let mut near = Vec::new();
    let ordinals = Ordinals::of(work, plan)?;
    write_json(&out.join("ordinals.json"), &ordinals)?;
    let offsets = ordinals.offsets;
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
        let dirs = require(work, plan, Step::Signatures)?;
        let signatures = Signatures::open(&dirs, offsets.clone(), plan.config.minhash.perms);
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
            near.push((
                nodes[at as usize],
                Dup {
                    of: nodes[root as usize],
                    near: true,
                    similarity,
                },
            ));
            stats.near_duplicates += 1;
        }
    }
    let dups = if plan.config.dedup == Dedup::None {
        Vec::new()
    } else {
        all_dups(work, plan, near)?
    };
    let mut roots: Vec<u64> = dups.iter().map(|(_, d)| d.of).collect();
    roots.sort_unstable();
    roots.dedup();
    memory = memory.max((dups.capacity() * 24 + roots.capacity() * 8) as u64);
    write_by_rank(
        out,
        "dups",
        &offsets,
        &dups,
        |(o, _)| *o,
        |w, (o, d)| {
            let flags = (u64::from(d.near) << 32) | u64::from(d.similarity.to_bits());
            w.put(&[*o, d.of, flags])
        },
    )?;
    write_by_rank(out, "roots", &offsets, &roots, |o| *o, |w, o| w.put(&[*o]))?;
    stats.seconds = started.elapsed().as_secs_f64();
    write_json(&out.join("stats.json"), &stats)?;
    Ok(memory)
}

/// Every duplicate, exact and near, by ordinal.
fn all_dups(work: &Path, plan: &Plan, near: Vec<(u64, Dup)>) -> Result<Vec<(u64, Dup)>> {
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
    dups.extend(near);
    dups.sort_unstable_by_key(|d| d.0);
    Ok(dups)
}

/// Writes `items` (sorted by `ordinal`) to `NAME.bin` and, in `NAME.idx`, where each rank's
/// ordinals (`offsets[r]..offsets[r + 1]`) begin.
fn write_by_rank<T>(
    out: &Path,
    name: &str,
    offsets: &[u64],
    items: &[T],
    ordinal: impl Fn(&T) -> u64,
    mut put: impl FnMut(&mut Writer, &T) -> Result<()>,
) -> Result<()> {
    let mut w = Writer::create(out.join(format!("{name}.bin")))?;
    for item in items {
        put(&mut w, item)?;
    }
    w.finish()?;
    let index: Vec<u64> = offsets
        .iter()
        .map(|&first| items.partition_point(|i| ordinal(i) < first) as u64)
        .collect();
    write_index(out.join(format!("{name}.idx")), &index)
}

/// Rank `rank`'s duplicates (by ordinal) and the survivors that it holds and others
/// duplicate, from the cluster step's lists.
pub(super) fn rank_dups(
    work: &Path,
    plan: &Plan,
    rank: usize,
) -> Result<(FxHashMap<u64, Dup>, FxHashSet<u64>)> {
    let dir = &require(work, plan, Step::Cluster)?[0];
    let mut dups = FxHashMap::default();
    let range = index_range(&dir.join("dups.idx"), rank)?;
    let mut records = Records::<3>::slice(dir.join("dups.bin"), range)?;
    while let Some([o, of, flags]) = records.next()? {
        let dup = Dup {
            of,
            near: flags >> 32 != 0,
            similarity: f32::from_bits(flags as u32),
        };
        dups.insert(o, dup);
    }
    let mut roots = FxHashSet::default();
    let range = index_range(&dir.join("roots.idx"), rank)?;
    let mut records = Records::<1>::slice(dir.join("roots.bin"), range)?;
    while let Some([o]) = records.next()? {
        roots.insert(o);
    }
    Ok((dups, roots))
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
pub(super) struct Lookup {
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
