//! One optimizer step: micro-batches forward and backward on every data-parallel rank (in the
//! chosen precision, the loss scaled), gradients summed across micro-batches and ranks,
//! unscaled, checked for overflow, clipped by global norm, and applied by AdamW.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, Grads, clip_by_global_norm};
use crate::scaler::LossScaler;
use crate::{Error, Result};

/// The arithmetic of forward and backward (`--fp16`, `--bf16`; fp32 by default). Weights and
/// optimizer state stay fp32 ("master weights"); in half precision each micro-batch runs on a
/// copy cast to half, and the gradient flows back through the cast to the fp32 weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// bfloat16 compute (no loss scaling: bf16 has f32's range).
    Bf16,
    /// float16 compute with loss scaling.
    Fp16,
}

impl Precision {
    fn dtype(self) -> Option<FloatDType> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::Fp16 => Some(FloatDType::F16),
        }
    }
}

struct Cast(FloatDType);

impl ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

/// The model a micro-batch runs on: `model` itself in fp32, else a half-precision copy whose
/// weights are tracked casts of `model`'s.
pub fn compute_copy<M: Module + Clone>(model: &M, precision: Precision) -> M {
    match precision.dtype() {
        None => model.clone(),
        Some(dtype) => model.clone().map(&mut Cast(dtype)),
    }
}

/// How a step is taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// Micro-batches each rank runs per step (global batch / (micro batch × ranks)).
    pub micro_batches: usize,
    /// Clip the global gradient norm to this (`--clip-grad`; `None` or 0: no clipping).
    pub clip_grad: Option<f64>,
    /// Arithmetic.
    pub precision: Precision,
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepOutcome {
    /// Mean of the micro-batch losses (unscaled).
    pub loss: f64,
    /// Global gradient norm before clipping (unscaled); inf or NaN on an overflow.
    pub grad_norm: f64,
    /// Whether the update was skipped (an fp16 overflow).
    pub skipped: bool,
    /// The loss scale the step used.
    pub loss_scale: f64,
}

/// Runs one step. `loss_of(model, rank, micro)` returns the mean loss of that rank's micro-batch
/// on `model` (which lives on `ranks[rank]`). Returns the updated model (unchanged when the
/// step was skipped).
///
/// Data parallelism: rank `r > 0` works on `model` forked to `ranks[r]`, and its gradients are
/// summed into rank 0's — an all-reduce through the host for backends without collectives
/// (burn 0.22's flex implements none), after which every rank would apply the same update;
/// here the one updated model is forked again at the next step.
pub fn train_step<M, F>(
    model: M,
    ranks: &[Device],
    optimizer: &mut AdamW,
    scaler: &mut LossScaler,
    lr: f64,
    config: &StepConfig,
    mut loss_of: F,
) -> Result<(M, StepOutcome)>
where
    M: Module + Clone,
    F: FnMut(&M, usize, usize) -> Result<Tensor<1>>,
{
    let Some(device) = ranks.first() else {
        return Err(Error::Config {
            field: "device",
            reason: "no device to train on".into(),
        });
    };
    if config.micro_batches == 0 {
        return Err(Error::Config {
            field: "global-batch-size",
            reason: "no micro-batch per step".into(),
        });
    }
    let scale = scaler.scale();
    let total_micro = (config.micro_batches * ranks.len()) as f64;
    let mut grads = Grads::default();
    let mut loss_sum = 0.0f64;
    let mut loss_overflow = false;
    for (rank, rank_device) in ranks.iter().enumerate() {
        let replica = if rank == 0 {
            model.clone()
        } else {
            model.clone().fork(rank_device)
        };
        for micro in 0..config.micro_batches {
            let compute = compute_copy(&replica, config.precision);
            let loss = loss_of(&compute, rank, micro)?;
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                if !scaler.skips_overflows() {
                    return Err(Error::NonFinite(format!(
                        "the loss of micro-batch {micro} on rank {rank} is {value}"
                    )));
                }
                loss_overflow = true;
            }
            loss_sum += value;
            let scaled = loss.mul_scalar(scale / total_micro);
            let backward = scaled.backward();
            grads.add(Grads::from_backward(backward, &replica), device);
        }
    }
    let loss = loss_sum / total_micro;
    grads.scale(1.0 / scale);
    let grad_norm = match config.clip_grad.filter(|&c| c > 0.0) {
        Some(max) => clip_by_global_norm(&mut grads, max),
        None => grads.global_norm(),
    };
    let overflow = loss_overflow || !grad_norm.is_finite();
    if overflow && !scaler.skips_overflows() {
        return Err(Error::NonFinite(format!(
            "the gradient norm is {grad_norm} (loss {loss})"
        )));
    }
    scaler.update(overflow);
    let outcome = StepOutcome {
        loss,
        grad_norm,
        skipped: overflow,
        loss_scale: scale,
    };
    if overflow {
        return Ok((model, outcome));
    }
    Ok((optimizer.update(model, grads, lr), outcome))
}
