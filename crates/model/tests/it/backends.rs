//! The same model, forward and backward, on every backend this machine has: flex always, wgpu
//! through Mesa's lavapipe in CI (set `LMFORGE_REQUIRE_WGPU=1`, as `cargo xtask test` does, to
//! make a missing Vulkan driver a failure rather than a skip), CUDA under `--features cuda`.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Gradients, Int, Tensor};
use lmforge_model::{DeviceSpec, Gpt, GptConfig};

fn config() -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 4,
        d_model: 32,
        max_seq_len: 16,
        ..GptConfig::tiny(64)
    }
}

/// A fixed batch: two sequences of 12 tokens, targets shifted by one.
fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let text: Vec<i64> = (0..26).map(|i| (i * 7 + 3) % 64).collect();
    let rows = |offset: usize| -> [[i64; 12]; 2] {
        let row = |start: usize| std::array::from_fn(|i| text[start + i + offset]);
        [row(0), row(13)]
    };
    (
        Tensor::from_ints(rows(0), device),
        Tensor::from_ints(rows(1), device),
    )
}

/// Every parameter's gradient, flattened, in the module's field order.
struct CollectGrads<'a> {
    grads: &'a Gradients,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = param
            .val()
            .grad(self.grads)
            .expect("every parameter gets a gradient");
        self.out.push(grad.into_data().try_to_vec::<f32>().unwrap());
    }
}

fn loss_and_grads(model: &Gpt, device: &Device) -> (f32, Vec<Vec<f32>>) {
    let (tokens, targets) = batch(device);
    let loss = model.loss(tokens, targets).unwrap();
    let grads = loss.backward();
    let mut collect = CollectGrads {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut collect);
    (loss.into_scalar::<f32>(), collect.out)
}

/// The reference: the model built on flex from a fixed seed.
fn reference_model() -> Gpt {
    config().init(&Device::flex().autodiff(), 42).unwrap()
}

fn assert_same_training_signal(spec: DeviceSpec, device: Device) {
    let reference = reference_model();
    let (want_loss, want_grads) = loss_and_grads(&reference, &Device::flex().autodiff());
    let device = device.autodiff();
    let model = reference.fork(&device);
    let (loss, grads) = loss_and_grads(&model, &device);

    assert!(
        (loss - want_loss).abs() < 1e-4,
        "{spec}: loss {loss}, flex {want_loss}"
    );
    assert_eq!(grads.len(), want_grads.len());
    for (n, (got, want)) in grads.iter().zip(&want_grads).enumerate() {
        let scale = want.iter().fold(0f32, |m, g| m.max(g.abs())).max(1e-6);
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err / scale < 1e-3,
            "{spec}: gradient of parameter {n} off by {err} (scale {scale})"
        );
    }
}

#[test]
fn flex_trains_the_tiny_gpt() {
    let device = Device::flex().autodiff();
    let mut model = reference_model();
    let (initial, grads) = loss_and_grads(&model, &device);
    // An untrained model predicts nearly uniformly over the 64 ids.
    assert!((initial - 64f32.ln()).abs() < 0.3, "initial loss {initial}");
    assert!(grads.iter().flatten().all(|g| g.is_finite()));

    let mut optimizer = SgdConfig::new().init();
    let mut loss = initial;
    for _ in 0..20 {
        let (tokens, targets) = batch(&device);
        let step_loss = model.loss(tokens, targets).unwrap();
        let grads = GradientsParams::from_grads(step_loss.backward(), &model);
        model = optimizer.step(0.5, model, grads);
        loss = step_loss.into_scalar::<f32>();
    }
    assert!(
        loss < initial - 0.5,
        "20 SGD steps took the loss from {initial} to only {loss}"
    );
}

#[test]
fn wgpu_matches_flex_forward_and_backward() {
    match DeviceSpec::Wgpu.resolve() {
        Ok(device) => assert_same_training_signal(DeviceSpec::Wgpu, device),
        Err(err) if std::env::var_os("LMFORGE_REQUIRE_WGPU").is_none() => {
            eprintln!(
                "skipped: {err} (install mesa-vulkan-drivers, or set LMFORGE_REQUIRE_WGPU=1 to fail)"
            );
        }
        Err(err) => panic!("LMFORGE_REQUIRE_WGPU is set but {err}"),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_flex_forward_and_backward() {
    let device = DeviceSpec::Cuda(0)
        .resolve()
        .expect("--features cuda tests need a CUDA GPU");
    assert_same_training_signal(DeviceSpec::Cuda(0), device);
}

/// Logits of a forward pass and of cached decoding for every position scheme, and BERT's
/// hidden states, on `device`.
fn inference_outputs(device: &Device) -> Vec<Vec<f32>> {
    use lmforge_model::{Activation, BertBatch, BertConfig, NormKind, Positions};
    let base = config();
    let variants = [
        GptConfig {
            positions: Positions::Sinusoidal,
            ..base.clone()
        },
        GptConfig {
            positions: Positions::Alibi,
            ..base.clone()
        },
        GptConfig {
            positions: Positions::Rope,
            norm: NormKind::RmsNorm,
            activation: Activation::Swiglu,
            bias: false,
            tie_embeddings: false,
            ..base
        },
    ];
    let mut out = Vec::new();
    for config in variants {
        let model = config.init(&Device::flex(), 5).unwrap().fork(device);
        let (mut cache, first) = model
            .prefill(&[vec![1, 2, 3, 4], vec![9, 8]], device)
            .unwrap();
        let next = model.decode(&mut cache, &[5, 7]).unwrap();
        out.push(first.into_data().try_to_vec::<f32>().unwrap());
        out.push(next.into_data().try_to_vec::<f32>().unwrap());
    }
    let bert_config = BertConfig {
        d_model: 32,
        d_ff: 64,
        max_seq_len: 16,
        ..BertConfig::tiny(64)
    };
    let bert = bert_config.init(&Device::flex(), 5).unwrap().fork(device);
    let batch = BertBatch::new(&[vec![2, 9, 10, 3], vec![2, 5, 3]], 0, device).unwrap();
    out.push(
        bert.forward(&batch)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
    );
    out
}

#[test]
fn wgpu_matches_flex_for_every_architecture_and_the_kv_cache() {
    let device = match DeviceSpec::Wgpu.resolve() {
        Ok(device) => device,
        Err(err) if std::env::var_os("LMFORGE_REQUIRE_WGPU").is_none() => {
            eprintln!("skipped: {err}");
            return;
        }
        Err(err) => panic!("LMFORGE_REQUIRE_WGPU is set but {err}"),
    };
    let want = inference_outputs(&Device::flex());
    let got = inference_outputs(&device);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "output {i}: wgpu differs from flex by {err}");
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_flex_for_every_architecture_and_the_kv_cache() {
    let device = DeviceSpec::Cuda(0)
        .resolve()
        .expect("--features cuda tests need a CUDA GPU");
    let want = inference_outputs(&Device::flex());
    for (i, (g, w)) in inference_outputs(&device).iter().zip(&want).enumerate() {
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "output {i}: cuda differs from flex by {err}");
    }
}
