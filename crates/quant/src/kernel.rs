//! `y = x · Wᵀ` on the CPU with the weights read as stored — f32, or integer codes with their
//! scales — never a whole f32 copy of a quantized matrix.
//!
//! f32 matrices are packed in panels of [`PANEL`] rows, column by column ([`Matrix::f32`]): a
//! tile multiplies one broadcast input value by a panel column (a vector of outputs), so there
//! are no horizontal sums, and a batch's inputs share every loaded column, eight at a time —
//! what makes a batched decoding step cheaper per token than a single one. Every output is the
//! same sequence of fused multiply-adds over the columns whatever the batch, so batched and
//! single results are bit for bit equal.
//!
//! Quantized matrices are read row by row. Two ways to use an integer code: widen it to f32 in a register and multiply (every
//! scheme; what memory-bound matrices need, since the codes are a quarter of the bytes), or,
//! for INT8 matrices of short rows ([`SHORT_ROW`]), round the input to i16 once and take exact
//! integer dot products (what cache-resident small models need: there the widening is the
//! bottleneck). The loops are written for LLVM's vectoriser (independent lanes, no reduction
//! across them until the end) and run inside pulp's `#[target_feature]` dispatch, so they
//! compile to AVX-512 or AVX2 where the CPU has it, with `mul_add` as one FMA instruction (a CPU
//! without FMA takes pulp's scalar path, where it is a libm call: correct, slow, and older than
//! 2013).

use rayon::prelude::*;

use crate::matrix::{Matrix, PANEL, QMatrix};
use crate::scheme::{BLOCK, Scheme};

const LANES: usize = 32;

/// Matrices smaller than this many weights run on the calling thread: a rayon split costs
/// more than it saves on a 128 × 128 projection.
const PARALLEL_WEIGHTS: usize = 1 << 18;

#[inline(always)]
fn sum_lanes(acc: [f32; LANES]) -> f32 {
    acc.iter().sum()
}

/// `Σ x·code` over one row of i8 codes (the per-row scale is applied by the caller).
#[inline(always)]
fn dot_i8(x: &[f32], codes: &[u8]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, xt) = x.as_chunks::<LANES>();
    let (qc, qt) = codes.as_chunks::<LANES>();
    for (xs, qs) in xc.iter().zip(qc) {
        for k in 0..LANES {
            acc[k] = xs[k].mul_add((qs[k] as i8) as f32, acc[k]);
        }
    }
    sum_lanes(acc) + tail_i8(xt, qt)
}

/// `Σ x·code` over the codes left after the last whole [`LANES`] chunk: [`dot_i8`]'s and
/// [`dot4_i8`]'s tails alike.
#[inline(always)]
fn tail_i8(x: &[f32], codes: &[u8]) -> f32 {
    x.iter()
        .zip(codes)
        .map(|(a, &q)| a * (q as i8) as f32)
        .sum::<f32>()
}

/// [`dot_i8`] of one row of codes against four inputs at once: each code is widened to f32
/// once for all four. Per input it is the same sequence of operations as [`dot_i8`], so an
/// output's bits do not depend on the batch it was computed in. Plain loops over named
/// accumulators (no closures, which would be compiled outside pulp's target features).
#[inline(always)]
fn dot4_i8(x: [&[f32]; 4], codes: &[u8]) -> [f32; 4] {
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let (c0, t0) = x[0].as_chunks::<LANES>();
    let (c1, t1) = x[1].as_chunks::<LANES>();
    let (c2, t2) = x[2].as_chunks::<LANES>();
    let (c3, t3) = x[3].as_chunks::<LANES>();
    let (qc, qt) = codes.as_chunks::<LANES>();
    let n = qc
        .len()
        .min(c0.len())
        .min(c1.len())
        .min(c2.len())
        .min(c3.len());
    for i in 0..n {
        let qs = &qc[i];
        let mut w = [0f32; LANES];
        for k in 0..LANES {
            w[k] = (qs[k] as i8) as f32;
        }
        let (y0, y1, y2, y3) = (&c0[i], &c1[i], &c2[i], &c3[i]);
        for k in 0..LANES {
            a0[k] = y0[k].mul_add(w[k], a0[k]);
            a1[k] = y1[k].mul_add(w[k], a1[k]);
            a2[k] = y2[k].mul_add(w[k], a2[k]);
            a3[k] = y3[k].mul_add(w[k], a3[k]);
        }
    }
    [
        sum_lanes(a0) + tail_i8(t0, qt),
        sum_lanes(a1) + tail_i8(t1, qt),
        sum_lanes(a2) + tail_i8(t2, qt),
        sum_lanes(a3) + tail_i8(t3, qt),
    ]
}

