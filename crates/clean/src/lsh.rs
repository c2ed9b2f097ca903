//! The near-dedup index: signatures kept compactly, LSH bands as sorted keys, candidates
//! verified by signature agreement, clusters by union-find.
//!
//! Banding is done after every signature is in, band by band: each band's keys are one sorted
//! `u64` array (32 bits of the band's hash, 32 bits of position), so a band costs 8 bytes per
//! document while it is processed and nothing after, and bands run in parallel. It is also the
//! shape a distributed run takes: band keys are what it shuffles on (docs/clean.md).

use crate::minhash::{Bands, agreement};
use rayon::prelude::*;

/// Signatures per storage block: blocks of fixed size grow the store without the doubling
/// (and copying) of one large vector.
const BLOCK: usize = 4096;

/// In a bucket, a document is compared with at most this many earlier ones that matched no
/// one before them, so a bucket of thousands of unrelated documents (a shared boilerplate
/// band) costs linear, not quadratic, time.
const MAX_REPRESENTATIVES: usize = 8;

/// Signatures of the documents that take part in near dedup, in input order.
pub struct Index {
    perms: usize,
    blocks: Vec<Box<[u32]>>,
    ordinals: Vec<u32>,
}

/// A document found to be a near duplicate of an earlier one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NearDuplicate {
    /// Its ordinal (0-based position among the documents read).
    pub ordinal: u32,
    /// Ordinal of its cluster's survivor, the cluster's first document.
    pub of: u32,
    /// Estimated Jaccard similarity with the survivor (a cluster is transitive, so this can be
    /// below the threshold).
    pub similarity: f32,
}

/// What clustering found.
#[derive(Clone, Debug, Default)]
pub struct Clusters {
    /// Every document that is not its cluster's survivor, by ordinal.
    pub duplicates: Vec<NearDuplicate>,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Candidate pairs compared.
    pub candidates: u64,
    /// Candidate pairs whose signatures agreed at or above the threshold.
    pub verified: u64,
}

impl Index {
    /// An empty index for signatures of `perms` values.
    pub fn new(perms: usize) -> Index {
        Index {
            perms,
            blocks: Vec::new(),
            ordinals: Vec::new(),
        }
    }

    /// Adds the document with this ordinal (ordinals must increase).
    pub fn push(&mut self, ordinal: u32, signature: &[u32]) {
        debug_assert_eq!(signature.len(), self.perms);
        debug_assert!(self.ordinals.last().is_none_or(|&last| last < ordinal));
        let at = self.ordinals.len() % BLOCK;
        if at == 0 {
            self.blocks
                .push(vec![0u32; BLOCK * self.perms].into_boxed_slice());
        }
        if let Some(block) = self.blocks.last_mut() {
            block[at * self.perms..(at + 1) * self.perms].copy_from_slice(signature);
        }
        self.ordinals.push(ordinal);
    }

    /// Documents in the index.
    pub fn len(&self) -> usize {
        self.ordinals.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.ordinals.is_empty()
    }

    /// Heap bytes held (signature blocks and the ordinal table, at capacity).
    pub fn heap_bytes(&self) -> usize {
        self.blocks.len() * BLOCK * self.perms * 4 + self.ordinals.capacity() * 4
    }

    fn signature(&self, position: usize) -> &[u32] {
        let block = &self.blocks[position / BLOCK];
        let at = position % BLOCK;
        &block[at * self.perms..(at + 1) * self.perms]
    }

    /// Clusters of near duplicates: pairs that share a band and whose signatures agree on at
    /// least `threshold` of their values, joined transitively; each cluster's survivor is its
    /// first document. Deterministic: the result does not depend on thread count.
    pub fn clusters(&self, bands: Bands, threshold: f64) -> Clusters {
        let n = self.len();
        let (used, rows) = used_bands(bands, self.perms);
        let need = needed_agreement(threshold, self.perms);
        let per_band: Vec<(Vec<(u32, u32)>, u64)> = (0..used)
            .into_par_iter()
            .map(|band| self.band_pairs(band * rows..(band + 1) * rows, band as u64, need))
            .collect();

        let mut parent: Vec<u32> = (0..n as u32).collect();
        let mut out = Clusters::default();
        for (pairs, candidates) in per_band {
            out.candidates += candidates;
            out.verified += pairs.len() as u64;
            for (a, b) in pairs {
                union(&mut parent, a, b);
            }
        }
        let mut is_root_of_cluster = vec![false; n];
        for position in 0..n {
            let root = find(&mut parent, position as u32) as usize;
            if root != position {
                is_root_of_cluster[root] = true;
                out.duplicates.push(NearDuplicate {
                    ordinal: self.ordinals[position],
                    of: self.ordinals[root],
                    similarity: crate::minhash::similarity(
                        self.signature(position),
                        self.signature(root),
                    ) as f32,
                });
            }
        }
        out.clusters = is_root_of_cluster.iter().filter(|&&r| r).count() as u64;
        out
    }

