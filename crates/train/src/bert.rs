//! BERT: masked-LM pretraining on WordPiece data (samples of `seq_length` tokens cut from the
//! same `.bin/.idx` documents as GPT's, each wrapped in `[CLS] … [SEP]`, masked 15 % with
//! 80/10/10 — RoBERTa's "full sentences" without next-sentence prediction), and fine-tuning a
//! sequence classifier on NeMo's `text<TAB>label` files with accuracy and per-class F1.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lmforge_dataset::GptBatch;
use lmforge_dataset::labelled::{LabelVocab, TextExample};
use lmforge_dataset::padded::{Specials, batches, bert_example};
use lmforge_model::bert::BertForMaskedLm;
use lmforge_model::bert::{MaskingRule, SequenceClassifier, mask_tokens};
use lmforge_model::{Bert, BertBatch, BertConfig};
use lmforge_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::metrics::{MetricsLog, Record};
use crate::optim::{AdamW, AdamWConfig};
use crate::pretrain::{Objective, micro_seed};
use crate::scaler::LossScaler;
use crate::schedule::LrSchedule;
use crate::step::{Precision, StepConfig, train_step};
use crate::{Error, Result};

/// Masked-LM pretraining.
pub struct MlmObjective {
    /// Which tokens may be masked and how.
    pub rule: MaskingRule,
    /// `[CLS]` and `[SEP]`.
    pub specials: Specials,
    /// `[PAD]`.
    pub pad_id: u32,
    /// The tokenizer.json to put beside the weights.
    pub tokenizer_json: Option<Vec<u8>>,
}

impl MlmObjective {
    /// The rule and special ids of a WordPiece tokenizer (`[MASK]`, `[PAD]`, `[CLS]`, `[SEP]`,
    /// `[UNK]`), an error naming the missing one.
    pub fn for_tokenizer(tokenizer: &dyn Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            tokenizer.token_id(t).ok_or_else(|| Error::Config {
                field: "tokenizer",
                reason: format!(
                    "the tokenizer has no {t} token: masked-LM training needs BERT's specials"
                ),
            })
        };
        let specials = Specials {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
        };
        let (mask, pad) = (id("[MASK]")?, id("[PAD]")?);
        let mut special = vec![specials.cls, specials.sep, mask, pad];
        special.extend(tokenizer.token_id("[UNK]"));
        Ok(MlmObjective {
            rule: MaskingRule {
                probability: 0.15,
                mask_id: mask,
                vocab_size: tokenizer.vocab_size() as u32,
                special,
            },
            specials,
            pad_id: pad,
            tokenizer_json: None,
        })
    }

    /// The rows of `batch`, each cut to leave room for `[CLS]` and `[SEP]` and wrapped in them.
    pub fn sequences(&self, batch: &GptBatch) -> Vec<Vec<u32>> {
        let keep = batch.seq_length.saturating_sub(2).max(1);
        batch
            .tokens
            .chunks(batch.seq_length.max(1))
            .map(|row| {
                let mut seq = Vec::with_capacity(keep + 2);
                seq.push(self.specials.cls);
                seq.extend_from_slice(&row[..keep.min(row.len())]);
                seq.push(self.specials.sep);
                seq
            })
            .collect()
    }
}

impl Objective<BertForMaskedLm> for MlmObjective {
    fn loss(
        &self,
        model: &BertForMaskedLm,
        batch: &GptBatch,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor<1>> {
        let vocab = model.bert.config().vocab_size;
        if let Some(&bad) = batch.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Config {
                field: "data-path",
                reason: format!("token id {bad} is outside the model's vocabulary of {vocab}"),
            });
        }
        let masked = mask_tokens(&self.sequences(batch), &self.rule, seed);
        Ok(model.loss(&masked, self.pad_id, device)?)
    }

    fn save(&self, model: &BertForMaskedLm, dir: &Path) -> Result<()> {
        lmforge_model::save_bert_mlm(model, dir)?;
        if let Some(json) = &self.tokenizer_json {
            lmforge_model::checkpoint::write_atomic(&dir.join("tokenizer.json"), json)?;
        }
        Ok(())
    }
}

