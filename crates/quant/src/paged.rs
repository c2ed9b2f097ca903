//! The key/value cache as a pool of fixed-size blocks (vLLM's PagedAttention layout, on the
//! host): a sequence holds a block table, not a contiguous buffer, so sequences of any length
//! come and go without moving anyone's keys and a server can size the cache once, in bytes.
//!
//! One block holds `block_tokens` positions of every layer's keys and values:
//! `[layer][key | value][position in block][d_model]` f32s. Position `p` of a sequence is row
//! `p % block_tokens` of its block `p / block_tokens`.

use lmforge_model::GptConfig;

/// Positions per block unless told otherwise (vLLM's default).
pub const BLOCK_TOKENS: usize = 16;

/// Fixed-size blocks of keys and values shared by many sequences.
#[derive(Debug, Clone)]
pub struct KvPool {
    block_tokens: usize,
    pub(crate) layers: usize,
    pub(crate) d_model: usize,
    data: Vec<f32>,
    /// Blocks not held by any sequence, taken from the end.
    free: Vec<u32>,
    /// Blocks there are (a growable pool adds more when it runs out).
    blocks: usize,
    growable: bool,
}

/// One sequence's block table and length in a [`KvPool`]. Not `Clone`: a block has one owner,
/// and a sequence's blocks go back with [`KvPool::release`].
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
}

impl KvPool {
    /// A pool of `blocks` blocks of `block_tokens` positions for `config`'s model. The memory is
    /// reserved, not touched: pages are faulted in as blocks are first written.
    pub fn new(config: &GptConfig, block_tokens: usize, blocks: usize) -> Self {
        let block_tokens = block_tokens.max(1);
        let mut pool = Self {
            block_tokens,
            layers: config.n_layer,
            d_model: config.d_model,
            data: Vec::new(),
            free: Vec::new(),
            blocks: 0,
            growable: false,
        };
        pool.grow(blocks);
        pool
    }

    /// The pool that `bytes` of memory hold (whole blocks).
    pub fn with_bytes(config: &GptConfig, block_tokens: usize, bytes: usize) -> Self {
        let block = Self::new(config, block_tokens, 0).block_bytes();
        Self::new(config, block_tokens, bytes / block.max(1))
    }

    /// A pool that adds blocks whenever it runs out: what single-caller decoding
    /// ([`Decoder`](lmforge_model::generate::Decoder)) uses.
    pub fn growable(config: &GptConfig, block_tokens: usize) -> Self {
        Self {
            growable: true,
            ..Self::new(config, block_tokens, 0)
        }
    }

    fn block_floats(&self) -> usize {
        self.layers * 2 * self.block_tokens * self.d_model
    }

    fn grow(&mut self, more: usize) {
        let start = self.blocks;
        self.blocks += more;
        self.data.resize(self.blocks * self.block_floats(), 0.0);
        // Lowest ids are handed out first.
        self.free
            .extend((start..self.blocks).rev().map(|b| b as u32));
        self.free.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.block_floats() * 4
    }

    /// Positions per block.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Blocks in the pool.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Blocks no sequence holds.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks held by sequences.
    pub fn used_blocks(&self) -> usize {
        self.blocks - self.free.len()
    }

