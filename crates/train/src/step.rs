//! One optimizer step: micro-batches forward and backward on every data-parallel rank (in the
//! chosen precision, the loss scaled), gradients summed across micro-batches and ranks,
//! unscaled, checked for overflow, clipped by global norm, and applied by AdamW.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::collective::Collective;
use crate::optim::{AdamW, Grads, clip_to};
use crate::scaler::LossScaler;
use crate::zero::sharded_norm;
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
    /// The half dtype, `None` for f32.
    pub fn dtype(self) -> Option<FloatDType> {
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
    /// Bytes of gradients this rank all-reduced (0 in one process).
    pub reduced_bytes: u64,
    /// Seconds spent in the all-reduce of the gradients, host copies included.
    pub reduce_seconds: f64,
    /// Seconds this rank waited for the slowest rank to finish its backward passes.
    pub wait_seconds: f64,
}

/// Runs one step. `loss_of(model, device, micro)` returns the mean loss of micro-batch
/// `micro` of local device `device` on `model` (which lives on `devices[device]`). Returns the
/// updated model (unchanged when the step was skipped).
///
/// Data parallelism has two levels, both summing gradients: the devices of this process
/// (device `d > 0` works on `model` forked to it, and its gradients are summed into device
/// 0's, through the host for backends without collectives: burn 0.22's flex implements none),
/// then the processes of the run through `collective` (one process per device under a
/// launcher), after which every process holds the same sum and applies the same update. The
/// data-parallel rank of local device `d` is `collective.rank() × devices + d`; micro-batch
/// `k` of data-parallel rank `r` is the step's micro-batch `k × dp + r`, the order in which a
/// one-device run with accumulation sees the same samples, and in which the logged loss is
/// summed on every world size.
#[allow(clippy::too_many_arguments)]
pub fn train_step<M, F>(
    model: M,
    devices: &[Device],
    collective: &dyn Collective,
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
    let precision = config.precision;
    let grads_of = |replica: &M, d: usize, micro: usize, factor: f64| {
        let compute = compute_copy(replica, precision);
        let loss = loss_of(&compute, d, micro)?;
        let value = f64::from(loss.clone().into_scalar::<f32>());
        // A non-finite loss on one rank is acted on by all, after the reduction.
        let backward = loss.mul_scalar(factor).backward();
        Ok((value, Grads::from_backward(backward, replica)))
    };
    train_step_with(
        model, devices, collective, None, optimizer, scaler, lr, config, grads_of,
    )
}

