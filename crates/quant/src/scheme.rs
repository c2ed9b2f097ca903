//! The quantization schemes: how many codes, how many values share a scale.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Values that share one scale in the block-wise schemes (GGML's `QK8_0`/`QK4_0`).
pub const BLOCK: usize = 32;

/// How a weight matrix is turned into integer codes and scales. Every scheme is symmetric
/// (zero is exactly zero) and round-to-nearest, so that each value is off by at most half its
/// scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    /// INT8, one f32 scale per output channel (row): `amax(row) / 127`. The default.
    #[serde(rename = "int8")]
    Int8,
    /// INT8, one f32 scale for the whole matrix: one outlier coarsens every value.
    #[serde(rename = "int8-tensor")]
    Int8Tensor,
    /// INT8 in blocks of 32 values along a row with an f16 scale each (GGML's Q8_0):
    /// 8.5 bits per weight.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit codes −7..=7 in blocks of 32 values with an f16 scale each, two codes a byte
    /// (GGML's Q4_0 layout): 4.5 bits per weight.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl Scheme {
    /// Every scheme, in the order the docs list them.
    pub const ALL: [Scheme; 4] = [Scheme::Int8, Scheme::Int8Tensor, Scheme::Q8_0, Scheme::Q4_0];

    /// The name on the command line and in `lmforge.json`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Int8 => "int8",
            Scheme::Int8Tensor => "int8-tensor",
            Scheme::Q8_0 => "q8_0",
            Scheme::Q4_0 => "q4_0",
        }
    }

    /// The largest code: values map to `-levels..=levels`.
    pub fn levels(self) -> f32 {
        match self {
            Scheme::Q4_0 => 7.0,
            _ => 127.0,
        }
    }

    /// Whether scales are per block of [`BLOCK`] values, stored as f16.
    pub fn is_blocked(self) -> bool {
        matches!(self, Scheme::Q8_0 | Scheme::Q4_0)
    }

    /// Code bytes of one row of `cols` values.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            // Blocks are padded to 32 codes, 16 bytes, so that a block is always one load.
            Scheme::Q4_0 => cols.div_ceil(BLOCK) * BLOCK / 2,
            _ => cols,
        }
    }

    /// Scales of a `rows × cols` matrix.
    pub fn scale_count(self, rows: usize, cols: usize) -> usize {
        match self {
            Scheme::Int8 => rows,
            Scheme::Int8Tensor => 1,
            Scheme::Q8_0 | Scheme::Q4_0 => rows * cols.div_ceil(BLOCK),
        }
    }

    /// Bytes a `rows × cols` matrix takes: codes plus scales.
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        let scale_bytes = if self.is_blocked() { 2 } else { 4 };
        rows * self.row_bytes(cols) + self.scale_count(rows, cols) * scale_bytes
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Scheme {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.name() == s)
            .ok_or_else(|| Error::UnknownScheme(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_through_parse_and_serde() {
        for scheme in Scheme::ALL {
            assert_eq!(scheme.name().parse::<Scheme>().unwrap(), scheme);
            let json = serde_json::to_string(&scheme).unwrap();
            assert_eq!(json, format!("\"{scheme}\""));
            assert_eq!(serde_json::from_str::<Scheme>(&json).unwrap(), scheme);
        }
        let err = "int4".parse::<Scheme>().unwrap_err().to_string();
        assert!(err.contains("int4") && err.contains("q4_0"), "{err}");
    }

    #[test]
    fn sizes_follow_the_ggml_layouts() {
        // A 32-value block: Q8_0 34 bytes, Q4_0 18 bytes, as GGML's block_q8_0/block_q4_0.
        assert_eq!(Scheme::Q8_0.bytes(1, 32), 34);
        assert_eq!(Scheme::Q4_0.bytes(1, 32), 18);
        assert_eq!(Scheme::Int8.bytes(3, 10), 3 * 10 + 3 * 4);
        assert_eq!(Scheme::Int8Tensor.bytes(3, 10), 3 * 10 + 4);
        // A ragged last block is padded to whole bytes of codes but keeps one scale.
        assert_eq!(Scheme::Q4_0.bytes(2, 33), 2 * 32 + 2 * 2 * 2);
    }
}