    /// Blocks a sequence of `tokens` positions holds.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_tokens)
    }

    /// Gives `seq`'s blocks back to the pool and empties it.
    pub fn release(&mut self, seq: &mut SeqKv) {
        self.free.extend(seq.blocks.drain(..).rev());
        seq.len = 0;
    }

    /// Makes sure every `(sequence, new positions)` has blocks for them, all or nothing.
    pub(crate) fn reserve(&mut self, growth: &mut [(&mut SeqKv, usize)]) -> Result<(), String> {
        let needed: usize = growth
            .iter()
            .map(|(s, n)| self.blocks_for(s.len + n).saturating_sub(s.blocks.len()))
            .sum();
        if needed > self.free.len() {
            if !self.growable {
                return Err(format!(
                    "the KV cache pool has {} free blocks of {}; this step needs {needed}",
                    self.free.len(),
                    self.blocks
                ));
            }
            self.grow((needed - self.free.len()).max(self.blocks / 2));
        }
        for (seq, n) in growth.iter_mut() {
            while seq.blocks.len() < self.blocks_for(seq.len + *n) {
                let block = self.free.pop().expect("counted above");
                seq.blocks.push(block);
            }
        }
        Ok(())
    }

    /// Start of row `pos` of layer `layer`'s keys (`value` false) or values in `seq`.
    #[inline]
    fn offset(&self, seq: &SeqKv, layer: usize, value: bool, pos: usize) -> usize {
        let block = seq.blocks[pos / self.block_tokens] as usize;
        block * self.block_floats()
            + ((layer * 2 + value as usize) * self.block_tokens + pos % self.block_tokens)
                * self.d_model
    }

    /// Writes the key and value rows of position `pos` (its blocks reserved).
    pub(crate) fn write(
        &mut self,
        seq: &SeqKv,
        layer: usize,
        pos: usize,
        key: &[f32],
        value: &[f32],
    ) {
        let d = self.d_model;
        let k = self.offset(seq, layer, false, pos);
        self.data[k..k + d].copy_from_slice(key);
        let v = self.offset(seq, layer, true, pos);
        self.data[v..v + d].copy_from_slice(value);
    }

    /// The keys (`value` false) or values of positions `0..len` of `seq` in one layer, block by
    /// block: `(first position, rows)` with rows `[n, d_model]`.
    pub(crate) fn runs<'a>(
        &'a self,
        seq: &'a SeqKv,
        layer: usize,
        value: bool,
        len: usize,
    ) -> impl Iterator<Item = (usize, &'a [f32])> + 'a {
        let (bt, d) = (self.block_tokens, self.d_model);
        (0..len.div_ceil(bt)).map(move |b| {
            let start = self.offset(seq, layer, value, b * bt);
            let rows = (len - b * bt).min(bt);
            (b * bt, &self.data[start..start + rows * d])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GptConfig {
        GptConfig {
            n_layer: 2,
            d_model: 8,
            ..GptConfig::tiny(10)
        }
    }

    #[test]
    fn blocks_are_reserved_all_or_nothing_and_come_back() {
        let mut pool = KvPool::new(&config(), 4, 3);
        assert_eq!(pool.block_bytes(), 2 * 2 * 4 * 8 * 4);
        let (mut a, mut b) = (SeqKv::new(), SeqKv::new());
        pool.reserve(&mut [(&mut a, 5)]).unwrap();
        assert_eq!((a.blocks(), pool.used_blocks()), (&[0, 1][..], 2));
        a.len = 5;
        // 9 positions for b need 3 blocks; 1 is free: nothing is taken.
        let err = pool.reserve(&mut [(&mut b, 9)]).unwrap_err();
        assert!(err.contains("1 free blocks of 3"), "{err}");
        assert!(b.blocks().is_empty());
        pool.release(&mut a);
        assert_eq!((pool.free_blocks(), a.len(), a.blocks().len()), (3, 0, 0));
        pool.reserve(&mut [(&mut b, 9)]).unwrap();
        assert_eq!(b.blocks(), [0, 1, 2]);
    }

    #[test]
    fn rows_read_back_across_blocks() {
        let mut pool = KvPool::growable(&config(), 3);
        let mut seq = SeqKv::new();
        pool.reserve(&mut [(&mut seq, 7)]).unwrap();
        assert!(pool.blocks() >= 3);
        for pos in 0..7 {
            let key = [pos as f32; 8];
            let value = [-(pos as f32); 8];
            pool.write(&seq, 1, pos, &key, &value);
        }
        seq.len = 7;
        let keys: Vec<f32> = pool
            .runs(&seq, 1, false, 7)
            .flat_map(|(_, r)| r.to_vec())
            .collect();
        let values: Vec<f32> = pool
            .runs(&seq, 1, true, 7)
            .flat_map(|(_, r)| r.to_vec())
            .collect();
        assert_eq!(keys.len(), 56);
        for pos in 0..7 {
            assert_eq!(keys[pos * 8], pos as f32);
            assert_eq!(values[pos * 8 + 7], -(pos as f32));
        }
        let starts: Vec<usize> = pool.runs(&seq, 0, false, 7).map(|(s, _)| s).collect();
        assert_eq!(starts, [0, 3, 6]);
    }
}
