//! AdamW and gradient clipping by global norm, over gradients named by parameter path
//! (`blocks.0.attn.qkv.weight`, the names of `model.safetensors`).
//!
//! Why not burn's `AdamW` + `GradientClippingConfig`: burn clips each tensor by its own norm,
//! not all of them by their global norm as Megatron and PyTorch do; its optimizer state is keyed
//! by `ParamId`s that a model rebuilt from a checkpoint does not share; and a step needs the
//! gradients unscaled and checked for overflow (fp16) before any moment moves. Here gradients
//! are plain tensors keyed by path, so accumulation, all-reduce, unscaling, the norm and the
//! update are a few loops, and the state saves as safetensors next to the model.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor};
use serde::{Deserialize, Serialize};

use crate::collective::{BUCKET_ELEMENTS, Collective};
use crate::flat::{Layout, read_window, write_window};
use crate::{Error, Result};

/// Flattened gradients by parameter path.
#[derive(Clone, Debug, Default)]
pub struct Grads {
    /// Path → gradient, flattened.
    pub by_path: BTreeMap<String, Tensor<1>>,
}

struct Collect<'a> {
    path: Vec<String>,
    grads: &'a mut Gradients,
    out: &'a mut Grads,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        if let Some(grad) = param.val().grad_remove(self.grads) {
            // A parameter held in half precision has a half gradient: accumulated in f32.
            let grad = grad.cast(burn::tensor::FloatDType::F32);
            let n = grad.shape().num_elements();
            self.out
                .by_path
                .insert(self.path.join("."), grad.reshape([n]));
        }
    }
}

impl Grads {
    /// Takes the gradients of `model`'s parameters out of a backward pass.
    pub fn from_backward<M: Module>(mut grads: Gradients, model: &M) -> Grads {
        let mut out = Grads::default();
        model.visit(&mut Collect {
            path: Vec::new(),
            grads: &mut grads,
            out: &mut out,
        });
        out
    }

    /// Adds `other` into these (accumulation over micro-batches; the all-reduce of data
    /// parallelism, after moving `other` to this side's device).
    pub fn add(&mut self, other: Grads, device: &Device) {
        for (path, grad) in other.by_path {
            let grad = grad.to_device(device);
            let sum = match self.by_path.remove(&path) {
                Some(mine) => mine + grad,
                None => grad,
            };
            self.by_path.insert(path, sum);
        }
    }

    /// Sums these gradients over the ranks of `collective`, in fixed buckets of the flat
    /// vector in path order ([`crate::flat`]): each bucket is read from the gradient tensors,
    /// summed, and written back into them in place, so the host holds one bucket, never a
    /// copy of every gradient. Every rank must hold the same paths and sizes (the same
    /// model). Returns the bytes reduced.
    pub fn all_reduce(&mut self, collective: &dyn Collective) -> Result<u64> {
        if collective.world() == 1 {
            return Ok(0);
        }
        let shapes: BTreeMap<String, Vec<usize>> = self
            .by_path
            .iter()
            .map(|(path, grad)| (path.clone(), vec![grad.dims()[0]]))
            .collect();
        let layout = Layout::new(&shapes, 1);
        let mut bucket = Vec::with_capacity(BUCKET_ELEMENTS.min(layout.total));
        for (i, start) in (0..layout.total).step_by(BUCKET_ELEMENTS).enumerate() {
            let window = start..(start + BUCKET_ELEMENTS).min(layout.total);
            bucket.clear();
            read_window(&layout, &self.by_path, window.clone(), &mut bucket);
            collective.all_reduce_f32(
                &mut bucket,
                &format!("the all-reduce of gradient bucket {i}"),
            )?;
            write_window(&layout, &mut self.by_path, window, &bucket, None);
        }
        Ok(4 * layout.total as u64)
    }

    /// Multiplies every gradient by `factor` (unscaling, clipping).
    pub fn scale(&mut self, factor: f64) {
        if factor == 1.0 {
            return;
        }
        let by_path = std::mem::take(&mut self.by_path);
        self.by_path = by_path
            .into_iter()
            .map(|(p, g)| (p, g.mul_scalar(factor)))
            .collect();
    }

    /// The L2 norm of all gradients together; inf or NaN when any element is. One read back
    /// from the device for the whole model.
    pub fn global_norm(&self) -> f64 {
        self.sum_of_squares().sqrt()
    }

    /// The squared L2 norm of these gradients (one read back for all of them), in f64.
    pub fn sum_of_squares(&self) -> f64 {
        self.sum_of_squares_of(|_| true)
    }

