//! Megatron's distributed optimizer (`--use-distributed-optimizer`, ZeRO stage 1): AdamW's
//! moments sharded across the ranks of a run instead of replicated on each.
//!
//! The trainable parameters, flattened in path order (the order of [`Grads`]), form one vector
//! of `N` values; rank `r` of `W` owns the contiguous range `[r·S, min((r+1)·S, N))` with
//! `S = ⌈N/W⌉` ([`Layout`]). A step then
//! 1. reduce-scatters the gradients: rank `r` receives the sum over ranks of its range only;
//! 2. computes the global gradient norm from the ranks' sums of squares (each rank's share in
//!    its own slot, added in rank order, so every rank gets the same bytes) and clips;
//! 3. updates its range with AdamW (its moments cover that range only: `8N/W` bytes, not `8N`);
//! 4. all-gathers the updated ranges, so every rank holds the whole model again.
//!
//! Reduce-scatter plus all-gather move what one all-reduce moves (a ring all-reduce is exactly
//! those two), so sharding costs no bandwidth. A range may start or end inside a parameter: the
//! part of parameter `p` that rank `r` owns is a [`Piece`].
//!
//! In `--bf16`/`--fp16` the sharded optimizer also shards the f32 master weights, as Megatron's
//! does: every rank holds the model in half precision and only its own pieces of the weights in
//! f32 ([`Master`]); the all-gather carries the updated f32 pieces, each rank casting the whole
//! to half, so every rank holds the same bytes and those bytes are the cast a replicated run
//! makes of its own f32 weights. A checkpoint gathers the f32 weights once for
//! `model.safetensors`, which therefore stays the f32 model every lmforge command loads, and is
//! where a resumed run takes its master pieces from.
//!
//! The shards are checkpointed one file per rank (`optimizer-00000-of-00004.safetensors`,
//! [`crate::checkpoint`]), each holding `exp_avg.PATH`/`exp_avg_sq.PATH` for its pieces: since
//! the layout follows from the parameter shapes and `W` alone, a run of any world size (sharded
//! or not) reads them back by cutting the pieces it needs out of the files that hold them.

use std::collections::BTreeMap;
use std::ops::Range;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use crate::collective::{BUCKET_ELEMENTS, Collective};
pub use crate::flat::{Entry, Layout, Piece};
use crate::flat::{read_window, write_window};
use crate::optim::{AdamW, Grads, Moments, adamw_update, decays};
use crate::{Error, Result};

/// The f32 master weights of a rank's pieces, the model itself being held in `dtype`.
#[derive(Clone, Debug)]
pub struct Master {
    /// The model's dtype.
    pub dtype: FloatDType,
    /// Piece path → f32 values.
    pub pieces: BTreeMap<String, Tensor<1>>,
}

/// A rank's share of a sharded AdamW.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// How the parameters are cut.
    pub layout: Layout,
    /// The rank whose pieces the moments cover.
    pub rank: usize,
}

struct Bytes(u64);

impl ModuleVisitor for Bytes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        self.0 += (value.shape().num_elements() * value.dtype().size()) as u64;
    }
}

/// Bytes of `model`'s float parameters as they are stored.
pub fn weight_bytes<M: Module>(model: &M) -> u64 {
    let mut bytes = Bytes(0);
    model.visit(&mut bytes);
    bytes.0
}

/// The trainable parameters of `model` (those that get gradients) by path, with their shapes.
pub fn trainable_shapes<M: Module>(model: &M) -> BTreeMap<String, Vec<usize>> {
    crate::optim::shapes_of(model, true)
}

/// Values per round of a bucketed reduce-scatter or all-gather: each rank's part of one round,
/// so that a round moves about [`BUCKET_ELEMENTS`] values as an all-reduce bucket does.
fn round_len(world: usize) -> usize {
    (BUCKET_ELEMENTS / world.max(1)).max(1)
}

/// Sums `full` (the layout's flat vector, padded to `shard × world`) over all ranks and
/// returns this rank's shard of the sum, in rounds of fixed boundaries.
pub fn reduce_scatter(
    collective: &dyn Collective,
    layout: &Layout,
    full: &[f32],
) -> Result<Vec<f32>> {
    debug_assert_eq!(full.len(), layout.shard * layout.world);
    reduce_scatter_with(collective, layout, |range, send| {
        send.extend_from_slice(&full[range]);
    })
}

