//! The pipeline's TOML configuration: every stage's parameters, with defaults, checked before
//! any stage runs. `datasets/default/pipeline.toml` documents every key.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One pipeline run's parameters. Unknown keys are errors (a misspelt key silently keeping its
/// default is the worst kind of irreproducibility).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The seed of every random choice: MinHash permutations, initialisation, data order,
    /// sampling.
    pub seed: u64,
    /// flex, wgpu, cuda:N or auto; `--device` overrides it.
    pub device: String,
    pub corpus: Corpus,
    pub clean: Clean,
    pub tokenizer: TokenizerConfig,
    pub convert: Convert,
    pub train: Train,
    pub eval: Eval,
    pub quantize: Quantize,
    pub samples: Samples,
    pub serve: Serve,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Corpus {
    /// jsonl (.gz/.zst) or parquet files, directories or globs, relative to the config file.
    pub inputs: Vec<String>,
    /// The text field.
    pub text_field: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Clean {
    /// Languages kept (ISO 639-1); empty keeps every language.
    pub languages: Vec<String>,
    /// Blacklist files (`fr.txt` applies to French documents), relative to the config file.
    pub blacklists: Vec<String>,
    /// Fields copied through besides the text.
    pub keep_fields: Vec<String>,
    /// none, exact or minhash.
    pub dedup: String,
    /// Near-duplicate Jaccard threshold.
    pub threshold: f64,
    /// Fewest characters kept after cleaning.
    pub min_chars: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// Byte-level BPE vocabulary size: 256 bytes + merges + special tokens.
    pub vocab_size: u64,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
    /// Take this tokenizer (a tokenizer.json, .tiktoken file or GPT-2 vocab.json + merges.txt
    /// folder; relative to the config file) instead of training one, rewritten as our
    /// tokenizer.json by `lmforge bpe convert`. Default with `[train] init`: the init model's
    /// own `tokenizer.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Convert {
    /// An end-of-document token after every document (Megatron's --append-eod).
    pub append_eod: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Train {
    /// A model preset (`lmforge model info --config NAME` lists them): its architecture
    /// (positions, norm, activation, tied head); the three keys below set its shape.
    pub model: String,
    /// Transformer layers (Megatron's --num-layers).
    pub num_layers: u64,
    /// Width of the residual stream (--hidden-size).
    pub hidden_size: u64,
    /// Attention heads, dividing hidden_size (--num-attention-heads).
    pub num_attention_heads: u64,
    pub seq_length: u64,
    pub micro_batch_size: u64,
    pub global_batch_size: u64,
    pub train_iters: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub lr_warmup_iters: u64,
    /// cosine, linear or constant.
    pub lr_decay_style: String,
    pub weight_decay: f64,
    pub adam_beta2: f64,
    /// Global-norm clipping; 0 turns it off.
    pub clip_grad: f64,
    /// train,valid,test weights over documents.
    pub split: String,
    pub log_interval: u64,
    /// Iterations between validations; 0: only at the end.
    pub eval_interval: u64,
    /// Batches per validation during training.
    pub eval_iters: u64,
    /// A model to continue instead of a new one (`--load INIT --finetune`): a checkpoint of
    /// ours or a Hugging Face GPT-2, Llama or Mistral folder, relative to the config file. Its
    /// architecture replaces `model`, `num_layers`, `hidden_size` and `num_attention_heads`;
    /// the tokenizer is its own (`[tokenizer] from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Iterations between checkpoints (Megatron's --save-interval); 0: only at the end. A
    /// training stopped or killed after one continues from it on the next run.
    pub save_interval: u64,
    /// Stop with a checkpoint after this iteration (Megatron's --exit-interval); the next run
    /// continues. Not part of the stage's identity: the weights it leads to are the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_interval: Option<u64>,
    /// Stop with a checkpoint after the first iteration past this many minutes (Megatron's
    /// --exit-duration-in-mins); the next run continues. Not part of the stage's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_duration_in_mins: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Eval {
    /// Batches of the validation and test splits (at most what the split holds).
    pub eval_iters: u64,
    pub micro_batch_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Quantize {
    /// Schemes, each quantizing the trained checkpoint: int8, int8-tensor, q8_0, q4_0.
    pub schemes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Samples {
    pub prompts: Vec<String>,
    /// New tokens per prompt.
    pub tokens: u64,
    /// 0: greedy; else the sampling temperature (seeded by `seed`).
    pub temperature: f64,
    pub top_p: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Serve {
    /// The checkpoint `--serve` serves: fp32 or one of `quantize.schemes`.
    pub model: String,
    pub host: String,
    pub port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1234,
            device: "auto".into(),
            corpus: Corpus::default(),
            clean: Clean::default(),
            tokenizer: TokenizerConfig::default(),
            convert: Convert::default(),
            train: Train::default(),
            eval: Eval::default(),
            quantize: Quantize::default(),
            samples: Samples::default(),
            serve: Serve::default(),
        }
    }
}

impl Default for Corpus {
    fn default() -> Self {
        Corpus {
            inputs: vec![
                "en.jsonl.gz".into(),
                "es.jsonl.gz".into(),
                "fr.jsonl.gz".into(),
            ],
            text_field: "text".into(),
        }
    }
}

impl Default for Clean {
    fn default() -> Self {
        Clean {
            languages: vec!["en".into(), "fr".into(), "es".into()],
            // The seed applied its blacklists to French and Spanish; the English LDNOOBW list
            // would drop most of Shakespeare.
            blacklists: vec!["../blacklists/fr.txt".into(), "../blacklists/es.txt".into()],
            keep_fields: vec!["source".into()],
            dedup: "minhash".into(),
            threshold: 0.8,
            min_chars: 256,
        }
    }
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            vocab_size: 8192,
            min_frequency: 2,
            from: None,
        }
    }
}

impl Default for Convert {
    fn default() -> Self {
        Convert { append_eod: true }
    }
}

impl Default for Train {
    /// `datasets/default/pipeline.toml`'s run (docs/benchmarks.md, "Choosing the default model").
    fn default() -> Self {
        Train {
            model: "tiny".into(),
            num_layers: 4,
            hidden_size: 128,
            num_attention_heads: 4,
            seq_length: 256,
            micro_batch_size: 8,
            global_batch_size: 8,
            train_iters: 1100,
            lr: 2e-3,
            min_lr: 2e-4,
            lr_warmup_iters: 50,
            lr_decay_style: "cosine".into(),
            weight_decay: 0.1,
            adam_beta2: 0.95,
            clip_grad: 1.0,
            split: "969,30,1".into(),
            log_interval: 10,
            eval_interval: 100,
            eval_iters: 10,
            init: None,
            save_interval: 200,
            exit_interval: None,
            exit_duration_in_mins: None,
        }
    }
}

impl Default for Eval {
    fn default() -> Self {
        Eval {
            eval_iters: 10,
            micro_batch_size: 8,
        }
    }
}

impl Default for Quantize {
    fn default() -> Self {
        Quantize {
            schemes: vec!["int8".into(), "q4_0".into()],
        }
    }
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            prompts: vec![
                "To be, or not to be,".into(),
                "Il était une fois".into(),
                "Había una vez".into(),
            ],
            tokens: 32,
            temperature: 0.8,
            top_p: 0.95,
        }
    }
}

