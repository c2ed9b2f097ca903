//! Weighted mixtures of datasets, Megatron's `--data-path 0.3 fr 0.7 es` (`BlendedDataset`,
//! `helpers.cpp: build_blending_indices`): each dataset is split and sampled on its own
//! ([`GptDataset`]), asked for `⌈⌈n·w⌉·1.005⌉` samples (Megatron's 0.5 % surplus), and sample
//! `i` of the mixture comes from the dataset whose share lags its weight most — a deterministic
//! interleaving with no randomness of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::gpt::{GptBatch, GptConfig, GptDataset, Split, SplitKind};
use crate::indexed::IndexedDataset;
use crate::{Error, Result};

/// Megatron's `mid_level_dataset_surplus`.
pub const SURPLUS: f64 = 0.005;

/// Megatron's `normalize`: weights divided by their sum.
pub fn normalize(weights: &[f64]) -> Result<Vec<f64>> {
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::Invalid(format!(
            "blend weights {weights:?} must be ≥ 0"
        )));
    }
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 {
        return Err(Error::Invalid(format!(
            "blend weights {weights:?} add up to 0"
        )));
    }
    Ok(weights.iter().map(|w| w / sum).collect())
}

/// Megatron's `--data-path`: one dataset prefix, or `weight prefix` pairs
/// (`0.3 data/fr_text_document 0.7 data/es_text_document`).
pub fn parse_data_path<S: AsRef<str>>(words: &[S]) -> Result<Vec<(PathBuf, f64)>> {
    match words {
        [] => Err(Error::Invalid("--data-path: no dataset given".into())),
        [one] => Ok(vec![(PathBuf::from(one.as_ref()), 1.0)]),
        pairs if pairs.len() % 2 == 0 => pairs
            .chunks(2)
            .map(|pair| {
                let (weight, prefix) = (pair[0].as_ref(), pair[1].as_ref());
                let w = weight
                    .parse::<f64>()
                    .ok()
                    .filter(|w| w.is_finite() && *w >= 0.0);
                w.map(|w| (PathBuf::from(prefix), w)).ok_or_else(|| {
                    Error::Invalid(format!(
                        "--data-path: {weight:?} (before {prefix:?}) is not a weight ≥ 0"
                    ))
                })
            })
            .collect(),
        _ => Err(Error::Invalid(
            "--data-path: give one dataset prefix, or `weight prefix` pairs".into(),
        )),
    }
}

/// Samples each dataset contributes to a mixture of `target` samples
/// (`_get_size_per_split_per_dataset`).
pub fn sizes_per_dataset(weights: &[f64], target: u64, surplus: f64) -> Vec<u64> {
    weights
        .iter()
        .map(|w| ((target as f64 * w).ceil() * (1.0 + surplus)).ceil() as u64)
        .collect()
}

/// `build_blending_indices`: for each mixture sample, which dataset and which of its samples.
pub fn blending_indices(weights: &[f64], size: usize) -> (Vec<u16>, Vec<u64>) {
    let mut taken = vec![0u64; weights.len()];
    let mut dataset_index = Vec::with_capacity(size);
    let mut sample_index = Vec::with_capacity(size);
    for i in 0..size {
        let at = (i as f64).max(1.0);
        let mut best = 0;
        let mut best_error = weights[0] * at - taken[0] as f64;
        for (d, w) in weights.iter().enumerate().skip(1) {
            let error = w * at - taken[d] as f64;
            if error > best_error {
                best_error = error;
                best = d;
            }
        }
        dataset_index.push(best as u16);
        sample_index.push(taken[best]);
        taken[best] += 1;
    }
    (dataset_index, sample_index)
}

/// A mixture of GPT datasets for one split.
pub struct GptBlend {
    datasets: Vec<GptDataset>,
    dataset_index: Vec<u16>,
    dataset_sample_index: Vec<u64>,
}

