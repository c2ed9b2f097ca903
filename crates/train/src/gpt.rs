//! GPT pretraining: next-token cross-entropy over Megatron's samples, with its loss mask.

use std::path::Path;

use burn::tensor::{DType, Device, FloatDType, IndexingUpdateOp, Int, Tensor, TensorData};
use lmforge_dataset::GptBatch;
use lmforge_model::Gpt;

use crate::pretrain::{Objective, TensorParallel};
use crate::{Error, Result};

/// Token ids of a row-major batch as a `[rows, columns]` tensor.
pub(crate) fn ids_tensor(
    ids: &[u32],
    rows: usize,
    columns: usize,
    device: &Device,
) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(data, [rows, columns]), device)
}

/// Mean next-token cross-entropy of `batch` over the positions its loss mask keeps (Megatron's
/// `loss_func`: `sum(losses · mask) / sum(mask)`). Logits from a half-precision model are
/// widened to f32 before the softmax.
pub fn gpt_loss(model: &Gpt, batch: &GptBatch, device: &Device) -> Result<Tensor<1>> {
    let kept = check_batch(batch, model.config().vocab_size)?;
    let (rows, seq) = (batch.batch_size, batch.seq_length);
    let weights: Vec<f32> = batch.loss_mask.iter().map(|m| m / kept).collect();
    let tokens = ids_tensor(&batch.tokens, rows, seq, device);
    let features = model.features(tokens)?;
    let d_model = features.dims()[2];
    let (projection, bias) = model.output_projection();
    Ok(head_cross_entropy(
        features.reshape([rows * seq, d_model]),
        projection,
        bias,
        &batch.labels,
        &weights,
    ))
}

/// Checks that `batch` is whole, that its ids are below `vocab` and that its loss mask keeps
/// some position; returns how many it keeps.
pub(crate) fn check_batch(batch: &GptBatch, vocab: usize) -> Result<f32> {
    let (rows, seq) = (batch.batch_size, batch.seq_length);
    if rows == 0 || batch.tokens.len() != rows * seq || batch.labels.len() != rows * seq {
        return Err(Error::Config {
            field: "batch",
            reason: format!("{rows}×{seq} batch with {} tokens", batch.tokens.len()),
        });
    }
    if let Some(&bad) = batch
        .tokens
        .iter()
        .chain(&batch.labels)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(Error::Config {
            field: "data-path",
            reason: format!(
                "token id {bad} in the data is outside the model's vocabulary of {vocab}: \
                 the data was tokenized with another tokenizer"
            ),
        });
    }
    let kept: f32 = batch.loss_mask.iter().sum();
    if kept <= 0.0 {
        return Err(Error::Config {
            field: "batch",
            reason: "the loss mask keeps no position".into(),
        });
    }
    Ok(kept)
}

fn f32_tensor<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// `Σᵢ wᵢ · −log softmax(hᵢ · Wᵀ + b)[labelᵢ]` for features `h` `[n, d]`, an output projection
/// `W` `[vocab, d]` and bias `b`, with the gradients computed in closed form. With `p` the
/// softmax and `Y` the one-hot labels, `g = w ∘ (p − Y)`, so
/// `∂h = w ∘ (p·W − W[labels])`, `∂W = pᵀ·(w ∘ h) − Σᵢ wᵢhᵢ added at row labelᵢ`, and
/// `∂b = pᵀ·w − Σᵢ wᵢ added at labelᵢ`: the weights and the one-hot part only ever touch
/// `[n, d]` and `[vocab, d]` matrices.
///
/// Why: at language-model vocabularies the `[n, vocab]` logits dominate memory traffic.
/// Autodiff through burn's composed log-softmax (max, subtract, exp, sum, log, subtract, gather)
/// allocates and walks that matrix about a dozen times forward and backward; here it is written
/// once by the matmul, once by a fused softmax, and read by the two gradient matmuls — the
/// fusion PyTorch's `cross_entropy` and Megatron's vocab-parallel loss do by hand too. Only the
/// small gradients enter the autodiff graph (as `Σ h ∘ ∂h` and `Σ W ∘ ∂W` with `∂h`, `∂W` held
/// constant). Logits are f32 whatever the model's precision. A probability that underflows f32
/// (a logit gap beyond ~87) reports a per-token loss of 87.3; its gradient stays exact.
pub fn head_cross_entropy(
    features: Tensor<2>,
    projection: Tensor<2>,
    bias: Option<Tensor<1>>,
    labels: &[u32],
    weights: &[f32],
) -> Tensor<1> {
    let (features, projection) = (f32_tensor(features), f32_tensor(projection));
    let bias = bias.map(f32_tensor);
    let [n, _] = features.dims();
    let (h, w) = (features.clone().inner(), projection.clone().inner());
    let device = h.device();
    let mut logits = h.clone().matmul(w.clone().transpose());
    if let Some(b) = &bias {
        logits = logits + b.clone().inner().unsqueeze();
    }
    let rows: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
    let weight = Tensor::<2>::from_data(TensorData::new(weights.to_vec(), [n, 1]), &device);
    let p = lmforge_model::fused::softmax_last(logits);
    let p_label = p.clone().gather(1, rows.clone().reshape([n, 1]));
    let value = p_label
        .clamp_min(f32::MIN_POSITIVE)
        .log()
        .mul(weight.clone())
        .sum()
        .neg();
    if !features.is_autodiff() {
        return value;
    }
    let d_features = (p.clone().matmul(w.clone()) - w.select(0, rows.clone())).mul(weight.clone());
    let weighted = h.mul(weight.clone());
    let d_projection = weighted
        .clone()
        .transpose()
        .matmul(p.clone())
        .transpose()
        .select_assign(0, rows.clone(), weighted.neg(), IndexingUpdateOp::Add);
    let mut surrogate = features.mul(Tensor::from_inner(d_features)).sum()
        + projection.mul(Tensor::from_inner(d_projection)).sum();
    if let Some(b) = bias {
        let d_bias = weight
            .clone()
            .transpose()
            .matmul(p)
            .reshape([-1])
            .select_assign(0, rows, weight.reshape([-1]).neg(), IndexingUpdateOp::Add);
        surrogate = surrogate + b.mul(Tensor::from_inner(d_bias)).sum();
    }
    let shift = value - surrogate.clone().inner();
    surrogate + Tensor::from_inner(shift)
}

