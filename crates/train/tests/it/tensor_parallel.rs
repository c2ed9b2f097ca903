//! Tensor parallelism against the whole model: the loss and every gradient of a micro-batch
//! computed by 1, 2 and 4 tensor-parallel ranks (threads) equal the whole model's autodiff,
//! for each position scheme, SwiGLU, RMSNorm and an untied head.

use std::collections::BTreeMap;

use lmforge_model::tensor_parallel::{Cut, cut, merge};
use lmforge_model::{Activation, GptConfig, NormKind, Positions};
use lmforge_train::gpt::gpt_loss;
use lmforge_train::optim::parameter_shapes;
use lmforge_train::tensor_parallel::{
    HostTensors, gather_parts, host_tensors, shard_model, tp_gpt_grads,
};
use lmforge_train::{
    AdamW, AdamWConfig, Alone, Collective, Grads, LossScaler, Precision, StepConfig, train_step,
    train_step_with,
};

use crate::threads::Threads;
use crate::train::{device, random_batch};

fn variants() -> Vec<(&'static str, GptConfig)> {
    let base = GptConfig {
        n_layer: 2,
        n_head: 4,
        d_model: 32,
        max_seq_len: 16,
        dropout: 0.0,
        ..GptConfig::tiny(64)
    };
    vec![
        ("learned", base.clone()),
        (
            "sinusoidal",
            GptConfig {
                positions: Positions::Sinusoidal,
                ..base.clone()
            },
        ),
        (
            "rope-swiglu-rmsnorm-untied",
            GptConfig {
                positions: Positions::Rope,
                norm: NormKind::RmsNorm,
                activation: Activation::Swiglu,
                bias: false,
                tie_embeddings: false,
                ..base
            },
        ),
    ]
}

type Flat = BTreeMap<String, Vec<f32>>;

fn flat(grads: Grads) -> Flat {
    grads
        .by_path
        .into_iter()
        .map(|(p, g)| (p, lmforge_model::host_values(g)))
        .collect()
}

/// Loss, gradients and the parameter shapes of one rank of `tp`.
fn rank(config: &GptConfig, group: &dyn Collective) -> (f64, Flat, BTreeMap<String, Vec<usize>>) {
    let device = device();
    let whole = config.init(&device, 7).unwrap();
    let part = shard_model(whole, group.world(), group.rank()).unwrap();
    let batch = random_batch(2, 16, 3);
    let (loss, grads) = tp_gpt_grads(&part, &batch, group, 1.0, &device).unwrap();
    (loss, flat(grads), parameter_shapes(&part))
}