/// Inputs per [`dot4_i8`] call.
const INT8_GROUP: usize = 4;

/// Output `row` of an INT8 matrix (f32 path) for every input of `x` into `out[b]`.
#[inline(always)]
fn int8_row_all_inputs(q: &QMatrix, row: usize, x: &[f32], out: &mut [f32]) {
    let cols = q.cols;
    let codes = &q.codes[row * cols..(row + 1) * cols];
    let scale = if q.scheme == Scheme::Int8 {
        q.scales[row]
    } else {
        q.scales[0]
    };
    let mut groups = out.chunks_exact_mut(INT8_GROUP);
    let mut b = 0;
    for group in &mut groups {
        let xs = [
            &x[b * cols..(b + 1) * cols],
            &x[(b + 1) * cols..(b + 2) * cols],
            &x[(b + 2) * cols..(b + 3) * cols],
            &x[(b + 3) * cols..(b + 4) * cols],
        ];
        let sums = dot4_i8(xs, codes);
        for i in 0..INT8_GROUP {
            group[i] = scale * sums[i];
        }
        b += INT8_GROUP;
    }
    for y in groups.into_remainder() {
        *y = scale * dot_i8(&x[b * cols..(b + 1) * cols], codes);
        b += 1;
    }
}

/// Columns per exact integer partial sum: 512 · 32767 · 127 < 2³¹.
const INT_CHUNK: usize = 512;

/// `Σ x·code` with `x` as i16 (see [`Activations`]), in integers: LLVM turns the reduction of
/// sign-extended products into `vpmaddwd` (two multiply-adds per 32-bit lane), where the f32
/// path spends a widening, a conversion and an FMA on every code. Rows left over after the
/// four-row groups of [`dot4_i16_i8`] take it.
#[inline(always)]
fn dot_i16_i8(x: &[i16], codes: &[u8]) -> f32 {
    let mut total = 0f32;
    for (xc, qc) in x.chunks(INT_CHUNK).zip(codes.chunks(INT_CHUNK)) {
        let sum = xc.iter().zip(qc).fold(0i32, |acc, (&a, &q)| {
            acc.wrapping_add((a as i32).wrapping_mul((q as i8) as i32))
        });
        total += sum as f32;
    }
    total
}

/// INT8 rows up to this long take the integer path ([`Activations`]); longer ones the f32 one.
/// Short rows are a small model's, whose weights sit in the CPU's caches: there the f32
/// path's widening and conversion of every code is the bottleneck, and integer dot products
/// made the tiny GPT decode 1.8× faster than f32 instead of 1.1×. Long rows stream their codes
/// from memory, the f32 path keeps up with that, and the integer one (per-row horizontal sums
/// of `vpmaddwd`, or the fused loop below with 32-bit multiplies) ran gpt2-small's layers
/// slower than it (docs/benchmarks.md).
const SHORT_ROW: usize = 256;

/// [`dot_i16_i8`] for four short rows at once: each input value is loaded once for four rows
/// and the four sums run side by side, so the per-row horizontal sum — as costly as the loop
/// on a 128-value row — is paid once per four rows: the tiny GPT's head ran in 60 µs instead
/// of 85.
#[inline(always)]
fn dot4_i16_i8(x: &[i16], codes: &[u8], cols: usize) -> [f32; 4] {
    let mut total = [0f32; 4];
    let mut start = 0;
    while start < x.len() {
        let end = (start + INT_CHUNK).min(x.len());
        let xs = &x[start..end];
        let a = &codes[start..end];
        let b = &codes[cols + start..cols + end];
        let c = &codes[2 * cols + start..2 * cols + end];
        let d = &codes[3 * cols + start..3 * cols + end];
        let mut sum = [0i32; 4];
        for ((((&v, &a), &b), &c), &d) in xs.iter().zip(a).zip(b).zip(c).zip(d) {
            let v = v as i32;
            sum[0] = sum[0].wrapping_add(v.wrapping_mul((a as i8) as i32));
            sum[1] = sum[1].wrapping_add(v.wrapping_mul((b as i8) as i32));
            sum[2] = sum[2].wrapping_add(v.wrapping_mul((c as i8) as i32));
            sum[3] = sum[3].wrapping_add(v.wrapping_mul((d as i8) as i32));
        }
        for i in 0..4 {
            total[i] += sum[i] as f32;
        }
        start = end;
    }
    total
}