impl Default for Serve {
    fn default() -> Self {
        Serve {
            model: "int8".into(),
            host: "127.0.0.1".into(),
            port: 5000,
        }
    }
}

const SCHEMES: [&str; 4] = ["int8", "int8-tensor", "q8_0", "q4_0"];

impl Config {
    /// Reads and validates `path`; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("pipeline config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        // toml's message carries the line, the column and the offending key or value.
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde's types cannot: ranges, names, consistency between keys.
    pub fn validate(&self) -> Result<()> {
        fn check(ok: bool, key: &str, why: impl std::fmt::Display) -> Result<()> {
            if !ok {
                bail!("`{key}` {why}");
            }
            Ok(())
        }
        let t = &self.train;
        check(
            !self.corpus.inputs.is_empty(),
            "corpus.inputs",
            "is empty: name at least one file",
        )?;
        check(
            !self.corpus.text_field.is_empty(),
            "corpus.text_field",
            "is empty",
        )?;
        for lang in &self.clean.languages {
            check(
                (2..=3).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_lowercase()),
                "clean.languages",
                format!("has {lang:?}: give ISO 639-1 codes such as \"fr\""),
            )?;
        }
        check(
            ["none", "exact", "minhash"].contains(&self.clean.dedup.as_str()),
            "clean.dedup",
            format!("is {:?}: give none, exact or minhash", self.clean.dedup),
        )?;
        check(
            self.clean.threshold > 0.0 && self.clean.threshold <= 1.0,
            "clean.threshold",
            format!(
                "is {}: give a Jaccard threshold in (0, 1]",
                self.clean.threshold
            ),
        )?;
        check(
            (257..=1 << 24).contains(&self.tokenizer.vocab_size),
            "tokenizer.vocab_size",
            format!(
                "is {}: give 257 to 16777216 (256 bytes, merges, <|endoftext|>)",
                self.tokenizer.vocab_size
            ),
        )?;
        check(
            !t.model.is_empty(),
            "train.model",
            "is empty: give a preset such as \"tiny\"",
        )?;
        check(t.num_layers >= 1, "train.num_layers", "must be at least 1")?;
        check(
            t.exit_interval != Some(0),
            "train.exit_interval",
            "must be at least 1",
        )?;
        check(
            t.exit_duration_in_mins
                .is_none_or(|m| m.is_finite() && m >= 0.0),
            "train.exit_duration_in_mins",
            "must be a number of minutes, 0 or more",
        )?;
        check(
            t.num_attention_heads >= 1 && t.hidden_size.is_multiple_of(t.num_attention_heads),
            "train.num_attention_heads",
            format!(
                "is {}: give a divisor of train.hidden_size ({})",
                t.num_attention_heads, t.hidden_size
            ),
        )?;
        check(t.seq_length >= 2, "train.seq_length", "must be at least 2")?;
        check(
            t.micro_batch_size >= 1,
            "train.micro_batch_size",
            "must be at least 1",
        )?;
        check(
            t.global_batch_size >= t.micro_batch_size
                && t.global_batch_size.is_multiple_of(t.micro_batch_size),
            "train.global_batch_size",
            format!(
                "is {}: give a multiple of train.micro_batch_size ({})",
                t.global_batch_size, t.micro_batch_size
            ),
        )?;
        check(
            t.train_iters >= 1,
            "train.train_iters",
            "must be at least 1",
        )?;
        check(
            t.lr > 0.0 && t.lr.is_finite(),
            "train.lr",
            format!("is {}: give a positive rate", t.lr),
        )?;
        check(
            (0.0..=t.lr).contains(&t.min_lr),
            "train.min_lr",
            format!("is {}: give 0 to train.lr ({})", t.min_lr, t.lr),
        )?;
        check(
            ["cosine", "linear", "constant"].contains(&t.lr_decay_style.as_str()),
            "train.lr_decay_style",
            format!("is {:?}: give cosine, linear or constant", t.lr_decay_style),
        )?;
        check(
            t.weight_decay >= 0.0,
            "train.weight_decay",
            "must not be negative",
        )?;
        check(
            t.adam_beta2 > 0.0 && t.adam_beta2 < 1.0,
            "train.adam_beta2",
            "must be in (0, 1)",
        )?;
        check(
            t.clip_grad >= 0.0,
            "train.clip_grad",
            "must not be negative",
        )?;
        let split: Vec<_> = t.split.split(',').map(str::parse::<f64>).collect();
        check(
            split.len() == 3
                && split.iter().all(|w| w.as_ref().is_ok_and(|w| *w >= 0.0))
                && split
                    .get(1)
                    .is_some_and(|w| w.as_ref().is_ok_and(|w| *w > 0.0)),
            "train.split",
            format!(
                "is {:?}: give three weights train,valid,test with a validation share",
                t.split
            ),
        )?;
        check(
            self.eval.eval_iters >= 1,
            "eval.eval_iters",
            "must be at least 1",
        )?;
        check(
            self.eval.micro_batch_size >= 1,
            "eval.micro_batch_size",
            "must be at least 1",
        )?;
        for scheme in &self.quantize.schemes {
            check(
                SCHEMES.contains(&scheme.as_str()),
                "quantize.schemes",
                format!("has {scheme:?}: give int8, int8-tensor, q8_0 or q4_0"),
            )?;
        }
        let mut seen = self.quantize.schemes.clone();
        seen.sort();
        seen.dedup();
        check(
            seen.len() == self.quantize.schemes.len(),
            "quantize.schemes",
            "names a scheme twice",
        )?;
        check(
            !self.samples.prompts.is_empty() && self.samples.prompts.iter().all(|p| !p.is_empty()),
            "samples.prompts",
            "must hold at least one prompt, none empty",
        )?;
        check(
            self.samples.temperature >= 0.0 && self.samples.temperature.is_finite(),
            "samples.temperature",
            "must be 0 (greedy) or positive",
        )?;
        check(
            self.samples.top_p > 0.0 && self.samples.top_p <= 1.0,
            "samples.top_p",
            "must be in (0, 1]",
        )?;
        check(
            self.serve.model == "fp32" || self.quantize.schemes.contains(&self.serve.model),
            "serve.model",
            format!(
                "is {:?}: give fp32 or one of quantize.schemes {:?}",
                self.serve.model, self.quantize.schemes
            ),
        )?;
        let cuda = self.device.strip_prefix("cuda").is_some_and(|n| {
            n.is_empty()
                || n.strip_prefix(':')
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        });
        check(
            ["flex", "wgpu", "auto"].contains(&self.device.as_str()) || cuda,
            "device",
            format!("is {:?}: give flex, wgpu, cuda:N or auto", self.device),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_defaults() {
        let path = crate::project_root().join("datasets/default/pipeline.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
    }

    #[test]
    fn an_empty_file_takes_every_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = Config::parse("seed = 1\n[train]\nlrr = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lrr") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let err = Config::parse("[train]\ntrain_iters = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train_iters") || err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn values_out_of_range_name_their_key() {
        for (toml, key) in [
            ("[train]\nlr = -1.0\n", "train.lr"),
            ("[train]\nmicro_batch_size = 3\n", "train.global_batch_size"),
            ("[train]\nsplit = \"1,0,0\"\n", "train.split"),
            (
                "[train]\nnum_attention_heads = 3\n",
                "train.num_attention_heads",
            ),
            ("[train]\nnum_layers = 0\n", "train.num_layers"),
            ("[quantize]\nschemes = [\"int3\"]\n", "quantize.schemes"),
            ("[serve]\nmodel = \"q8_0\"\n", "serve.model"),
            ("[clean]\nlanguages = [\"French\"]\n", "clean.languages"),
            ("[tokenizer]\nvocab_size = 10\n", "tokenizer.vocab_size"),
            ("[corpus]\ninputs = []\n", "corpus.inputs"),
            ("device = \"tpu\"\n", "device"),
            ("[samples]\nprompts = []\n", "samples.prompts"),
        ] {
            let err = Config::parse(toml).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{toml}: {err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Any text is a config or an error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::parse(&text);
        }

        /// Near-TOML: sections and keys of the real schema with arbitrary values.
        #[test]
        fn arbitrary_values_never_panic(
            section in proptest::sample::select(vec!["", "[train]\n", "[clean]\n", "[samples]\n", "[quantize]\n"]),
            key in proptest::sample::select(vec!["lr", "train_iters", "languages", "prompts", "schemes", "seed", "split"]),
            value in proptest::sample::select(vec!["-1", "0", "1e400", "\"x\"", "[]", "[1]", "true", "nan", "18446744073709551616"]),
        ) {
            let _ = Config::parse(&format!("{section}{key} = {value}\n"));
        }

        /// A valid config written back as TOML reads as the same config.
        #[test]
        fn valid_configs_roundtrip(
            seed in 0u64..1 << 53,
            iters in 1u64..100_000,
            lr in 1e-6f64..1.0,
            micro in 1u64..64,
            accumulation in 1u64..8,
            prompts in proptest::collection::vec("\\PC{1,20}", 1..4),
        ) {
            let mut config = Config { seed, ..Config::default() };
            config.train.train_iters = iters;
            config.train.lr = lr;
            config.train.min_lr = lr / 10.0;
            config.train.micro_batch_size = micro;
            config.train.global_batch_size = micro * accumulation;
            config.samples.prompts = prompts;
            let text = toml::to_string(&config).unwrap();
            proptest::prop_assert_eq!(Config::parse(&text).unwrap(), config);
        }
    }
}
