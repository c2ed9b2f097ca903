use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData, Tolerance};

use super::*;

fn small() -> GptConfig {
    GptConfig {
        n_layer: 2,
        d_model: 32,
        max_seq_len: 16,
        ..GptConfig::tiny(50)
    }
}

fn check_invalid(config: GptConfig, field: &str) {
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains(&format!("`{field}`")),
        "expected {field} in: {err}"
    );
}

#[test]
fn config_errors_name_the_field() {
    check_invalid(
        GptConfig {
            n_head: 3,
            ..small()
        },
        "d_model",
    );
    check_invalid(
        GptConfig {
            vocab_size: 0,
            ..small()
        },
        "vocab_size",
    );
    check_invalid(
        GptConfig {
            n_layer: 0,
            ..small()
        },
        "n_layer",
    );
    check_invalid(
        GptConfig {
            dropout: 1.0,
            ..small()
        },
        "dropout",
    );
    assert!(small().init(&Device::flex(), 0).is_ok());
}

#[test]
fn config_roundtrips_through_json() {
    let json = serde_json::to_string(&small()).unwrap();
    assert_eq!(serde_json::from_str::<GptConfig>(&json).unwrap(), small());
}

#[test]
fn parameter_count_matches_the_module() {
    for config in variants().into_iter().chain([small()]) {
        let model = config.init(&Device::flex(), 0).unwrap();
        assert_eq!(model.num_params(), config.num_params(), "{config:?}");
    }
}

#[test]
fn earlier_positions_never_see_later_tokens() {
    let device = Device::flex();
    let model = small().init(&device, 7).unwrap();
    let a = Tensor::<2, Int>::from_ints([[1, 2, 3, 4, 5, 6]], &device);
    let b = Tensor::<2, Int>::from_ints([[1, 2, 3, 4, 40, 41]], &device);
    let la = model.forward(a).unwrap();
    let lb = model.forward(b).unwrap();
    let prefix = |l: Tensor<3>| l.slice([0..1, 0..4, 0..50]).into_data();
    prefix(la.clone()).assert_approx_eq::<f32>(&prefix(lb.clone()), Tolerance::absolute(1e-5));
    // ...while the changed positions do move.
    let last = |l: Tensor<3>| l.slice([0..1, 5..6, 0..50]);
    let moved = (last(la) - last(lb)).abs().max().into_scalar::<f32>();
    assert!(
        moved > 1e-3,
        "changing a token did not change its logits ({moved})"
    );
}

#[test]
fn sequence_longer_than_the_position_table_is_an_error() {
    let device = Device::flex();
    let model = small().init(&device, 0).unwrap();
    let tokens = Tensor::<2, Int>::zeros([1, 17], &device);
    let err = model.forward(tokens).unwrap_err().to_string();
    assert!(err.contains("17") && err.contains("16"), "{err}");
    let targets = Tensor::<2, Int>::zeros([1, 3], &device);
    let err = model
        .loss(Tensor::zeros([1, 4], &device), targets)
        .unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
}