/// GPT pretraining; the checkpoint gets `tokenizer.json` beside the weights when given.
pub struct GptObjective {
    /// The bytes of the tokenizer.json the data was made with.
    pub tokenizer_json: Option<Vec<u8>>,
}

impl Objective<Gpt> for GptObjective {
    fn loss(
        &self,
        model: &Gpt,
        batch: &GptBatch,
        _seed: u64,
        device: &Device,
    ) -> Result<Tensor<1>> {
        gpt_loss(model, batch, device)
    }

    fn save(&self, model: &Gpt, dir: &Path) -> Result<()> {
        lmforge_model::save_gpt(model, dir)?;
        if let Some(json) = &self.tokenizer_json {
            lmforge_model::checkpoint::write_atomic(&dir.join("tokenizer.json"), json)?;
        }
        Ok(())
    }

    fn tensor_parallel(&self) -> Option<&dyn TensorParallel<Gpt>> {
        Some(self)
    }
}

impl TensorParallel<Gpt> for GptObjective {
    fn shard(&self, model: Gpt, tp: usize, rank: usize) -> Result<Gpt> {
        crate::tensor_parallel::shard_model(model, tp, rank)
    }

    fn gather(&self, model: &Gpt, group: &dyn crate::Collective) -> Result<Gpt> {
        crate::tensor_parallel::gather_model(model, group)
    }

    fn grads(
        &self,
        model: &Gpt,
        params: &Gpt,
        batch: &GptBatch,
        group: &dyn crate::Collective,
        factor: Option<f64>,
        device: &Device,
    ) -> Result<(f64, crate::optim::Grads)> {
        match factor {
            Some(f) => {
                crate::tensor_parallel::tp_gpt_grads_of_copy(model, params, batch, group, f, device)
            }
            None => Ok((
                crate::tensor_parallel::tp_gpt_loss(model, batch, group, device)?,
                crate::optim::Grads::default(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::log_softmax;

    fn grads_of(loss: Tensor<1>, leaves: &[&Tensor<2>], bias: &Tensor<1>) -> (f32, Vec<Vec<f32>>) {
        let grads = loss.backward();
        let mut out: Vec<Vec<f32>> = leaves
            .iter()
            .map(|t| lmforge_model::host_values(t.grad(&grads).unwrap()))
            .collect();
        out.push(lmforge_model::host_values(bias.grad(&grads).unwrap()));
        (loss.into_scalar(), out)
    }

    #[test]
    fn closed_form_gradients_equal_autodiff_through_log_softmax() {
        let device = Device::flex().autodiff();
        let plain = Device::flex();
        let h = Tensor::<2>::random([6, 5], Distribution::Normal(0.0, 1.0), &plain);
        let w = Tensor::<2>::random([11, 5], Distribution::Normal(0.0, 1.0), &plain);
        let b = Tensor::<1>::random([11], Distribution::Normal(0.0, 1.0), &plain);
        let labels = [0u32, 3, 10, 5, 5, 7];
        for weights in [[0.25f32, 0.0, 0.25, 0.25, 0.125, 0.125], [1.0 / 6.0; 6]] {
            let leaf2 = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &device).require_grad();
            let leaf1 = |t: &Tensor<1>| Tensor::<1>::from_data(t.to_data(), &device).require_grad();
            let (oh, ow, ob) = (leaf2(&h), leaf2(&w), leaf1(&b));
            let ours =
                head_cross_entropy(oh.clone(), ow.clone(), Some(ob.clone()), &labels, &weights);
            let (ours_value, ours_grads) = grads_of(ours, &[&oh, &ow], &ob);

            let (rh, rw, rb) = (leaf2(&h), leaf2(&w), leaf1(&b));
            let logits = rh.clone().matmul(rw.clone().transpose()) + rb.clone().unsqueeze();
            let index: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
            let index = Tensor::<2, Int>::from_data(TensorData::new(index, [6, 1]), &device);
            let wt = Tensor::<2>::from_data(TensorData::new(weights.to_vec(), [6, 1]), &device);
            let reference = log_softmax(logits, 1).gather(1, index).mul(wt).sum().neg();
            let (ref_value, ref_grads) = grads_of(reference, &[&rh, &rw], &rb);

            assert!(
                (ours_value - ref_value).abs() < 1e-5,
                "{ours_value} vs {ref_value}"
            );
            for (a, b) in ours_grads.iter().zip(&ref_grads) {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-5, "{x} vs {y}");
                }
            }
            // Without autodiff (evaluation) the value alone comes back.
            let value =
                head_cross_entropy(h.clone(), w.clone(), Some(b.clone()), &labels, &weights);
            assert!((value.into_scalar::<f32>() - ref_value).abs() < 1e-5);
        }
    }
}