/// [`reduce_scatter`] of a flat vector that is never built: `read(range, send)` appends the
/// values `range` of it to `send`, one round's window of each rank at a time, so the host
/// holds this rank's shard and one round (about [`BUCKET_ELEMENTS`] values) at most.
pub fn reduce_scatter_with(
    collective: &dyn Collective,
    layout: &Layout,
    read: impl FnMut(Range<usize>, &mut Vec<f32>),
) -> Result<Vec<f32>> {
    scatter_rounds(collective, layout, round_len(layout.world), read)
}

fn scatter_rounds(
    collective: &dyn Collective,
    layout: &Layout,
    step: usize,
    mut read: impl FnMut(Range<usize>, &mut Vec<f32>),
) -> Result<Vec<f32>> {
    let (world, s) = (layout.world, layout.shard);
    let mut shard = vec![0.0f32; s];
    let mut send = Vec::with_capacity(step.min(s) * world);
    for (k, start) in (0..s).step_by(step).enumerate() {
        let len = step.min(s - start);
        send.clear();
        for r in 0..world {
            read(r * s + start..r * s + start + len, &mut send);
        }
        debug_assert_eq!(send.len(), len * world);
        collective.reduce_scatter_f32(
            &send,
            &mut shard[start..start + len],
            &format!("the reduce-scatter of gradient round {k}"),
        )?;
    }
    Ok(shard)
}

/// Every rank's `shard` concatenated in rank order (the layout's flat vector, padded), in
/// rounds of fixed boundaries.
pub fn all_gather(collective: &dyn Collective, layout: &Layout, shard: &[f32]) -> Result<Vec<f32>> {
    let mut full = vec![0.0f32; layout.shard * layout.world];
    all_gather_with(collective, layout, shard, |range, values| {
        full[range].copy_from_slice(values);
    })?;
    Ok(full)
}

/// [`all_gather`] into a flat vector that is never built: `write(range, values)` takes the
/// values `range` of it, one round's window of each rank at a time.
pub fn all_gather_with(
    collective: &dyn Collective,
    layout: &Layout,
    shard: &[f32],
    write: impl FnMut(Range<usize>, &[f32]),
) -> Result<()> {
    gather_rounds(collective, layout, shard, round_len(layout.world), write)
}

fn gather_rounds(
    collective: &dyn Collective,
    layout: &Layout,
    shard: &[f32],
    step: usize,
    mut write: impl FnMut(Range<usize>, &[f32]),
) -> Result<()> {
    let (world, s) = (layout.world, layout.shard);
    debug_assert_eq!(shard.len(), s);
    let mut recv = vec![0.0f32; step.min(s) * world];
    for (k, start) in (0..s).step_by(step).enumerate() {
        let len = step.min(s - start);
        let recv = &mut recv[..len * world];
        collective.all_gather_f32(
            &shard[start..start + len],
            recv,
            &format!("the all-gather of weight round {k}"),
        )?;
        for r in 0..world {
            write(
                r * s + start..r * s + start + len,
                &recv[r * len..(r + 1) * len],
            );
        }
    }
    Ok(())
}

impl Grads {
    /// Sums these gradients over the ranks and keeps this rank's pieces of the sum
    /// (`by_path` then holds one slice per piece, keyed by its parameter's path). Parameters
    /// without a gradient count as zeros in the sum and get none back. Returns the bytes this
    /// rank contributed.
    pub fn reduce_scatter(
        &mut self,
        collective: &dyn Collective,
        shard: &Shard,
        device: &Device,
    ) -> Result<u64> {
        let layout = &shard.layout;
        for entry in &layout.entries {
            if let Some(grad) = self.by_path.get(&entry.path)
                && grad.dims()[0] != entry.len
            {
                return Err(Error::Distributed {
                    reason: format!(
                        "the gradient of `{}` has {} values, the layout {}",
                        entry.path,
                        grad.dims()[0],
                        entry.len
                    ),
                });
            }
        }
        // The flat vector in layout order (zeros where a parameter has no gradient, and as
        // padding) is read from the device one round's window at a time, never whole.
        let mine = reduce_scatter_with(collective, layout, |window, send| {
            read_window(layout, &self.by_path, window, send);
        })?;
        let present = std::mem::take(&mut self.by_path);
        // The pieces are views of the one shard tensor: no second copy of the shard.
        let n = mine.len();
        let mine = Tensor::<1>::from_data(TensorData::new(mine, [n]), device);
        let pieces: Vec<Piece> = layout
            .pieces(shard.rank)
            .into_iter()
            .filter(|p| present.contains_key(&p.path))
            .collect();
        // The whole gradients go before the pieces are cut.
        drop(present);
        for piece in pieces {
            let view = mine.clone().narrow(0, piece.at, piece.values.len());
            self.by_path.insert(piece.path, view);
        }
        Ok(4 * (layout.shard * layout.world) as u64)
    }
}