#[test]
fn same_seed_same_weights() {
    let weights = |seed| {
        let device = Device::flex();
        let model = small().init(&device, seed).unwrap();
        let tokens = Tensor::<2, Int>::from_ints([[3, 1, 4, 1, 5]], &device);
        model.forward(tokens).unwrap().into_data()
    };
    let (a, b, c): (TensorData, TensorData, TensorData) = (weights(1), weights(1), weights(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// Every architecture switch, each with a position scheme.
fn variants() -> Vec<GptConfig> {
    let base = GptConfig {
        n_layer: 2,
        d_model: 32,
        max_seq_len: 24,
        ..GptConfig::tiny(50)
    };
    let mut out = Vec::new();
    for positions in [
        Positions::Learned,
        Positions::Sinusoidal,
        Positions::Rope,
        Positions::Alibi,
    ] {
        out.push(GptConfig {
            positions,
            ..base.clone()
        });
    }
    out.push(GptConfig {
        positions: Positions::Rope,
        norm: NormKind::RmsNorm,
        activation: Activation::Swiglu,
        bias: false,
        tie_embeddings: false,
        ..base.clone()
    });
    // Grouped-query attention (Llama's, with RoPE) and multi-query with ALiBi over six heads:
    // ALiBi's slopes for a head count that is not a power of two.
    out.push(GptConfig {
        positions: Positions::Rope,
        norm: NormKind::RmsNorm,
        activation: Activation::Swiglu,
        bias: false,
        n_kv_head: Some(2),
        rotary_pct: Some(0.5),
        ..base.clone()
    });
    out.push(GptConfig {
        positions: Positions::Alibi,
        n_head: 6,
        d_model: 36,
        ..base.clone()
    });
    out.push(GptConfig {
        positions: Positions::Alibi,
        n_head: 6,
        d_model: 36,
        n_kv_head: Some(1),
        ..base
    });
    out
}

fn logits_of(model: &Gpt, ids: &[u32], device: &Device) -> Vec<f32> {
    let row: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let tokens = Tensor::<2, Int>::from_ints(TensorData::new(row, [1, ids.len()]), device);
    let logits = model.forward(tokens).unwrap();
    let [_, seq, vocab] = logits.dims();
    logits
        .slice([0..1, seq - 1..seq, 0..vocab])
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{what}: max |Δ| = {worst}");
}

#[test]
fn cached_decoding_equals_the_full_forward_pass_for_every_position_type() {
    let device = Device::flex();
    for config in variants() {
        let model = config.init(&device, 11).unwrap();
        let mut seqs: Vec<Vec<u32>> = vec![
            vec![3, 9, 27, 31, 42],
            vec![7, 1],
            vec![2, 4, 8, 16, 32, 14, 28],
        ];
        let (mut cache, mut logits) = model.prefill(&seqs, &device).unwrap();
        for step in 0..6 {
            let vocab = config.vocab_size;
            let rows = logits.clone().into_data().try_to_vec::<f32>().unwrap();
            let mut next = Vec::new();
            for (row, seq) in seqs.iter().enumerate() {
                let want = logits_of(&model, seq, &device);
                let what = format!("{:?} step {step} row {row}", config.positions);
                assert_close(&rows[row * vocab..(row + 1) * vocab], &want, &what);
                next.push(((step * 13 + row * 7) % vocab) as u32);
            }
            for (seq, &t) in seqs.iter_mut().zip(&next) {
                seq.push(t);
            }
            logits = model.decode(&mut cache, &next).unwrap();
        }
        assert_eq!(cache.len(), 7 + 6);
        assert_eq!(cache.seq_len(1), 2 + 6);
    }
}

#[test]
fn a_step_with_dense_causal_attention_is_the_forward_pass_for_every_variant() {
    let device = Device::flex();
    for config in variants() {
        let model = config.init(&device, 12).unwrap();
        let ids = [3u32, 9, 27, 31, 42, 7];
        let rows = ids.len();
        let tokens = Tensor::<1, Int>::from_ints(
            TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [rows]),
            &device,
        );
        let positions = Tensor::<1, Int>::arange(0..rows as i64, &device);
        let (heads, hd) = (config.n_head, config.head_dim());
        let alibi = config.positions == Positions::Alibi;
        let mut calls = 0;
        let mut attend = |layer: usize, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>| {
            assert_eq!(layer, calls);
            calls += 1;
            // Keys and values come with the kv heads: repeated for their query heads here.
            let split = |t: Tensor<3>| {
                let n = t.dims()[1];
                let t = t.reshape([1, rows, n, hd]).swap_dims(1, 2);
                crate::repeat_kv(t, heads / n)
            };
            let at = Tensor::<1, Int>::arange(0..rows as i64, &device).reshape([1, rows]);
            let bias = alibi.then(|| alibi_bias(at.clone(), at, heads));
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            };
            attention(split(q), split(k), split(v), None, bias, options)
                .swap_dims(1, 2)
                .reshape([rows, heads * hd])
        };
        let hidden = model.step(tokens, positions, &mut attend);
        assert_eq!(calls, config.n_layer);
        let logits = model
            .logits(hidden)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let vocab = config.vocab_size;
        for row in 0..rows {
            let want = logits_of(&model, &ids[..=row], &device);
            let what = format!("{:?} {:?} row {row}", config.positions, config.norm);
            assert_close(&logits[row * vocab..(row + 1) * vocab], &want, &what);
        }
    }
}

#[test]
fn parameter_shapes_list_what_init_builds() {
    use burn::store::ModuleSnapshot;
    // Beyond `variants()`: a LayerNorm without bias, and an RMSNorm (never a bias) beside
    // biased linears.
    let extra = [
        GptConfig {
            positions: Positions::Alibi,
            bias: false,
            ..small()
        },
        GptConfig {
            norm: NormKind::RmsNorm,
            positions: Positions::Sinusoidal,
            ..small()
        },
    ];
    for config in variants().into_iter().chain(extra) {
        let mut built: Vec<(String, Vec<usize>)> = config
            .init(&Device::flex(), 0)
            .unwrap()
            .collect(None, None, false)
            .into_iter()
            .map(|t| (t.name.clone(), t.shape.to_vec()))
            .collect();
        let mut listed = config.parameter_shapes();
        listed.sort();
        built.sort();
        assert_eq!(listed, built, "{config:?}");
    }
}

#[test]
fn rope_scaling_stretches_the_frequencies_it_says() {
    let base = GptConfig {
        positions: Positions::Rope,
        n_head: 1,
        d_model: 16,
        rope_theta: 500_000.0,
        ..GptConfig::tiny(50)
    };
    let plain = base.rope_frequencies();
    assert_eq!(plain.len(), 8);
    assert_eq!(plain[0], 1.0);
    let linear = GptConfig {
        rope_scaling: Some(crate::RopeScaling::Linear { factor: 4.0 }),
        ..base.clone()
    };
    for (a, b) in linear.rope_frequencies().iter().zip(&plain) {
        assert_eq!(*a, b / 4.0);
    }
    // Llama 3.1's bands for an original context of 64: wavelengths under 16 kept, over 64
    // divided by the factor, between them interpolated (strictly between the two).
    let llama3 = GptConfig {
        rope_scaling: Some(crate::RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        }),
        ..base.clone()
    };
    let scaled = llama3.rope_frequencies();
    let mut bands = [0; 3];
    for (s, f) in scaled.iter().zip(&plain) {
        let wavelen = 2.0 * std::f64::consts::PI / f;
        if wavelen < 16.0 {
            assert_eq!(s, f);
            bands[0] += 1;
        } else if wavelen > 64.0 {
            assert_eq!(*s, f / 8.0);
            bands[2] += 1;
        } else {
            assert!(*s < *f && *s > f / 8.0, "{s} against {f}");
            bands[1] += 1;
        }
    }
    assert!(bands.iter().all(|&n| n > 0), "{bands:?}");
    // Serialised in lmforge.json and read back; a factor below 1 is refused.
    let text = serde_json::to_string(&llama3).unwrap();
    assert_eq!(GptConfig::from_json(&text, "t").unwrap(), llama3);
    let shrinking = GptConfig {
        rope_scaling: Some(crate::RopeScaling::Linear { factor: 0.5 }),
        ..base
    };
    assert!(
        shrinking
            .validate()
            .unwrap_err()
            .to_string()
            .contains("rope_scaling")
    );
    // Partial rotary: the frequencies of the rotated quarter of a 16-wide head (GPT-NeoX's
    // `1/θ^(2i/rotary_dim)`); a fraction that rotates one dimension is refused.
    let partial = GptConfig {
        rotary_pct: Some(0.25),
        ..GptConfig {
            positions: Positions::Rope,
            n_head: 1,
            d_model: 16,
            ..GptConfig::tiny(50)
        }
    };
    assert_eq!(partial.rotary_dim(), 4);
    let frequencies = partial.rope_frequencies();
    assert_eq!(frequencies.len(), 2);
    assert_eq!(frequencies[1], 1.0 / 10_000f64.powf(2.0 / 4.0));
    let odd = GptConfig {
        rotary_pct: Some(0.1),
        ..partial
    };
    assert!(
        odd.validate()
            .unwrap_err()
            .to_string()
            .contains("rotary_pct")
    );
}
