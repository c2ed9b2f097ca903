//! Padded batches for BERT-style models and classification: `[CLS] A [SEP] (B [SEP])` with
//! longest-first truncation to a maximum length, padding with the tokenizer's own pad id (a
//! required argument: never an assumed 0), attention mask and token type ids; padding to the
//! longest example of the batch or to the maximum length; optional bucketing of examples of
//! similar length into the same batch.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{Error, Result};

/// One model input before padding.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment of each id: 0 for the first text (and `[CLS]`), 1 for the second.
    pub type_ids: Vec<u32>,
}

/// The ids BERT's template puts around texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Specials {
    /// `[CLS]`, first.
    pub cls: u32,
    /// `[SEP]`, after each text.
    pub sep: u32,
}

impl Specials {
    /// `[CLS]` and `[SEP]` of a tokenizer, an error naming the missing one.
    pub fn of(tokenizer: &dyn lmforge_tokenizer::Tokenizer) -> Result<Specials> {
        let id = |t: &str| {
            tokenizer
                .token_id(t)
                .ok_or_else(|| Error::Invalid(format!("the tokenizer has no {t} token")))
        };
        Ok(Specials {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
        })
    }
}

/// `[CLS] first [SEP]` or `[CLS] first [SEP] second [SEP]`, the texts cut longest-first (the
/// longer loses a token at its end until all fits `max_length`, Hugging Face's
/// `longest_first`).
pub fn bert_example(
    first: &[u32],
    second: Option<&[u32]>,
    specials: Specials,
    max_length: usize,
) -> Result<Example> {
    let added = if second.is_some() { 3 } else { 2 };
    if max_length < added {
        return Err(Error::Invalid(format!(
            "max_length {max_length} leaves no room for the {added} special tokens"
        )));
    }
    let budget = max_length - added;
    let (mut a, mut b) = (first.len(), second.map_or(0, <[u32]>::len));
    while a + b > budget {
        if a >= b {
            a -= 1;
        } else {
            b -= 1;
        }
    }
    let mut ids = Vec::with_capacity(a + b + added);
    ids.push(specials.cls);
    ids.extend_from_slice(&first[..a]);
    ids.push(specials.sep);
    let mut type_ids = vec![0; ids.len()];
    if let Some(second) = second {
        ids.extend_from_slice(&second[..b]);
        ids.push(specials.sep);
        type_ids.resize(ids.len(), 1);
    }
    Ok(Example { ids, type_ids })
}

/// To what length a batch is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadTo {
    /// The longest example in the batch (dynamic padding).
    Longest,
    /// Always this many (fixed shapes).
    Length(usize),
}

/// How to pad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadOptions {
    /// The padding id, from the tokenizer ([`lmforge_tokenizer::Tokenizer::pad_id`]).
    pub pad_id: u32,
    /// Target length.
    pub pad_to: PadTo,
    /// Round the length up to a multiple (tensor cores like 8).
    pub multiple_of: Option<usize>,
}

/// Examples padded to one length, row-major `[batch, seq_length]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PaddedBatch {
    /// Rows.
    pub batch_size: usize,
    /// Columns.
    pub seq_length: usize,
    /// Ids, padding at the end of each row.
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Segment ids (0 on padding).
    pub type_ids: Vec<u32>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

/// Pads `examples` into one batch. An example longer than a fixed length is an error (truncate
/// first, with [`bert_example`]).
pub fn pad(examples: &[&Example], options: PadOptions) -> Result<PaddedBatch> {
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut len = match options.pad_to {
        PadTo::Longest => longest,
        PadTo::Length(n) => {
            if longest > n {
                return Err(Error::Invalid(format!(
                    "an example of {longest} tokens does not fit the padded length {n}"
                )));
            }
            n
        }
    };
    if let Some(m) = options.multiple_of.filter(|&m| m > 1) {
        len = len.next_multiple_of(m);
    }
    let mut batch = PaddedBatch {
        batch_size: examples.len(),
        seq_length: len,
        ids: vec![options.pad_id; examples.len() * len],
        attention_mask: vec![0; examples.len() * len],
        type_ids: vec![0; examples.len() * len],
        lengths: Vec::with_capacity(examples.len()),
    };
    for (row, example) in examples.iter().enumerate() {
        if example.type_ids.len() != example.ids.len() && !example.type_ids.is_empty() {
            return Err(Error::Invalid(format!(
                "example {row}: {} type ids for {} ids",
                example.type_ids.len(),
                example.ids.len()
            )));
        }
        let n = example.ids.len();
        let at = row * len;
        batch.ids[at..at + n].copy_from_slice(&example.ids);
        batch.attention_mask[at..at + n].fill(1);
        if !example.type_ids.is_empty() {
            batch.type_ids[at..at + n].copy_from_slice(&example.type_ids);
        }
        batch.lengths.push(n);
    }
    Ok(batch)
}