/// The global gradient norm of gradients sharded over the ranks: each rank's sum of squares in
/// its slot, so every rank adds the same numbers in the same order.
pub fn sharded_norm(collective: &dyn Collective, grads: &Grads) -> Result<f64> {
    let mut slots = vec![0.0f64; collective.world()];
    slots[collective.rank()] = grads.sum_of_squares();
    collective.all_reduce_f64(&mut slots, "the all-reduce of the gradient norm")?;
    Ok(slots.iter().sum::<f64>().sqrt())
}

struct Flat {
    path: Vec<String>,
    out: BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for Flat {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            let value = param.val().inner();
            let n = value.shape().num_elements();
            self.out.insert(self.path.join("."), value.reshape([n]));
        }
    }
}

/// Takes the trainable parameters of the layout out of a model, each as a flat tensor that
/// the all-gather writes into in place (in `dtype` when given: a fresh one; else the
/// parameter's own storage), leaving a one-value placeholder that [`Put`] replaces.
struct Take<'a> {
    path: Vec<String>,
    dtype: Option<FloatDType>,
    lens: BTreeMap<&'a str, usize>,
    /// The flat tensors by path, and each parameter's shape and whether it is trained.
    flats: BTreeMap<String, Tensor<1>>,
    shapes: BTreeMap<String, (Vec<usize>, bool)>,
}

impl ModuleMapper for Take<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(&len) = self.lens.get(path.as_str()) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims().to_vec();
        let inner = tensor.inner();
        let device = inner.device();
        let flat = match self.dtype {
            Some(dtype) => {
                // Every value is overwritten: the old storage goes before the new comes.
                drop(inner);
                Tensor::<1>::zeros([len], &device).cast(dtype)
            }
            None => inner.reshape([len]),
        };
        self.flats.insert(path.clone(), flat);
        self.shapes.insert(path, (dims, require_grad));
        Param::from_mapped_value(id, Tensor::zeros([1; D], &device), mapper)
    }
}

/// Puts the parameters [`Take`] took (and the all-gather filled) back into their model.
struct Put {
    path: Vec<String>,
    flats: BTreeMap<String, Tensor<1>>,
    shapes: BTreeMap<String, (Vec<usize>, bool)>,
}

impl ModuleMapper for Put {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let (Some(flat), Some((dims, require_grad))) =
            (self.flats.remove(&path), self.shapes.remove(&path))
        else {
            return param;
        };
        let (id, _placeholder, mapper) = param.consume();
        let dims: [usize; D] = dims
            .try_into()
            .expect("a parameter keeps its rank between Take and Put");
        let mut value = Tensor::from_inner(flat.reshape(dims));
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

impl AdamW {
    /// A fresh AdamW whose moments cover `shard`'s pieces only.
    pub fn sharded(config: crate::optim::AdamWConfig, shard: Shard) -> Self {
        let mut optimizer = AdamW::new(config);
        optimizer.shard = Some(shard);
        optimizer
    }

