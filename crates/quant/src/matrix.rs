//! Quantized matrices: integer codes and scales, row-major with rows as output channels.
//!
//! A matrix is always stored the way a dot-product kernel reads it: row `r` holds the weights
//! that produce output `r` (PyTorch's `nn.Linear` `[out, in]`, an embedding's `[vocab, d]`),
//! so that scales run along output channels and blocks along the reduced dimension.

use half::f16;

use crate::scheme::{BLOCK, Scheme};
use crate::{Error, Result};

/// A `rows × cols` matrix of integer codes with their scales.
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix {
    pub(crate) scheme: Scheme,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// `rows × scheme.row_bytes(cols)`: i8 codes as bytes, or for Q4_0 per 32-value block 16
    /// bytes whose low nibble is value `i` and high nibble value `i + 16`, each code + 8.
    pub(crate) codes: Vec<u8>,
    /// `scheme.scale_count(rows, cols)` scales: one, one per row, or one per block (row-major),
    /// block scales already rounded to the f16 they are stored as.
    pub(crate) scales: Vec<f32>,
}

/// What quantizing cost, measured against the original values.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ErrorStats {
    /// Largest `|original − dequantized|`.
    pub max_abs: f32,
    /// Mean `|original − dequantized|`.
    pub mean_abs: f32,
    /// Largest `|error| / (scale/2)` over the values: at most 1 by construction.
    pub max_relative_to_half_scale: f32,
}

/// The scale that maps `amax` onto `levels`; for f16-stored block scales, the smallest f16 at
/// or above it, so that no value in the block rounds past the last code.
fn scale_for(amax: f32, levels: f32, as_f16: bool) -> Option<f32> {
    let scale = amax / levels;
    if !as_f16 {
        return Some(scale);
    }
    let mut half = f16::from_f32(scale);
    if half.to_f32() < scale {
        half = f16::from_bits(half.to_bits() + 1);
    }
    half.is_finite().then(|| half.to_f32())
}

fn code(x: f32, scale: f32, levels: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    (x / scale).round().clamp(-levels, levels) as i8
}

