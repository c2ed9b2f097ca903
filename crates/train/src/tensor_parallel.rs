//! Tensor parallelism (Megatron's `--tensor-model-parallel-size`) for the GPT: a rank's share
//! of the model ([`shard_model`], cut as `lmforge_model::tensor_parallel` says) and its loss and
//! gradients on a micro-batch ([`tp_gpt_grads`]) computed together with the other ranks of its
//! tensor-parallel group.
//!
//! Megatron's two conjugate operators (the seed's slide): `f` is the identity forward and an
//! all-reduce of the gradient backward, before each column-parallel block; `g` is an all-reduce
//! forward and the identity backward, after each row-parallel block. burn's autodiff sees one
//! process, so `g` is `sum + (partial − partial.detach())` (the forward value is the sum itself,
//! the same bytes on every rank; the gradient reaches `partial` unchanged). `f` needs a
//! collective inside the backward pass, which burn 0.22 has no hook for; so the backward is run
//! segment by segment instead: the forward keeps every half-block's input as a leaf of its own
//! graph, and the backward walks the blocks from the last, all-reducing the gradient of each
//! column-parallel input before going on into the norm and the residual stream below it.
//!
//! The loss is the vocabulary-parallel cross-entropy: each rank holds `vocab / tp` rows of the
//! tied embedding (or columns of the untied head), computes those logits, and the ranks combine
//! the row maxima (all-gather), the sums of exponentials and the target logits (all-reduces);
//! its gradient is closed-form, as `crate::gpt::head_cross_entropy`'s.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use lmforge_dataset::GptBatch;
use lmforge_model::Gpt;
use lmforge_model::tensor_parallel::{Cut, cut, merge, shard};

use crate::collective::Collective;
use crate::gpt::ids_tensor;
use crate::optim::Grads;
use crate::{Error, Result};

/// Rank `rank`'s share of `model` over `tp` tensor-parallel ranks: each parameter cut as
/// Megatron cuts it (the rest replicated).
pub fn shard_model(model: Gpt, tp: usize, rank: usize) -> Result<Gpt> {
    lmforge_model::tensor_parallel::check_config(model.config(), tp)?;
    let mut parts = host_tensors(&model);
    parts.retain(|path, _| cut(path) != Cut::Replicated);
    for (path, (shape, values)) in parts.iter_mut() {
        let (part, part_shape) =
            shard(values, shape, cut(path), tp, rank).map_err(|e| Error::Config {
                field: "tensor-model-parallel-size",
                reason: format!("`{path}`: {e}"),
            })?;
        (*shape, *values) = (part_shape, part);
    }
    Ok(assign(model, &parts))
}

