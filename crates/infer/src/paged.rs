//! The key/value cache as a pool of fixed-size blocks (vLLM's PagedAttention layout): a
//! sequence holds a block table, not a contiguous buffer, so sequences of any length come and
//! go without moving anyone's keys, and a server sizes the cache once, in bytes.
//!
//! The bookkeeping ([`Blocks`]) is apart from where the keys and values live ([`KvStore`]:
//! host vectors for the CPU engine, device tensors for a burn engine), so every engine shares
//! it:
//!
//! - blocks are reference-counted: a forked sequence (beam search, `n` samples of a prompt)
//!   shares its parent's blocks, and a shared block that is only partly filled is copied
//!   before either writes into it (copy-on-write);
//! - full blocks of prompts can be registered in a prefix cache under a hash of their content
//!   and of everything before them (vLLM's automatic prefix caching): a later prompt with the
//!   same first tokens takes those blocks instead of computing them. A cached block nobody
//!   holds stays cached until the pool needs it; then the least recently used goes first.
//!
//! Position `p` of a sequence is row `p % block_tokens` of its block `p / block_tokens`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use lmforge_model::GptConfig;

use crate::decoder::Decoder;
use crate::{Error, Result};

/// Positions per block unless told otherwise (vLLM's default).
pub const BLOCK_TOKENS: usize = 16;

/// One sequence's block table and length. Not `Clone`: its blocks are counted, and a copy is
/// made with [`Blocks::fork`] and given back with [`Blocks::release`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeqKv {
    pub(crate) blocks: Vec<u32>,
    pub(crate) len: usize,
}

impl SeqKv {
    /// An empty sequence (no blocks).
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its block table.
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Marks the first `len` positions written: what an engine does once a step's keys and
    /// values are in the blocks [`KvPool::reserve`] gave it.
    pub fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}

/// What a prefix-cache entry was computed from: checked on every hit, so a hash collision is
/// a miss, never another prompt's keys.
#[derive(Debug, Clone)]
struct Content {
    hash: u64,
    parent: u64,
    tokens: Vec<u32>,
}

/// The block allocator: reference counts, free blocks and the prefix cache.
#[derive(Debug, Clone)]
pub struct Blocks {
    block_tokens: usize,
    refs: Vec<u32>,
    /// Blocks held by nobody and cached by nobody, lowest id on top.
    free: Vec<u32>,
    growable: bool,
    /// Prefix cache: content hash → block.
    cached: HashMap<u64, u32>,
    content: Vec<Option<Content>>,
    /// Cached blocks nobody holds, by when they were last given back (oldest first).
    idle: BTreeMap<u64, u32>,
    idle_since: Vec<u64>,
    clock: u64,
}

/// The hash a full block of `tokens` after a prefix hashed `parent` is cached under.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: the same content hashes alike in every process and run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The chain of hashes of the first `blocks` full blocks of `tokens`.
pub fn prefix_hashes(tokens: &[u32], block_tokens: usize, blocks: usize) -> Vec<u64> {
    let mut parent = 0;
    tokens
        .chunks_exact(block_tokens.max(1))
        .take(blocks)
        .map(|chunk| {
            parent = block_hash(parent, chunk);
            parent
        })
        .collect()
}

impl Blocks {
    /// `blocks` blocks of `block_tokens` positions; a growable allocator adds blocks when it
    /// runs out instead of failing (what single-caller decoding uses).
    pub fn new(block_tokens: usize, blocks: usize, growable: bool) -> Self {
        let mut b = Self {
            block_tokens: block_tokens.max(1),
            refs: Vec::new(),
            free: Vec::new(),
            growable,
            cached: HashMap::new(),
            content: Vec::new(),
            idle: BTreeMap::new(),
            idle_since: Vec::new(),
            clock: 0,
        };
        b.grow(blocks);
        b
    }

    fn grow(&mut self, more: usize) {
        let start = self.refs.len();
        let end = start + more;
        self.refs.resize(end, 0);
        self.content.resize(end, None);
        self.idle_since.resize(end, 0);
        // Below the free blocks already there, so the lowest ids still go first.
        let old = std::mem::take(&mut self.free);
        self.free.extend((start..end).rev().map(|b| b as u32));
        self.free.extend(old);
    }