    /// One update of a sharded AdamW: `grads` holds this rank's pieces of the summed
    /// gradients ([`Grads::reduce_scatter`]); the rank updates its pieces of the weights and
    /// every rank's are gathered into the whole model. Unsharded, the plain update. Returns
    /// the model and the seconds spent in the all-gather.
    pub fn update_sharded<M: Module>(
        &mut self,
        model: M,
        mut grads: Grads,
        lr: f64,
        collective: &dyn Collective,
    ) -> Result<(M, f64)> {
        let Some(shard) = self.shard.clone() else {
            return Ok((self.update(model, grads, lr), 0.0));
        };
        self.step += 1;
        let layout = &shard.layout;
        let mut flat = Flat {
            path: Vec::new(),
            out: BTreeMap::new(),
        };
        model.visit(&mut flat);
        // This rank's updated pieces, read to the host as each is made (the all-gather's
        // input): the updated tensors are not held together beside it.
        let mut mine = Vec::with_capacity(layout.shard);
        for piece in layout.pieces(shard.rank) {
            let Some(value) = flat.out.get(&piece.path) else {
                return Err(Error::Distributed {
                    reason: format!("the model lacks `{}`, which the layout holds", piece.path),
                });
            };
            let value = match self.master.as_mut() {
                Some(master) => {
                    master
                        .pieces
                        .remove(&piece.path)
                        .ok_or_else(|| Error::Distributed {
                            reason: format!("no master weights for `{}`", piece.path),
                        })?
                }
                None => value
                    .clone()
                    .narrow(0, piece.values.start, piece.values.len()),
            };
            let updated = match grads.by_path.remove(&piece.path) {
                Some(grad) => {
                    let grad = grad.to_device(&value.device());
                    let moments = self.moments.remove(&piece.path);
                    let (updated, moments) = adamw_update(
                        value,
                        grad,
                        moments,
                        self.config,
                        self.step,
                        lr,
                        decays(piece.rank),
                    );
                    self.moments.insert(piece.path.clone(), moments);
                    updated
                }
                None => value,
            };
            if let Some(master) = self.master.as_mut() {
                master.pieces.insert(piece.path.clone(), updated.clone());
            }
            mine.extend(lmforge_model::host_values(updated));
        }
        // Its views would keep every parameter shared, and the gather could not write in place.
        drop(flat);
        let dtype = self.master.as_ref().map(|m| m.dtype);
        gather_into(model, layout, mine, collective, dtype)
    }

    /// Shards the f32 master weights too: takes this rank's pieces of `model` (in f32) as its
    /// master weights and returns the model held in `dtype`.
    pub fn hold_master<M: Module>(&mut self, model: M, dtype: FloatDType) -> Result<M> {
        let Some(shard) = &self.shard else {
            return Ok(model);
        };
        let mut flat = Flat {
            path: Vec::new(),
            out: BTreeMap::new(),
        };
        model.visit(&mut flat);
        let mut pieces = BTreeMap::new();
        for piece in shard.layout.pieces(shard.rank) {
            let Some(value) = flat.out.get(&piece.path) else {
                return Err(Error::Distributed {
                    reason: format!("the model lacks `{}`, which the layout holds", piece.path),
                });
            };
            // A copy of its own, not a view that would keep the whole f32 tensor alive.
            let device = value.device();
            let values: Vec<f32> = lmforge_model::host_values(value.clone().narrow(
                0,
                piece.values.start,
                piece.values.len(),
            ));
            let n = values.len();
            pieces.insert(
                piece.path,
                Tensor::from_data(TensorData::new(values, [n]), &device),
            );
        }
        drop(flat);
        self.master = Some(Master { dtype, pieces });
        Ok(lmforge_model::in_dtype(model, dtype))
    }

    /// The model in f32: `model` itself, or, when the master weights are sharded, every rank's
    /// f32 pieces gathered into it (a collective: every rank calls it). For checkpoints and the
    /// end of a run.
    pub fn full_precision<M: Module>(&self, model: M, collective: &dyn Collective) -> Result<M> {
        let (Some(shard), Some(master)) = (&self.shard, &self.master) else {
            return Ok(model);
        };
        let layout = &shard.layout;
        let mut mine = Vec::with_capacity(layout.shard);
        for piece in layout.pieces(shard.rank) {
            let values = master
                .pieces
                .get(&piece.path)
                .ok_or_else(|| Error::Distributed {
                    reason: format!("no master weights for `{}`", piece.path),
                })?;
            mine.extend(lmforge_model::host_values(values.clone()));
        }
        Ok(gather_into(model, layout, mine, collective, Some(FloatDType::F32))?.0)
    }
}

/// `model` with its trainable parameters set from every rank's `mine` (this rank's pieces in
/// layout order, on the host, all-gathered), cast to `dtype` when given; and the seconds of
/// the all-gather. Each round's values are written into the parameters as it arrives, so
/// the host holds this rank's shard and one round, never the whole model.
fn gather_into<M: Module>(
    model: M,
    layout: &Layout,
    mut mine: Vec<f32>,
    collective: &dyn Collective,
    dtype: Option<FloatDType>,
) -> Result<(M, f64)> {
    mine.resize(layout.shard, 0.0);
    let mut take = Take {
        path: Vec::new(),
        dtype,
        lens: layout
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.len))
            .collect(),
        flats: BTreeMap::new(),
        shapes: BTreeMap::new(),
    };
    let model = model.map(&mut take);
    let Take {
        mut flats, shapes, ..
    } = take;
    let gather_started = std::time::Instant::now();
    all_gather_with(collective, layout, &mine, |window, values| {
        write_window(layout, &mut flats, window, values, dtype);
    })?;
    let gather_seconds = gather_started.elapsed().as_secs_f64();
    let model = model.map(&mut Put {
        path: Vec::new(),
        flats,
        shapes,
    });
    Ok((model, gather_seconds))
}

