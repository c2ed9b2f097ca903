//! Element-wise functions computed in one pass over the host memory of a flex tensor, where
//! burn composes them from several ops and scalar libm calls.
//!
//! burn's `gelu_approximate` is `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` as six tensor ops,
//! with `powf` for the cube and libm's `tanhf` one element at a time, and autodiff keeps each
//! op's inputs for its backward: 40 ms forward and backward for the tiny GPT's `[8, 256, 512]`
//! MLP activations, a third of its training step on flex. [`gelu_tanh`] computes the value and
//! its derivative together in one vectorised pass (a few ms). Its gradient enters autodiff by
//! linearisation: the output is `y + (x − x̄)·y′` with `y`, `y′` and `x̄` (the value of `x`)
//! held constant, which is exactly `y` forward (`x − x̄` is zero) and has `y′` as its derivative
//! backward — three cheap ops where burn's composition records six, with the same trick that
//! `lmforge_train::gpt::head_cross_entropy` uses for the loss.
//!
//! On other devices (wgpu's kernels are fused already) and other float types the functions
//! are burn's own.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use lmforge_model::fused::gelu_tanh;
//!
//! let device = Device::flex();
//! let y = gelu_tanh(Tensor::<1>::from_floats([-1.0, 0.0, 1.0], &device));
//! let y: Vec<f32> = y.into_data().try_to_vec::<f32>().unwrap();
//! assert!((y[2] - 0.841_192).abs() < 1e-6 && y[1] == 0.0);
//! ```

use burn::tensor::activation::gelu_approximate;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// Elements per rayon task: small enough to split a `[8, 256, 512]` activation over the cores,
/// large enough that the split costs nothing next to the work.
const CHUNK: usize = 1 << 15;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044_715;

/// GPT-2's tanh approximation of GELU (`gelu_new`), as burn's `gelu_approximate`, with its
/// gradient: see the module's documentation.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if device != Device::flex() || x.dtype() != DType::F32 {
        return gelu_approximate(x);
    }
    let tracked = x.is_autodiff();
    let shape = x.shape();
    let value = x.clone().inner();
    let data = value.clone().into_data();
    let Ok(input) = data.as_slice::<f32>() else {
        return gelu_approximate(x);
    };
    let (y, slope) = gelu_on_host(input, tracked);
    let host = device.clone().inner();
    let y = Tensor::<D>::from_data(TensorData::new(y, shape.clone()), &host);
    if !tracked {
        return y;
    }
    let slope = Tensor::<D>::from_data(TensorData::new(slope, shape), &host);
    Tensor::from_inner(y) + (x - Tensor::from_inner(value)) * Tensor::from_inner(slope)
}

/// `gelu(x)` and, when `slope` is asked for, `gelu′(x)`, on rayon's threads. Not generic, so
/// that it is compiled with this crate's optimisations whoever calls [`gelu_tanh`].
fn gelu_on_host(input: &[f32], slope: bool) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0f32; input.len()];
    let mut dy = vec![0f32; if slope { input.len() } else { 0 }];
    if slope {
        input
            .par_chunks(CHUNK)
            .zip(y.par_chunks_mut(CHUNK))
            .zip(dy.par_chunks_mut(CHUNK))
            .for_each(|((x, y), dy)| pulp::Arch::new().dispatch(Gelu { x, y, dy }));
    } else {
        input
            .par_chunks(CHUNK)
            .zip(y.par_chunks_mut(CHUNK))
            .for_each(|(x, y)| pulp::Arch::new().dispatch(Gelu { x, y, dy: &mut [] }));
    }
    (y, dy)
}

/// One chunk: `y = gelu(x)` and, unless `dy` is empty, `dy = gelu′(x)`.
struct Gelu<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    dy: &'a mut [f32],
}

impl pulp::WithSimd for Gelu<'_> {
    type Output = ();

    // Inlined into pulp's `#[target_feature]` function, so the loops use the wide registers.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        if self.dy.is_empty() {
            for (y, &x) in self.y.iter_mut().zip(self.x) {
                *y = gelu_and_slope(x).0;
            }
        } else {
            for ((y, dy), &x) in self.y.iter_mut().zip(self.dy.iter_mut()).zip(self.x) {
                (*y, *dy) = gelu_and_slope(x);
            }
        }
    }
}