/// Outputs `row..row + 4` of `w` for input `b` into `out[0]`, `out[n]`, `out[2n]`, `out[3n]`,
/// where a four-row kernel exists; `false` where not.
#[inline(always)]
fn rows4(
    q: &QMatrix,
    row: usize,
    a: &Activations<'_>,
    b: usize,
    n: usize,
    out: &mut [f32],
) -> bool {
    let Some((values, scales)) = &a.wide else {
        return false;
    };
    let cols = q.cols;
    let x = &values[b * cols..(b + 1) * cols];
    let codes = &q.codes[row * cols..(row + 4) * cols];
    let sums = dot4_i16_i8(x, codes, cols);
    for (i, sum) in sums.into_iter().enumerate() {
        let w_scale = if q.scheme == Scheme::Int8 {
            q.scales[row + i]
        } else {
            q.scales[0]
        };
        out[i * n + b] = w_scale * scales[b] * sum;
    }
    true
}

/// `Σ_blocks scale_b · Σ x·code` over one row of Q8_0 blocks.
#[inline(always)]
fn dot_q8_0(x: &[f32], codes: &[u8], scales: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, xt) = x.as_chunks::<BLOCK>();
    let (qc, qt) = codes.as_chunks::<BLOCK>();
    for ((xs, qs), &s) in xc.iter().zip(qc).zip(scales) {
        for k in 0..LANES {
            acc[k] = xs[k].mul_add((qs[k] as i8) as f32 * s, acc[k]);
        }
    }
    let tail = match scales.get(xc.len()) {
        Some(&s) => {
            s * xt
                .iter()
                .zip(qt)
                .map(|(a, &q)| a * (q as i8) as f32)
                .sum::<f32>()
        }
        None => 0.0,
    };
    sum_lanes(acc) + tail
}

/// One row of Q4_0 blocks: byte `i` of a block holds value `i` (low nibble) and `i + 16`.
#[inline(always)]
fn dot_q4_0(x: &[f32], codes: &[u8], scales: &[f32]) -> f32 {
    const HALF: usize = BLOCK / 2;
    let mut acc = [0f32; LANES];
    let (xc, xt) = x.as_chunks::<BLOCK>();
    let (qc, _) = codes.as_chunks::<HALF>();
    for ((xs, qs), &s) in xc.iter().zip(qc).zip(scales) {
        for k in 0..HALF {
            let lo = (qs[k] & 15) as i32 - 8;
            let hi = (qs[k] >> 4) as i32 - 8;
            acc[k] = xs[k].mul_add(lo as f32 * s, acc[k]);
            acc[k + HALF] = xs[k + HALF].mul_add(hi as f32 * s, acc[k + HALF]);
        }
    }
    let mut tail = 0.0;
    if let (Some(&s), Some(qs)) = (scales.get(xc.len()), qc.get(xc.len())) {
        for (i, &a) in xt.iter().enumerate() {
            let byte = qs[i % HALF];
            let nibble = if i < HALF { byte & 15 } else { byte >> 4 };
            tail += a * (nibble as i32 - 8) as f32;
        }
        tail *= s;
    }
    sum_lanes(acc) + tail
}

/// The inputs of one product: f32, and for INT8 matrices of short rows ([`SHORT_ROW`]) also
/// as i16 with one scale per input row (`amax / 32767`). Rounding an input to 16 bits moves it
/// by at most 1/65534 of its row's largest value — two orders of magnitude below the weights'
/// own 8-bit rounding — and buys integer dot products. Inputs with a NaN or infinity stay on
/// the f32 path.
struct Activations<'a> {
    x: &'a [f32],
    wide: Option<(Vec<i16>, Vec<f32>)>,
}