/// [`train_step`] with each micro-batch's loss and gradients computed by
/// `grads_of(replica, device, micro, factor)`, which returns the loss and the gradients of
/// `factor × loss` for the parameters of `replica` (the model on `devices[device]`): what a
/// tensor-parallel group computes together ([`crate::tensor_parallel::tp_gpt_grads`]).
/// `collective` is then the data-parallel group, and `tensor_parallel` the tensor-parallel
/// group, over which the gradient norm is completed (each parameter that is cut counted on
/// every rank of it, each replicated one once).
#[allow(clippy::too_many_arguments)]
pub fn train_step_with<M, F>(
    model: M,
    devices: &[Device],
    collective: &dyn Collective,
    tensor_parallel: Option<&dyn Collective>,
    optimizer: &mut AdamW,
    scaler: &mut LossScaler,
    lr: f64,
    config: &StepConfig,
    mut grads_of: F,
) -> Result<(M, StepOutcome)>
where
    M: Module + Clone,
    F: FnMut(&M, usize, usize, f64) -> Result<(f64, Grads)>,
{
    let Some(device) = devices.first() else {
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
    let sharded = optimizer.shard.is_some();
    keep_freed_pages(!sharded);
    let scale = scaler.scale();
    let dp = devices.len() * collective.world();
    let total_micro = config.micro_batches * dp;
    let mut grads = Grads::default();
    // Each micro-batch's loss in its slot of the step (see above): summed over ranks exactly,
    // since every slot has one writer.
    let mut losses = vec![0.0f64; total_micro];
    for (d, local_device) in devices.iter().enumerate() {
        let dp_rank = collective.rank() * devices.len() + d;
        let replica = if d == 0 {
            model.clone()
        } else {
            model.clone().fork(local_device)
        };
        for micro in 0..config.micro_batches {
            let (value, micro_grads) = grads_of(&replica, d, micro, scale / total_micro as f64)?;
            losses[micro * dp + dp_rank] = value;
            grads.add(micro_grads, device);
        }
    }
    // The barrier is free (the all-reduce would wait as long) and tells the time spent waiting
    // for the slowest rank from the time of the reduction itself.
    let waited = std::time::Instant::now();
    if collective.world() > 1 {
        collective.barrier("waiting for every rank's backward pass")?;
    }
    let wait_seconds = waited.elapsed().as_secs_f64();
    let reduce_started = std::time::Instant::now();
    if sharded {
        release_freed_pages();
    }
    // A sharded optimizer needs only its own pieces of the sum (`crate::zero`).
    let reduced_bytes = match &optimizer.shard {
        Some(shard) => grads.reduce_scatter(collective, shard, device)?,
        None => grads.all_reduce(collective)?,
    };
    let reduce_seconds = reduce_started.elapsed().as_secs_f64();
    collective.all_reduce_f64(&mut losses, "the all-reduce of the step's losses")?;
    if let Some(j) = losses.iter().position(|l| !l.is_finite())
        && !scaler.skips_overflows()
    {
        return Err(Error::NonFinite(format!(
            "the loss of micro-batch {} on data-parallel rank {} is {}",
            j / dp,
            j % dp,
            losses[j]
        )));
    }
    let loss_overflow = losses.iter().any(|l| !l.is_finite());
    let loss = losses.iter().sum::<f64>() / total_micro as f64;
    grads.scale(1.0 / scale);
    let grad_norm = match (&optimizer.shard, tensor_parallel) {
        (None, None) => grads.global_norm(),
        (Some(_), None) => sharded_norm(collective, &grads)?,
        (None, Some(group)) => crate::tensor_parallel::tp_norm(group, &grads)?,
        (Some(_), Some(group)) => {
            crate::tensor_parallel::tp_sharded_norm(group, collective, &grads)?
        }
    };
    if let Some(max) = config.clip_grad.filter(|&c| c > 0.0) {
        clip_to(&mut grads, grad_norm, max);
    }
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
        reduced_bytes,
        reduce_seconds,
        wait_seconds,
    };
    if overflow {
        return Ok((model, outcome));
    }
    // The reduction freed the whole gradients (sharded) or its buckets: the update's host
    // vector of updated values is one more large block.
    if sharded {
        release_freed_pages();
    }
    let (model, gather_seconds) = optimizer.update_sharded(model, grads, lr, collective)?;
    let mut outcome = outcome;
    // A sharded optimizer's all-gather of the weights is the second half of the reduction.
    outcome.reduce_seconds += gather_seconds;
    Ok((model, outcome))
}

/// Gives the pages of freed memory back to the system, where mimalloc (the `lmforge` binary's
/// allocator) would keep them for a while: the micro-batches' gradients, freed as they are
/// summed, are many tensor-sized blocks that the reduction's one large host vector cannot
/// reuse, so without this they count in the step's peak beside it (measured at one rank: 1.20
/// × the counted peak without, 1.10-1.11 with, docs/benchmarks.md). Called before the
/// reduction and before the update of a sharded optimizer (ZeRO-1, chosen for its memory), and
/// before the baseline is read; where mimalloc is not the allocator (the tests) it does
/// nothing.
pub(crate) fn release_freed_pages() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        mi_collect(true)
    };
}

/// Whether mimalloc keeps the pages of freed memory (`keep`) or gives them back to the system
/// after its delay (mimalloc 3's default, 1 s). Kept unless the optimizer is sharded: a step allocates and frees the
/// same sizes every time, and pages given back are page-faulted and zeroed again by the next
/// use, which took a quarter of the tiny GPT's step (`clear_page_erms` in `perf`, 3,195 against
/// 4,308 tokens/s, docs/benchmarks.md) for 10 % less resident memory.
pub(crate) fn keep_freed_pages(keep: bool) {
    const PURGE_DELAY: i32 = 15; // mi_option_purge_delay in mimalloc.h's mi_option_e
    let delay_ms = if keep { -1 } else { 1000 };
    // SAFETY: `mi_option_set` takes no pointer and may be called from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        mi_option_set(PURGE_DELAY, delay_ms)
    };
}

// The library is linked for its `mi_collect`, which its Rust binding declares only behind a
// feature that needs one more crate.
use libmimalloc_sys as _;
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_collect(force: bool);
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}