/// Tensors by path: shape and row-major values.
pub type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The whole of tensors cut over the ranks of `group` (every rank calls it with its parts,
/// flattened, by path; all ranks get the merged values and shapes back). `shapes` are the
/// parts' shapes.
pub fn gather_parts(group: &dyn Collective, parts: &HostTensors) -> Result<HostTensors> {
    let tp = group.world();
    let mut out = BTreeMap::new();
    for (path, (shape, values)) in parts {
        let how = cut(path);
        if how == Cut::Replicated || tp == 1 {
            out.insert(path.clone(), (shape.clone(), values.clone()));
            continue;
        }
        let mut all = vec![0.0f32; values.len() * tp];
        group.all_gather_f32(values, &mut all, &format!("gathering `{path}`"))?;
        let pieces: Vec<Vec<f32>> = all.chunks(values.len()).map(<[f32]>::to_vec).collect();
        let (whole, whole_shape) = merge(&pieces, shape, how)?;
        out.insert(path.clone(), (whole_shape, whole));
    }
    Ok(out)
}

/// `t` summed over `group`, in `t`'s dtype, outside any autodiff graph.
fn sum_over(group: &dyn Collective, t: &Tensor<3>, what: &str) -> Result<Tensor<3>> {
    let dims = t.dims();
    let mut values = lmforge_model::host_values(t.clone());
    group.all_reduce_f32(&mut values, what)?;
    let sum = Tensor::<3>::from_data(TensorData::new(values, dims), &t.device());
    Ok(sum.cast(FloatDType::from(t.dtype())))
}

/// `g`: the sum of `partial` over `group` in the forward pass, the identity in the backward.
fn reduce(group: &dyn Collective, partial: Tensor<3>, what: &str) -> Result<Tensor<3>> {
    if group.world() == 1 {
        return Ok(partial);
    }
    let sum = sum_over(group, &partial, what)?;
    Ok(sum + (partial.clone() - partial.detach()))
}

/// The sum over `group` of a gradient (the backward half of `f`).
fn reduce_grad(group: &dyn Collective, grad: Tensor<3>, what: &str) -> Result<Tensor<3>> {
    if group.world() == 1 {
        return Ok(grad);
    }
    sum_over(group, &grad, what)
}

/// A leaf holding `x`'s values, whose gradient a segment's backward pass reports.
fn leaf(x: &Tensor<3>) -> Tensor<3> {
    x.clone().detach().require_grad()
}

/// One half-block of the forward pass, kept for its backward.
struct HalfBlock {
    /// The residual stream coming in (a leaf).
    input: Tensor<3>,
    /// Its norm (graph of `input`).
    normed: Tensor<3>,
    /// The norm's values as the branch's own leaf (the `f` boundary).
    branch_input: Tensor<3>,
    /// What the branch adds to the residual stream (graph of `branch_input`).
    branch: Tensor<3>,
}

/// Runs `surrogate`'s backward pass and takes the gradient of `leaf` out of it, collecting the
/// model's parameter gradients into `grads`.
fn backward_segment(
    surrogate: Tensor<1>,
    leaf: Option<&Tensor<3>>,
    model: &Gpt,
    grads: &mut Grads,
    device: &Device,
) -> Option<Tensor<3>> {
    let mut gradients = surrogate.backward();
    let leaf_grad = leaf.and_then(|l| l.grad_remove(&mut gradients));
    grads.add(Grads::from_backward(gradients, model), device);
    leaf_grad.map(Tensor::from_inner)
}

/// The mean next-token loss of `batch` on this rank's share `model` of a GPT cut over `group`
/// (this rank's place in the group is `group.rank()`), and the gradients of
/// `factor × loss` with respect to this rank's parameters. Every rank of the group calls it on
/// the same batch; the loss is the same bytes on all of them, and so are the gradients of the
/// replicated parameters.
pub fn tp_gpt_grads(
    model: &Gpt,
    batch: &GptBatch,
    group: &dyn Collective,
    factor: f64,
    device: &Device,
) -> Result<(f64, Grads)> {
    tp_gpt(model, model, batch, group, Some(factor), device)
}

/// [`tp_gpt_grads`] of `compute`, a half-precision copy of `params` (`crate::step::compute_copy`):
/// the gradients are those of `params`' f32 weights, the logits and the loss f32.
pub fn tp_gpt_grads_of_copy(
    compute: &Gpt,
    params: &Gpt,
    batch: &GptBatch,
    group: &dyn Collective,
    factor: f64,
    device: &Device,
) -> Result<(f64, Grads)> {
    tp_gpt(compute, params, batch, group, Some(factor), device)
}

/// The loss alone of [`tp_gpt_grads`] (evaluation; `model` may be a `valid()` copy).
pub fn tp_gpt_loss(
    model: &Gpt,
    batch: &GptBatch,
    group: &dyn Collective,
    device: &Device,
) -> Result<f64> {
    Ok(tp_gpt(model, model, batch, group, None, device)?.0)
}

fn tp_gpt(
    model: &Gpt,
    params: &Gpt,
    batch: &GptBatch,
    group: &dyn Collective,
    factor: Option<f64>,
    device: &Device,
) -> Result<(f64, Grads)> {
    let backward = factor.is_some();
    let factor = factor.unwrap_or(0.0);
    // Evaluation runs on a `valid()` copy, whose tensors live on the device under autodiff.
    let device = &if backward {
        device.clone()
    } else {
        model.output_projection().0.device()
    };
    let leaf = |x: &Tensor<3>| if backward { leaf(x) } else { x.clone() };
    let tp = group.world();
    let config = model.config();
    let vocab = config.vocab_size;
    let kept = crate::gpt::check_batch(batch, vocab)?;
    let (rows, seq) = (batch.batch_size, batch.seq_length);
    let rows_per_rank = vocab / tp;
    let vocab_start = group.rank() * rows_per_rank;

    // Forward, segment by segment.
    let tokens = ids_tensor(&batch.tokens, rows, seq, device);
    let embedded = reduce(
        group,
        model.tp_embed_partial(tokens, vocab_start),
        "the all-reduce of the embedding",
    )?;
    let embedded = model.tp_embed_finish(embedded);
    let mut x = embedded.clone().detach();
    let mut halves = Vec::with_capacity(2 * model.num_layers());
    for layer in 0..model.num_layers() {
        for second in [false, true] {
            let input = leaf(&x);
            let normed = model.tp_norm(layer, second, input.clone());
            let branch_input = leaf(&normed);
            let branch = if second {
                let partial = model.tp_mlp_partial(layer, branch_input.clone());
                model.tp_mlp_finish(layer, reduce(group, partial, "the all-reduce of an MLP")?)
            } else {
                let partial = model.tp_attention_partial(layer, branch_input.clone(), tp);
                let summed = reduce(group, partial, "the all-reduce of an attention")?;
                model.tp_attention_finish(layer, summed)
            };
            x = x + branch.clone().detach();
            halves.push(HalfBlock {
                input,
                normed,
                branch_input,
                branch,
            });
        }
    }
    let last = leaf(&x);
    let features = model.tp_final_norm(last.clone());
    let d_model = config.d_model;
    let n = rows * seq;
    let hidden = features
        .clone()
        .detach()
        .reshape([n, d_model])
        .inner()
        .cast(FloatDType::F32);

    // The vocabulary-parallel loss and its closed-form gradient.
    let weights: Vec<f32> = batch.loss_mask.iter().map(|m| m / kept).collect();
    let (projection, head_path, transposed) = output_projection(model);
    let w = projection.clone().inner().cast(FloatDType::F32); // [vocab / tp, d]
    let logits = hidden.clone().matmul(w.clone().transpose()); // [n, vocab / tp]
    let local_max: Vec<f32> = lmforge_model::host_values(logits.clone().max_dim(1));
    let mut maxima = vec![0.0f32; n * tp];
    group.all_gather_f32(
        &local_max,
        &mut maxima,
        "the all-gather of the logits' maxima",
    )?;
    let max: Vec<f32> = (0..n)
        .map(|i| {
            (0..tp)
                .map(|r| maxima[r * n + i])
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let max_t = Tensor::<2>::from_data(TensorData::new(max.clone(), [n, 1]), device).inner();
    let exp = (logits.clone() - max_t).exp();
    let mut sums: Vec<f32> = lmforge_model::host_values(exp.clone().sum_dim(1));
    group.all_reduce_f32(&mut sums, "the all-reduce of the softmax sums")?;
    let mut target = vec![0.0f32; n];
    let logit_values: Vec<f32> = lmforge_model::host_values(logits);
    let mut local_rows = vec![0i64; n];
    let mut owned = vec![0.0f32; n];
    for (i, &label) in batch.labels.iter().enumerate() {
        let label = label as usize;
        if (vocab_start..vocab_start + rows_per_rank).contains(&label) {
            let j = label - vocab_start;
            target[i] = logit_values[i * rows_per_rank + j];
            local_rows[i] = j as i64;
            owned[i] = 1.0;
        }
    }
    group.all_reduce_f32(&mut target, "the all-reduce of the target logits")?;
    let loss: f64 = (0..n)
        .map(|i| {
            let log_p = target[i] - max[i] - sums[i].ln();
            // As head_cross_entropy: a probability that underflows f32 counts as its floor.
            f64::from(weights[i]) * -f64::from(log_p.max(f32::MIN_POSITIVE.ln()))
        })
        .sum();
    if !backward {
        return Ok((loss, Grads::default()));
    }
    let factor_w: Vec<f32> = weights
        .iter()
        .map(|w| (f64::from(*w) * factor) as f32)
        .collect();
    let weight = Tensor::<2>::from_data(TensorData::new(factor_w.clone(), [n, 1]), device).inner();
    let sums_t = Tensor::<2>::from_data(TensorData::new(sums, [n, 1]), device).inner();
    let p = exp / sums_t; // [n, vocab / tp], this rank's columns of the softmax
    // d logits = w ∘ (p − Y) on this rank's columns.
    let rows_t = Tensor::<2, Int>::from_data(TensorData::new(local_rows, [n, 1]), device).inner();
    let owned_w: Vec<f32> = owned.iter().zip(&factor_w).map(|(o, w)| o * w).collect();
    let owned_t = Tensor::<2>::from_data(TensorData::new(owned_w, [n, 1]), device).inner();
    let one_hot = p
        .zeros_like()
        .scatter(1, rows_t, owned_t, burn::tensor::IndexingUpdateOp::Add);
    let d_logits = p.mul(weight) - one_hot;
    let d_hidden = d_logits.clone().matmul(w); // this rank's part of ∂h
    let d_projection = d_logits.transpose().matmul(hidden); // [vocab / tp, d]
    let d_projection = if transposed {
        d_projection.transpose()
    } else {
        d_projection
    };
    let mut grads = Grads::default();
    let head_grad = Tensor::from_inner(d_projection);
    let numel = head_grad.shape().num_elements();
    grads
        .by_path
        .insert(head_path.to_string(), head_grad.reshape([numel]));

    // Backward, segment by segment: the head's input gradient is summed over the group (`f`
    // before the vocabulary-parallel head), then each half-block from the last.
    let d_features = reduce_grad(
        group,
        Tensor::from_inner(d_hidden).reshape([rows, seq, d_model]),
        "the all-reduce of the head's input gradient",
    )?;
    let surrogate = features
        .clone()
        .mul(d_features.cast(FloatDType::from(features.dtype())))
        .sum();
    let mut dx = backward_segment(surrogate, Some(&last), params, &mut grads, device)
        .ok_or_else(|| missing("the final norm"))?;
    for (i, half) in halves.into_iter().enumerate().rev() {
        let what = format!("the all-reduce of block {}'s input gradient", i / 2);
        let surrogate = half.branch.mul(dx.clone()).sum();
        let d_branch = backward_segment(
            surrogate,
            Some(&half.branch_input),
            params,
            &mut grads,
            device,
        )
        .ok_or_else(|| missing("a branch"))?;
        let d_normed = reduce_grad(group, d_branch, &what)?;
        let surrogate = half.normed.mul(d_normed).sum();
        let d_input = backward_segment(surrogate, Some(&half.input), params, &mut grads, device)
            .ok_or_else(|| missing("a norm"))?;
        dx = dx + d_input;
    }
    let surrogate = embedded.mul(dx).sum();
    backward_segment(surrogate, None, params, &mut grads, device);
    Ok((loss, grads))
}

/// The sum of squares of the gradients of the cut parameters (`cut_ones`) or of the replicated
/// ones.
fn squares(grads: &Grads, cut_ones: bool) -> f64 {
    grads.sum_of_squares_of(|p| (cut(p) != Cut::Replicated) == cut_ones)
}

/// The global norm of gradients of a tensor-parallel rank's share: the cut parameters' sums of
/// squares added over `group` (as slots, so every rank adds the same numbers in one order), the
/// replicated ones, which every rank holds whole, counted once.
pub fn tp_norm(group: &dyn Collective, grads: &Grads) -> Result<f64> {
    let mut slots = vec![0.0f64; group.world()];
    slots[group.rank()] = squares(grads, true);
    group.all_reduce_f64(&mut slots, "the all-reduce of the gradient norm")?;
    let replicated = squares(grads, false);
    Ok((slots.iter().sum::<f64>() + replicated).sqrt())
}

/// The gradient norm of a tensor-parallel share whose optimizer is also sharded over the
/// data-parallel group `data`: each rank's pieces' squares (cut and replicated parameters
/// apart) added over `data`, then the cut ones over `tensor`, the replicated ones once.
pub fn tp_sharded_norm(
    tensor: &dyn Collective,
    data: &dyn Collective,
    grads: &Grads,
) -> Result<f64> {
    let mut slots = vec![0.0f64; 2 * data.world()];
    slots[2 * data.rank()] = squares(grads, true);
    slots[2 * data.rank() + 1] = squares(grads, false);
    data.all_reduce_f64(&mut slots, "the all-reduce of the gradient norm")?;
    let split: f64 = slots.iter().step_by(2).sum();
    let replicated: f64 = slots.iter().skip(1).step_by(2).sum();
    let mut over = vec![0.0f64; tensor.world()];
    over[tensor.rank()] = split;
    tensor.all_reduce_f64(&mut over, "the all-reduce of the gradient norm")?;
    Ok((over.iter().sum::<f64>() + replicated).sqrt())
}

/// The shapes of a rank's share of parameters of `shapes` cut over `tp` ranks.
pub fn share_shapes(
    shapes: &BTreeMap<String, Vec<usize>>,
    tp: usize,
) -> BTreeMap<String, Vec<usize>> {
    shapes
        .iter()
        .map(|(path, shape)| {
            let mut shape = shape.clone();
            match (cut(path), tp) {
                (_, 0 | 1) | (Cut::Replicated, _) => {}
                (Cut::Rows, _) => shape[0] /= tp,
                (Cut::Columns { .. }, _) => {
                    if let Some(last) = shape.last_mut() {
                        *last /= tp;
                    }
                }
            }
            (path.clone(), shape)
        })
        .collect()
}

fn missing(what: &str) -> Error {
    Error::Distributed {
        reason: format!("tensor parallelism: {what} got no gradient"),
    }
}

/// The whole model from a tensor-parallel rank's share (every rank of `group` calls it; all
/// get the whole model).
pub fn gather_model(model: &Gpt, group: &dyn Collective) -> Result<Gpt> {
    if group.world() == 1 {
        return Ok(model.clone());
    }
    let mut parts = host_tensors(model);
    parts.retain(|path, _| cut(path) != Cut::Replicated);
    let whole = gather_parts(group, &parts)?;
    // The share has the whole model's structure; only its cut tensors take the whole shapes.
    Ok(assign(model.clone(), &whole))
}

struct HostParts {
    path: Vec<String>,
    out: HostTensors,
}

impl burn::module::ModuleVisitor for HostParts {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let shape = value.dims().to_vec();
        self.out.insert(
            self.path.join("."),
            (shape, lmforge_model::host_values(value)),
        );
    }
}

/// Every float parameter of `model` on the host, by path.
pub fn host_tensors<M: Module>(model: &M) -> HostTensors {
    let mut visitor = HostParts {
        path: Vec::new(),
        out: HostTensors::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

struct Assign<'a> {
    path: Vec<String>,
    values: &'a HostTensors,
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((shape, values)) = self.values.get(&self.path.join(".")) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let dims: [usize; D] = shape.clone().try_into().unwrap_or(tensor.dims());
        let device = tensor.inner().device();
        let mut value = Tensor::from_inner(Tensor::<D>::from_data(
            TensorData::new(values.clone(), dims),
            &device,
        ));
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

/// `model` with the parameters `values` names set to them.
fn assign<M: Module>(model: M, values: &HostTensors) -> M {
    model.map(&mut Assign {
        path: Vec::new(),
        values,
    })
}

/// AdamW's moments of a whole model cut for rank `rank` of `tp`, the parameters' whole shapes
/// being `shapes` (a resumed run's whole optimizer on a tensor-parallel rank).
pub fn shard_moments(
    optimizer: &mut crate::optim::AdamW,
    shapes: &BTreeMap<String, Vec<usize>>,
    tp: usize,
    rank: usize,
) -> Result<()> {
    for (path, moments) in optimizer.moments.iter_mut() {
        let how = cut(path);
        if how == Cut::Replicated || tp == 1 {
            continue;
        }
        let shape = shapes.get(path).ok_or_else(|| Error::Config {
            field: "load",
            reason: format!("the optimizer state names `{path}`, which the model lacks"),
        })?;
        let device = moments.m.device();
        let cut_one = |t: &Tensor<1>| -> Result<Tensor<1>> {
            let values = lmforge_model::host_values(t.clone());
            let (part, _) = shard(&values, shape, how, tp, rank)?;
            let n = part.len();
            Ok(Tensor::from_data(TensorData::new(part, [n]), &device))
        };
        moments.m = cut_one(&moments.m)?;
        moments.v = cut_one(&moments.v)?;
    }
    Ok(())
}

/// The whole moments of every rank's share (every rank of `group` calls it), `shapes` being the
/// shares' parameter shapes: what a checkpoint of a tensor-parallel run holds.
pub fn gather_moments(
    optimizer: &crate::optim::AdamW,
    shapes: &BTreeMap<String, Vec<usize>>,
    group: &dyn Collective,
) -> Result<crate::optim::AdamW> {
    let mut whole = optimizer.clone();
    if group.world() == 1 {
        return Ok(whole);
    }
    for (path, moments) in whole.moments.iter_mut() {
        let shape = shapes.get(path).cloned().unwrap_or_default();
        let device = moments.m.device();
        for t in [&mut moments.m, &mut moments.v] {
            let mut parts = HostTensors::new();
            parts.insert(
                path.clone(),
                (shape.clone(), lmforge_model::host_values(t.clone())),
            );
            let merged = gather_parts(group, &parts)?;
            let (_, values) = &merged[path];
            let n = values.len();
            *t = Tensor::from_data(TensorData::new(values.clone(), [n]), &device);
        }
    }
    Ok(whole)
}

/// The output projection this rank holds as `[vocab / tp, d]`, the path of its parameter, and
/// whether that parameter is stored transposed (`lm_head`'s `[d, vocab / tp]`).
fn output_projection(model: &Gpt) -> (Tensor<2>, &'static str, bool) {
    let (projection, _) = model.output_projection();
    if model.config().tie_embeddings {
        (projection, "wte.weight", false)
    } else {
        (projection, "lm_head.weight", true)
    }
}