impl<'a> Activations<'a> {
    fn new(w: &QMatrix, x: &'a [f32]) -> Self {
        let int8 = matches!(w.scheme, Scheme::Int8 | Scheme::Int8Tensor);
        let cols = w.cols.max(1);
        let wide = (int8 && cols <= SHORT_ROW && x.iter().all(|v| v.is_finite())).then(|| {
            let mut values = Vec::with_capacity(x.len());
            let mut scales = Vec::with_capacity(x.len() / cols);
            for row in x.chunks(cols) {
                let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 32767.0;
                let inverse = if scale > 0.0 { scale.recip() } else { 0.0 };
                values.extend(row.iter().map(|v| (v * inverse).round() as i16));
                scales.push(scale);
            }
            (values, scales)
        });
        Activations { x, wide }
    }
}

/// Output `row` of `w` for input `b` of `a`.
#[inline(always)]
fn row_dot(q: &QMatrix, row: usize, a: &Activations<'_>, b: usize) -> f32 {
    let cols = q.cols;
    let x = &a.x[b * cols..(b + 1) * cols];
    match &a.wide {
        Some((values, scales)) => {
            let codes = &q.codes[row * cols..(row + 1) * cols];
            let w_scale = if q.scheme == Scheme::Int8 {
                q.scales[row]
            } else {
                q.scales[0]
            };
            w_scale * scales[b] * dot_i16_i8(&values[b * cols..(b + 1) * cols], codes)
        }
        None => quantized_row_dot(q, row, x),
    }
}

#[inline(always)]
fn quantized_row_dot(q: &QMatrix, row: usize, x: &[f32]) -> f32 {
    let row_bytes = q.scheme.row_bytes(q.cols);
    let codes = &q.codes[row * row_bytes..(row + 1) * row_bytes];
    let blocks = q.cols.div_ceil(BLOCK);
    match q.scheme {
        Scheme::Int8 => q.scales[row] * dot_i8(x, codes),
        Scheme::Int8Tensor => q.scales[0] * dot_i8(x, codes),
        Scheme::Q8_0 => dot_q8_0(x, codes, &q.scales[row * blocks..(row + 1) * blocks]),
        Scheme::Q4_0 => dot_q4_0(x, codes, &q.scales[row * blocks..(row + 1) * blocks]),
    }
}

/// Rows `first..first + out.len() / n` of `y` for every one of the `n` inputs, written
/// `[row][input]` so that each weight row is read once for the whole batch.
struct Rows<'a> {
    w: &'a QMatrix,
    x: &'a Activations<'a>,
    n: usize,
    first: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Rows<'_> {
    type Output = ();

    // Inlined into pulp's `#[target_feature]` function, with everything below it: that is
    // what lets LLVM use the wide registers.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let n = self.n;
        let mut groups = self.out.chunks_exact_mut(4 * n);
        let mut row = self.first;
        for group in &mut groups {
            for b in 0..n {
                if !rows4(self.w, row, self.x, b, n, group) {
                    for i in 0..4 {
                        group[i * n + b] = row_dot(self.w, row + i, self.x, b);
                    }
                }
            }
            row += 4;
        }
        for (i, o) in groups.into_remainder().chunks_mut(n).enumerate() {
            for (b, y) in o.iter_mut().enumerate() {
                *y = row_dot(self.w, row + i, self.x, b);
            }
        }
    }
}

/// [`Rows`] of an INT8 matrix on the f32 path for a batch of at least [`INT8_GROUP`] inputs:
/// a row's codes are widened once for a whole group of inputs, not once per input (at batch 8
/// the widening was most of the product). Its own dispatch, so that the single-input loop's
/// code stays as it was.
struct Int8Rows<'a> {
    w: &'a QMatrix,
    x: &'a [f32],
    n: usize,
    first: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Int8Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (i, out) in self.out.chunks_mut(self.n).enumerate() {
            int8_row_all_inputs(self.w, self.first + i, self.x, out);
        }
    }
}