#[test]
fn tensor_parallel_gradients_equal_the_whole_models() {
    let device = device();
    let batch = random_batch(2, 16, 3);
    for (name, config) in variants() {
        let whole = config.init(&device, 7).unwrap();
        let loss = gpt_loss(&whole, &batch, &device).unwrap();
        let expected = f64::from(loss.clone().into_scalar::<f32>());
        let reference = flat(Grads::from_backward(loss.backward(), &whole));
        for tp in [1, 2, 4] {
            let ranks: Vec<_> = if tp == 1 {
                vec![rank(&config, &Alone)]
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = Threads::world(tp)
                        .into_iter()
                        .map(|group| {
                            let config = config.clone();
                            scope.spawn(move || rank(&config, &group))
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                })
            };
            let what = format!("{name}, tp {tp}");
            for (loss, _, _) in &ranks {
                assert_eq!(
                    *loss, ranks[0].0,
                    "{what}: every rank reports the same loss"
                );
                assert!(
                    (loss - expected).abs() <= 1e-6 * expected,
                    "{what}: loss {loss} vs {expected}"
                );
            }
            assert_eq!(
                ranks[0].1.keys().collect::<Vec<_>>(),
                reference.keys().collect::<Vec<_>>(),
                "{what}: the same parameters get gradients"
            );
            for (path, want) in &reference {
                let how = cut(path);
                let got = if how == Cut::Replicated {
                    for (_, grads, _) in &ranks {
                        assert_eq!(
                            grads[path], ranks[0].1[path],
                            "{what}: `{path}` differs across ranks"
                        );
                    }
                    ranks[0].1[path].clone()
                } else {
                    let parts: Vec<Vec<f32>> = ranks.iter().map(|r| r.1[path].clone()).collect();
                    merge(&parts, &ranks[0].2[path], how).unwrap().0
                };
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst <= 1e-5 * scale,
                    "{what}: `{path}` off by {worst} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn the_ranks_parts_gather_into_the_whole_model() {
    for (name, config) in variants() {
        let whole = host_tensors(&config.init(&device(), 7).unwrap());
        for tp in [2, 4] {
            let gathered: Vec<HostTensors> = std::thread::scope(|scope| {
                let handles: Vec<_> = Threads::world(tp)
                    .into_iter()
                    .map(|group| {
                        let config = config.clone();
                        scope.spawn(move || {
                            let model = config.init(&device(), 7).unwrap();
                            let part = shard_model(model, tp, group.rank()).unwrap();
                            gather_parts(&group, &host_tensors(&part)).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for g in &gathered {
                assert!(g == &whole, "{name}, tp {tp}: the gathered model differs");
            }
        }
    }
    // What does not divide is refused, naming the flag.
    let config = GptConfig {
        n_head: 3,
        d_model: 24,
        ..variants()[0].1.clone()
    };
    let error = shard_model(config.init(&device(), 0).unwrap(), 2, 0).unwrap_err();
    assert!(
        error.to_string().contains("tensor-model-parallel-size"),
        "{error}"
    );
}

/// Three steps' (loss, grad norm), and the whole weights at the end, of a run on `tp × dp`
/// ranks (threads) over the step's micro-batches `batches` (dealt as data parallelism deals
/// them: micro-batch `k` of data-parallel rank `r` is `batches[k·dp + r]`).
fn steps(config: &GptConfig, tp: usize, dp: usize) -> (Vec<(f64, f64)>, HostTensors) {
    let batches: Vec<lmforge_dataset::GptBatch> =
        (0..2).map(|i| random_batch(2, 16, 10 + i)).collect();
    let run = |world: &dyn Collective| {
        let device = device();
        let tp_group = world.split(world.rank() / tp, world.rank() % tp).unwrap();
        let dp_group = world.split(world.rank() % tp, world.rank() / tp).unwrap();
        let mut model = shard_model(config.init(&device, 7).unwrap(), tp, tp_group.rank()).unwrap();
        let mut optimizer = AdamW::new(AdamWConfig::default());
        let mut scaler = LossScaler::None;
        let step = StepConfig {
            micro_batches: 2 / dp,
            clip_grad: Some(0.5),
            precision: Precision::Fp32,
        };
        let mut out = Vec::new();
        for _ in 0..3 {
            let (m, outcome) = train_step_with(
                model,
                std::slice::from_ref(&device),
                dp_group.as_ref(),
                Some(tp_group.as_ref()),
                &mut optimizer,
                &mut scaler,
                1e-3,
                &step,
                |m, _, micro, factor| {
                    let j = micro * dp + dp_group.rank();
                    tp_gpt_grads(m, &batches[j], tp_group.as_ref(), factor, &device)
                },
            )
            .unwrap();
            model = m;
            out.push((outcome.loss, outcome.grad_norm));
        }
        (
            out,
            gather_parts(tp_group.as_ref(), &host_tensors(&model)).unwrap(),
        )
    };
    if tp * dp == 1 {
        return run(&Alone);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = Threads::world(tp * dp)
            .into_iter()
            .map(|world| scope.spawn(move || run(&world)))
            .collect();
        let all: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for other in &all {
            assert_eq!(
                other.0, all[0].0,
                "every rank logs the same losses and norms"
            );
            assert!(other.1 == all[0].1, "every rank holds the same whole model");
        }
        all.into_iter().next().unwrap()
    })
}

#[test]
fn tensor_and_data_parallel_steps_equal_one_process() {
    for (name, config) in variants().into_iter().take(3).step_by(2) {
        // One process accumulating both micro-batches, through the whole model's autodiff.
        let device = device();
        let batches: Vec<lmforge_dataset::GptBatch> =
            (0..2).map(|i| random_batch(2, 16, 10 + i)).collect();
        let mut model = config.init(&device, 7).unwrap();
        let mut optimizer = AdamW::new(AdamWConfig::default());
        let mut scaler = LossScaler::None;
        let step = StepConfig {
            micro_batches: 2,
            clip_grad: Some(0.5),
            precision: Precision::Fp32,
        };
        let mut expected = Vec::new();
        for _ in 0..3 {
            let (m, outcome) = train_step(
                model,
                std::slice::from_ref(&device),
                &Alone,
                &mut optimizer,
                &mut scaler,
                1e-3,
                &step,
                |m, _, micro| gpt_loss(m, &batches[micro], &device),
            )
            .unwrap();
            model = m;
            expected.push((outcome.loss, outcome.grad_norm));
        }
        let whole = host_tensors(&model);
        for (tp, dp) in [(1, 1), (2, 1), (2, 2), (4, 1)] {
            let (got, gathered) = steps(&config, tp, dp);
            let what = format!("{name}, tp {tp} × dp {dp}");
            for ((l, n), (el, en)) in got.iter().zip(&expected) {
                assert!((l - el).abs() <= 1e-5 * el, "{what}: loss {l} vs {el}");
                assert!((n - en).abs() <= 1e-5 * en, "{what}: grad norm {n} vs {en}");
            }
            for (path, (shape, want)) in &whole {
                let (got_shape, got) = &gathered[path];
                assert_eq!(got_shape, shape, "{what}: `{path}`");
                let worst = want
                    .iter()
                    .zip(got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst <= 1e-4,
                    "{what}: `{path}` off by {worst} after three steps"
                );
            }
        }
    }
}
