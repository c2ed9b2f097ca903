//! BERT: masking, the masked-LM and classification heads, padding invariance.

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use lmforge_model::bert::{
    BertForMaskedLm, IGNORE, MaskingRule, SequenceClassifier, TokenClassifier, mask_tokens,
    masked_cross_entropy, mean_pool,
};
use lmforge_model::{BertBatch, BertConfig};
use proptest::prelude::*;

fn config() -> BertConfig {
    BertConfig {
        d_model: 32,
        d_ff: 64,
        max_seq_len: 32,
        ..BertConfig::tiny(60)
    }
}

fn rule() -> MaskingRule {
    MaskingRule {
        probability: 0.15,
        mask_id: 4,
        vocab_size: 60,
        special: vec![0, 1, 2, 3, 4],
    }
}

#[test]
fn masking_follows_the_80_10_10_rule() {
    let seqs: Vec<Vec<u32>> = (0..400)
        .map(|i| {
            let mut s = vec![2];
            s.extend((0..50).map(|j| 5 + ((i * 7 + j * 13) % 55) as u32));
            s.push(3);
            s
        })
        .collect();
    let masked = mask_tokens(&seqs, &rule(), 7);
    assert_eq!(masked, mask_tokens(&seqs, &rule(), 7), "seeded");
    assert_ne!(masked, mask_tokens(&seqs, &rule(), 8));
    let (mut selected, mut to_mask, mut random, mut kept, mut total) = (0, 0, 0, 0, 0);
    for ((seq, input), labels) in seqs.iter().zip(&masked.inputs).zip(&masked.labels) {
        assert_eq!(input[0], 2, "[CLS] is never masked");
        assert_eq!(*input.last().unwrap(), 3, "[SEP] is never masked");
        for i in 0..seq.len() {
            total += 1;
            if labels[i] == IGNORE {
                assert_eq!(input[i], seq[i], "unselected tokens are unchanged");
                continue;
            }
            selected += 1;
            assert_eq!(labels[i], seq[i] as i64);
            match input[i] {
                4 => to_mask += 1,
                t if t == seq[i] => kept += 1,
                t => {
                    assert!(t >= 5, "random replacements are never special");
                    random += 1;
                }
            }
        }
    }
    let rate = selected as f64 / (total - 800) as f64;
    assert!((rate - 0.15).abs() < 0.01, "selected {rate}");
    let share = |n: usize| n as f64 / selected as f64;
    assert!(
        (share(to_mask) - 0.8).abs() < 0.03,
        "[MASK] {}",
        share(to_mask)
    );
    // A random draw can hit the original token (1/55 of the time), counting as kept.
    assert!(
        (share(random) - 0.1).abs() < 0.03,
        "random {}",
        share(random)
    );
    assert!((share(kept) - 0.1).abs() < 0.03, "kept {}", share(kept));
}

#[test]
fn padding_changes_no_real_position() {
    let device = Device::flex();
    let bert = config().init(&device, 2).unwrap();
    let short = vec![2, 9, 10, 11, 3];
    let alone = bert
        .forward(&BertBatch::new(std::slice::from_ref(&short), 0, &device).unwrap())
        .unwrap();
    let batch =
        BertBatch::new(&[short, vec![2, 5, 6, 7, 8, 9, 10, 11, 12, 3]], 0, &device).unwrap();
    let padded = bert.forward(&batch).unwrap().slice([0..1, 0..5, 0..32]);
    alone
        .into_data()
        .assert_approx_eq::<f32>(&padded.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    // Mean pooling ignores the padding too.
    let pooled = mean_pool(bert.forward(&batch).unwrap(), batch.real.clone(), true);
    let norms = pooled
        .square()
        .sum_dim(1)
        .sqrt()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
}

#[test]
fn masked_lm_training_lowers_the_loss() {
    let device = Device::flex().autodiff();
    let mut model = BertForMaskedLm::new(config().init(&device, 3).unwrap(), 4);
    let seqs: Vec<Vec<u32>> = (0..8)
        .map(|i| {
            let mut s = vec![2];
            s.extend((0..12).map(|j| 5 + ((i + j) % 10) as u32));
            s.push(3);
            s
        })
        .collect();
    let mut optimizer = AdamConfig::new().init();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..30 {
        let masked = mask_tokens(&seqs, &rule(), step);
        let loss = model.loss(&masked, 0, &device).unwrap();
        last = loss.clone().into_scalar::<f32>();
        first.get_or_insert(last);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(3e-3, model, grads);
    }
    let first = first.unwrap();
    assert!((first - 60f32.ln()).abs() < 1.0, "untrained loss {first}");
    assert!(last < first - 1.0, "loss {first} → {last}");
}

#[test]
fn classification_heads_have_the_right_shapes_and_loss() {
    let device = Device::flex();
    let batch = BertBatch::new(&[vec![2, 7, 8, 3], vec![2, 9, 3]], 0, &device).unwrap();
    let sequence = SequenceClassifier::new(config().init(&device, 5).unwrap(), 3, 6).unwrap();
    assert_eq!(sequence.forward(&batch).unwrap().dims(), [2, 3]);
    let tokens = TokenClassifier::new(config().init(&device, 5).unwrap(), 5, 6).unwrap();
    let logits = tokens.forward(&batch).unwrap();
    assert_eq!(logits.dims(), [2, 4, 5]);
    // Ignored labels do not count: a loss over one label equals that label's -log p.
    let labels = vec![vec![IGNORE, 2, IGNORE, IGNORE], vec![IGNORE; 3]];
    let loss = masked_cross_entropy(logits.clone(), &labels, &device).into_scalar::<f32>();
    let logp = burn::tensor::activation::log_softmax(logits, 2)
        .slice([0..1, 1..2, 2..3])
        .into_scalar::<f32>();
    assert!((loss + logp).abs() < 1e-5, "{loss} vs {}", -logp);
    assert!(SequenceClassifier::new(config().init(&device, 5).unwrap(), 0, 6).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn masking_never_panics_and_keeps_lengths(
        seqs in prop::collection::vec(prop::collection::vec(0u32..80, 0..40), 0..6),
        probability in 0.0f64..=1.0,
        seed: u64,
    ) {
        let rule = MaskingRule { probability, ..rule() };
        let masked = mask_tokens(&seqs, &rule, seed);
        prop_assert_eq!(masked.inputs.len(), seqs.len());
        for ((seq, input), labels) in seqs.iter().zip(&masked.inputs).zip(&masked.labels) {
            prop_assert_eq!(input.len(), seq.len());
            prop_assert_eq!(labels.len(), seq.len());
            for i in 0..seq.len() {
                prop_assert!(labels[i] == IGNORE || labels[i] == seq[i] as i64);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_safetensors_reader(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = lmforge_model::hf::Tensors::parse(&bytes, std::path::Path::new("fuzz.safetensors"));
    }
}
