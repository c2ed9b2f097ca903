//! The trainable parameters as one flat vector, in path order: where each parameter lies in
//! it ([`Layout`]), how it is cut into one contiguous shard per rank ([`Piece`]), and which
//! parameters a window of it covers ([`segments`]). The collectives read and write the
//! gradients and weights through windows of this vector, one round at a time, without ever
//! building it.

use std::collections::BTreeMap;
use std::ops::Range;

use burn::tensor::{FloatDType, Tensor, TensorData};

/// One trainable parameter's place in the flat vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Parameter path (`blocks.0.attn.qkv.weight`).
    pub path: String,
    /// Offset of its first value in the flat vector.
    pub offset: usize,
    /// Its number of values.
    pub len: usize,
    /// Its tensor rank (weight decay applies from 2 on).
    pub rank: usize,
}

/// The part of one parameter a rank owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Parameter path.
    pub path: String,
    /// The values of the parameter (flattened) that the piece covers.
    pub values: Range<usize>,
    /// Where the piece starts in the rank's shard.
    pub at: usize,
    /// The parameter's tensor rank.
    pub rank: usize,
}

/// How the flat parameter vector is cut into one shard per rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The parameters in path order.
    pub entries: Vec<Entry>,
    /// Values in all.
    pub total: usize,
    /// Ranks sharing the vector.
    pub world: usize,
    /// Values per shard, `⌈total/world⌉` (the last shard is padded to it).
    pub shard: usize,
}

impl Layout {
    /// The layout of parameters with `shapes` (path → shape) over `world` ranks.
    pub fn new(shapes: &BTreeMap<String, Vec<usize>>, world: usize) -> Layout {
        let world = world.max(1);
        let mut offset = 0;
        let entries = shapes
            .iter()
            .map(|(path, shape)| {
                let len = shape.iter().product::<usize>();
                let entry = Entry {
                    path: path.clone(),
                    offset,
                    len,
                    rank: shape.len(),
                };
                offset += len;
                entry
            })
            .collect();
        Layout {
            entries,
            total: offset,
            world,
            shard: offset.div_ceil(world),
        }
    }

    /// The values of the flat vector that rank `rank` owns.
    pub fn range(&self, rank: usize) -> Range<usize> {
        let start = (rank * self.shard).min(self.total);
        start..((rank + 1) * self.shard).min(self.total)
    }

    /// The pieces of the parameters rank `rank` owns, in path order.
    pub fn pieces(&self, rank: usize) -> Vec<Piece> {
        let range = self.range(rank);
        self.entries
            .iter()
            .filter_map(|e| {
                let start = e.offset.max(range.start);
                let end = (e.offset + e.len).min(range.end);
                (start < end).then(|| Piece {
                    path: e.path.clone(),
                    values: start - e.offset..end - e.offset,
                    at: start - range.start,
                    rank: e.rank,
                })
            })
            .collect()
    }
}

/// The entries of `layout` that `range` of the flat vector covers, each with the values of
/// it that fall in the range; the padding past the last parameter is left out.
pub(crate) fn segments(
    layout: &Layout,
    range: Range<usize>,
) -> impl Iterator<Item = (&Entry, Range<usize>)> {
    let first = layout
        .entries
        .partition_point(|e| e.offset + e.len <= range.start);
    layout.entries[first..]
        .iter()
        .take_while(move |e| e.offset < range.end)
        .filter_map(move |e| {
            let start = e.offset.max(range.start);
            let end = (e.offset + e.len).min(range.end);
            (start < end).then(|| (e, start - e.offset..end - e.offset))
        })
}

/// Appends the values `window` of the flat vector of `tensors` (each parameter's flat tensor
/// by path) to `out`, read back one segment at a time: zeros where a parameter has no
/// tensor, and for the padding past the last parameter.
pub(crate) fn read_window(
    layout: &Layout,
    tensors: &BTreeMap<String, Tensor<1>>,
    window: Range<usize>,
    out: &mut Vec<f32>,
) {
    let end = out.len() + window.len();
    for (entry, values) in segments(layout, window) {
        match tensors.get(&entry.path) {
            Some(t) => out.extend(lmforge_model::host_values(t.clone().narrow(
                0,
                values.start,
                values.len(),
            ))),
            None => out.resize(out.len() + values.len(), 0.0),
        }
    }
    out.resize(end, 0.0);
}

/// Writes `values`, the window `window` of the flat vector, into `tensors` in place (a
/// tensor held nowhere else is written without a copy), cast to `dtype` when given; a
/// parameter without a tensor is left out.
pub(crate) fn write_window(
    layout: &Layout,
    tensors: &mut BTreeMap<String, Tensor<1>>,
    window: Range<usize>,
    values: &[f32],
    dtype: Option<FloatDType>,
) {
    let start = window.start;
    for (entry, piece) in segments(layout, window) {
        let Some(tensor) = tensors.remove(&entry.path) else {
            continue;
        };
        let from = entry.offset + piece.start - start;
        let n = piece.len();
        let mut update = Tensor::<1>::from_data(
            TensorData::new(values[from..from + n].to_vec(), [n]),
            &tensor.device(),
        );
        if let Some(dtype) = dtype {
            update = update.cast(dtype);
        }
        tensors.insert(entry.path.clone(), tensor.slice_assign([piece], update));
    }
}