    /// One band: the verified pairs (earlier, later) by position, and how many were compared.
    fn band_pairs(
        &self,
        rows: std::ops::Range<usize>,
        band: u64,
        need: usize,
    ) -> (Vec<(u32, u32)>, u64) {
        let mut keys: Vec<u64> = (0..self.len())
            .map(|position| {
                let key = band_key(&self.signature(position)[rows.clone()], band);
                (key & 0xffff_ffff_0000_0000) | position as u64
            })
            .collect();
        keys.sort_unstable();

        let mut pairs = Vec::new();
        let mut compared = 0u64;
        let mut members: Vec<(u64, &[u32])> = Vec::new();
        let mut start = 0;
        while start < keys.len() {
            let bucket = keys[start] >> 32;
            let mut end = start + 1;
            while end < keys.len() && keys[end] >> 32 == bucket {
                end += 1;
            }
            if end - start > 1 {
                members.clear();
                members.extend(keys[start..end].iter().map(|&key| {
                    let position = key as u32;
                    (u64::from(position), self.signature(position as usize))
                }));
                compared += verify_bucket(&members, need, &mut pairs);
            }
            start = end;
        }
        let pairs = pairs
            .into_iter()
            .map(|(a, b)| (a as u32, b as u32))
            .collect();
        (pairs, compared)
    }
}

/// One bucket's members, in input order, each with its signature: every member is compared
/// with up to [`MAX_REPRESENTATIVES`] earlier ones that matched no one before them, and the
/// first that agrees on `need` values makes a pair (earlier, later). Returns the comparisons.
pub(crate) fn verify_bucket<S: AsRef<[u32]>>(
    members: &[(u64, S)],
    need: usize,
    pairs: &mut Vec<(u64, u64)>,
) -> u64 {
    let mut compared = 0;
    let mut representatives: Vec<usize> = Vec::with_capacity(MAX_REPRESENTATIVES);
    for (at, (ordinal, signature)) in members.iter().enumerate() {
        let mut matched = false;
        for &earlier in &representatives {
            compared += 1;
            let (other, other_signature) = &members[earlier];
            if agreement(signature.as_ref(), other_signature.as_ref()) >= need {
                pairs.push((*other, *ordinal));
                matched = true;
                break;
            }
        }
        if !matched && representatives.len() < MAX_REPRESENTATIVES {
            representatives.push(at);
        }
    }
    compared
}

/// Values of a signature two documents must share to be duplicates at `threshold`.
pub(crate) fn needed_agreement(threshold: f64, perms: usize) -> usize {
    ((threshold * perms as f64) - 1e-9).ceil().max(0.0) as usize
}

/// The bands used (each `rows` values; those that do not fit the signature are dropped).
pub(crate) fn used_bands(bands: Bands, perms: usize) -> (usize, usize) {
    let rows = bands.rows.max(1);
    ((bands.bands * rows).min(perms) / rows, rows)
}

/// The bucket a signature falls in for `band`: the top 32 bits of its band key, which is what
/// [`Index::clusters`] sorts on.
pub(crate) fn bucket(signature: &[u32], band: usize, rows: usize) -> u32 {
    (band_key(&signature[band * rows..(band + 1) * rows], band as u64) >> 32) as u32
}

/// The band's values folded into 64 bits (equal bands, equal keys; the band number seeds it).
fn band_key(values: &[u32], band: u64) -> u64 {
    let mut h = band.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ values.len() as u64;
    for &v in values {
        h = (h ^ u64::from(v))
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

pub(crate) fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grand = parent[parent[x as usize] as usize];
        parent[x as usize] = grand;
        x = grand;
    }
    x
}

/// The smaller root wins, so a cluster's root is its first document whatever the union order.
pub(crate) fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra < rb {
        parent[rb as usize] = ra;
    } else if rb < ra {
        parent[ra as usize] = rb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minhash::MinHasher;

    #[test]
    fn union_find_roots_are_minimal() {
        let mut parent: Vec<u32> = (0..6).collect();
        union(&mut parent, 4, 5);
        union(&mut parent, 5, 2);
        union(&mut parent, 3, 1);
        assert_eq!(find(&mut parent, 4), 2);
        assert_eq!(find(&mut parent, 3), 1);
        union(&mut parent, 4, 1);
        for x in 1..6 {
            assert_eq!(find(&mut parent, x), 1);
        }
        assert_eq!(find(&mut parent, 0), 0);
    }

    #[test]
    fn clusters_keep_the_first_and_span_blocks() {
        let hasher = MinHasher::new(64, 3, 5);
        let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
        let base = words.join(" ");
        let mut near = words.clone();
        near[30] = "changed".into();
        let near = near.join(" ");
        let other: String = (0..60).map(|i| format!("x{i} ")).collect();
        let mut index = Index::new(64);
        // Filler documents push the interesting ones across a storage block boundary.
        let mut ordinal = 0u32;
        for i in 0..BLOCK - 1 {
            index.push(
                ordinal,
                &hasher.signature(&format!("filler {i} unique {i}")).unwrap(),
            );
            ordinal += 1;
        }
        let first = ordinal;
        for text in [&base, &other, &near, &base] {
            index.push(ordinal, &hasher.signature(text).unwrap());
            ordinal += 10;
        }
        let clusters = index.clusters(Bands::optimal(0.8, 64), 0.8);
        assert_eq!(clusters.clusters, 1);
        let dups: Vec<(u32, u32)> = clusters
            .duplicates
            .iter()
            .map(|d| (d.ordinal, d.of))
            .collect();
        assert_eq!(dups, [(first + 20, first), (first + 30, first)]);
        assert_eq!(clusters.duplicates[1].similarity, 1.0);
        assert!(index.heap_bytes() >= 2 * BLOCK * 64 * 4);
    }
}
