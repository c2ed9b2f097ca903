//! `lmforge train`, `lmforge eval` and `lmforge finetune` as a user runs them: corpus →
//! tokenizer → .bin/.idx → train, interrupt, resume → eval → generate; BERT likewise.

use std::fs;
use std::path::{Path, PathBuf};

use crate::bpe::s;
use crate::{fails_with, lmforge, ok};

fn tempdir(name: &str) -> PathBuf {
    crate::tempdir("train", name)
}

/// A jsonl corpus of short sentences, a tokenizer (`bpe` or `wordpiece`) and its .bin/.idx.
pub fn data(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let corpus = dir.join("corpus.jsonl");
    let sentences = [
        "the cat sat on the mat and looked at the dog",
        "le chat est sur le tapis et regarde le chien",
        "el gato está en la alfombra y mira al perro",
        "a dog ran in the park with a red ball",
    ];
    let mut text = String::new();
    for i in 0..120 {
        let line = format!("{} {}", sentences[i % 4], sentences[(i / 4) % 4]);
        text.push_str(&serde_json::json!({ "text": line }).to_string());
        text.push('\n');
    }
    fs::write(&corpus, text).unwrap();
    let tokenizer = dir.join("tokenizer.json");
    let mut args = vec![
        kind,
        "train",
        "--input",
        s(&corpus),
        "--vocab-size",
        "300",
        "--output",
        s(&tokenizer),
    ];
    if kind == "bpe" {
        args.extend(["--special-tokens", "<|endoftext|>"]);
    }
    ok(&lmforge(&args));
    let prefix = dir.join("corpus");
    ok(&lmforge(&[
        "convert",
        "--input",
        s(&corpus),
        "--tokenizer",
        s(&tokenizer),
        "--output-prefix",
        s(&prefix),
        "--append-eod",
    ]));
    (tokenizer, dir.join("corpus_text_document"))
}

pub fn gpt_flags<'a>(data: &'a Path, tokenizer: &'a Path, save: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "gpt",
        "--data-path",
        s(data),
        "--tokenizer",
        s(tokenizer),
        "--split",
        "80,10,10",
        "--num-layers",
        "2",
        "--hidden-size",
        "32",
        "--num-attention-heads",
        "2",
        "--max-position-embeddings",
        "64",
        "--seq-length",
        "32",
        "--micro-batch-size",
        "2",
        "--global-batch-size",
        "4",
        "--train-iters",
        "6",
        "--lr",
        "3e-3",
        "--lr-warmup-iters",
        "2",
        "--log-interval",
        "1",
        "--eval-interval",
        "3",
        "--eval-iters",
        "1",
        "--save",
        s(save),
        "--load",
        s(save),
        "--device",
        "flex",
    ]
}