impl GptBlend {
    /// Split `kind` of the datasets at `prefixes` mixed by `weights` into `num_samples`
    /// samples; each dataset split by `split`, all sampled with `config`.
    pub fn build(
        prefixes: &[(PathBuf, f64)],
        split: &Split,
        kind: SplitKind,
        num_samples: u64,
        config: &GptConfig,
        cache: Option<&Path>,
    ) -> Result<GptBlend> {
        if prefixes.len() > usize::from(u16::MAX) {
            return Err(Error::Invalid("too many datasets in one blend".into()));
        }
        let weights = normalize(&prefixes.iter().map(|p| p.1).collect::<Vec<_>>())?;
        let target = sizes_per_dataset(&weights, num_samples, 0.0);
        let buffered = sizes_per_dataset(&weights, num_samples, SURPLUS);
        let mut datasets = Vec::with_capacity(prefixes.len());
        for ((prefix, _), &wanted) in prefixes.iter().zip(&buffered) {
            let data = Arc::new(IndexedDataset::open(prefix)?);
            let position = SplitKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
            let range = split.ranges(data.len())[position].clone().ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: the split {:?} gives the {} split no documents",
                    prefix.display(),
                    split.weights(),
                    kind.name()
                ))
            })?;
            datasets.push(GptDataset::build(
                data,
                kind,
                range,
                Some(wanted),
                config.clone(),
                cache,
            )?);
        }
        let size = target.iter().sum::<u64>() as usize;
        let (dataset_index, dataset_sample_index) = blending_indices(&weights, size);
        for (d, dataset) in datasets.iter().enumerate() {
            let used = dataset_index.iter().filter(|&&x| x as usize == d).count();
            if used > dataset.len() {
                return Err(Error::Invalid(format!(
                    "the {} blend asks {used} samples of {}, which has {}",
                    kind.name(),
                    prefixes[d].0.display(),
                    dataset.len()
                )));
            }
        }
        Ok(GptBlend {
            datasets,
            dataset_index,
            dataset_sample_index,
        })
    }

    /// Samples in the mixture.
    pub fn len(&self) -> usize {
        self.dataset_index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.dataset_index.is_empty()
    }

    /// Which dataset sample `i` comes from, and its sample number there.
    pub fn source(&self, i: usize) -> (usize, usize) {
        (
            self.dataset_index[i] as usize,
            self.dataset_sample_index[i] as usize,
        )
    }

    /// The mixed datasets.
    pub fn datasets(&self) -> &[GptDataset] {
        &self.datasets
    }

    /// Samples `indices` of the mixture as one batch.
    pub fn batch(&self, indices: &[usize]) -> GptBatch {
        let seq = self.datasets[0].config().seq_length;
        let mut batch = GptBatch::zeroed(indices.len(), seq);
        let mut text = Vec::new();
        for (row, &i) in indices.iter().enumerate() {
            let (d, s) = self.source(i);
            self.datasets[d].fill_row(s, &mut batch, row, &mut text);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_follows_the_weights() {
        let (datasets, samples) = blending_indices(&[0.3, 0.7], 10);
        assert_eq!(datasets, [1, 0, 1, 1, 0, 1, 1, 0, 1, 1]);
        assert_eq!(samples[..4], [0, 0, 1, 2]);
        assert_eq!(sizes_per_dataset(&[0.3, 0.7], 100, SURPLUS), [31, 71]);
        assert!(normalize(&[0.0, 0.0]).is_err());
        let parsed = parse_data_path(&["0.3", "a", "0.7", "b"]).unwrap();
        assert_eq!(
            parsed,
            [(PathBuf::from("a"), 0.3), (PathBuf::from("b"), 0.7)]
        );
        assert_eq!(
            parse_data_path(&["a"]).unwrap(),
            [(PathBuf::from("a"), 1.0)]
        );
        let err = parse_data_path(&["a", "b"]).unwrap_err().to_string();
        assert!(err.contains("\"a\" (before \"b\")"), "{err}");
        assert!(parse_data_path(&["1", "a", "b"]).is_err());
    }
}