impl AdamW {
    /// The whole optimizer from every rank's pieces (a collective over the ranks the moments
    /// are sharded across): what a tensor-parallel share's checkpoint gathers further.
    pub fn gather_pieces(&self, collective: &dyn Collective) -> Result<AdamW> {
        let Some(shard) = &self.shard else {
            return Ok(self.clone());
        };
        let layout = &shard.layout;
        let pieces = layout.pieces(shard.rank);
        // Which parameters have moments on some rank (one that never had a gradient has none).
        let mut present = vec![0.0f64; layout.entries.len()];
        for (i, e) in layout.entries.iter().enumerate() {
            if self.moments.contains_key(&e.path) {
                present[i] = 1.0;
            }
        }
        collective.all_reduce_f64(&mut present, "agreeing which moments exist")?;
        let mut m = vec![0.0f32; layout.shard];
        let mut v = vec![0.0f32; layout.shard];
        for piece in &pieces {
            if let Some(moments) = self.moments.get(&piece.path) {
                let at = piece.at..piece.at + piece.values.len();
                m[at.clone()].copy_from_slice(&lmforge_model::host_values(moments.m.clone()));
                v[at].copy_from_slice(&lmforge_model::host_values(moments.v.clone()));
            }
        }
        let (m, v) = (
            all_gather(collective, layout, &m)?,
            all_gather(collective, layout, &v)?,
        );
        let device = self
            .moments
            .values()
            .next()
            .map(|x| x.m.device())
            .unwrap_or_else(Device::flex);
        let mut whole = AdamW::new(self.config);
        whole.step = self.step;
        for (e, present) in layout.entries.iter().zip(present) {
            if present == 0.0 {
                continue;
            }
            let take = |x: &[f32]| {
                let values = x[e.offset..e.offset + e.len].to_vec();
                Tensor::<1>::from_data(TensorData::new(values, [e.len]), &device)
            };
            whole.moments.insert(
                e.path.clone(),
                Moments {
                    m: take(&m),
                    v: take(&v),
                },
            );
        }
        Ok(whole)
    }

    /// This whole optimizer cut to `shard`'s pieces.
    pub fn into_pieces(self, shard: Shard) -> Result<AdamW> {
        let mut out = AdamW::new(self.config);
        out.step = self.step;
        for piece in shard.layout.pieces(shard.rank) {
            if let Some(m) = self.moments.get(&piece.path) {
                let (start, len) = (piece.values.start, piece.values.len());
                if m.m.dims()[0] < piece.values.end {
                    return Err(Error::Config {
                        field: "load",
                        reason: format!(
                            "the moments of `{}` are shorter than its piece",
                            piece.path
                        ),
                    });
                }
                out.moments.insert(
                    piece.path.clone(),
                    Moments {
                        m: m.m.clone().narrow(0, start, len),
                        v: m.v.clone().narrow(0, start, len),
                    },
                );
            }
        }
        out.shard = Some(shard);
        Ok(out)
    }
}

