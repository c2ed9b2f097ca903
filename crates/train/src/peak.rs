//! Peak dense FLOP/s of known accelerators, for MFU: a run on a GPU this table names prints
//! its MFU without `--peak-tflops`. Figures are the vendors' dense (no sparsity) tensor-core
//! peaks for 16-bit inputs and their non-tensor-core f32 peaks.

use crate::step::Precision;

/// (name fragment, bf16/fp16 TFLOP/s, fp32 TFLOP/s), most specific first.
const PEAKS: &[(&str, f64, f64)] = &[
    ("H200", 989.4, 66.9),
    ("H100 PCIe", 756.0, 51.2),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 66.9),
    ("A100", 312.0, 19.5),
    ("L40S", 362.1, 91.6),
    ("A10G", 70.0, 31.2),
    ("V100", 125.0, 15.7),
];

/// The peak TFLOP/s of the device named `name` (as the driver names it, `NVIDIA H100 80GB
/// HBM3`) in `precision`, if the table knows it.
pub fn peak_tflops(name: &str, precision: Precision) -> Option<f64> {
    let (_, half, single) = PEAKS.iter().find(|(part, _, _)| name.contains(part))?;
    Some(match precision {
        Precision::Fp32 => *single,
        Precision::Bf16 | Precision::Fp16 => *half,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_drivers_give_them() {
        assert_eq!(
            peak_tflops("NVIDIA H100 80GB HBM3", Precision::Bf16),
            Some(989.4)
        );
        assert_eq!(
            peak_tflops("NVIDIA H100 PCIe", Precision::Fp16),
            Some(756.0)
        );
        assert_eq!(peak_tflops("NVIDIA H200", Precision::Fp32), Some(66.9));
        assert_eq!(
            peak_tflops("NVIDIA A100-SXM4-40GB", Precision::Bf16),
            Some(312.0)
        );
        assert_eq!(
            peak_tflops("llvmpipe (LLVM 15.0.6, 256 bits)", Precision::Fp32),
            None
        );
    }
}