    /// [`Grads::sum_of_squares`] of the gradients whose path `keep` accepts.
    pub fn sum_of_squares_of(&self, keep: impl Fn(&str) -> bool) -> f64 {
        let squares: Vec<Tensor<1>> = self
            .by_path
            .iter()
            .filter(|(path, _)| keep(path))
            .map(|(_, g)| g.clone().powi_scalar(2).sum())
            .collect();
        if squares.is_empty() {
            return 0.0;
        }
        let total: f32 = Tensor::cat(squares, 0).sum().into_scalar();
        f64::from(total)
    }
}

pub(crate) struct Shapes {
    path: Vec<String>,
    out: BTreeMap<String, Vec<usize>>,
    trainable_only: bool,
}

impl ModuleVisitor for Shapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.trainable_only || param.is_require_grad() {
            self.out
                .insert(self.path.join("."), param.lazy_shape().to_vec());
        }
    }
}

/// Every float parameter of `model` (only those that get gradients when `trainable_only`) by
/// path, with its shape.
pub(crate) fn shapes_of<M: Module>(
    model: &M,
    trainable_only: bool,
) -> BTreeMap<String, Vec<usize>> {
    let mut shapes = Shapes {
        path: Vec::new(),
        out: BTreeMap::new(),
        trainable_only,
    };
    model.visit(&mut shapes);
    shapes.out
}

/// Every float parameter of `model` by path, with its shape.
pub fn parameter_shapes<M: Module>(model: &M) -> BTreeMap<String, Vec<usize>> {
    shapes_of(model, false)
}

/// Checks that every moment of `optimizer` belongs to a parameter of `model` of its size: a
/// checkpoint of another model shape is refused instead of silently restarting its moments.
pub fn check_moments<M: Module>(model: &M, optimizer: &AdamW) -> Result<()> {
    if let Some(shard) = &optimizer.shard {
        return crate::zero::check_pieces(shard, &optimizer.moments);
    }
    let shapes = parameter_shapes(model);
    for (path, moments) in &optimizer.moments {
        let n = moments.m.shape().num_elements();
        match shapes.get(path) {
            Some(shape) if shape.iter().product::<usize>() == n => {}
            Some(shape) => {
                return Err(Error::Config {
                    field: "load",
                    reason: format!(
                        "the optimizer state of `{path}` has {n} values, the parameter is {shape:?}"
                    ),
                });
            }
            None => {
                return Err(Error::Config {
                    field: "load",
                    reason: format!("the optimizer state names `{path}`, which the model lacks"),
                });
            }
        }
    }
    Ok(())
}

/// Scales gradients whose global norm exceeds `max_norm` down to it (PyTorch's
/// `clip_grad_norm_`, Megatron's `--clip-grad`); returns the norm before clipping.
pub fn clip_by_global_norm(grads: &mut Grads, max_norm: f64) -> f64 {
    let norm = grads.global_norm();
    clip_to(grads, norm, max_norm);
    norm
}

/// Scales `grads`, whose global norm is `norm` (computed across ranks when they are sharded),
/// down to `max_norm` when above it.
pub fn clip_to(grads: &mut Grads, norm: f64, max_norm: f64) {
    if norm.is_finite() && norm > max_norm {
        // PyTorch's epsilon, so a clipped norm lands just under the bound.
        grads.scale(max_norm / (norm + 1e-6));
    }
}

/// AdamW's constants (`--adam-beta1 --adam-beta2 --adam-eps --weight-decay`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices and embeddings only.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// Megatron's defaults.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Checks the values, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: f64| {
            Err(Error::Config {
                field,
                reason: format!("{value} is out of range"),
            })
        };
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("adam-beta1", self.beta1);
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("adam-beta2", self.beta2);
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("adam-eps", self.eps);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight-decay", self.weight_decay);
        }
        Ok(())
    }
}

/// Whether weight decay applies to a parameter: not to biases nor to norm weights (Megatron's
/// `no_weight_decay_cond`: biases and 1-D parameters), which are exactly the rank-1 tensors.
pub fn decays(rank: usize) -> bool {
    rank >= 2
}

/// One parameter's moments, flattened.
#[derive(Clone, Debug)]
pub struct Moments {
    /// First moment (`exp_avg`).
    pub m: Tensor<1>,
    /// Second moment (`exp_avg_sq`).
    pub v: Tensor<1>,
}

/// AdamW with decoupled weight decay (Loshchilov & Hutter; PyTorch's `torch.optim.AdamW`
/// arithmetic): `p ← p·(1 − lr·wd) − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Constants.
    pub config: AdamWConfig,
    /// Updates applied so far (`t` of the bias corrections).
    pub step: u64,
    /// Moments by parameter path (of the pieces this rank owns when sharded).
    pub moments: BTreeMap<String, Moments>,
    /// This rank's share when the moments are sharded across ranks
    /// (`--use-distributed-optimizer`, [`crate::zero`]); `None`: every rank holds them all.
    pub shard: Option<crate::zero::Shard>,
    /// The f32 master weights of this rank's pieces, when the sharded optimizer holds the
    /// model itself in half precision ([`crate::zero::Master`]).
    pub master: Option<crate::zero::Master>,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: BTreeMap::new(),
            shard: None,
            master: None,
        }
    }

    /// Applies one update with rate `lr` to every parameter of `model` that has a gradient.
    pub fn update<M: Module>(&mut self, model: M, grads: Grads, lr: f64) -> M {
        self.step += 1;
        let mut mapper = Update {
            path: Vec::new(),
            grads,
            optimizer: self,
            lr,
        };
        model.map(&mut mapper)
    }
}

