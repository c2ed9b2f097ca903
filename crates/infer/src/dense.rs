//! burn's dense KV cache ([`lmforge_model::KvCache`]: prompts left-padded to one length, one
//! tensor per layer) as a [`Decoder`]: the model on any device, the reference the paged
//! engines are tested against.

use burn::tensor::{Device, Tensor};
use lmforge_model::{Gpt, KvCache};

use crate::Result;
use crate::decoder::Decoder;

/// [`Gpt`] on a burn device as a [`Decoder`].
#[derive(Debug, Clone, Copy)]
pub struct BurnDecoder<'a> {
    /// The model.
    pub model: &'a Gpt,
    /// Where its weights live.
    pub device: &'a Device,
}

impl Decoder for BurnDecoder<'_> {
    type Cache = KvCache;

    fn max_seq_len(&self) -> usize {
        self.model.config().max_seq_len
    }

    fn prefill(&self, prompts: &[Vec<u32>]) -> Result<(KvCache, Vec<Vec<f32>>)> {
        let (cache, logits) = self.model.prefill(prompts, self.device)?;
        Ok((cache, host_rows(logits, prompts.len())))
    }

    fn decode(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.decode(cache, tokens)?;
        Ok(host_rows(logits, tokens.len()))
    }

    fn select(&self, cache: KvCache, rows: &[usize]) -> Result<KvCache> {
        Ok(cache.select(rows)?)
    }
}

/// `[rows, vocab]` logits as one vector per row.
fn host_rows(logits: Tensor<2>, rows: usize) -> Vec<Vec<f32>> {
    let values = lmforge_model::host_values(logits);
    let vocab = values.len() / rows.max(1);
    values.chunks(vocab.max(1)).map(<[f32]>::to_vec).collect()
}
