//! GPT training samples as Megatron-LM builds them (`megatron/core/datasets/gpt_dataset.py`
//! and `helpers.cpp`): the documents of a split, repeated for as many epochs as the requested
//! samples need and shuffled; the concatenation cut into samples of `seq_length + 1` tokens
//! that cross document boundaries (consecutive samples share one token, so every token is
//! predicted once); the samples shuffled. The shuffles are NumPy's `RandomState(seed)`
//! ([`crate::numpy_random`]), so a seed gives exactly Megatron's samples, which
//! `tests/it/megatron.rs` checks against samples Megatron itself drew.
//!
//! The three index arrays are cached as `.npy` files keyed by a hash of everything they depend
//! on (the `.idx` bytes included), as Megatron caches them.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::indexed::IndexedDataset;
use crate::npy::{self, Elem};
use crate::numpy_random::RandomState;
use crate::{Error, Result};

/// Which of the three splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// Training.
    Train,
    /// Validation (may keep its last, partial sample).
    Valid,
    /// Test.
    Test,
}

impl SplitKind {
    /// All three, in the split string's order.
    pub const ALL: [SplitKind; 3] = [SplitKind::Train, SplitKind::Valid, SplitKind::Test];

    /// Megatron's name (`Split.name`).
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Valid => "valid",
            SplitKind::Test => "test",
        }
    }
}

/// A train/valid/test split string such as `969,30,1` (Megatron's `--split`), normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    weights: [f64; 3],
}

impl Split {
    /// Parses `969,30,1`, `98,2` (missing parts are 0) or `0.9, 0.1`; the weights are
    /// normalised to sum to 1.
    pub fn parse(text: &str) -> Result<Split> {
        let bad = |why: &str| Error::Invalid(format!("split {text:?}: {why}"));
        let parts: Vec<&str> = text
            .split([',', '/'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err(bad("give one to three weights, like 969,30,1"));
        }
        let mut weights = [0.0f64; 3];
        for (w, p) in weights.iter_mut().zip(&parts) {
            *w = p
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| bad(&format!("{p:?} is not a weight ≥ 0")))?;
        }
        let sum: f64 = weights.iter().sum();
        if sum <= 0.0 {
            return Err(bad("the weights add up to 0"));
        }
        for w in &mut weights {
            *w /= sum;
        }
        Ok(Split { weights })
    }

    /// The normalised weights.
    pub fn weights(&self) -> [f64; 3] {
        self.weights
    }

    /// The range of the `n` elements each split gets, `None` for an empty split; exactly
    /// Megatron's arithmetic (`convert_split_vector_to_split_matrix`, then
    /// `round(bookend · n)`, Python's round-half-to-even).
    pub fn ranges(&self, n: usize) -> [Option<Range<usize>>; 3] {
        let mut bookends = [0.0f64; 4];
        for i in 0..3 {
            bookends[i + 1] = bookends[i] + self.weights[i];
        }
        std::array::from_fn(|i| {
            let (lo, hi) = (bookends[i], bookends[i + 1]);
            if hi <= lo {
                return None;
            }
            let begin = (lo * n as f64).round_ties_even() as usize;
            let end = (hi * n as f64).round_ties_even() as usize;
            Some(begin..end)
        })
    }
}

/// How samples are drawn and what a batch carries.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GptConfig {
    /// Tokens a sample feeds the model (a sample reads one more for the labels).
    pub seq_length: usize,
    /// Seeds NumPy's RandomState as Megatron's `--seed` does.
    pub seed: u32,
    /// Draw `seq_length + 1` tokens so inputs and labels are both `seq_length` long
    /// (Megatron's default); otherwise labels are the inputs shifted, last one padded.
    pub add_extra_token: bool,
    /// The end-of-document id (Megatron's `tokenizer.eod`), for the EOD options below.
    pub eod_id: Option<u32>,
    /// The padding id; samples are padded only where a split keeps a partial last sample.
    pub pad_id: Option<u32>,
    /// `--eod-mask-loss`: no loss on EOD tokens.
    pub eod_mask_loss: bool,
    /// `--reset-position-ids`: positions restart after each EOD.
    pub reset_position_ids: bool,
    /// `--reset-attention-mask`: tokens do not attend across an EOD.
    pub reset_attention_mask: bool,
    /// Drop the last, partial sample of the validation split (Megatron's default).
    pub drop_last_partial_validation_sequence: bool,
}