fn rows_into(w: &QMatrix, x: &Activations<'_>, n: usize, first: usize, out: &mut [f32]) {
    let int8 = matches!(w.scheme, Scheme::Int8 | Scheme::Int8Tensor);
    if int8 && x.wide.is_none() && n >= INT8_GROUP {
        return pulp::Arch::new().dispatch(Int8Rows {
            w,
            x: x.x,
            n,
            first,
            out,
        });
    }
    pulp::Arch::new().dispatch(Rows {
        w,
        x,
        n,
        first,
        out,
    })
}

/// `y[b][r] = Σ_c x[b][c] · w[r][c]` for the `x.len() / w.cols()` inputs of `x`: `y` is
/// `[inputs, w.rows()]`, row-major. Rows are split across rayon's threads for large matrices.
pub fn matmul(w: &Matrix, x: &[f32]) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let n = x.len() / cols.max(1);
    if n == 0 {
        return Vec::new();
    }
    let w = match w {
        Matrix::F32 { panels, .. } => return panels_matmul(rows, cols, panels, x, n),
        Matrix::Quantized(q) => q,
    };
    let x = &Activations::new(w, x);
    let mut by_row = vec![0f32; rows * n];
    if rows * cols < PARALLEL_WEIGHTS {
        rows_into(w, x, n, 0, &mut by_row);
    } else {
        // Chunks of rows sized for two per thread keep the threads busy to the end.
        let chunk = rows
            .div_ceil(rayon::current_num_threads() * 4)
            .max(16)
            .next_multiple_of(4);
        by_row
            .par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(i, out)| rows_into(w, x, n, i * chunk, out));
    }
    if n == 1 {
        return by_row;
    }
    let mut y = vec![0f32; rows * n];
    for (r, values) in by_row.chunks(n).enumerate() {
        for (b, &v) in values.iter().enumerate() {
            y[b * rows + r] = v;
        }
    }
    y
}

/// `acc[i] += v · column[i]`: one input value times one panel column, fused.
#[inline(always)]
fn fma_column(acc: &mut [f32; PANEL], v: f32, column: &[f32; PANEL]) {
    for i in 0..PANEL {
        acc[i] = v.mul_add(column[i], acc[i]);
    }
}

// The tiles below compute every output as the same sequence of fused multiply-adds over
// the columns in order, so a request's logits are bit for bit the same alone or in a batch:
// greedy batching invariance rests on it. Each keeps eight independent accumulators (one
// AVX-512 register each), which hides the multiply-add latency, in separate variables: LLVM
// kept an array of them on the stack. No horizontal sums: a panel column is a vector of
// outputs.

/// One panel × eight inputs (`xt`: the inputs column by column): each loaded column serves
/// eight inputs, which is what makes a batched step cheaper per token than a single one.
#[inline(always)]
fn tile_1x8(panel: &[[f32; PANEL]], xt: &[[f32; 8]]) -> [[f32; PANEL]; 8] {
    let [
        mut a0,
        mut a1,
        mut a2,
        mut a3,
        mut a4,
        mut a5,
        mut a6,
        mut a7,
    ] = [[0f32; PANEL]; 8];
    for (column, v) in panel.iter().zip(xt) {
        fma_column(&mut a0, v[0], column);
        fma_column(&mut a1, v[1], column);
        fma_column(&mut a2, v[2], column);
        fma_column(&mut a3, v[3], column);
        fma_column(&mut a4, v[4], column);
        fma_column(&mut a5, v[5], column);
        fma_column(&mut a6, v[6], column);
        fma_column(&mut a7, v[7], column);
    }
    [a0, a1, a2, a3, a4, a5, a6, a7]
}

/// Four panels × one input.
#[inline(always)]
fn tile_4x1(panels: [&[[f32; PANEL]]; 4], x: &[f32]) -> [[f32; PANEL]; 4] {
    let [mut a0, mut a1, mut a2, mut a3] = [[0f32; PANEL]; 4];
    let columns = panels[0]
        .iter()
        .zip(panels[1])
        .zip(panels[2])
        .zip(panels[3]);
    for ((((c0, c1), c2), c3), &v) in columns.zip(x) {
        fma_column(&mut a0, v, c0);
        fma_column(&mut a1, v, c1);
        fma_column(&mut a2, v, c2);
        fma_column(&mut a3, v, c3);
    }
    [a0, a1, a2, a3]
}

