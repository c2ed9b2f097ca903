//! The block allocator under arbitrary sequences of operations: reference counts match the
//! holders, no block is lost or held twice by one sequence, the pool never hands out more
//! than it has, and prefix-cache hits are always blocks of the same tokens.

use std::collections::HashMap;

use lmforge_infer::paged::{KvPool, KvStore, SeqKv, prefix_hashes};
use proptest::prelude::*;

/// Storage of one token id per position: what a block holds can be checked.
#[derive(Debug, Default)]
struct Tokens {
    bt: usize,
    data: Vec<Option<u32>>,
}

impl KvStore for Tokens {
    fn grow(&mut self, more: usize) {
        self.data.resize(self.data.len() + more * self.bt, None);
    }
    fn copy_block(&mut self, from: u32, to: u32) {
        let (f, t) = (from as usize * self.bt, to as usize * self.bt);
        for i in 0..self.bt {
            self.data[t + i] = self.data[f + i];
        }
    }
    fn block_bytes(&self) -> usize {
        self.bt * 4
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A new sequence with this prompt (from a small alphabet, so prefixes repeat).
    Start(Vec<u32>),
    /// Sequence `i` (mod live) appends these tokens.
    Append(usize, Vec<u32>),
    /// Sequence `i` is forked.
    Fork(usize),
    /// Sequence `i` ends.
    End(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let tokens = || prop::collection::vec(0u32..3, 1..12);
    prop_oneof![
        tokens().prop_map(Op::Start),
        (any::<usize>(), tokens()).prop_map(|(i, t)| Op::Append(i, t)),
        any::<usize>().prop_map(Op::Fork),
        any::<usize>().prop_map(Op::End),
    ]
}

/// Writes `tokens` after `seq`'s positions, as an engine would.
fn write(pool: &mut KvPool<Tokens>, seq: &SeqKv, from: usize, tokens: &[u32]) {
    let bt = pool.blocks.block_tokens();
    for (j, &t) in tokens.iter().enumerate() {
        let p = from + j;
        let block = seq.blocks()[p / bt] as usize;
        pool.store.data[block * bt + p % bt] = Some(t);
    }
}

fn read(pool: &KvPool<Tokens>, seq: &SeqKv) -> Vec<u32> {
    let bt = pool.blocks.block_tokens();
    (0..seq.len())
        .map(|p| pool.store.data[seq.blocks()[p / bt] as usize * bt + p % bt].expect("written"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn blocks_stay_counted_and_cached_blocks_hold_their_tokens(
        ops in prop::collection::vec(op(), 1..60),
        total in 2usize..24,
    ) {
        let bt = 4;
        let mut pool = KvPool::new(Tokens { bt, data: Vec::new() }, bt, total, false);
        // Each live sequence with the tokens it should read back.
        let mut live: Vec<(SeqKv, Vec<u32>)> = Vec::new();
        let grow = |pool: &mut KvPool<Tokens>, seq: &mut SeqKv, text: &mut Vec<u32>, tokens: &[u32]| {
            if pool.reserve(&mut [(&mut *seq, tokens.len())]).is_ok() {
                let from = seq.len();
                write(pool, seq, from, tokens);
                // The engine sets the length after writing (`SeqKv` is its to grow).
                seq.set_len(from + tokens.len());
                text.extend_from_slice(tokens);
                true
            } else {
                false
            }
        };
        for op in ops {
            match op {
                Op::Start(prompt) => {
                    let hashes = prefix_hashes(&prompt, bt, (prompt.len() - 1) / bt);
                    let mut seq = pool.blocks.lookup(&prompt, &hashes);
                    let hit = seq.len();
                    prop_assert_eq!(hit, seq.blocks().len() * bt);
                    prop_assert_eq!(read(&pool, &seq), &prompt[..hit], "a hit is the same tokens");
                    let mut text = prompt[..hit].to_vec();
                    if grow(&mut pool, &mut seq, &mut text, &prompt[hit..]) {
                        let all = prefix_hashes(&prompt, bt, prompt.len() / bt);
                        for (b, &h) in all.iter().enumerate() {
                            let parent = if b == 0 { 0 } else { all[b - 1] };
                            pool.blocks.register(&seq, b, &prompt, parent, h);
                        }
                        live.push((seq, text));
                    } else {
                        pool.blocks.release(&mut seq);
                    }
                }
                Op::Append(i, tokens) if !live.is_empty() => {
                    let i = i % live.len();
                    let (seq, text) = &mut live[i];
                    grow(&mut pool, seq, text, &tokens);
                }
                Op::Fork(i) if !live.is_empty() => {
                    let i = i % live.len();
                    let copy = pool.blocks.fork(&live[i].0);
                    let text = live[i].1.clone();
                    live.push((copy, text));
                }
                Op::End(i) if !live.is_empty() => {
                    let (mut seq, _) = live.swap_remove(i % live.len());
                    pool.blocks.release(&mut seq);
                    prop_assert!(seq.is_empty());
                }
                _ => {}
            }
            // Every sequence reads back exactly what it wrote (copy-on-write kept forks apart).
            for (seq, text) in &live {
                prop_assert_eq!(&read(&pool, seq), text);
            }
            // Reference counts are the holders; used blocks are those held.
            let mut holders: HashMap<u32, u32> = HashMap::new();
            for (seq, _) in &live {
                let mut mine = seq.blocks().to_vec();
                mine.sort_unstable();
                mine.dedup();
                prop_assert_eq!(mine.len(), seq.blocks().len(), "a block twice in one table");
                for &b in seq.blocks() {
                    *holders.entry(b).or_default() += 1;
                }
            }
            for b in 0..pool.blocks.total() as u32 {
                prop_assert_eq!(pool.blocks.refs(b), holders.get(&b).copied().unwrap_or(0));
            }
            prop_assert_eq!(pool.blocks.used_blocks(), holders.len());
            // Every block is held, cached and idle, or empty: never two, never none.
            prop_assert_eq!(
                holders.len() + pool.blocks.idle_blocks() + pool.blocks.empty_blocks(),
                total
            );
            prop_assert!(pool.blocks.idle_blocks() <= pool.blocks.cached_blocks());
            prop_assert_eq!(pool.blocks.audit(), Ok(()));
            prop_assert_eq!(pool.blocks.total(), total, "a fixed pool never grows");
        }
    }
}
