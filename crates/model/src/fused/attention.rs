//! Causal attention as one autodiff op on flex: see [`crate::fused`].

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Device, Tensor};

use super::softmax::{gradient_rows, masked_rows};

type Tracked = Autodiff<Flex>;

/// `softmax(q·kᵀ/√d + causal mask)·v` for `q` `[batch, heads, q_len, d]` and `k`, `v`
/// `[batch, heads, k_len, d]`, the mask aligned bottom-right (query `i` sees keys
/// `0..=k_len − q_len + i`, burn's `is_causal`), with its own backward. `None` where it does
/// not apply — another device or float type, no autodiff, a gradient-checkpointing device,
/// more queries than keys — and the caller takes burn's `attention`.
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Option<Tensor<4>> {
    let [_, _, q_len, head_dim] = q.dims();
    let k_len = k.dims()[2];
    let applies = q.device() == Device::flex()
        && q.is_autodiff()
        && [&q, &k, &v].iter().all(|t| t.dtype() == DType::F32)
        && q_len <= k_len
        && head_dim > 0;
    if !applies {
        return None;
    }
    let q = q.try_into_primitive::<Tracked>().ok()?;
    let k = k.try_into_primitive::<Tracked>().ok()?;
    let v = v.try_into_primitive::<Tracked>().ok()?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let (q, q_node) = q.into_parts();
    let (k, k_node) = k.into_parts();
    let (v, v_node) = v.into_parts();
    let scores = Flex::float_matmul(q.clone(), Flex::float_transpose(k.clone()));
    let p = softmax_forward(scores, scale);
    let out = Flex::float_matmul(p.clone(), v.clone());
    let out = match CausalAttention
        .prepare::<NoCheckpointing>([q_node, k_node, v_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved { q, k, v, p, scale }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Tracked>(out))
}

#[derive(Debug)]
struct CausalAttention;

/// What the backward needs: the inputs and the probabilities, `[batch, heads, q_len, k_len]`.
#[derive(Debug, Clone)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    p: FlexTensor,
    scale: f32,
}

impl Backward<Flex, 3> for CausalAttention {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved { q, k, v, p, scale } = ops.state;
        let d_out = grads.consume::<Flex>(&ops.node);
        let [q_parent, k_parent, v_parent] = ops.parents;
        if q_parent.is_some() || k_parent.is_some() {
            let d_p = Flex::float_matmul(d_out.clone(), Flex::float_transpose(v));
            let d_scores = softmax_backward(p.clone(), d_p, scale);
            if let Some(node) = q_parent {
                grads.register::<Flex>(node.id, Flex::float_matmul(d_scores.clone(), k));
            }
            if let Some(node) = k_parent {
                let d_k = Flex::float_matmul(Flex::float_transpose(d_scores), q);
                grads.register::<Flex>(node.id, d_k);
            }
        }
        if let Some(node) = v_parent {
            grads.register::<Flex>(node.id, Flex::float_matmul(Flex::float_transpose(p), d_out));
        }
    }
}

/// The probabilities of `scores` `[.., q_len, k_len]` scaled by `scale` under the causal mask,
/// in place where the buffer is not shared.
fn softmax_forward(scores: FlexTensor, scale: f32) -> FlexTensor {
    let mut data = scores.into_data();
    let dims = data.shape().to_vec();
    let (q_len, k_len) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let values = data
        .as_mut_slice::<f32>()
        .expect("the scores of f32 inputs are f32");
    masked_rows(values, q_len, k_len, scale);
    FlexTensor::from_data(data)
}

/// `scale · P ∘ (dP − rowsum(P ∘ dP))`, the gradient of the scaled scores, written over `dP`.
fn softmax_backward(p: FlexTensor, d_p: FlexTensor, scale: f32) -> FlexTensor {
    let p = p.into_data();
    let mut d = d_p.into_data();
    let k_len = *d.shape().last().expect("scores have four dimensions");
    let probabilities = p.as_slice::<f32>().expect("probabilities are f32");
    let values = d.as_mut_slice::<f32>().expect("gradients are f32");
    gradient_rows(probabilities, values, k_len, scale);
    FlexTensor::from_data(d)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(ours: &[f32], burns: &[f32], tolerance: f32, what: &str) {
        assert_eq!(ours.len(), burns.len());
        for (i, (a, b)) in ours.iter().zip(burns).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * b.abs().max(1.0),
                "{what}[{i}]: {a} against {b}"
            );
        }
    }

    /// Ours and burn's attention on the same inputs, values and the gradients of a weighted sum.
    fn compare(q_len: usize, k_len: usize, d: usize) {
        let device = Device::flex().autodiff();
        let input =
            |len| Tensor::<4>::random([2, 3, len, d], Distribution::Normal(0.0, 1.5), &device);
        let (q, k, v) = (input(q_len), input(k_len), input(k_len));
        let upstream = Tensor::<4>::random([2, 3, q_len, d], Distribution::Default, &device);
        let run = |ours: bool| {
            let (q, k, v) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let out = if ours {
                causal_attention(q.clone(), k.clone(), v.clone()).expect("flex f32 under autodiff")
            } else {
                let options = AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: true,
                };
                attention(q.clone(), k.clone(), v.clone(), None, None, options)
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            let grad = |t: &Tensor<4>| values(t.grad(&grads).unwrap());
            (values(out), grad(&q), grad(&k), grad(&v))
        };
        let (ours, burns) = (run(true), run(false));
        close(&ours.0, &burns.0, 1e-5, "output");
        close(&ours.1, &burns.1, 1e-4, "dq");
        close(&ours.2, &burns.2, 1e-4, "dk");
        close(&ours.3, &burns.3, 1e-5, "dv");
    }

    #[test]
    fn matches_burns_attention_and_its_gradients() {
        compare(37, 37, 16);
        compare(130, 130, 32);
    }

    #[test]
    fn the_causal_mask_is_aligned_bottom_right_with_fewer_queries() {
        compare(5, 19, 8);
        compare(1, 7, 4);
    }

    #[test]
    fn it_declines_what_it_does_not_cover() {
        let flex = Device::flex();
        let t = |device: &Device, len| Tensor::<4>::zeros([1, 1, len, 4], device);
        assert!(
            causal_attention(t(&flex, 3), t(&flex, 3), t(&flex, 3)).is_none(),
            "no autodiff"
        );
        let tracked = flex.autodiff();
        assert!(causal_attention(t(&tracked, 4), t(&tracked, 3), t(&tracked, 3)).is_none());
        assert!(causal_attention(t(&tracked, 3), t(&tracked, 3), t(&tracked, 3)).is_some());
    }
}