/// One panel × one input (the last panels of a sweep).
#[inline(always)]
fn tile_1x1(panel: &[[f32; PANEL]], x: &[f32]) -> [f32; PANEL] {
    let mut acc = [0f32; PANEL];
    for (column, &v) in panel.iter().zip(x) {
        fma_column(&mut acc, v, column);
    }
    acc
}

/// Every panel of `w` (those `out` has room for) times the inputs: eight at a time (`xt`, see
/// [`eights`]), then one at a time against four panels at a time.
#[inline(always)]
fn panel_sweep(w: &[f32], cols: usize, x: &[f32], xt: &[[f32; 8]], out: &mut [f32]) {
    let n = x.len() / cols;
    let count = out.len() / (n * PANEL);
    let panel = |p: usize| w[p * cols * PANEL..(p + 1) * cols * PANEL].as_chunks().0;
    for (group, xt) in xt.chunks(cols).enumerate() {
        let b0 = group * 8;
        for p in 0..count {
            for (b, values) in tile_1x8(panel(p), xt).iter().enumerate() {
                out[(p * n + b0 + b) * PANEL..][..PANEL].copy_from_slice(values);
            }
        }
    }
    for b in xt.len() / cols * 8..n {
        let x = &x[b * cols..(b + 1) * cols];
        let mut p = 0;
        while p + 4 <= count {
            let tiles = tile_4x1(std::array::from_fn(|r| panel(p + r)), x);
            for (r, values) in tiles.iter().enumerate() {
                out[((p + r) * n + b) * PANEL..][..PANEL].copy_from_slice(values);
            }
            p += 4;
        }
        for p in p..count {
            out[(p * n + b) * PANEL..][..PANEL].copy_from_slice(&tile_1x1(panel(p), x));
        }
    }
}

/// Panels of `w` (as many as `out` has room for) times all `n` inputs, into `out` laid out
/// `[panel][input][PANEL]`.
struct Panels<'a> {
    w: &'a [f32],
    cols: usize,
    x: &'a [f32],
    xt: &'a [[f32; 8]],
    out: &'a mut [f32],
}

impl pulp::WithSimd for Panels<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Panels {
            w,
            cols,
            x,
            xt,
            out,
        } = self;
        panel_sweep(w, cols, x, xt, out);
    }
}

/// The inputs in whole groups of eight, each group column by column (`cols` entries of eight
/// values): one contiguous load per column in [`tile_1x8`]. Built once per product and shared
/// by every thread's panels.
fn eights(x: &[f32], cols: usize, n: usize) -> Vec<[f32; 8]> {
    (0..n / 8)
        .flat_map(|group| {
            (0..cols).map(move |c| std::array::from_fn(|b| x[(group * 8 + b) * cols + c]))
        })
        .collect()
}

