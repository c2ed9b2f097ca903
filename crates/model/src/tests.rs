use burn::module::Module;
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
    let config = small();
    let model = config.init(&Device::flex(), 0).unwrap();
    assert_eq!(model.num_params(), config.num_params());
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