/// AdamW's update of one parameter's flat `value` (or a piece of it) by `grad`, at step `t`:
/// the new value and moments.
pub fn adamw_update(
    value: Tensor<1>,
    grad: Tensor<1>,
    moments: Option<Moments>,
    c: AdamWConfig,
    t: u64,
    lr: f64,
    decay: bool,
) -> (Tensor<1>, Moments) {
    let (m, v) = match moments {
        Some(Moments { m, v }) => (
            m.mul_scalar(c.beta1) + grad.clone().mul_scalar(1.0 - c.beta1),
            v.mul_scalar(c.beta2) + grad.clone().mul(grad).mul_scalar(1.0 - c.beta2),
        ),
        // Zero-initialised moments after one step are (1−β)·g and (1−β)·g².
        None => (
            grad.clone().mul_scalar(1.0 - c.beta1),
            grad.clone().mul(grad).mul_scalar(1.0 - c.beta2),
        ),
    };
    let t = t as i32;
    let correction1 = 1.0 - c.beta1.powi(t);
    let correction2 = 1.0 - c.beta2.powi(t);
    let denominator = v
        .clone()
        .sqrt()
        .div_scalar(correction2.sqrt())
        .add_scalar(c.eps);
    let mut value = value;
    if decay && c.weight_decay > 0.0 {
        value = value.mul_scalar(1.0 - lr * c.weight_decay);
    }
    let value = value - m.clone().div(denominator).mul_scalar(lr / correction1);
    (value, Moments { m, v })
}

struct Update<'a> {
    path: Vec<String>,
    grads: Grads,
    optimizer: &'a mut AdamW,
    lr: f64,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(grad) = self.grads.by_path.remove(&path) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let n = tensor.shape().num_elements();
        let value = tensor.inner().reshape([n]);
        let grad = grad.to_device(&value.device());
        let moments = self.optimizer.moments.remove(&path);
        let (value, moments) = adamw_update(
            value,
            grad,
            moments,
            self.optimizer.config,
            self.optimizer.step,
            self.lr,
            decays(D),
        );
        self.optimizer.moments.insert(path, moments);
        let mut updated = Tensor::from_inner(value.reshape(dims));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn clipping_bounds_the_global_norm_and_keeps_directions() {
        let device = Device::flex();
        let mut grads = Grads::default();
        grads.by_path.insert(
            "a".into(),
            Tensor::from_data(TensorData::new(vec![3.0f32, 0.0], [2]), &device),
        );
        grads.by_path.insert(
            "b".into(),
            Tensor::from_data(TensorData::new(vec![0.0f32, 4.0], [2]), &device),
        );
        let before = clip_by_global_norm(&mut grads, 1.0);
        assert!((before - 5.0).abs() < 1e-6);
        let after = grads.global_norm();
        assert!(after <= 1.0 && after > 0.999, "{after}");
        let a: Vec<f32> = lmforge_model::host_values(grads.by_path["a"].clone());
        let b: Vec<f32> = lmforge_model::host_values(grads.by_path["b"].clone());
        assert!((a[0] / b[1] - 0.75).abs() < 1e-6, "the ratio 3:4 is kept");
        // Under the bound nothing moves.
        let before = clip_by_global_norm(&mut grads, 10.0);
        assert!((before - after).abs() < 1e-9);
    }

    #[test]
    fn a_non_finite_gradient_gives_a_non_finite_norm() {
        let device = Device::flex();
        let mut grads = Grads::default();
        grads.by_path.insert(
            "a".into(),
            Tensor::from_data(TensorData::new(vec![1.0f32, f32::INFINITY], [2]), &device),
        );
        assert!(!grads.global_norm().is_finite());
        grads.by_path.insert(
            "a".into(),
            Tensor::from_data(TensorData::new(vec![f32::NAN, 1.0], [2]), &device),
        );
        assert!(!clip_by_global_norm(&mut grads, 1.0).is_finite());
    }

    #[test]
    fn bad_constants_name_the_flag() {
        let c = AdamWConfig {
            beta2: 1.0,
            ..AdamWConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("adam-beta2"));
        assert!(decays(2) && !decays(1));
    }
}