/// Checks that `moments` are exactly `shard`'s pieces (a checkpoint of another layout was
/// re-sharded on reading, so a mismatch is a bug or a foreign file).
pub fn check_pieces(shard: &Shard, moments: &BTreeMap<String, Moments>) -> Result<()> {
    let pieces = shard.layout.pieces(shard.rank);
    for (path, m) in moments {
        let n = m.m.shape().num_elements();
        match pieces.iter().find(|p| &p.path == path) {
            Some(p) if p.values.len() == n => {}
            _ => {
                return Err(Error::Config {
                    field: "load",
                    reason: format!(
                        "the optimizer shard of rank {} holds {n} values of `{path}`, which its \
                         layout does not give it",
                        shard.rank
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Alone;
    use crate::flat::segments;

    fn shapes(sizes: &[(&str, &[usize])]) -> BTreeMap<String, Vec<usize>> {
        sizes
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_vec()))
            .collect()
    }

    #[test]
    fn shards_cover_the_vector_once_in_order() {
        let layout = Layout::new(&shapes(&[("a", &[3, 2]), ("b", &[5]), ("c", &[2])]), 3);
        assert_eq!((layout.total, layout.shard), (13, 5));
        let mut seen = Vec::new();
        for r in 0..3 {
            for p in layout.pieces(r) {
                let e = layout.entries.iter().find(|e| e.path == p.path).unwrap();
                for v in p.values.clone() {
                    seen.push(e.offset + v);
                }
            }
        }
        assert_eq!(seen, (0..13).collect::<Vec<_>>());
        // Rank 1 owns values 5..10: the last of a, b's first four.
        let p = layout.pieces(1);
        assert_eq!(
            (p[0].path.as_str(), p[0].values.clone(), p[0].at),
            ("a", 5..6, 0)
        );
        assert_eq!(
            (p[1].path.as_str(), p[1].values.clone(), p[1].at),
            ("b", 0..4, 1)
        );
        // More ranks than values: the last ones own nothing.
        let tiny = Layout::new(&shapes(&[("a", &[2])]), 4);
        assert_eq!(tiny.range(3), 2..2);
        assert!(tiny.pieces(3).is_empty());
    }

    #[test]
    fn one_rank_scatters_and_gathers_the_identity() {
        let layout = Layout::new(&shapes(&[("a", &[3])]), 1);
        let full = vec![1.0, 2.0, 3.0];
        assert_eq!(reduce_scatter(&Alone, &layout, &full).unwrap(), full);
        assert_eq!(all_gather(&Alone, &layout, &full).unwrap(), full);
    }

    /// Parameters `p0`, `p1`, … of `sizes` values each, over `world` ranks.
    fn numbered(sizes: &[usize], world: usize) -> Layout {
        let named: BTreeMap<String, Vec<usize>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("p{i}"), vec![n]))
            .collect();
        Layout::new(&named, world)
    }

    proptest::proptest! {
        /// A window of the flat vector read segment by segment is that window: every value
        /// once, in order, each from its own parameter (the padding past the end left out).
        #[test]
        fn segments_cut_any_window_exactly(
            sizes in proptest::collection::vec(0usize..7, 1..6),
            world in 1usize..5,
            a in 0usize..40,
            b in 0usize..40,
        ) {
            let layout = numbered(&sizes, world);
            let padded = layout.shard * layout.world;
            let (start, end) = (a.min(b).min(padded), a.max(b).min(padded));
            let mut read = Vec::new();
            for (entry, values) in segments(&layout, start..end) {
                proptest::prop_assert!(values.end <= entry.len);
                read.extend(values.map(|v| entry.offset + v));
            }
            let expected: Vec<usize> = (start..end.min(layout.total)).collect();
            proptest::prop_assert_eq!(read, expected);
        }

        /// In rounds of any length, reading and writing through the windows gives back the
        /// vector (one rank: the sum is the vector, the gather the shard).
        #[test]
        fn rounds_of_any_length_cover_the_shard(
            sizes in proptest::collection::vec(1usize..9, 1..5),
            step in 1usize..20,
        ) {
            let layout = numbered(&sizes, 1);
            let full: Vec<f32> = (0..layout.total).map(|v| v as f32).collect();
            let summed = scatter_rounds(&Alone, &layout, step, |range, send| {
                for (entry, values) in segments(&layout, range) {
                    send.extend(values.map(|v| (entry.offset + v) as f32));
                }
            })
            .unwrap();
            proptest::prop_assert_eq!(&summed, &full);
            let mut written = vec![f32::NAN; layout.total];
            gather_rounds(&Alone, &layout, &summed, step, |range, values| {
                written[range].copy_from_slice(values);
            })
            .unwrap();
            proptest::prop_assert_eq!(written, full);
        }
    }
}