impl QMatrix {
    /// Quantizes row-major `values` (`rows × cols`) of the tensor `name` (named in errors).
    /// NaN and infinite values are rejected: they have no code, and a scale computed from an
    /// infinity would zero every other value of its row or block.
    pub fn quantize(
        name: &str,
        values: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> Result<QMatrix> {
        if values.len() != rows * cols {
            return Err(Error::Shape {
                tensor: name.to_string(),
                message: format!("{} values for {rows} × {cols}", values.len()),
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                tensor: name.to_string(),
                row: i / cols.max(1),
                col: i % cols.max(1),
                value: values[i],
            });
        }
        let levels = scheme.levels();
        let amax = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let too_large = |row: usize, amax: f32| Error::ScaleOverflow {
            tensor: name.to_string(),
            row,
            amax,
        };
        let mut codes = vec![0u8; rows * scheme.row_bytes(cols)];
        let mut scales = Vec::with_capacity(scheme.scale_count(rows, cols));
        match scheme {
            Scheme::Int8Tensor => scales.push(amax(values) / levels),
            Scheme::Int8 => scales.extend(values.chunks(cols.max(1)).map(|r| amax(r) / levels)),
            Scheme::Q8_0 | Scheme::Q4_0 => {
                for (r, row) in values.chunks(cols.max(1)).enumerate().take(rows) {
                    for block in row.chunks(BLOCK) {
                        let a = amax(block);
                        scales.push(scale_for(a, levels, true).ok_or_else(|| too_large(r, a))?);
                    }
                }
            }
        }
        let row_bytes = scheme.row_bytes(cols);
        for r in 0..rows {
            let row = &values[r * cols..(r + 1) * cols];
            let out = &mut codes[r * row_bytes..(r + 1) * row_bytes];
            match scheme {
                Scheme::Int8Tensor | Scheme::Int8 => {
                    let s = scales[if scheme == Scheme::Int8 { r } else { 0 }];
                    for (o, &x) in out.iter_mut().zip(row) {
                        *o = code(x, s, levels) as u8;
                    }
                }
                Scheme::Q8_0 => {
                    let blocks = cols.div_ceil(BLOCK);
                    for (b, (o, x)) in out.chunks_mut(BLOCK).zip(row.chunks(BLOCK)).enumerate() {
                        let s = scales[r * blocks + b];
                        for (o, &x) in o.iter_mut().zip(x) {
                            *o = code(x, s, levels) as u8;
                        }
                    }
                }
                Scheme::Q4_0 => {
                    let blocks = cols.div_ceil(BLOCK);
                    for b in 0..blocks {
                        let s = scales[r * blocks + b];
                        let x = &row[b * BLOCK..((b + 1) * BLOCK).min(cols)];
                        // Padding past the row's end is code 0 (nibble 8).
                        let nibble =
                            |i: usize| x.get(i).map_or(8, |&v| (code(v, s, 7.0) + 8) as u8);
                        for i in 0..BLOCK / 2 {
                            out[b * BLOCK / 2 + i] = nibble(i) | (nibble(i + BLOCK / 2) << 4);
                        }
                    }
                }
            }
        }
        Ok(QMatrix {
            scheme,
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// Builds a matrix from stored parts, checking every length against the shape and every
    /// scale for being finite and non-negative (a damaged file is an error, not garbage).
    pub fn from_parts(
        name: &str,
        scheme: Scheme,
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
    ) -> Result<QMatrix> {
        let shape = |message: String| Error::Shape {
            tensor: name.to_string(),
            message,
        };
        if codes.len() != rows * scheme.row_bytes(cols) {
            return Err(shape(format!(
                "{} code bytes for {rows} × {cols} in {scheme} (expected {})",
                codes.len(),
                rows * scheme.row_bytes(cols)
            )));
        }
        if scales.len() != scheme.scale_count(rows, cols) {
            return Err(shape(format!(
                "{} scales for {rows} × {cols} in {scheme} (expected {})",
                scales.len(),
                scheme.scale_count(rows, cols)
            )));
        }
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(shape(format!("scale {bad} is not a finite value ≥ 0")));
        }
        Ok(QMatrix {
            scheme,
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Output channels.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (the reduced dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The code bytes (layout in [`QMatrix`]'s field docs and docs/quant.md).
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The scales, as f32 (block scales hold f16 values exactly).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes the codes and scales take on disk.
    pub fn bytes(&self) -> usize {
        self.scheme.bytes(self.rows, self.cols)
    }

    /// The scale of value `col` of row `row`.
    pub fn scale(&self, row: usize, col: usize) -> f32 {
        match self.scheme {
            Scheme::Int8Tensor => self.scales[0],
            Scheme::Int8 => self.scales[row],
            Scheme::Q8_0 | Scheme::Q4_0 => {
                self.scales[row * self.cols.div_ceil(BLOCK) + col / BLOCK]
            }
        }
    }

    /// The code of value `col` of row `row`.
    pub fn code(&self, row: usize, col: usize) -> i8 {
        let row_bytes = self.scheme.row_bytes(self.cols);
        let codes = &self.codes[row * row_bytes..(row + 1) * row_bytes];
        match self.scheme {
            Scheme::Q4_0 => {
                let (block, i) = (col / BLOCK, col % BLOCK);
                let byte = codes[block * BLOCK / 2 + i % (BLOCK / 2)];
                let nibble = if i < BLOCK / 2 { byte & 15 } else { byte >> 4 };
                nibble as i8 - 8
            }
            _ => codes[col] as i8,
        }
    }

    /// Row `row` as f32 into `out` (`cols` long): an embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        for (col, o) in out.iter_mut().enumerate().take(self.cols) {
            *o = self.code(row, col) as f32 * self.scale(row, col);
        }
    }

    /// The whole matrix as f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_mut(self.cols.max(1)).enumerate().take(self.rows) {
            self.dequantize_row(r, row);
        }
        out
    }

    /// The error of these codes against the `original` values they were made from.
    pub fn error_stats(&self, original: &[f32]) -> ErrorStats {
        let mut stats = ErrorStats::default();
        let mut sum = 0f64;
        let mut row = vec![0f32; self.cols];
        for r in 0..self.rows {
            self.dequantize_row(r, &mut row);
            for (c, (&x, &q)) in original[r * self.cols..].iter().zip(&row).enumerate() {
                let err = (x - q).abs();
                sum += err as f64;
                stats.max_abs = stats.max_abs.max(err);
                let half = self.scale(r, c) / 2.0;
                if half > 0.0 {
                    stats.max_relative_to_half_scale =
                        stats.max_relative_to_half_scale.max(err / half);
                }
            }
        }
        stats.mean_abs = (sum / (self.rows * self.cols).max(1) as f64) as f32;
        stats
    }
}

/// A weight matrix the CPU kernels multiply by: f32 or quantized, rows as output channels.
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    /// f32 values, packed in panels of [`PANEL`] rows (see [`Matrix::f32`]).
    F32 {
        /// Output channels.
        rows: usize,
        /// Values per row.
        cols: usize,
        /// Panel `p` holds rows `p·PANEL..(p+1)·PANEL` column by column: row `p·PANEL + i`,
        /// column `c` is at `(p·cols + c)·PANEL + i`. The last panel is padded with zeros.
        panels: Vec<f32>,
    },
    /// Codes and scales.
    Quantized(QMatrix),
}

/// Rows per panel of an f32 [`Matrix`]. Packed so, one column of a panel is one vector
/// register's worth of outputs: the kernel multiplies it by one broadcast input value per
/// input, so a product needs no horizontal sums, and each loaded weight serves every input of
/// a batch (see `kernel.rs`).
pub const PANEL: usize = 16;

impl Matrix {
    /// An f32 matrix from row-major `values` (`rows × cols` of them).
    ///
    /// # Panics
    /// If `values.len() != rows · cols`.
    pub fn f32(rows: usize, cols: usize, values: &[f32]) -> Matrix {
        assert_eq!(
            values.len(),
            rows * cols,
            "an f32 matrix of {rows} × {cols}"
        );
        let mut panels = vec![0f32; rows.div_ceil(PANEL) * PANEL * cols];
        for (r, row) in values.chunks(cols.max(1)).enumerate() {
            let (p, i) = (r / PANEL, r % PANEL);
            for (c, &v) in row.iter().enumerate() {
                panels[(p * cols + c) * PANEL + i] = v;
            }
        }
        Matrix::F32 { rows, cols, panels }
    }

    /// Output channels.
    pub fn rows(&self) -> usize {
        match self {
            Matrix::F32 { rows, .. } => *rows,
            Matrix::Quantized(q) => q.rows,
        }
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        match self {
            Matrix::F32 { cols, .. } => *cols,
            Matrix::Quantized(q) => q.cols,
        }
    }

    /// Bytes the weights take (without the padding of the last panel).
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::F32 { rows, cols, .. } => rows * cols * 4,
            Matrix::Quantized(q) => q.bytes(),
        }
    }

    /// Row `row` as f32 into `out`.
    pub fn row(&self, row: usize, out: &mut [f32]) {
        match self {
            Matrix::F32 { cols, panels, .. } => {
                let (p, i) = (row / PANEL, row % PANEL);
                let panel = &panels[p * cols * PANEL..(p + 1) * cols * PANEL];
                for (o, column) in out.iter_mut().zip(panel.chunks_exact(PANEL)) {
                    *o = column[i];
                }
            }
            Matrix::Quantized(q) => q.dequantize_row(row, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packed_rows_read_back_as_given() {
        for (rows, cols) in [(1, 1), (15, 3), (16, 8), (17, 5), (40, 128), (3, 0)] {
            let values: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let m = Matrix::f32(rows, cols, &values);
            assert_eq!(
                (m.rows(), m.cols(), m.bytes()),
                (rows, cols, rows * cols * 4)
            );
            let mut row = vec![f32::NAN; cols];
            for r in 0..rows {
                m.row(r, &mut row);
                assert_eq!(row, values[r * cols..(r + 1) * cols]);
            }
        }
    }

    /// The seed talk's example, which docs/quant.md quotes with these numbers.
    #[test]
    fn the_seed_example_in_every_scheme() {
        let x = [0.34f32, 3.75, 5.64, 1.12, 2.7];
        let q = QMatrix::quantize("seed", &x, 1, 5, Scheme::Int8).unwrap();
        let codes: Vec<i8> = (0..5).map(|c| q.code(0, c)).collect();
        assert_eq!(codes, [8, 84, 127, 25, 61]);
        assert!((q.scales()[0] - 5.64 / 127.0).abs() < 1e-9);
        let back = q.dequantize();
        let stats = q.error_stats(&x);
        assert!(stats.max_relative_to_half_scale <= 1.0 + 1e-5, "{stats:?}");
        assert!((back[2] - 5.64).abs() < 1e-6);
        let q4 = QMatrix::quantize("seed", &x, 1, 5, Scheme::Q4_0).unwrap();
        let codes: Vec<i8> = (0..5).map(|c| q4.code(0, c)).collect();
        assert_eq!(codes, [0, 5, 7, 1, 3]);
    }

    #[test]
    fn zero_rows_stay_exactly_zero() {
        for scheme in Scheme::ALL {
            let mut x = vec![0f32; 3 * 40];
            x[40..80]
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32 - 20.0);
            let q = QMatrix::quantize("w", &x, 3, 40, scheme).unwrap();
            let back = q.dequantize();
            assert!(back[..40].iter().all(|&v| v == 0.0), "{scheme}");
            assert!(back[80..].iter().all(|&v| v == 0.0), "{scheme}");
        }
    }

    #[test]
    fn non_finite_values_are_named() {
        let mut x = vec![1f32; 12];
        x[7] = f32::NAN;
        let err = QMatrix::quantize("blocks.0.mlp.up.weight", &x, 3, 4, Scheme::Int8)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks.0.mlp.up.weight") && err.contains("row 1, column 3"),
            "{err}"
        );
        x[7] = f32::INFINITY;
        assert!(QMatrix::quantize("w", &x, 3, 4, Scheme::Q4_0).is_err());
    }

    #[test]
    fn block_scales_beyond_f16_are_an_error() {
        let x = [1e9f32, 1.0];
        let err = QMatrix::quantize("w", &x, 1, 2, Scheme::Q8_0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("f16"), "{err}");
        // Per-channel scales are f32: the same row quantizes.
        assert!(QMatrix::quantize("w", &x, 1, 2, Scheme::Int8).is_ok());
    }

    #[test]
    fn damaged_parts_are_rejected() {
        let q = QMatrix::quantize("w", &[1.0; 64], 2, 32, Scheme::Q4_0).unwrap();
        let short = QMatrix::from_parts(
            "w",
            Scheme::Q4_0,
            2,
            32,
            q.codes[1..].to_vec(),
            q.scales.clone(),
        );
        assert!(short.unwrap_err().to_string().contains("code bytes"));
        let mut scales = q.scales.clone();
        scales[1] = f32::NAN;
        let bad = QMatrix::from_parts("w", Scheme::Q4_0, 2, 32, q.codes.clone(), scales);
        assert!(bad.unwrap_err().to_string().contains("scale NaN"));
    }

    fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
        (1usize..6, 1usize..80).prop_flat_map(|(rows, cols)| {
            let value = prop_oneof![
                8 => -2.0f32..2.0,
                1 => Just(0.0f32),
                // Outliers, within what an f16 block scale can hold (65504 · 7).
                1 => -4.0e5f32..4.0e5,
                1 => -1e-6f32..1e-6,
            ];
            (
                Just(rows),
                Just(cols),
                prop::collection::vec(value, rows * cols),
            )
        })
    }

    proptest! {
        #[test]
        fn error_is_at_most_half_a_scale((rows, cols, x) in matrix(), zero_row in any::<bool>()) {
            let mut x = x;
            if zero_row {
                x[..cols].iter_mut().for_each(|v| *v = 0.0);
            }
            for scheme in Scheme::ALL {
                let q = QMatrix::quantize("w", &x, rows, cols, scheme).unwrap();
                prop_assert_eq!(q.codes.len(), rows * scheme.row_bytes(cols));
                let back = q.dequantize();
                for r in 0..rows {
                    for c in 0..cols {
                        let (orig, got, s) = (x[r * cols + c], back[r * cols + c], q.scale(r, c));
                        // Rounding x/s is exact to half a scale; the division and product add
                        // a few ulps of the value.
                        let bound = s / 2.0 + orig.abs() * 4.0 * f32::EPSILON;
                        prop_assert!((orig - got).abs() <= bound,
                            "{} [{},{}]: {} → {} (scale {})", scheme, r, c, orig, got, s);
                        let level = q.code(r, c).unsigned_abs() as f32;
                        prop_assert!(level <= scheme.levels());
                    }
                }
                let again = QMatrix::from_parts("w", scheme, rows, cols, q.codes.clone(), q.scales.clone()).unwrap();
                prop_assert_eq!(again, q);
            }
        }

        #[test]
        fn arbitrary_parts_never_panic(
            codes in prop::collection::vec(any::<u8>(), 0..100),
            scales in prop::collection::vec(any::<f32>(), 0..8),
            rows in 0usize..4, cols in 0usize..70, s in 0usize..4,
        ) {
            let scheme = Scheme::ALL[s];
            if let Ok(q) = QMatrix::from_parts("w", scheme, rows, cols, codes, scales) {
                let back = q.dequantize();
                prop_assert_eq!(back.len(), rows * cols);
            }
        }
    }
}
