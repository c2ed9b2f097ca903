//! GPT-2's tanh GELU: value and derivative in one vectorised pass.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Autodiff, Flex, TensorMetadata};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use super::exp_nonpositive;

/// Elements per rayon task: small enough to split a `[8, 256, 512]` activation over the cores,
/// large enough that the split costs nothing next to the work.
const CHUNK: usize = 1 << 15;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044_715;

/// GPT-2's tanh approximation of GELU (`gelu_new`), as burn's `gelu_approximate`, with its
/// gradient: see [`crate::fused`].
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if device != Device::flex() || x.dtype() != DType::F32 {
        return gelu_approximate(x);
    }
    if !x.is_autodiff() {
        let shape = x.shape();
        let data = x.into_data();
        let input = data.as_slice::<f32>().expect("an f32 tensor holds f32");
        let (y, _) = gelu_on_host(input, false);
        return Tensor::from_data(TensorData::new(y, shape), &device);
    }
    let x = match x.clone().try_into_primitive::<Autodiff<Flex>>() {
        Ok(primitive) => {
            // Its buffer then has one owner, and is read in place rather than copied.
            drop(x);
            primitive
        }
        // A gradient-checkpointing device: burn's own op.
        Err(_) => return gelu_approximate(x),
    };
    let (x, node) = x.into_parts();
    let shape = x.shape();
    let data = x.into_data();
    let input = data.as_slice::<f32>().expect("an f32 tensor holds f32");
    let host = |values| FlexTensor::from_data(TensorData::new(values, shape.clone()));
    // The derivative only where a gradient will ask for it.
    let out = match GeluBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, slope) = gelu_on_host(input, true);
            prep.finish(host(slope), host(y))
        }
        OpsKind::UnTracked(prep) => prep.finish(host(gelu_on_host(input, false).0)),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}

/// The backward keeps `gelu′(x)` from the forward: one multiplication.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            Flex::float_mul(grad, ops.state)
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
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