impl GptConfig {
    /// Megatron's defaults for a sequence length and seed.
    pub fn new(seq_length: usize, seed: u32) -> GptConfig {
        GptConfig {
            seq_length,
            seed,
            add_extra_token: true,
            eod_id: None,
            pad_id: None,
            eod_mask_loss: false,
            reset_position_ids: false,
            reset_attention_mask: false,
            drop_last_partial_validation_sequence: true,
        }
    }
}

/// One split's samples over a dataset.
pub struct GptDataset {
    data: Arc<IndexedDataset>,
    config: GptConfig,
    split: SplitKind,
    document_index: Vec<i32>,
    /// `[doc_index position, offset]` pairs, one more than there are samples.
    sample_index: Vec<[i64; 2]>,
    shuffle_index: Vec<u64>,
    epochs: usize,
    tokens_per_epoch: u64,
    from_cache: bool,
}

/// A batch of GPT samples, row-major `[batch, seq_length]`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct GptBatch {
    /// Rows.
    pub batch_size: usize,
    /// Columns.
    pub seq_length: usize,
    /// Input ids (padding shown as 0, as Megatron does).
    pub tokens: Vec<u32>,
    /// Target ids, the inputs shifted by one.
    pub labels: Vec<u32>,
    /// 1 where the label counts in the loss.
    pub loss_mask: Vec<f32>,
    /// Positions (restarting after EOD with `reset_position_ids`).
    pub position_ids: Vec<u32>,
}

impl GptBatch {
    /// `rows` rows of `seq_length` zeros.
    pub fn zeroed(rows: usize, seq_length: usize) -> GptBatch {
        GptBatch {
            batch_size: rows,
            seq_length,
            tokens: vec![0; rows * seq_length],
            labels: vec![0; rows * seq_length],
            loss_mask: vec![0.0; rows * seq_length],
            position_ids: vec![0; rows * seq_length],
        }
    }
}

/// Where a build's arrays came from and what they hold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GptIndexInfo {
    /// The split.
    pub split: SplitKind,
    /// Samples.
    pub samples: usize,
    /// Epochs the samples cover.
    pub epochs: usize,
    /// Tokens per epoch.
    pub tokens_per_epoch: u64,
    /// Whether the arrays were loaded from the cache.
    pub from_cache: bool,
}

const PAD_SENTINEL: u32 = u32::MAX;

impl GptDataset {
    /// Builds (or loads from `cache`) split `split` over sequences `documents` of `data`,
    /// with enough epochs for `num_samples` samples (`None`: one epoch).
    pub fn build(
        data: Arc<IndexedDataset>,
        split: SplitKind,
        documents: Range<usize>,
        num_samples: Option<u64>,
        config: GptConfig,
        cache: Option<&Path>,
    ) -> Result<GptDataset> {
        if config.seq_length < 2 {
            return Err(Error::Invalid(format!(
                "seq_length {} must be at least 2",
                config.seq_length
            )));
        }
        if documents.end > data.len() || documents.start > documents.end {
            return Err(Error::Invalid(format!(
                "sequences {documents:?} of a dataset of {}",
                data.len()
            )));
        }
        let lengths = data.lengths();
        let extra = i64::from(config.add_extra_token);
        let tokens_per_epoch: i64 = lengths[documents.clone()]
            .iter()
            .map(|&l| i64::from(l))
            .sum();
        if tokens_per_epoch <= 1 {
            return Err(Error::Invalid(format!(
                "the {} split of {} has {tokens_per_epoch} tokens: too few for any sample",
                split.name(),
                data.idx_path().display()
            )));
        }
        let seq = config.seq_length as i64;
        let mut epochs = 1i64;
        if let Some(n) = num_samples {
            let requested = n as i64 * seq + extra;
            let mut tokens = tokens_per_epoch;
            while tokens < requested {
                epochs += 1;
                tokens += tokens_per_epoch;
            }
        }
        let mut info_key = describe(&data, split, &documents, num_samples, &config);
        let paths = cache.map(|dir| cache_paths(dir, &info_key, split));
        let cached = paths
            .as_ref()
            .and_then(|p| load_cached(p, &info_key, &lengths, &documents));
        let from_cache = cached.is_some();
        let (document_index, sample_index, shuffle_index) = match cached {
            Some(arrays) => arrays,
            None => {
                let shape = Shape {
                    documents: documents.clone(),
                    num_samples,
                    epochs,
                    tokens_per_epoch,
                };
                let arrays = build_arrays(&lengths, &shape, &config, split);
                if let Some(paths) = &paths {
                    info_key.push('\n');
                    save_cached(paths, &info_key, &arrays.0, &arrays.1, &arrays.2)?;
                }
                arrays
            }
        };
        Ok(GptDataset {
            data,
            config,
            split,
            document_index,
            sample_index,
            shuffle_index,
            epochs: epochs as usize,
            tokens_per_epoch: tokens_per_epoch as u64,
            from_cache,
        })
    }

