//! Integration tests of lmforge-infer: one binary, a module per area.

mod blocks;
mod device;
mod engines;
mod generate;
mod scheduler;

use lmforge_model::{Activation, GptConfig, NormKind, Positions, RopeScaling};

/// A small GPT of vocabulary 300.
pub fn small() -> GptConfig {
    GptConfig {
        n_layer: 2,
        d_model: 64,
        n_head: 4,
        max_seq_len: 96,
        ..GptConfig::tiny(300)
    }
}

/// Every architecture switch an engine has to follow.
pub fn variants() -> Vec<GptConfig> {
    vec![
        small(),
        // Also GPT-NeoX's partial rotary: half of each head's width rotated.
        GptConfig {
            positions: Positions::Rope,
            norm: NormKind::RmsNorm,
            activation: Activation::Swiglu,
            bias: false,
            tie_embeddings: false,
            rotary_pct: Some(0.5),
            ..small()
        },
        GptConfig {
            positions: Positions::Alibi,
            n_head: 3,
            d_model: 48,
            ..small()
        },
        GptConfig {
            positions: Positions::Sinusoidal,
            ..small()
        },
        // Llama's grouped-query attention (2 key/value heads for 4, with Llama 3.1's RoPE
        // scaling and Qwen2's biases on q, k and v) and multi-query (1).
        GptConfig {
            positions: Positions::Rope,
            norm: NormKind::RmsNorm,
            activation: Activation::Swiglu,
            bias: false,
            n_head: 4,
            n_kv_head: Some(2),
            qkv_bias: Some(true),
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16,
            }),
            ..small()
        },
        // Multi-query with Mistral's sliding window (5 keys), which prompts and decoding pass.
        GptConfig {
            n_head: 4,
            n_kv_head: Some(1),
            sliding_window: Some(5),
            ..small()
        },
    ]
}

/// A fresh temporary folder for one test.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-infer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