/// What a classifier checkpoint's `lmforge.json` records beside the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// The encoder.
    pub bert: BertConfig,
    /// Class names by id.
    pub labels: Vec<String>,
}

/// Saves a fine-tuned classifier (architecture `bert-classifier`).
pub fn save_classifier(model: &SequenceClassifier, labels: &LabelVocab, dir: &Path) -> Result<()> {
    let config = ClassifierConfig {
        bert: model.bert.config().clone(),
        labels: (0..labels.len() as u32)
            .filter_map(|i| labels.label(i).map(str::to_string))
            .collect(),
    };
    let value = serde_json::to_value(&config).unwrap_or_default();
    lmforge_model::checkpoint::save_module(model, "bert-classifier", value, dir)?;
    lmforge_model::checkpoint::write_atomic(&dir.join("labels.txt"), labels.to_text().as_bytes())?;
    Ok(())
}

/// Loads a classifier saved by [`save_classifier`].
pub fn load_classifier(
    dir: &Path,
    device: &Device,
) -> Result<(SequenceClassifier, ClassifierConfig)> {
    let config: ClassifierConfig = lmforge_model::checkpoint::read_config(dir, "bert-classifier")?;
    config.bert.validate()?;
    let model = SequenceClassifier::new(config.bert.init(device, 0)?, config.labels.len(), 0)?;
    Ok((lmforge_model::checkpoint::load_weights(model, dir)?, config))
}

/// Fine-tuning settings (`lmforge finetune classify`).
#[derive(Clone, Debug, Serialize)]
pub struct ClassifyConfig {
    /// Passes over the training set.
    pub epochs: u64,
    /// Examples per step.
    pub batch_size: usize,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included.
    pub max_seq_length: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of the steps spent warming up.
    pub warmup_ratio: f64,
    /// AdamW's constants.
    pub adamw: AdamWConfig,
    /// Global-norm clipping.
    pub clip_grad: Option<f64>,
    /// Seed of the head's initialisation, the shuffles and dropout.
    pub seed: u64,
    /// Where the classifier, `metrics.jsonl` and the report go.
    pub output: PathBuf,
    /// Show a progress bar.
    pub progress: bool,
}

/// One class's scores on the validation set.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassScore {
    /// The label.
    pub label: String,
    /// Examples of this class.
    pub support: usize,
    /// Correct among those predicted as this class.
    pub precision: f64,
    /// Found among those of this class.
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
}

/// Accuracy and per-class scores.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Scores {
    /// Examples scored.
    pub examples: usize,
    /// Fraction predicted right.
    pub accuracy: f64,
    /// Mean of the per-class F1.
    pub macro_f1: f64,
    /// By class id.
    pub classes: Vec<ClassScore>,
}

/// Scores predictions against gold labels (both class ids below `labels.len()`).
pub fn score(predicted: &[u32], gold: &[u32], labels: &LabelVocab) -> Scores {
    let k = labels.len();
    let mut tp = vec![0usize; k];
    let mut predicted_count = vec![0usize; k];
    let mut support = vec![0usize; k];
    for (&p, &g) in predicted.iter().zip(gold) {
        predicted_count[p as usize] += 1;
        support[g as usize] += 1;
        if p == g {
            tp[g as usize] += 1;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let classes: Vec<ClassScore> = (0..k)
        .map(|c| {
            let precision = ratio(tp[c], predicted_count[c]);
            let recall = ratio(tp[c], support[c]);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScore {
                label: labels.label(c as u32).unwrap_or("?").to_string(),
                support: support[c],
                precision,
                recall,
                f1,
            }
        })
        .collect();
    Scores {
        examples: gold.len(),
        accuracy: ratio(tp.iter().sum(), gold.len()),
        macro_f1: classes.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64,
        classes,
    }
}

/// Tokenized examples with their class ids; a label missing from `labels` is an error naming
/// the file and line.
pub fn encode_examples(
    examples: &[TextExample],
    file: &Path,
    tokenizer: &dyn Tokenizer,
    labels: &LabelVocab,
    max_seq_length: usize,
) -> Result<(Vec<Vec<u32>>, Vec<u32>)> {
    let specials = Specials::of(tokenizer)?;
    let mut seqs = Vec::with_capacity(examples.len());
    let mut gold = Vec::with_capacity(examples.len());
    for example in examples {
        let label = labels.id(&example.label).ok_or_else(|| Error::Config {
            field: "valid",
            reason: format!(
                "{}:{}: label {:?} does not occur in the training file",
                file.display(),
                example.line,
                example.label
            ),
        })?;
        let ids = tokenizer.encode(&example.text).map_err(|e| Error::Config {
            field: "tokenizer",
            reason: format!("{}:{}: {e}", file.display(), example.line),
        })?;
        seqs.push(bert_example(&ids, None, specials, max_seq_length)?.ids);
        gold.push(label);
    }
    Ok((seqs, gold))
}

fn class_loss(
    model: &SequenceClassifier,
    seqs: &[Vec<u32>],
    gold: &[u32],
    pad: u32,
    device: &Device,
) -> Result<Tensor<1>> {
    let batch = BertBatch::new(seqs, pad, device)?;
    let logits = model.forward(&batch)?;
    let targets: Vec<i64> = gold.iter().map(|&g| i64::from(g)).collect();
    let n = targets.len();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), device);
    Ok(CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits, targets))
}