    /// Positions per block.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Blocks there are.
    pub fn total(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a new sequence can have: free ones and cached ones nobody holds.
    pub fn free_blocks(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// Blocks held by at least one sequence.
    pub fn used_blocks(&self) -> usize {
        self.total() - self.free_blocks()
    }

    /// Blocks in the prefix cache (held or not).
    pub fn cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// Cached blocks nobody holds: kept for a later hit, taken (least recently used first)
    /// when no block is empty.
    pub fn idle_blocks(&self) -> usize {
        self.idle.len()
    }

    /// Blocks neither held nor cached.
    pub fn empty_blocks(&self) -> usize {
        self.free.len()
    }

    /// Checks the allocator's books: each block is exactly one of held, cached and idle, or
    /// empty; used + idle + empty = total; the prefix cache names each cached block once.
    /// What is wrong, if anything (the scheduler checks after every step in debug builds).
    pub fn audit(&self) -> std::result::Result<(), String> {
        let mut in_free = vec![false; self.total()];
        for &b in &self.free {
            let b = b as usize;
            if std::mem::replace(&mut in_free[b], true) {
                return Err(format!("block {b} is twice on the free list"));
            }
            if self.refs[b] != 0 || self.content[b].is_some() {
                return Err(format!("block {b} is free but held or cached"));
            }
        }
        for (&since, &b) in &self.idle {
            let b = b as usize;
            if self.refs[b] != 0 || self.content[b].is_none() || self.idle_since[b] != since {
                return Err(format!("block {b} is idle but held, uncached or misdated"));
            }
        }
        let held = self.refs.iter().filter(|&&r| r > 0).count();
        if held + self.idle.len() + self.free.len() != self.total() {
            return Err(format!(
                "{held} held + {} idle + {} empty != {} blocks",
                self.idle.len(),
                self.free.len(),
                self.total()
            ));
        }
        let contents = self.content.iter().filter(|c| c.is_some()).count();
        if contents != self.cached.len() {
            return Err(format!(
                "{contents} blocks have contents but {} are cached",
                self.cached.len()
            ));
        }
        for (&hash, &b) in &self.cached {
            if self.content[b as usize].as_ref().map(|c| c.hash) != Some(hash) {
                return Err(format!("block {b} is cached under another hash"));
            }
        }
        Ok(())
    }

    /// Blocks a sequence of `tokens` positions holds.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_tokens)
    }

    /// How many sequences hold `block`.
    pub fn refs(&self, block: u32) -> u32 {
        self.refs[block as usize]
    }

    /// A block for one holder: a free one, else the least recently used idle cached one
    /// (dropped from the cache). None when every block is held.
    fn take(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.idle.pop_first()?;
                if let Some(c) = self.content[b as usize].take() {
                    self.cached.remove(&c.hash);
                }
                b
            }
        };
        self.refs[block as usize] = 1;
        Some(block)
    }

    fn hold(&mut self, block: u32) {
        let b = block as usize;
        if self.refs[b] == 0 {
            self.idle.remove(&self.idle_since[b]);
        }
        self.refs[b] += 1;
    }

    fn drop_ref(&mut self, block: u32) {
        let b = block as usize;
        self.refs[b] -= 1;
        if self.refs[b] == 0 {
            if self.content[b].is_some() {
                self.clock += 1;
                self.idle_since[b] = self.clock;
                self.idle.insert(self.clock, block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// Gives `seq`'s blocks back and empties it.
    pub fn release(&mut self, seq: &mut SeqKv) {
        // Last block first: its cached tail is evicted before its head (a head without its
        // tail still serves shorter prefixes; a tail without its head serves nothing), and
        // its first block ends on top of the free stack.
        for block in seq.blocks.drain(..).rev() {
            self.drop_ref(block);
        }
        seq.len = 0;
    }

    /// A second holder of `seq`'s blocks: the copy continues from the same keys and values.
    pub fn fork(&mut self, seq: &SeqKv) -> SeqKv {
        for &block in &seq.blocks {
            self.hold(block);
        }
        SeqKv {
            blocks: seq.blocks.clone(),
            len: seq.len,
        }
    }

    /// A sequence holding the cached blocks of the longest prefix of `hashes` (from
    /// [`prefix_hashes`] of `tokens`): its length is the positions already computed (none on a
    /// miss). Give it back with [`release`](Self::release) like any other.
    pub fn lookup(&mut self, tokens: &[u32], hashes: &[u64]) -> SeqKv {
        let bt = self.block_tokens;
        let mut found = Vec::new();
        let mut parent = 0;
        for (i, &hash) in hashes.iter().enumerate() {
            let Some(&block) = self.cached.get(&hash) else {
                break;
            };
            let same = self.content[block as usize].as_ref().is_some_and(|c| {
                c.parent == parent && tokens.get(i * bt..(i + 1) * bt) == Some(&c.tokens[..])
            });
            if !same {
                break;
            }
            self.hold(block);
            found.push(block);
            parent = hash;
        }
        SeqKv {
            len: found.len() * bt,
            blocks: found,
        }
    }

    /// Puts full block `index` of `seq` (holding `tokens[index * block_tokens..]`) in the
    /// prefix cache under `hash` (its parent's hash `parent`). A content cached already in
    /// another block keeps that block.
    pub fn register(&mut self, seq: &SeqKv, index: usize, tokens: &[u32], parent: u64, hash: u64) {
        let bt = self.block_tokens;
        let (Some(&block), Some(chunk)) = (
            seq.blocks.get(index),
            tokens.get(index * bt..(index + 1) * bt),
        ) else {
            return;
        };
        if self.cached.contains_key(&hash) || self.content[block as usize].is_some() {
            return;
        }
        self.cached.insert(hash, block);
        self.content[block as usize] = Some(Content {
            hash,
            parent,
            tokens: chunk.to_vec(),
        });
    }

    /// Blocks that growing `seq` by `n` positions takes: new ones, and one more where its last
    /// block is partly filled and shared (copied before it is written).
    pub fn needed(&self, seq: &SeqKv, n: usize) -> usize {
        let fresh = self
            .blocks_for(seq.len + n)
            .saturating_sub(seq.blocks.len());
        fresh + usize::from(n > 0 && self.must_copy(seq))
    }

    fn must_copy(&self, seq: &SeqKv) -> bool {
        !seq.len.is_multiple_of(self.block_tokens)
            && seq
                .blocks
                .get(seq.len / self.block_tokens)
                .is_some_and(|&b| self.refs[b as usize] > 1)
    }
}

/// Where the keys and values of a pool's blocks live.
pub trait KvStore {
    /// Adds room for `more` blocks after those there are.
    fn grow(&mut self, more: usize);

    /// Copies every layer's keys and values of block `from` into block `to`.
    fn copy_block(&mut self, from: u32, to: u32);

    /// Bytes of one block.
    fn block_bytes(&self) -> usize;
}

/// A block pool: the allocator and the storage it indexes.
#[derive(Debug, Clone)]
pub struct KvPool<S> {
    /// Who holds which block.
    pub blocks: Blocks,
    /// The keys and values.
    pub store: S,
}

impl<S: KvStore> KvPool<S> {
    /// A pool of `blocks` blocks over `store` (which holds none yet).
    pub fn new(mut store: S, block_tokens: usize, blocks: usize, growable: bool) -> Self {
        store.grow(blocks);
        Self {
            blocks: Blocks::new(block_tokens, blocks, growable),
            store,
        }
    }

    /// The fixed pool that `bytes` of memory hold (whole blocks).
    pub fn with_bytes(store: S, block_tokens: usize, bytes: usize) -> Self {
        let blocks = bytes / store.block_bytes().max(1);
        Self::new(store, block_tokens, blocks, false)
    }

    /// Makes sure every `(sequence, new positions)` has blocks for them, all or nothing: new
    /// blocks are appended, a shared partly filled last block is replaced by a copy.
    pub fn reserve(&mut self, growth: &mut [(&mut SeqKv, usize)]) -> Result<()> {
        // A shared, partly filled last block is copied by each holder that writes it but the
        // last: once the others have their copies, that one holds it alone.
        let bt = self.blocks.block_tokens;
        let mut fresh = 0;
        let mut writers: HashMap<u32, usize> = HashMap::new();
        for (seq, n) in growth.iter().filter(|(_, n)| *n > 0) {
            fresh += self.blocks.needed(seq, *n) - usize::from(self.blocks.must_copy(seq));
            if self.blocks.must_copy(seq) {
                *writers.entry(seq.blocks[seq.len / bt]).or_default() += 1;
            }
        }
        let copies: usize = writers
            .iter()
            .map(|(&b, &k)| k.min(self.blocks.refs(b) as usize - 1))
            .sum();
        let needed = fresh + copies;
        let free = self.blocks.free_blocks();
        if needed > free {
            if !self.blocks.growable {
                return Err(Error::PoolFull {
                    free,
                    total: self.blocks.total(),
                    needed,
                });
            }
            let more = (needed - free).max(self.blocks.total() / 2);
            self.blocks.grow(more);
            self.store.grow(more);
        }
        for (seq, n) in growth.iter_mut() {
            if *n == 0 {
                continue;
            }
            if self.blocks.must_copy(seq) {
                let at = seq.len / self.blocks.block_tokens;
                let old = seq.blocks[at];
                let copy = self.blocks.take().expect("counted above");
                self.store.copy_block(old, copy);
                self.blocks.drop_ref(old);
                seq.blocks[at] = copy;
            }
            while seq.blocks.len() < self.blocks.blocks_for(seq.len + *n) {
                let block = self.blocks.take().expect("counted above");
                seq.blocks.push(block);
            }
        }
        Ok(())
    }
}

/// One sequence's share of a [`Batched::forward`] step: positions appended to it.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// The sequence (its block table grows as needed).
    pub seq: &'a mut SeqKv,
    /// Its next tokens: a prompt or part of one, or the last token chosen.
    pub tokens: &'a [u32],
    /// Logits after every one of `tokens` (prompt log-probabilities), not just the last.
    pub every_logit: bool,
}

/// An engine that runs one step over many sequences of a paged pool: what the scheduler
/// drives, and (through [`PagedCache`]) a [`Decoder`].
pub trait Batched {
    /// Where its keys and values live.
    type Store: KvStore;

    /// The model's shape.
    fn config(&self) -> &GptConfig;

    /// Storage for a pool of this model, with no blocks yet.
    fn store(&self, block_tokens: usize) -> Self::Store;

    /// Appends each chunk's tokens to its sequence and returns, per chunk, the logits after
    /// its last token (`vocab` values) or, with `every_logit`, after each of its tokens
    /// (`tokens × vocab`). A sequence's logits do not depend on what else is in the step. On
    /// an error (a bad token, a sequence past the context, a full pool) no sequence has
    /// changed.
    fn forward(
        &self,
        pool: &mut KvPool<Self::Store>,
        chunks: &mut [Chunk<'_>],
    ) -> Result<Vec<Vec<f32>>>;
}

/// The sequences a [`Batched`] engine decodes through [`Decoder`]: a growable pool and one
/// block table per sequence.
#[derive(Debug)]
pub struct PagedCache<S> {
    /// The pool.
    pub pool: KvPool<S>,
    /// One per row of the batch.
    pub sequences: Vec<SeqKv>,
}

impl<S: KvStore> PagedCache<S> {
    /// Rows held.
    pub fn batch(&self) -> usize {
        self.sequences.len()
    }

    /// Positions of row `i`.
    pub fn seq_len(&self, i: usize) -> usize {
        self.sequences[i].len
    }

    /// Bytes of the blocks the rows hold (a shared block once).
    pub fn bytes(&self) -> usize {
        self.pool.blocks.used_blocks() * self.pool.store.block_bytes()
    }
}

/// Runs `work[i].1` through row `work[i].0` of `cache`, every row named at most once.
pub fn step<M: Batched>(
    model: &M,
    cache: &mut PagedCache<M::Store>,
    work: &[(usize, &[u32])],
) -> Result<Vec<Vec<f32>>> {
    let mut seen = vec![false; cache.sequences.len()];
    for &(s, _) in work {
        match seen.get_mut(s) {
            None => return Err(Error::request(format!("no sequence {s} in the cache"))),
            Some(true) => return Err(Error::request(format!("sequence {s} twice in one step"))),
            Some(flag) => *flag = true,
        }
    }
    let mut slots: Vec<Option<&mut SeqKv>> = cache.sequences.iter_mut().map(Some).collect();
    let mut chunks: Vec<Chunk<'_>> = work
        .iter()
        .map(|&(s, tokens)| Chunk {
            seq: slots[s].take().expect("distinct, checked above"),
            tokens,
            every_logit: false,
        })
        .collect();
    model.forward(&mut cache.pool, &mut chunks)
}

impl<M: Batched> Decoder for M {
    type Cache = PagedCache<M::Store>;

    fn max_seq_len(&self) -> usize {
        self.config().max_seq_len
    }

    fn prefill(&self, prompts: &[Vec<u32>]) -> Result<(Self::Cache, Vec<Vec<f32>>)> {
        if prompts.is_empty() {
            return Err(Error::request("no prompts"));
        }
        if let Some(empty) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::request(format!("prompt {empty} has no tokens")));
        }
        let mut cache = PagedCache {
            pool: KvPool::new(self.store(BLOCK_TOKENS), BLOCK_TOKENS, 0, true),
            sequences: prompts.iter().map(|_| SeqKv::new()).collect(),
        };
        let work: Vec<(usize, &[u32])> = prompts.iter().map(Vec::as_slice).enumerate().collect();
        let logits = step(self, &mut cache, &work)?;
        Ok((cache, logits))
    }

    fn decode(&self, cache: &mut Self::Cache, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        if tokens.len() != cache.batch() {
            return Err(Error::request(format!(
                "{} tokens for a cache of {} sequences",
                tokens.len(),
                cache.batch()
            )));
        }
        let work: Vec<(usize, &[u32])> = tokens
            .iter()
            .map(std::slice::from_ref)
            .enumerate()
            .collect();
        step(self, cache, &work)
    }

    fn select(&self, mut cache: Self::Cache, rows: &[usize]) -> Result<Self::Cache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= cache.batch()) {
            return Err(Error::request(format!(
                "row {bad} of a cache of {} sequences",
                cache.batch()
            )));
        }
        let mut slots: Vec<Option<SeqKv>> = cache.sequences.drain(..).map(Some).collect();
        let mut sequences = Vec::with_capacity(rows.len());
        for (i, &r) in rows.iter().enumerate() {
            // The last time a row is named it moves; before that it is forked.
            let again = rows[i + 1..].contains(&r);
            let seq = match &slots[r] {
                Some(seq) if again => cache.pool.blocks.fork(seq),
                Some(_) => slots[r].take().expect("matched Some"),
                None => unreachable!("a row moves only the last time it is named"),
            };
            sequences.push(seq);
        }
        for mut dropped in slots.into_iter().flatten() {
            cache.pool.blocks.release(&mut dropped);
        }
        cache.sequences = sequences;
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage that records copies, to check the allocator without a model.
    #[derive(Debug, Default)]
    struct Counting {
        blocks: usize,
        copies: Vec<(u32, u32)>,
    }

    impl KvStore for Counting {
        fn grow(&mut self, more: usize) {
            self.blocks += more;
        }
        fn copy_block(&mut self, from: u32, to: u32) {
            self.copies.push((from, to));
        }
        fn block_bytes(&self) -> usize {
            100
        }
    }

    fn pool(blocks: usize) -> KvPool<Counting> {
        KvPool::new(Counting::default(), 4, blocks, false)
    }

    #[test]
    fn blocks_are_reserved_all_or_nothing_and_come_back() {
        let mut pool = pool(3);
        assert_eq!(
            KvPool::with_bytes(Counting::default(), 4, 250)
                .blocks
                .total(),
            2
        );
        let (mut a, mut b) = (SeqKv::new(), SeqKv::new());
        pool.reserve(&mut [(&mut a, 5)]).unwrap();
        assert_eq!((a.blocks(), pool.blocks.used_blocks()), (&[0, 1][..], 2));
        a.len = 5;
        // 9 positions for b need 3 blocks; 1 is free: nothing is taken.
        let err = pool.reserve(&mut [(&mut b, 9)]).unwrap_err().to_string();
        assert!(err.contains("1 free blocks of 3"), "{err}");
        assert!(b.blocks().is_empty());
        pool.blocks.release(&mut a);
        assert_eq!(
            (pool.blocks.free_blocks(), a.len(), a.blocks().len()),
            (3, 0, 0)
        );
        pool.reserve(&mut [(&mut b, 9)]).unwrap();
        assert_eq!(b.blocks(), [0, 1, 2]);
    }

    #[test]
    fn a_growable_pool_grows_its_store_too() {
        let mut pool = KvPool::new(Counting::default(), 4, 0, true);
        let mut a = SeqKv::new();
        pool.reserve(&mut [(&mut a, 9)]).unwrap();
        assert_eq!(a.blocks(), [0, 1, 2]);
        assert_eq!(pool.store.blocks, pool.blocks.total());
    }

    #[test]
    fn a_fork_shares_full_blocks_and_copies_a_partial_one_before_writing() {
        let mut pool = pool(6);
        let mut a = SeqKv::new();
        pool.reserve(&mut [(&mut a, 6)]).unwrap();
        a.len = 6;
        let mut b = pool.blocks.fork(&a);
        assert_eq!((pool.blocks.refs(0), pool.blocks.refs(1)), (2, 2));
        assert_eq!(pool.blocks.needed(&b, 1), 1);
        pool.reserve(&mut [(&mut b, 1)]).unwrap();
        assert_eq!(b.blocks(), [0, 2]);
        assert_eq!(pool.store.copies, [(1, 2)]);
        // a's partial block is its own again: no copy for it.
        assert_eq!((pool.blocks.refs(1), pool.blocks.needed(&a, 1)), (1, 0));
        // A fork at a block boundary copies nothing.
        a.len = 8;
        let mut c = pool.blocks.fork(&a);
        pool.reserve(&mut [(&mut c, 1)]).unwrap();
        assert_eq!(pool.store.copies.len(), 1);
        assert_eq!(c.blocks(), [0, 1, 3]);
        for s in [&mut a, &mut b, &mut c] {
            pool.blocks.release(s);
        }
        assert_eq!(pool.blocks.free_blocks(), 6);
    }

    #[test]
    fn holders_of_a_partial_block_writing_together_copy_it_all_but_once() {
        // One partly filled block, three holders, two free blocks: the first two writers copy
        // it, the third then holds it alone and writes in place.
        let mut pool = pool(3);
        let mut a = SeqKv::new();
        pool.reserve(&mut [(&mut a, 2)]).unwrap();
        a.set_len(2);
        let (mut b, mut c) = (pool.blocks.fork(&a), pool.blocks.fork(&a));
        pool.reserve(&mut [(&mut a, 1), (&mut b, 1), (&mut c, 1)])
            .unwrap();
        assert_eq!(pool.store.copies.len(), 2);
        assert_eq!(pool.blocks.free_blocks(), 0);
        let mut held: Vec<u32> = [&a, &b, &c].iter().map(|s| s.blocks()[0]).collect();
        held.sort_unstable();
        assert_eq!(held, [0, 1, 2]);
        assert_eq!(pool.blocks.audit(), Ok(()));
    }

    #[test]
    fn the_prefix_cache_hands_back_verified_blocks_and_evicts_the_oldest_tail_first() {
        let mut pool = pool(3);
        let prompt: Vec<u32> = (0..10).collect();
        let hashes = prefix_hashes(&prompt, 4, 2);
        assert_eq!(hashes.len(), 2);
        let mut a = SeqKv::new();
        pool.reserve(&mut [(&mut a, 10)]).unwrap();
        a.len = 10;
        pool.blocks.register(&a, 0, &prompt, 0, hashes[0]);
        pool.blocks.register(&a, 1, &prompt, hashes[0], hashes[1]);
        assert_eq!(pool.blocks.cached_blocks(), 2);
        // While a holds them, a second prompt shares them.
        let mut b = pool.blocks.lookup(&prompt, &hashes);
        assert_eq!(
            (b.blocks(), b.len(), pool.blocks.refs(0)),
            (&[0, 1][..], 8, 2)
        );
        pool.blocks.release(&mut b);
        pool.blocks.release(&mut a);
        // Cached blocks nobody holds count as free.
        assert_eq!(
            (pool.blocks.free_blocks(), pool.blocks.used_blocks()),
            (3, 0)
        );
        // A prompt with the same first block and a different second shares only the first.
        let other: Vec<u32> = (0..4).chain(100..106).collect();
        let mut c = pool.blocks.lookup(&other, &prefix_hashes(&other, 4, 2));
        assert_eq!((c.blocks(), c.len()), (&[0][..], 4));
        pool.blocks.release(&mut c);
        // Two blocks wanted: the free one, then the least recently given back idle one, the
        // tail (block 1); the head stays cached.
        let mut d = SeqKv::new();
        pool.reserve(&mut [(&mut d, 8)]).unwrap();
        assert_eq!(d.blocks(), [2, 1]);
        assert_eq!(pool.blocks.cached_blocks(), 1);
        assert_eq!(pool.blocks.lookup(&prompt, &hashes).blocks(), [0]);
    }

    #[test]
    fn a_hash_collision_is_a_miss() {
        let mut pool = pool(2);
        let prompt = [1, 2, 3, 4, 5];
        let mut a = SeqKv::new();
        pool.reserve(&mut [(&mut a, 5)]).unwrap();
        a.len = 5;
        // Registered under the hash another content will claim.
        pool.blocks.register(&a, 0, &prompt, 0, 42);
        assert!(pool.blocks.lookup(&[9, 9, 9, 9, 9], &[42]).is_empty());
        assert_eq!(pool.blocks.lookup(&prompt, &[42]).blocks(), [0]);
    }
}