    /// Samples (`sample_index` entries − 1, as Megatron's `__len__`).
    pub fn len(&self) -> usize {
        self.sample_index.len() - 1
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was built.
    pub fn info(&self) -> GptIndexInfo {
        GptIndexInfo {
            split: self.split,
            samples: self.len(),
            epochs: self.epochs,
            tokens_per_epoch: self.tokens_per_epoch,
            from_cache: self.from_cache,
        }
    }

    /// The config.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The shuffled document order (Megatron's `document_index`).
    pub fn document_index(&self) -> &[i32] {
        &self.document_index
    }

    /// Megatron's `sample_index`.
    pub fn sample_index(&self) -> &[[i64; 2]] {
        &self.sample_index
    }

    /// Megatron's `shuffle_index`.
    pub fn shuffle_index(&self) -> &[u64] {
        &self.shuffle_index
    }

    /// Width of a sample's text: `seq_length + 1` with the extra token.
    pub fn text_len(&self) -> usize {
        self.config.seq_length + usize::from(self.config.add_extra_token)
    }

    /// Writes sample `idx`'s text (`text_len()` ids, read straight from the mapped `.bin`)
    /// into `out`, padding a partial sample with [`u32::MAX`]; returns how many ids are real.
    pub fn text_into(&self, idx: usize, out: &mut [u32]) -> usize {
        assert_eq!(out.len(), self.text_len(), "text_into: wrong buffer length");
        let idx = self.shuffle_index[idx] as usize;
        let [beg, beg_off] = self.sample_index[idx];
        let [end, end_off] = self.sample_index[idx + 1];
        let extra = usize::from(self.config.add_extra_token);
        let mut at = 0;
        for i in beg as usize..=end as usize {
            let seq = self.document_index[i] as usize;
            let offset = if i == beg as usize {
                beg_off as usize
            } else {
                0
            };
            let length = self.data.length(seq);
            let stop = if i == end as usize {
                end_off as usize + extra
            } else {
                length
            };
            // Megatron reads `length` ids where the sample index ends; near the very end
            // of the last epoch it can ask past the document, which its numpy slice clips.
            let stop = stop.min(length).max(offset);
            let n = (stop - offset).min(out.len() - at);
            self.data
                .get_part(seq, offset, n)
                .copy_u32(&mut out[at..at + n]);
            at += n;
        }
        out[at..].fill(PAD_SENTINEL);
        at
    }

    /// Samples `indices` as a batch: inputs, labels, loss mask, positions, as Megatron's
    /// `GPTDataset.__getitem__` gives them.
    pub fn batch(&self, indices: &[usize]) -> GptBatch {
        let mut batch = GptBatch::zeroed(indices.len(), self.config.seq_length);
        let mut text = Vec::new();
        for (row, &idx) in indices.iter().enumerate() {
            self.fill_row(idx, &mut batch, row, &mut text);
        }
        batch
    }

    /// Writes sample `idx` into row `row` of `batch` (`text` is scratch space).
    pub(crate) fn fill_row(
        &self,
        idx: usize,
        batch: &mut GptBatch,
        row: usize,
        text: &mut Vec<u32>,
    ) {
        let s = self.config.seq_length;
        assert_eq!(batch.seq_length, s, "a batch of another sequence length");
        text.resize(self.text_len(), 0);
        self.text_into(idx, text);
        let pad = self.config.pad_id.unwrap_or(PAD_SENTINEL);
        for t in text.iter_mut() {
            if *t == PAD_SENTINEL {
                *t = pad;
            }
        }
        let range = row * s..(row + 1) * s;
        let tokens = &mut batch.tokens[range.clone()];
        let labels = &mut batch.labels[range.clone()];
        if self.config.add_extra_token {
            tokens.copy_from_slice(&text[..s]);
            labels.copy_from_slice(&text[1..]);
        } else {
            tokens.copy_from_slice(text);
            labels[..s - 1].copy_from_slice(&text[1..]);
            labels[s - 1] = pad;
        }
        let loss_mask = &mut batch.loss_mask[range.clone()];
        let positions = &mut batch.position_ids[range];
        let eod = self.config.eod_id;
        let mut start = 0u32;
        for j in 0..s {
            positions[j] = j as u32 - start;
            loss_mask[j] = 1.0;
            if Some(tokens[j]) == eod {
                if self.config.eod_mask_loss {
                    loss_mask[j] = 0.0;
                }
                if self.config.reset_position_ids {
                    start = j as u32 + 1;
                }
            }
        }
        for j in 0..s {
            if labels[j] == pad {
                loss_mask[j] = 0.0;
                labels[j] = 0;
            }
            if tokens[j] == pad {
                tokens[j] = 0;
            }
        }
    }

    /// Megatron's attention mask of one row of inputs, `seq_length²` entries, `true` where
    /// attention is masked: causal, and with `reset_attention_mask` blocked across EODs.
    pub fn attention_mask(&self, tokens: &[u32]) -> Vec<bool> {
        let s = tokens.len();
        let mut doc_start = vec![0usize; s];
        let mut start = 0;
        for j in 0..s {
            doc_start[j] = start;
            if self.config.reset_attention_mask && Some(tokens[j]) == self.config.eod_id {
                start = j + 1;
            }
        }
        let mut mask = vec![true; s * s];
        for q in 0..s {
            for k in doc_start[q]..=q {
                mask[q * s + k] = false;
            }
        }
        mask
    }
}

/// What the indices are built for.
struct Shape {
    documents: Range<usize>,
    num_samples: Option<u64>,
    epochs: i64,
    tokens_per_epoch: i64,
}

/// `_build_document_sample_shuffle_indices`: the three arrays, with one `RandomState` drawn
/// in Megatron's order (documents, then samples).
fn build_arrays(lengths: &[i32], shape: &Shape, config: &GptConfig, split: SplitKind) -> Arrays {
    let (epochs, tokens_per_epoch) = (shape.epochs, shape.tokens_per_epoch);
    let extra = i64::from(config.add_extra_token);
    let seq = config.seq_length as i64;
    let mut separate_final_epoch = false;
    let mut samples_sans_final = 0i64;
    if epochs > 1 {
        let n = shape.num_samples.unwrap_or(0) as i64;
        samples_sans_final = ((epochs - 1) * tokens_per_epoch - extra) / seq;
        let from_final = n - samples_sans_final;
        let per_epoch = (tokens_per_epoch - extra) / seq;
        separate_final_epoch = from_final < (0.80 * per_epoch as f64) as i64;
    }
    let mut rng = RandomState::new(config.seed);
    let docs: Vec<i32> = shape.documents.clone().map(|d| d as i32).collect();
    let document_index = if separate_final_epoch {
        let mut first = document_index(&docs, epochs as usize - 1, &mut rng);
        first.extend(document_index(&docs, 1, &mut rng));
        first
    } else {
        document_index(&docs, epochs as usize, &mut rng)
    };
    let drop_last = split != SplitKind::Valid || config.drop_last_partial_validation_sequence;
    let sample_index = sample_index(
        lengths,
        &document_index,
        seq,
        epochs,
        tokens_per_epoch,
        drop_last,
        extra,
    );
    let total = sample_index.len() as u64 - 1;
    let first = if separate_final_epoch {
        samples_sans_final as u64
    } else {
        total
    };
    let mut shuffle_index: Vec<u64> = (0..first).collect();
    rng.shuffle(&mut shuffle_index);
    if first < total {
        let mut last: Vec<u64> = (first..total).collect();
        rng.shuffle(&mut last);
        shuffle_index.extend(last);
    }
    (document_index, sample_index, shuffle_index)
}

/// `_build_document_index` without a separate final epoch: `epochs` copies of `docs`, shuffled.
fn document_index(docs: &[i32], epochs: usize, rng: &mut RandomState) -> Vec<i32> {
    let mut index: Vec<i32> = Vec::with_capacity(docs.len() * epochs);
    for _ in 0..epochs {
        index.extend_from_slice(docs);
    }
    rng.shuffle(&mut index);
    index
}

/// `helpers.cpp: build_sample_idx`.
fn sample_index(
    sizes: &[i32],
    document_index: &[i32],
    seq_length: i64,
    epochs: i64,
    tokens_per_epoch: i64,
    drop_last_partial: bool,
    extra: i64,
) -> Vec<[i64; 2]> {
    let available = epochs * tokens_per_epoch - extra;
    let num_samples = if drop_last_partial {
        available / seq_length
    } else {
        // The C++ divides in single precision.
        ((available as f32) / (seq_length as f32)).ceil() as i64
    };
    let mut out = Vec::with_capacity(num_samples as usize + 1);
    let mut doc = 0usize;
    let mut offset = 0i64;
    out.push([0, 0]);
    while (out.len() as i64) <= num_samples {
        let mut remaining = seq_length + extra;
        while remaining != 0 {
            let length = i64::from(sizes[document_index[doc] as usize]) - offset;
            remaining -= length;
            if remaining <= 0 {
                offset += remaining + length - extra;
                remaining = 0;
            } else {
                if doc == document_index.len() - 1 {
                    offset = i64::from(sizes[document_index[doc] as usize]) - extra;
                    break;
                }
                doc += 1;
                offset = 0;
            }
        }
        out.push([doc as i64, offset]);
    }
    out
}

/// The cache key: everything the arrays depend on, as text (the `.idx` by its SHA-256).
fn describe(
    data: &IndexedDataset,
    split: SplitKind,
    documents: &Range<usize>,
    num_samples: Option<u64>,
    config: &GptConfig,
) -> String {
    let description = serde_json::json!({
        "class": "GPTDataset",
        "idx_sha256": data.idx_sha256(),
        "split": split.name(),
        "documents": [documents.start, documents.end],
        "num_samples": num_samples,
        "sequence_length": config.seq_length,
        "random_seed": config.seed,
        "add_extra_token_to_sequence": config.add_extra_token,
        "drop_last_partial_validation_sequence": config.drop_last_partial_validation_sequence,
        "format": 1,
    });
    serde_json::to_string_pretty(&description).expect("JSON of plain values")
}

struct CachePaths {
    description: PathBuf,
    document: PathBuf,
    sample: PathBuf,
    shuffle: PathBuf,
}

fn cache_paths(dir: &Path, description: &str, split: SplitKind) -> CachePaths {
    let digest = Sha256::digest(description.as_bytes());
    let hash: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let base = format!("{hash}-GPTDataset-{}", split.name());
    let path = |affix: &str| dir.join(format!("{base}-{affix}"));
    CachePaths {
        description: path("description.txt"),
        document: path("document_index.npy"),
        sample: path("sample_index.npy"),
        shuffle: path("shuffle_index.npy"),
    }
}

type Arrays = (Vec<i32>, Vec<[i64; 2]>, Vec<u64>);

/// The cached arrays if all are there, match the description and are consistent; anything
/// else (missing, damaged, stale) is rebuilt.
fn load_cached(
    paths: &CachePaths,
    description: &str,
    lengths: &[i32],
    documents: &Range<usize>,
) -> Option<Arrays> {
    let stored = std::fs::read_to_string(&paths.description).ok()?;
    if stored.trim_end() != description {
        return None;
    }
    let (dshape, dvals) = npy::read(&paths.document).ok()?;
    let (sshape, svals) = npy::read(&paths.sample).ok()?;
    let (hshape, hvals) = npy::read(&paths.shuffle).ok()?;
    if dshape.len() != 1 || sshape.len() != 2 || sshape[1] != 2 || hshape.len() != 1 {
        return None;
    }
    let document_index: Vec<i32> = dvals
        .into_iter()
        .map(|d| {
            (documents.contains(&(d as usize)) && (d as usize) < lengths.len()).then_some(d as i32)
        })
        .collect::<Option<_>>()?;
    let sample_index: Vec<[i64; 2]> = svals
        .chunks_exact(2)
        .map(|c| {
            let ok = (c[0] as usize) < document_index.len() && c[1] >= -1;
            ok.then_some([c[0], c[1]])
        })
        .collect::<Option<_>>()?;
    let samples = sample_index.len().checked_sub(1)? as i64;
    let shuffle_index: Vec<u64> = hvals
        .into_iter()
        .map(|v| (0..samples).contains(&v).then_some(v as u64))
        .collect::<Option<_>>()?;
    (shuffle_index.len() as i64 == samples).then_some((document_index, sample_index, shuffle_index))
}

fn save_cached(
    paths: &CachePaths,
    description: &str,
    document_index: &[i32],
    sample_index: &[[i64; 2]],
    shuffle_index: &[u64],
) -> Result<()> {
    if let Some(dir) = paths.description.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let write = |path: &Path, bytes: &[u8]| {
        lmforge_tokenizer::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
    };
    let docs: Vec<i64> = document_index.iter().map(|&d| i64::from(d)).collect();
    write(
        &paths.document,
        &npy::to_bytes(Elem::I32, &[docs.len()], &docs),
    )?;
    let flat: Vec<i64> = sample_index.iter().flatten().copied().collect();
    write(
        &paths.sample,
        &npy::to_bytes(Elem::I64, &[sample_index.len(), 2], &flat),
    )?;
    let big = shuffle_index.len() as u64 >= u64::from(u32::MAX) - 1;
    let shuffled: Vec<i64> = shuffle_index.iter().map(|&v| v as i64).collect();
    let elem = if big { Elem::I64 } else { Elem::U32 };
    write(
        &paths.shuffle,
        &npy::to_bytes(elem, &[shuffled.len()], &shuffled),
    )?;
    // The description last: its presence says the arrays beside it are whole.
    write(&paths.description, description.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_follow_megatron() {
        let split = Split::parse("969,30,1").unwrap();
        assert_eq!(
            split.ranges(1000),
            [Some(0..969), Some(969..999), Some(999..1000)]
        );
        let split = Split::parse("98,2").unwrap();
        assert_eq!(split.ranges(10), [Some(0..10), Some(10..10), None]);
        // Python's round is half-to-even: 0.5·5 = 2.5 → 2.
        assert_eq!(
            Split::parse("1,1").unwrap().ranges(5),
            [Some(0..2), Some(2..5), None]
        );
        assert!(Split::parse("0,0,0").is_err());
        assert!(Split::parse("1,2,3,4").is_err());
        assert!(Split::parse("a,b").is_err());
        assert!(Split::parse("-1,2").is_err());
    }

    #[test]
    fn samples_share_one_token() {
        // Two documents of 5 and 4 tokens, sequence length 3: 8 / 3 = 2 samples.
        let index = sample_index(&[5, 4], &[0, 1], 3, 1, 9, true, 1);
        assert_eq!(index, [[0, 0], [0, 3], [1, 1]]);
    }
}