/// `(gelu(x), gelu′(x))`: with `t = tanh(u)`, `u = c·(x + a·x³)`,
/// `gelu = x·(1 + t)/2` and `gelu′ = (1 + t)/2 + x·(1 − t²)·c·(1 + 3a·x²)/2`.
#[inline(always)]
fn gelu_and_slope(x: f32) -> (f32, f32) {
    // Beyond |x| = 10⁶ the tanh is ±1 anyway; the bound keeps `du` finite, so that the slope
    // of a huge input is 0 or 1 rather than 0·∞.
    let x2 = (x * x).min(1e12);
    let u = SQRT_2_OVER_PI * x * CUBIC.mul_add(x2, 1.0);
    let t = tanh(u);
    let half_one_plus_t = 0.5 * (1.0 + t);
    let du = SQRT_2_OVER_PI * (3.0 * CUBIC).mul_add(x2, 1.0);
    let slope = (0.5 * x * (1.0 - t * t)).mul_add(du, half_one_plus_t);
    (x * half_one_plus_t, slope)
}

/// `tanh(u) = sign(u)·(1 − e)/(1 + e)` with `e = exp(−2|u|)`, which never overflows. The
/// absolute error is a few ulps of 1 (the subtraction near `u = 0` loses relative, not
/// absolute, precision), which is what GELU's `x·(1 + t)/2` needs.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = exp_nonpositive(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

/// `exp(z)` for `z ≤ 0` without a libm call, so that loops over it vectorise: `2^k·p(r)` with
/// `k = round(z / ln 2)` and `p` the degree-6 Taylor polynomial on `|r| ≤ ln 2 / 2` (relative
/// error below 2·10⁻⁷). Arguments below −87 give `exp(−87)`, which is 0 to GELU.
#[inline(always)]
fn exp_nonpositive(z: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in any vector width.
    const ROUND: f32 = 12_582_912.0;
    let z = z.max(-87.0);
    let k = (z * LOG2_E + ROUND) - ROUND;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, z));
    // Horner's rule written out: an array iterator here is a call per element unless inlined.
    let p = (1.0f32 / 720.0).mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    // 2^k from its exponent bits; `k + 127` lies in 1..=127, and float arithmetic keeps the
    // overflow checks of a dev build out of the loop, which would stop it vectorising.
    p * f32::from_bits(((k + 127.0) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn exp_matches_libm_over_its_range() {
        let mut worst = 0f32;
        let mut z = 0f32;
        while z > -87.0 {
            let (ours, exact) = (exp_nonpositive(z), z.exp());
            worst = worst.max((ours - exact).abs() / exact);
            z -= 0.001_3;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn tanh_matches_libm() {
        for i in -20_000..=20_000 {
            let u = i as f32 * 1e-3;
            assert!((tanh(u) - u.tanh()).abs() < 3e-7, "tanh({u})");
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
    }

    #[test]
    fn the_value_is_burns_and_the_gradient_is_autodiffs() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::random([3, 70, 530], Distribution::Normal(0.0, 3.0), &device);
        let upstream = Tensor::<3>::random([3, 70, 530], Distribution::Default, &device);
        let grad_of = |f: fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        let (ours, our_grad) = grad_of(gelu_tanh);
        let (burns, burns_grad) = grad_of(gelu_approximate);
        for (a, b) in ours.iter().zip(&burns) {
            assert!((a - b).abs() <= 2e-6 * b.abs().max(1.0), "{a} against {b}");
        }
        for (a, b) in our_grad.iter().zip(&burns_grad) {
            assert!((a - b).abs() <= 2e-5, "gradient {a} against {b}");
        }
    }

    #[test]
    fn without_autodiff_and_on_other_types_it_is_the_value_alone() {
        let device = Device::flex();
        let x = Tensor::<2>::random([5, 40_000], Distribution::Normal(0.0, 2.0), &device);
        let (ours, burns) = (values(gelu_tanh(x.clone())), values(gelu_approximate(x)));
        assert_eq!(ours.len(), burns.len());
        for (a, b) in ours.iter().zip(&burns) {
            assert!((a - b).abs() <= 2e-6 * b.abs().max(1.0));
        }
    }

    proptest! {
        #[test]
        fn any_finite_value_gives_a_finite_bounded_result(
            x in proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO
        ) {
            let (y, dy) = gelu_and_slope(x);
            prop_assert!(y.is_finite() && dy.is_finite(), "gelu({x}) = {y}, slope {dy}");
            // GELU lies between 0 and x; its slope between -0.2 and 1.2.
            prop_assert!(y <= x.max(0.0) && y >= x.min(0.0), "gelu({x}) = {y}");
            prop_assert!((-0.2..=1.2).contains(&dy), "slope at {x}: {dy}");
        }
    }
}