/// Batches of example indices, `batch_size` each (the last may be short): the examples are
/// shuffled with `seed`, then, with `bucket` set, taken `bucket` batches at a time and sorted
/// by length inside that window so a batch holds similar lengths (less padding), and the
/// batches shuffled again. Every index appears exactly once.
pub fn batches(
    lengths: &[usize],
    batch_size: usize,
    bucket: Option<usize>,
    seed: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    shuffle(&mut order, &mut rng);
    if let Some(window) = bucket.filter(|&w| w > 1) {
        for chunk in order.chunks_mut(window * batch_size) {
            chunk.sort_by_key(|&i| lengths[i]);
        }
    }
    let mut out: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    if bucket.is_some() {
        shuffle(&mut out, &mut rng);
    }
    out
}

fn shuffle<T>(x: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..x.len()).rev() {
        // Lemire's multiply-shift; the bias for i < 2^32 is below 2^-32, and the draw is
        // deterministic, which is what a seed promises.
        let j = ((u64::from(rng.next_u32()) * (i as u64 + 1)) >> 32) as usize;
        x.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: Specials = Specials { cls: 101, sep: 102 };

    #[test]
    fn longest_first_truncation() {
        let a: Vec<u32> = (0..10).collect();
        let b: Vec<u32> = (20..24).collect();
        let e = bert_example(&a, Some(&b), SP, 11).unwrap();
        // 8 text tokens: a keeps 4, b keeps 4.
        assert_eq!(e.ids, [101, 0, 1, 2, 3, 102, 20, 21, 22, 23, 102]);
        assert_eq!(e.type_ids, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        let single = bert_example(&a, None, SP, 4).unwrap();
        assert_eq!(single.ids, [101, 0, 1, 102]);
        assert!(bert_example(&a, Some(&b), SP, 2).is_err());
    }

    #[test]
    fn pads_with_the_given_id_never_zero() {
        let x = Example {
            ids: vec![101, 7, 102],
            type_ids: vec![0, 0, 0],
        };
        let y = Example {
            ids: vec![101, 102],
            type_ids: vec![0, 0],
        };
        let options = PadOptions {
            pad_id: 3,
            pad_to: PadTo::Longest,
            multiple_of: Some(4),
        };
        let batch = pad(&[&x, &y], options).unwrap();
        assert_eq!(batch.seq_length, 4);
        assert_eq!(batch.ids, [101, 7, 102, 3, 101, 102, 3, 3]);
        assert_eq!(batch.attention_mask, [1, 1, 1, 0, 1, 1, 0, 0]);
        assert_eq!(batch.lengths, [3, 2]);
        let fixed = PadOptions {
            pad_to: PadTo::Length(2),
            ..options
        };
        assert!(
            pad(&[&x], fixed)
                .unwrap_err()
                .to_string()
                .contains("3 tokens")
        );
    }

    #[test]
    fn bucketing_groups_lengths_and_keeps_every_index() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 500).collect();
        let plain = batches(&lengths, 16, None, 1);
        let bucketed = batches(&lengths, 16, Some(50), 1);
        for b in [&plain, &bucketed] {
            let mut all: Vec<usize> = b.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
        }
        let padding = |b: &Vec<Vec<usize>>| -> usize {
            b.iter()
                .map(|batch| {
                    let max = batch.iter().map(|&i| lengths[i]).max().unwrap();
                    batch.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        assert!(padding(&bucketed) * 10 < padding(&plain));
        assert_eq!(batches(&lengths, 16, Some(50), 1), bucketed, "seeded");
    }
}