fn panels_matmul(rows: usize, cols: usize, panels: &[f32], x: &[f32], n: usize) -> Vec<f32> {
    if cols == 0 {
        return vec![0f32; rows * n]; // empty sums
    }
    let count = rows.div_ceil(PANEL);
    let mut by_panel = vec![0f32; count * n * PANEL];
    let xt = &eights(x, cols, n);
    let run = |first: usize, out: &mut [f32]| {
        let w = &panels[first * cols * PANEL..];
        pulp::Arch::new().dispatch(Panels {
            w,
            cols,
            x,
            xt,
            out,
        });
    };
    if rows * cols < PARALLEL_WEIGHTS {
        run(0, &mut by_panel);
    } else {
        // Four chunks per thread keep the threads busy to the end.
        let chunk = count.div_ceil(rayon::current_num_threads() * 4).max(1);
        by_panel
            .par_chunks_mut(chunk * n * PANEL)
            .enumerate()
            .for_each(|(i, out)| run(i * chunk, out));
    }
    let mut y = vec![0f32; rows * n];
    for (p, panel) in by_panel.chunks(n * PANEL).enumerate() {
        for (b, values) in panel.chunks(PANEL).enumerate() {
            let first = p * PANEL;
            let take = PANEL.min(rows - first);
            y[b * rows + first..][..take].copy_from_slice(&values[..take]);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let n = x.len() / cols;
        let mut y = vec![0f32; n * rows];
        for b in 0..n {
            for r in 0..rows {
                y[b * rows + r] = (0..cols)
                    .map(|c| x[b * cols + c] as f64 * w[r * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn inputs_the_integer_path_cannot_hold_take_the_f32_path() {
        let w: Vec<f32> = (0..8 * 40).map(|i| (i as f32 * 0.37).sin()).collect();
        let q = Matrix::Quantized(QMatrix::quantize("w", &w, 8, 40, Scheme::Int8).unwrap());
        let mut x = vec![0.5f32; 2 * 40];
        x[3] = f32::NAN;
        let y = matmul(&q, &x);
        assert!(y[..8].iter().all(|v| v.is_nan()), "the NaN row stays NaN");
        assert!(
            y[8..].iter().all(|v| v.is_finite()),
            "the other row is computed"
        );
        assert!(matmul(&q, &[0.0; 40]).iter().all(|&v| v == 0.0));
        for m in [q, Matrix::f32(8, 40, &w)] {
            assert!(matmul(&m, &[]).is_empty(), "no inputs, no outputs");
        }
        assert_eq!(matmul(&Matrix::f32(3, 0, &[]), &[]), Vec::<f32>::new());
    }

    /// `a` and `b` values in [-1, 1], xorshift from `seed`.
    fn values(seed: u64, a: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        let first = (0..a).map(|_| next()).collect();
        (first, (0..b).map(|_| next()).collect())
    }

    proptest! {
        /// A batch's outputs are bit for bit each input's alone: the batched kernels keep the
        /// single-input summation order.
        #[test]
        fn batching_changes_no_bit(
            (rows, cols) in prop_oneof![
                (1usize..40, 1usize..100),
                // Rows over SHORT_ROW: INT8 on the f32 path, inputs in groups.
                (1usize..12, 257usize..400),
                // Over PARALLEL_WEIGHTS: the rayon path.
                (2050usize..2100, Just(128usize)),
            ],
            n in 2usize..12,
            seed in any::<u64>(),
        ) {
            let (w, x) = values(seed, rows * cols, n * cols);
            let mut matrices = vec![Matrix::f32(rows, cols, &w)];
            for scheme in Scheme::ALL {
                matrices.push(Matrix::Quantized(QMatrix::quantize("w", &w, rows, cols, scheme).unwrap()));
            }
            for m in &matrices {
                let batched = matmul(m, &x);
                for (b, input) in x.chunks(cols).enumerate() {
                    let alone = matmul(m, input);
                    prop_assert_eq!(
                        batched[b * rows..(b + 1) * rows].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    );
                }
            }
        }

        /// Every kernel equals the product with the dequantized matrix (up to summation order),
        /// for ragged shapes and batches, on the thread path and the rayon path.
        #[test]
        fn kernels_match_the_dequantized_product(
            rows in prop_oneof![1usize..40, 600usize..700],
            cols in prop_oneof![1usize..100, Just(128usize), 257usize..300],
            n in 1usize..7,
            seed in any::<u64>(),
        ) {
            let (w, x) = values(seed, rows * cols, n * cols);
            let dense = Matrix::f32(rows, cols, &w);
            let scale = cols as f32 * 1e-5;
            for (a, b) in matmul(&dense, &x).iter().zip(reference(&w, rows, cols, &x)) {
                prop_assert!((a - b).abs() <= scale, "f32 {} vs {}", a, b);
            }
            for scheme in Scheme::ALL {
                let q = QMatrix::quantize("w", &w, rows, cols, scheme).unwrap();
                let expected = reference(&q.dequantize(), rows, cols, &x);
                let got = matmul(&Matrix::Quantized(q), &x);
                prop_assert_eq!(got.len(), expected.len());
                for (a, b) in got.iter().zip(expected) {
                    prop_assert!((a - b).abs() <= scale, "{} {} vs {}", scheme, a, b);
                }
            }
        }
    }
}
