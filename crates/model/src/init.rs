//! Seeded weight initialisation on the host.
//!
//! burn draws initial weights from a backend RNG that is global on some backends and consumed by
//! whichever thread initialises a lazy parameter first, so the same seed does not always give
//! the same model. Drawing every weight here, in a fixed order, from one ChaCha8 stream makes a
//! seed mean one model: on flex, wgpu or CUDA, in tests running in parallel, on every run.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Draws normal weights from one seeded stream, in the order the model asks for them.
pub struct SeededInit {
    rng: ChaCha8Rng,
}

impl SeededInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A uniform draw in (0, 1]: 53 random bits, never 0 (Box–Muller takes its logarithm).
    fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// `n` draws from N(0, std²) by Box–Muller, both outputs of each pair used.
    pub fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let radius = (-2.0 * self.uniform().ln()).sqrt() * std;
            let angle = std::f64::consts::TAU * self.uniform();
            out.push((radius * angle.cos()) as f32);
            out.push((radius * angle.sin()) as f32);
        }
        out.truncate(n);
        out
    }

    /// A `[rows, cols]` parameter drawn from N(0, std²).
    pub fn matrix(
        &mut self,
        rows: usize,
        cols: usize,
        std: f64,
        device: &Device,
    ) -> Param<Tensor<2>> {
        Param::from_data(
            TensorData::new(self.normal(rows * cols, std), [rows, cols]),
            device,
        )
    }

    /// A linear layer `d_in → d_out` with N(0, std²) weights and (with `bias`) a zero bias.
    pub fn linear(
        &mut self,
        d_in: usize,
        d_out: usize,
        std: f64,
        bias: bool,
        device: &Device,
    ) -> Linear {
        Linear {
            weight: self.matrix(d_in, d_out, std, device),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    }

    /// An embedding table of `n` vectors of width `d` drawn from N(0, std²).
    pub fn embedding(&mut self, n: usize, d: usize, std: f64, device: &Device) -> Embedding {
        Embedding {
            weight: self.matrix(n, d, std, device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_the_right_moments() {
        let a = SeededInit::new(3).normal(100_001, 0.5);
        assert_eq!(a, SeededInit::new(3).normal(100_001, 0.5));
        assert_ne!(a, SeededInit::new(4).normal(100_001, 0.5));
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
        assert!(a.iter().all(|x| x.is_finite()));
    }
}
