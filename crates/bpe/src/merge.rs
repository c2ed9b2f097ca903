//! The merge loop that turns one pre-token's bytes into ids.
//!
//! Both functions apply the same rule as tiktoken and Hugging Face: repeatedly merge the
//! adjacent pair of lowest rank, the leftmost on ties. Short pieces (almost all of them) use a
//! plain scan, which is quadratic but fastest below a few dozen bytes; long pieces use a heap
//! over a linked list, O(n log n), so 1 MB of one repeated character stays near-linear.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Above this many bytes a piece is merged with the heap.
pub(crate) const SCAN_LIMIT: usize = 48;

/// What merging a pair gives: its priority and the merged token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Merge {
    pub rank: u32,
    pub id: u32,
}

pub(crate) type PairMap = FxHashMap<u64, Merge>;

pub(crate) use lmforge_tokenizer::merges::pair_key;

#[inline]
fn lookup(pairs: &PairMap, left: u32, right: u32) -> Option<Merge> {
    pairs.get(&pair_key(left, right)).copied()
}

/// Merges `ids` (the piece's byte tokens) in place, appending the result to `out`.
pub(crate) fn merge(pairs: &PairMap, ids: Vec<u32>, out: &mut Vec<u32>) {
    if ids.len() <= SCAN_LIMIT {
        merge_scan(pairs, ids, out);
    } else {
        merge_heap(pairs, ids, out);
    }
}

const NONE: Merge = Merge {
    rank: u32::MAX,
    id: u32::MAX,
};

pub(crate) fn merge_scan(pairs: &PairMap, mut ids: Vec<u32>, out: &mut Vec<u32>) {
    if ids.len() < 2 {
        out.extend_from_slice(&ids);
        return;
    }
    // ranks[i]: the merge of ids[i] and ids[i + 1].
    let mut ranks: Vec<Merge> = ids
        .windows(2)
        .map(|w| lookup(pairs, w[0], w[1]).unwrap_or(NONE))
        .collect();
    loop {
        crate::ops::add(ranks.len());
        let mut best = NONE;
        let mut at = 0;
        for (i, m) in ranks.iter().enumerate() {
            if m.rank < best.rank {
                best = *m;
                at = i;
            }
        }
        if best.rank == u32::MAX {
            break;
        }
        ids[at] = best.id;
        ids.remove(at + 1);
        ranks.remove(at);
        if at > 0 {
            ranks[at - 1] = lookup(pairs, ids[at - 1], ids[at]).unwrap_or(NONE);
        }
        if at < ranks.len() {
            ranks[at] = lookup(pairs, ids[at], ids[at + 1]).unwrap_or(NONE);
        }
    }
    out.extend_from_slice(&ids);
}

/// (rank, position of the left symbol, left id, right id, merged id): position breaks ties
/// leftmost-first, the ids tell a stale entry from a live one.
type Candidate = (u32, u32, u32, u32, u32);

pub(crate) fn merge_heap(pairs: &PairMap, mut ids: Vec<u32>, out: &mut Vec<u32>) {
    let n = ids.len();
    const END: u32 = u32::MAX;
    // Symbols are a linked list over the original positions; a merged-away symbol is dead.
    let mut next: Vec<u32> = (1..=n as u32).collect();
    next[n - 1] = END;
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
    prev[0] = END;
    let mut alive = vec![true; n];
    let mut heap: BinaryHeap<Reverse<Candidate>> = BinaryHeap::with_capacity(n);
    for i in 0..n - 1 {
        if let Some(m) = lookup(pairs, ids[i], ids[i + 1]) {
            heap.push(Reverse((m.rank, i as u32, ids[i], ids[i + 1], m.id)));
        }
    }
    crate::ops::add(n);
    while let Some(Reverse((_, i, left, right, merged))) = heap.pop() {
        crate::ops::add(1);
        let i = i as usize;
        if !alive[i] || ids[i] != left {
            continue;
        }
        let j = next[i];
        if j == END || ids[j as usize] != right {
            continue;
        }
        let j = j as usize;
        ids[i] = merged;
        alive[j] = false;
        next[i] = next[j];
        if next[j] != END {
            prev[next[j] as usize] = i as u32;
        }
        if prev[i] != END {
            let p = prev[i] as usize;
            if let Some(m) = lookup(pairs, ids[p], merged) {
                heap.push(Reverse((m.rank, p as u32, ids[p], merged, m.id)));
            }
        }
        if next[i] != END {
            let q = next[i] as usize;
            if let Some(m) = lookup(pairs, merged, ids[q]) {
                heap.push(Reverse((m.rank, i as u32, merged, ids[q], m.id)));
            }
        }
    }
    let mut i = 0u32;
    while i != END {
        out.push(ids[i as usize]);
        i = next[i as usize];
    }
}