/// Predicted class ids of `seqs`, in batches.
pub fn predict(
    model: &SequenceClassifier,
    seqs: &[Vec<u32>],
    batch_size: usize,
    pad: u32,
    device: &Device,
) -> Result<Vec<u32>> {
    let model = model.valid();
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(batch_size.max(1)) {
        let batch = BertBatch::new(chunk, pad, device)?;
        let classes = model.forward(&batch)?.argmax(1);
        let values: Vec<i64> = classes
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| Error::Config {
                field: "device",
                reason: format!("reading predictions: {e:?}"),
            })?;
        out.extend(values.into_iter().map(|v| v as u32));
    }
    Ok(out)
}

/// What a fine-tuning run did (`report.json` in the output folder).
#[derive(Clone, Debug, Serialize)]
pub struct ClassifyReport {
    /// Training examples.
    pub train_examples: usize,
    /// Steps taken.
    pub steps: u64,
    /// Validation scores after the last epoch.
    pub valid: Scores,
    /// Validation scores after each epoch.
    pub per_epoch: Vec<Scores>,
    /// Seconds.
    pub seconds: f64,
    /// Whether Ctrl-C ended it early.
    pub interrupted: bool,
}

/// Fine-tunes `bert` with a fresh classifier on `train`, scoring `valid` after every epoch;
/// saves the classifier to `config.output`.
#[allow(clippy::too_many_arguments)]
pub fn finetune_classify(
    bert: Bert,
    tokenizer: &dyn Tokenizer,
    train: (&Path, &[TextExample]),
    valid: (&Path, &[TextExample]),
    config: &ClassifyConfig,
    device: &Device,
    stop: &AtomicBool,
) -> Result<(SequenceClassifier, ClassifyReport)> {
    let started = Instant::now();
    if train.1.is_empty() {
        return Err(Error::Config {
            field: "train",
            reason: format!("{} has no example", train.0.display()),
        });
    }
    let labels = LabelVocab::from_labels(train.1.iter().map(|e| e.label.as_str()));
    let pad = tokenizer.token_id("[PAD]").ok_or_else(|| Error::Config {
        field: "tokenizer",
        reason: "the tokenizer has no [PAD] token".into(),
    })?;
    let (train_seqs, train_gold) =
        encode_examples(train.1, train.0, tokenizer, &labels, config.max_seq_length)?;
    let (valid_seqs, valid_gold) =
        encode_examples(valid.1, valid.0, tokenizer, &labels, config.max_seq_length)?;
    let mut model = SequenceClassifier::new(bert, labels.len(), config.seed)?;
    let steps_per_epoch = train_seqs.len().div_ceil(config.batch_size.max(1)) as u64;
    let total_steps = steps_per_epoch * config.epochs;
    let warmup = (total_steps as f64 * config.warmup_ratio).round() as u64;
    let schedule = LrSchedule {
        max_lr: config.lr,
        min_lr: 0.0,
        warmup_steps: warmup,
        decay_steps: total_steps.max(warmup + 1),
        style: crate::schedule::DecayStyle::Linear,
    };
    schedule.validate()?;
    config.adamw.validate()?;
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    let mut log = MetricsLog::open(&config.output.join("metrics.jsonl"), None)?;
    let mut optimizer = AdamW::new(config.adamw);
    let mut scaler = LossScaler::None;
    let step_config = StepConfig {
        micro_batches: 1,
        clip_grad: config.clip_grad,
        precision: Precision::Fp32,
    };
    let lengths: Vec<usize> = train_seqs.iter().map(Vec::len).collect();
    let bar = crate::progress_bar(config.progress, total_steps, 0);
    let mut step = 0u64;
    let mut per_epoch = Vec::new();
    let mut interrupted = false;
    'epochs: for epoch in 0..config.epochs {
        let order = batches(
            &lengths,
            config.batch_size,
            Some(16),
            config.seed ^ (epoch + 1),
        );
        let mut epoch_loss = 0.0;
        for indices in &order {
            step += 1;
            let seqs: Vec<Vec<u32>> = indices.iter().map(|&i| train_seqs[i].clone()).collect();
            let gold: Vec<u32> = indices.iter().map(|&i| train_gold[i]).collect();
            let lr = schedule.lr(step);
            let (updated, outcome) = train_step(
                model,
                std::slice::from_ref(device),
                &crate::Alone,
                &mut optimizer,
                &mut scaler,
                lr,
                &step_config,
                |m, _, _| {
                    device.seed(micro_seed(config.seed, step, 0, 0));
                    class_loss(m, &seqs, &gold, pad, device)
                },
            )?;
            model = updated;
            epoch_loss += outcome.loss;
            bar.set_position(step);
            bar.set_message(format!("epoch {} loss {:.4}", epoch + 1, outcome.loss));
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break 'epochs;
            }
        }
        let predicted = predict(&model, &valid_seqs, config.batch_size, pad, device)?;
        let scores = score(&predicted, &valid_gold, &labels);
        let line = format!(
            "epoch {}: train loss {:.4}, validation accuracy {:.4}, macro F1 {:.4}",
            epoch + 1,
            epoch_loss / order.len().max(1) as f64,
            scores.accuracy,
            scores.macro_f1
        );
        crate::say(&bar, config.progress, line);
        log.push(Record {
            iteration: step,
            consumed_samples: step * config.batch_size as u64,
            loss: Some(epoch_loss / order.len().max(1) as f64),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            ..Record::default()
        })?;
        per_epoch.push(scores);
    }
    bar.finish_and_clear();
    let valid_scores = match per_epoch.last() {
        Some(s) if !interrupted => s.clone(),
        _ => {
            let predicted = predict(&model, &valid_seqs, config.batch_size, pad, device)?;
            score(&predicted, &valid_gold, &labels)
        }
    };
    save_classifier(&model, &labels, &config.output)?;
    log.plot()?;
    let report = ClassifyReport {
        train_examples: train_seqs.len(),
        steps: step,
        valid: valid_scores,
        per_epoch,
        seconds: started.elapsed().as_secs_f64(),
        interrupted,
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    lmforge_model::checkpoint::write_atomic(&config.output.join("report.json"), json.as_bytes())?;
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_by_hand() {
        let labels = LabelVocab::from_labels(["neg", "pos"]);
        // gold: pos pos neg neg; predicted: pos neg neg pos
        let (neg, pos) = (labels.id("neg").unwrap(), labels.id("pos").unwrap());
        let s = score(&[pos, neg, neg, pos], &[pos, pos, neg, neg], &labels);
        assert_eq!(s.accuracy, 0.5);
        assert!(
            s.classes
                .iter()
                .all(|c| (c.f1 - 0.5).abs() < 1e-12 && c.support == 2)
        );
        let s = score(&[pos, pos], &[pos, neg], &labels);
        let negative = &s.classes[neg as usize];
        assert_eq!(
            (negative.precision, negative.recall, negative.f1),
            (0.0, 0.0, 0.0)
        );
        assert!((s.classes[pos as usize].f1 - 2.0 / 3.0).abs() < 1e-12);
    }
}