#[test]
fn train_interrupt_resume_eval_and_generate() {
    let dir = tempdir("gpt");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let save = dir.join("run");
    let mut first = gpt_flags(&prefix, &tokenizer, &save);
    first.extend(["--exit-interval", "3"]);
    let out = lmforge(&first);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("parameters") && err.contains("FLOPs/token"),
        "{err}"
    );
    assert!(err.contains("unigram entropy"), "{err}");
    assert_eq!(
        fs::read_to_string(save.join("latest_checkpointed_iteration.txt")).unwrap(),
        "3"
    );

    // `--save X --load X` resumes where the first run stopped.
    let out = lmforge(&gpt_flags(&prefix, &tokenizer, &save));
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from"));
    let metrics = fs::read_to_string(save.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let iterations: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| l["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(iterations, [1, 2, 3, 4, 5, 6]);
    assert!(lines.iter().any(|l| l.get("val_ppl").is_some()));
    // The byte-level BPE's tokens give the validation bits per byte too.
    assert!(
        lines
            .iter()
            .filter(|l| l.get("val_loss").is_some())
            .all(|l| l["val_bits_per_byte"].as_f64().is_some_and(|b| b > 0.0)
                && l["val_bits_per_char"].as_f64() >= l["val_bits_per_byte"].as_f64()),
        "{lines:?}"
    );
    for key in ["lr", "grad_norm", "tokens_per_second"] {
        assert!(lines[0].get(key).is_some(), "{key} missing in {}", lines[0]);
    }
    assert!(save.join("loss.png").is_file());
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(save.join("train_report.json")).unwrap()).unwrap();
    assert_eq!(report["iterations"], 6);
    assert!(report["unigram_entropy"].as_f64().unwrap() > 1.0);

    let out = ok(&lmforge(&[
        "eval",
        "--checkpoint",
        s(&save),
        "--data-path",
        s(&prefix),
        "--device",
        "flex",
        "--json",
        "--eval-iters",
        "2",
        "--micro-batch-size",
        "2",
    ]));
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval["seq_length"], 32, "taken from the run's arguments");
    let ppl = eval["valid_perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 300.0, "{ppl}");
    // Its byte-level BPE gives bits per byte: below the bits per token, as its tokens average
    // more than one byte.
    let per_byte = eval["valid_bits_per_byte"]
        .as_f64()
        .unwrap_or_else(|| panic!("no bits per byte: {eval}"));
    let per_token = ppl.ln() / std::f64::consts::LN_2;
    assert!(
        per_byte > 0.0 && per_byte < per_token,
        "{per_byte} {per_token}"
    );
    // A character is a byte or more (this corpus has a few accented ones), so its bits are at
    // least the byte's.
    let per_char = eval["valid_bits_per_char"]
        .as_f64()
        .unwrap_or_else(|| panic!("no bits per character: {eval}"));
    assert!(per_char >= per_byte, "{per_char} {per_byte}");

    // The iteration folder is a model checkpoint with its tokenizer.
    let out = ok(&lmforge(&[
        "generate",
        "--checkpoint",
        s(&save.join("iter_0000006")),
        "--prompt",
        "the cat",
        "--tokens",
        "4",
        "--greedy",
        "--device",
        "flex",
    ]));
    assert!(out.starts_with("the cat"), "{out}");

    // Quantized, it reports what it cost, and eval and generate read it like any checkpoint.
    let quantized = dir.join("q4_0");
    let out = ok(&lmforge(&[
        "quantize",
        "--checkpoint",
        s(&save),
        "--scheme",
        "q4_0",
        "--output",
        s(&quantized),
        "--data-path",
        s(&prefix),
        "--eval-iters",
        "2",
        "--micro-batch-size",
        "2",
        "--bench-tokens",
        "4",
        "--device",
        "flex",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["scheme"], "q4_0");
    assert!(report["compression"].as_f64().unwrap() > 3.0, "{report}");
    let before = report["perplexity"]["before"].as_f64().unwrap();
    assert!(
        (before - ppl).abs() < 1e-6 * ppl,
        "the same samples as eval: {before} vs {ppl}"
    );
    assert!(report["tokens_per_second"]["after"].as_f64().unwrap() > 0.0);
    assert!(quantized.join("quantize_report.json").is_file());
    let out = ok(&lmforge(&[
        "eval",
        "--checkpoint",
        s(&quantized),
        "--data-path",
        s(&prefix),
        "--seq-length",
        "32",
        "--split",
        "80,10,10",
        "--device",
        "flex",
        "--json",
        "--eval-iters",
        "2",
        "--micro-batch-size",
        "2",
    ]));
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    let after = report["perplexity"]["after"].as_f64().unwrap();
    assert!((eval["valid_perplexity"].as_f64().unwrap() - after).abs() < 1e-6 * after);
    // The CPU engine on the codes, the device engine and the dense reference dequantized.
    for (device, engine) in [("cpu", "paged"), ("flex", "paged"), ("flex", "dense")] {
        let out = ok(&lmforge(&[
            "generate",
            "--checkpoint",
            s(&quantized),
            "--prompt",
            "the cat",
            "--tokens",
            "4",
            "--greedy",
            "--device",
            device,
            "--engine",
            engine,
        ]));
        assert!(out.starts_with("the cat"), "{out}");
    }
    fails_with(
        &lmforge(&[
            "quantize",
            "--checkpoint",
            s(&save),
            "--scheme",
            "int4",
            "--output",
            s(&quantized),
        ]),
        "unknown quantization scheme `int4`",
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inconsistent_flags_are_errors_naming_the_flag() {
    let dir = tempdir("flags");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let save = dir.join("run");
    let base = gpt_flags(&prefix, &tokenizer, &save);
    let with = |extra: &[&str]| {
        let mut args = base.clone();
        args.extend(extra);
        lmforge(&args)
    };
    fails_with(
        &with(&["--global-batch-size", "6", "--micro-batch-size", "4"]),
        "--global-batch-size",
    );
    fails_with(&with(&["--seq-length", "65"]), "--seq-length: 65 exceeds");
    fails_with(&with(&["--fp16", "--bf16"]), "--bf16");
    fails_with(&with(&["--lr-decay-style", "step"]), "--lr-decay-style");
    fails_with(&with(&["--min-lr", "1"]), "--min-lr");
    fails_with(
        &with(&["--exit-duration-in-mins=-1"]),
        "--exit-duration-in-mins",
    );
    fails_with(
        &with(&["--tensor-model-parallel-size", "2"]),
        "--tensor-model-parallel-size",
    );
    // A checkpoint of another shape is refused on --load.
    ok(&with(&["--train-iters", "1", "--eval-interval", "0"]));
    fails_with(
        &with(&["--hidden-size", "48"]),
        "--hidden-size 48: the model of --load",
    );
    // With --config the flags must build exactly the checkpoint's model.
    fails_with(
        &with(&["--config", "tiny", "--ffn-hidden-size", "96"]),
        "differs from the one the flags describe",
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// Without the `mpi` feature a launcher's multi-process run is refused with what to rebuild.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_launcher_needs_the_mpi_feature() {
    let dir = tempdir("no-mpi");
    let (tokenizer, prefix) = data(&dir, "bpe");
    let save = dir.join("run");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(gpt_flags(&prefix, &tokenizer, &save))
        .env("OMPI_COMM_WORLD_RANK", "1")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    fails_with(&out, "built without MPI: rebuild it with `--features mpi`");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bert_pretrains_then_classifies() {
    let dir = tempdir("bert");
    let (tokenizer, prefix) = data(&dir, "wordpiece");
    let save = dir.join("mlm");
    ok(&lmforge(&[
        "train",
        "bert",
        "--data-path",
        s(&prefix),
        "--tokenizer",
        s(&tokenizer),
        "--split",
        "90,10,0",
        "--num-layers",
        "1",
        "--hidden-size",
        "32",
        "--num-attention-heads",
        "2",
        "--ffn-hidden-size",
        "64",
        "--max-position-embeddings",
        "64",
        "--seq-length",
        "32",
        "--micro-batch-size",
        "4",
        "--train-iters",
        "4",
        "--lr",
        "1e-3",
        "--eval-interval",
        "0",
        "--eval-iters",
        "1",
        "--save",
        s(&save),
        "--device",
        "flex",
    ]));
    let checkpoint = save.join("iter_0000004");
    let meta = fs::read_to_string(checkpoint.join("lmforge.json")).unwrap();
    assert!(meta.contains("bert-mlm"), "{meta}");

    let (train, valid) = (dir.join("train.tsv"), dir.join("valid.tsv"));
    let example = |i: usize| {
        let animals = ["cat", "dog", "gato", "chat"];
        let (word, label) = if i.is_multiple_of(2) {
            ("park", "outside")
        } else {
            ("mat", "inside")
        };
        format!("the {} is on the {word}\t{label}\n", animals[i % 4])
    };
    fs::write(&train, (0..64).map(example).collect::<String>()).unwrap();
    fs::write(&valid, (100..116).map(example).collect::<String>()).unwrap();
    let output = dir.join("classifier");
    let out = ok(&lmforge(&[
        "finetune",
        "classify",
        "--train",
        s(&train),
        "--valid",
        s(&valid),
        "--checkpoint",
        s(&checkpoint),
        "--output",
        s(&output),
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--lr",
        "2e-3",
        "--device",
        "flex",
    ]));
    assert!(
        out.contains("accuracy") && out.contains("inside") && out.contains("outside"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(output.join("report.json")).unwrap()).unwrap();
    let accuracy = report["valid"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "{accuracy}");
    assert_eq!(report["valid"]["classes"].as_array().unwrap().len(), 2);

    // A validation label the training file lacks is named with its line.
    fs::write(&valid, "the cat is on the roof\tabove\n").unwrap();
    fails_with(
        &lmforge(&[
            "finetune",
            "classify",
            "--train",
            s(&train),
            "--valid",
            s(&valid),
            "--checkpoint",
            s(&checkpoint),
            "--output",
            s(&output),
            "--device",
            "flex",
        ]),
        "valid.tsv:1",
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// Continued pretraining of an open model: a Llama-shaped model written as a Hugging Face
/// folder is trained further with `--load HF --finetune` (its own architecture: grouped-query
/// attention, RoPE, RMSNorm, SwiGLU; iteration 0, a fresh optimizer); the run stopped and
/// resumed from its own save folder equals the uninterrupted one bit for bit, and exports back
/// to Hugging Face. A model folder without --finetune, flags that contradict the model and a
/// tokenizer larger than its vocabulary are errors naming them.
#[test]
fn an_open_model_continues_pretraining_with_finetune() {
    let dir = tempdir("finetune");
    let (tokenizer, data) = data(&dir, "bpe");
    let open = dir.join("open");
    let config = lmforge_model::GptConfig {
        positions: lmforge_model::Positions::Rope,
        norm: lmforge_model::NormKind::RmsNorm,
        activation: lmforge_model::Activation::Swiglu,
        bias: false,
        tie_embeddings: false,
        n_layer: 2,
        d_model: 32,
        n_head: 4,
        n_kv_head: Some(2),
        d_ff: Some(64),
        dropout: 0.0,
        max_seq_len: 64,
        norm_eps: 1e-5,
        ..lmforge_model::GptConfig::tiny(384)
    };
    let model = config.init(&burn::tensor::Device::flex(), 9).unwrap();
    lmforge_model::hf::export_llama(&model, &open).unwrap();
    let flags = |save: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "gpt",
            "--data-path",
            s(&data),
            "--tokenizer",
            s(&tokenizer),
            "--split",
            "80,10,10",
            "--seq-length",
            "32",
            "--micro-batch-size",
            "2",
            "--global-batch-size",
            "4",
            "--train-iters",
            "6",
            "--lr",
            "3e-3",
            "--lr-warmup-iters",
            "2",
            "--log-interval",
            "2",
            "--eval-interval",
            "3",
            "--eval-iters",
            "1",
            "--save",
            s(save),
            "--device",
            "flex",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run = |args: Vec<String>| lmforge(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // A model folder is not a training checkpoint: without --finetune it is refused.
    let whole = dir.join("whole");
    fails_with(&run(flags(&whole, &["--load", s(&open)])), "add --finetune");
    fails_with(
        &run(flags(
            &whole,
            &["--load", s(&open), "--finetune", "--num-layers", "3"],
        )),
        "--num-layers 3: the model of --load",
    );
    ok(&run(flags(&whole, &["--load", s(&open), "--finetune"])));
    let trained = whole.join("iter_0000006");
    let saved = lmforge_model::checkpoint::gpt_config(&trained).unwrap();
    assert_eq!(saved, config, "the run kept the open model's architecture");
    let weights = |dir: &Path| fs::read(dir.join("model.safetensors")).unwrap();
    // Stopped after 3 iterations, then resumed from its own save folder without --finetune:
    // the same bytes as the uninterrupted run.
    let parts = dir.join("parts");
    ok(&run(flags(
        &parts,
        &["--load", s(&open), "--finetune", "--exit-interval", "3"],
    )));
    assert!(parts.join("iter_0000003").is_dir());
    // Megatron's --no-load-optim on a copy: the iteration and data go on, AdamW starts over.
    let fresh = dir.join("fresh");
    fs::create_dir_all(&fresh).unwrap();
    for entry in fs::read_dir(&parts).unwrap() {
        let entry = entry.unwrap();
        let to = fresh.join(entry.file_name());
        if entry.path().is_dir() {
            fs::create_dir_all(&to).unwrap();
            for file in fs::read_dir(entry.path()).unwrap() {
                let file = file.unwrap();
                fs::copy(file.path(), to.join(file.file_name())).unwrap();
            }
        } else {
            fs::copy(entry.path(), to).unwrap();
        }
    }
    ok(&run(flags(
        &fresh,
        &["--load", s(&fresh), "--no-load-optim"],
    )));
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fresh.join("iter_0000006/trainer.json")).unwrap())
            .unwrap();
    assert_eq!(state["iteration"], 6);
    assert_eq!(
        state["adam_step"], 3,
        "AdamW counted only the steps since it started over"
    );
    ok(&run(flags(&parts, &["--load", s(&parts)])));
    let resumed = parts.join("iter_0000006");
    assert!(
        weights(&resumed) == weights(&trained),
        "the resumed run's weights differ"
    );
    // The trainer state too, but for the --save folder each run was given.
    let state = |dir: &Path| {
        let text = fs::read_to_string(dir.join("trainer.json")).unwrap();
        let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
        state["args"].as_object_mut().unwrap().remove("save");
        state
    };
    assert_eq!(state(&resumed), state(&trained));
    // The continued model goes back out as a Llama folder.
    let back = dir.join("back");
    ok(&lmforge(&[
        "model",
        "export-llama",
        "--checkpoint",
        s(&trained),
        "--output",
        s(&back),
    ]));
    let device = burn::tensor::Device::flex();
    let exported = lmforge_model::hf::import_llama(&back, &device).unwrap();
    assert_eq!(exported.config(), &config);
    // A model whose vocabulary the tokenizer's ids overflow.
    let small = lmforge_model::GptConfig {
        vocab_size: 200,
        ..config
    };
    let small_dir = dir.join("small");
    lmforge_model::hf::export_llama(&small.init(&device, 1).unwrap(), &small_dir).unwrap();
    fails_with(
        &run(flags(
            &dir.join("x"),
            &["--load", s(&small_dir), "--finetune"],
        )),
        "its ids would not",
    );
    fs::remove_dir_all(dir).unwrap();
}

/// A SentencePiece-style tokenizer (Llama 2's kind: `▁`, byte fallback) through the whole
/// continued-pretraining path: `bpe convert` checks and keeps it, `convert` writes the corpus
/// with it (`</s>` ending each document), a Llama-shaped model carrying it trains on that with
/// `--finetune`, and `generate` decodes the continuation with it.
#[test]
fn a_sentencepiece_tokenizer_carries_through_continued_pretraining() {
    let dir = tempdir("spm");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bpe/tests/fixtures/spm-llama.json");
    let tokenizer = dir.join("tokenizer.json");
    let out = ok(&lmforge(&[
        "bpe",
        "convert",
        "--tokenizer",
        s(&fixture),
        "--output",
        s(&tokenizer),
    ]));
    assert!(out.contains("601 tokens"), "{out}");
    assert_eq!(fs::read(&tokenizer).unwrap(), fs::read(&fixture).unwrap());
    let corpus = dir.join("corpus.jsonl");
    let mut text = String::new();
    for i in 0..80 {
        let line =
            format!("Il était une fois une tortue numéro {i} qui vivait près de la rivière.");
        text.push_str(&serde_json::json!({ "text": line }).to_string());
        text.push('\n');
    }
    fs::write(&corpus, text).unwrap();
    let prefix = dir.join("corpus");
    ok(&lmforge(&[
        "convert",
        "--input",
        s(&corpus),
        "--tokenizer",
        s(&tokenizer),
        "--output-prefix",
        s(&prefix),
        "--append-eod",
    ]));
    let config = lmforge_model::GptConfig {
        positions: lmforge_model::Positions::Rope,
        norm: lmforge_model::NormKind::RmsNorm,
        activation: lmforge_model::Activation::Swiglu,
        bias: false,
        tie_embeddings: false,
        n_layer: 1,
        d_model: 32,
        n_head: 4,
        n_kv_head: Some(1),
        d_ff: Some(64),
        dropout: 0.0,
        max_seq_len: 64,
        ..lmforge_model::GptConfig::tiny(640)
    };
    let open = dir.join("open");
    let model = config.init(&burn::tensor::Device::flex(), 2).unwrap();
    lmforge_model::hf::export_llama(&model, &open).unwrap();
    fs::copy(&tokenizer, open.join("tokenizer.json")).unwrap();
    let save = dir.join("run");
    let data = dir.join("corpus_text_document");
    ok(&lmforge(&[
        "train",
        "gpt",
        "--load",
        s(&open),
        "--finetune",
        "--data-path",
        s(&data),
        "--tokenizer",
        s(&tokenizer),
        "--split",
        "90,5,5",
        "--seq-length",
        "32",
        "--micro-batch-size",
        "2",
        "--global-batch-size",
        "2",
        "--train-iters",
        "4",
        "--lr",
        "3e-3",
        "--lr-warmup-iters",
        "1",
        "--eval-interval",
        "0",
        "--save",
        s(&save),
        "--device",
        "flex",
    ]));
    let trained = save.join("iter_0000004");
    assert_eq!(
        fs::read(trained.join("tokenizer.json")).unwrap(),
        fs::read(&fixture).unwrap(),
        "the checkpoint carries the SentencePiece tokenizer as it was"
    );
    let out = ok(&lmforge(&[
        "generate",
        "--checkpoint",
        s(&trained),
        "--prompt",
        "Il était une fois",
        "--tokens",
        "6",
        "--device",
        "cpu",
        "--json",
    ]));
    assert!(out.contains("Il était une fois"), "{out}");
    fs::remove_dir_all(dir).unwrap();
}
