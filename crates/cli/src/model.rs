//! `lmforge model {info, import, export-gpt2, embed}` and `lmforge generate`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lmforge_infer::{
    BurnDecoder, Decoder, GenerateOptions, Placement, Precision, Sampling, beam_search, generate,
    generate_batch,
};
use lmforge_model::accounting::{Dtype, gib};
use lmforge_model::bert::SentencePooling;
use lmforge_model::checkpoint::{Format, format};
use lmforge_model::{BertBatch, DeviceSpec, GptConfig, PRESETS, load_bert, load_gpt};
use lmforge_tokenizer::Tokenizer;
use serde::Serialize;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Parameters, FLOPs per token and memory per dtype of a config (preset or file).
    Info(InfoArgs),
    /// Convert a Hugging Face GPT-2, Llama, Mistral or BERT folder into an lmforge checkpoint.
    Import(ImportArgs),
    /// Write an lmforge GPT as a GPT-2 folder transformers loads.
    ExportGpt2(ExportArgs),
    /// Write an lmforge GPT of the Llama family (RoPE, RMSNorm, SwiGLU; any key/value heads) as
    /// a Hugging Face folder: Llama, Mistral (a sliding window) or Qwen2 (q/k/v biases).
    ExportLlama(ExportArgs),
    /// Sentence embeddings of each input line, as sentence-transformers computes them.
    Embed(EmbedArgs),
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Info(args) => info(&args),
        Command::Import(args) => import(&args),
        Command::ExportGpt2(args) => export(&args, "gpt2"),
        Command::ExportLlama(args) => export(&args, "llama"),
        Command::Embed(args) => embed(&args),
    }
}

pub(crate) fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: lmforge_model::Error| e.to_string())
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A preset (tiny, gpt2-small, 1.7b) or a GPT config JSON file.
    #[arg(long)]
    config: String,
    /// Replace the config's vocabulary size.
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Sequence length of the FLOPs and activation estimates (default: the config's).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Sequences per micro-batch for activation and KV-cache memory.
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// With --use-distributed-optimizer: the data-parallel ranks AdamW's moments are sharded
    /// over (the memory is then per rank).
    #[arg(long, default_value_t = 1)]
    data_parallel_size: usize,
    /// Count AdamW's moments as `lmforge train --use-distributed-optimizer` shards them.
    #[arg(long)]
    use_distributed_optimizer: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A preset name or a config file.
pub fn gpt_config(spec: &str, vocab_size: Option<usize>) -> Result<GptConfig> {
    if PRESETS.contains(&spec) || spec == "gpt2" {
        return Ok(GptConfig::preset(spec, vocab_size)?);
    }
    let path = Path::new(spec);
    if !path.is_file() {
        bail!(
            "--config {spec}: neither a preset ({}) nor a file",
            PRESETS.join(", ")
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {spec}"))?;
    let mut config = GptConfig::from_json(&text, spec)?;
    if let Some(v) = vocab_size {
        config.vocab_size = v;
    }
    Ok(config)
}

#[derive(Serialize)]
struct Info {
    config: GptConfig,
    params: lmforge_model::accounting::Params,
    seq_len: usize,
    training_flops_per_token: f64,
    inference_flops_per_token: f64,
    memory: Vec<lmforge_model::accounting::MemoryEstimate>,
    /// Ranks AdamW's moments are sharded over in `memory` (1: not sharded).
    optimizer_sharded_over: usize,
}

fn info(args: &InfoArgs) -> Result<()> {
    let config = gpt_config(&args.config, args.vocab_size)?;
    let seq_len = args.seq_len.unwrap_or(config.max_seq_len);
    if args.data_parallel_size == 0 {
        bail!("--data-parallel-size must be at least 1");
    }
    let sharded_over = if args.use_distributed_optimizer {
        args.data_parallel_size
    } else {
        1
    };
    let n = config.num_params();
    let info = Info {
        optimizer_sharded_over: sharded_over,
        params: config.params(),
        seq_len,
        training_flops_per_token: config.training_flops_per_token(seq_len),
        inference_flops_per_token: config.forward_flops_per_token(seq_len),
        memory: Dtype::ALL
            .iter()
            .map(|&d| {
                config
                    .memory(d, args.micro_batch, seq_len)
                    .with_sharded_optimizer(sharded_over, n)
                    .with_data_parallel(args.data_parallel_size, args.use_distributed_optimizer, n)
            })
            .collect(),
        config,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let p = &info.params;
    println!(
        "parameters        {:>15}  ({:.3} B; embeddings {}, matmul weights {})",
        thousands(p.total),
        p.total as f64 / 1e9,
        thousands(p.embedding),
        thousands(p.matmul)
    );
    println!(
        "FLOPs per token   training {:.3e}, inference {:.3e} (context {seq_len})",
        info.training_flops_per_token, info.inference_flops_per_token
    );
    println!(
        "\n{:<6} {:>12} {:>12} {:>12} {:>13} {:>14} {:>14} {:>16}",
        "dtype",
        "weights GiB",
        "grads GiB",
        "AdamW GiB",
        "step buf GiB",
        "activ. GiB",
        "KV/token KiB",
        "KV full ctx GiB"
    );
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |b| format!("{:.3}", gib(b)));
    for m in &info.memory {
        println!(
            "{:<6} {:>12.3} {:>12} {:>12} {:>13} {:>14} {:>14.1} {:>16.3}",
            format!("{:?}", m.dtype).to_lowercase(),
            gib(m.weights),
            opt(m.gradients),
            opt(m.optimizer),
            opt(m.step_buffers),
            opt(m.activations),
            m.kv_cache_per_token / 1024.0,
            gib(m.kv_cache_full_context)
        );
    }
    println!(
        "(activations for micro-batch {} × {seq_len}, no recomputation{})",
        args.micro_batch,
        if sharded_over > 1 {
            format!(
                "; AdamW per rank: its moments and the f32 master sharded over {sharded_over} ranks"
            )
        } else {
            String::new()
        }
    );
    if args.data_parallel_size > 1 {
        println!(
            "(step buffers: the f32 host vectors of {} data-parallel ranks' collectives: \
             one bucket of the all-reduce, or, sharded, a shard and one round)",
            args.data_parallel_size
        );
    }
    Ok(())
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// A Hugging Face folder: config.json + model.safetensors or sharded safetensors with
    /// model.safetensors.index.json (+ tokenizer.json). GPT-2, Llama, Mistral or BERT.
    #[arg(long)]
    from: PathBuf,
    /// The lmforge checkpoint folder to write.
    #[arg(long)]
    output: PathBuf,
}

fn import(args: &ImportArgs) -> Result<()> {
    let device = burn::tensor::Device::flex();
    let kind = match format(&args.from)? {
        Format::HuggingFace(kind) => kind,
        Format::Lmforge(_) => bail!("{} is already an lmforge checkpoint", args.from.display()),
    };
    match kind.as_str() {
        "gpt2" | "llama" | "mistral" | "qwen2" => {
            let model = load_gpt(&args.from, &device)?;
            lmforge_model::save_gpt(&model, &args.output)?;
            let c = model.config();
            let name = match kind.as_str() {
                "gpt2" => "GPT-2",
                "llama" => "Llama",
                "qwen2" => "Qwen2",
                _ => "Mistral",
            };
            println!(
                "imported {name}: {} parameters, {} layers, {} heads ({} key/value)",
                thousands(c.num_params()),
                c.n_layer,
                c.n_head,
                c.kv_heads()
            );
        }
        "bert" => {
            let model = load_bert(&args.from, &device)?;
            lmforge_model::save_bert(&model, &args.output)?;
            println!(
                "imported BERT: {} layers, width {}",
                model.config().n_layer,
                model.config().d_model
            );
        }
        other => {
            bail!("model_type `{other}`: lmforge imports gpt2, llama, mistral, qwen2 and bert")
        }
    }
    copy_companions(&args.from, &args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}

/// Carries `tokenizer.json` and `generation_config.json` (its end-of-sequence ids) along, so the
/// output folder is complete.
fn copy_companions(from: &Path, to: &Path) -> Result<()> {
    for name in [
        "tokenizer.json",
        lmforge_infer::generation_config::GENERATION_CONFIG,
    ] {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// An lmforge GPT checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The Hugging Face folder to write.
    #[arg(long)]
    output: PathBuf,
}

fn export(args: &ExportArgs, layout: &str) -> Result<()> {
    let model = load_gpt(&args.checkpoint, &burn::tensor::Device::flex())?;
    std::fs::create_dir_all(&args.output)?;
    let class = if layout == "llama" {
        lmforge_model::hf::export_llama(&model, &args.output)?;
        "AutoModelForCausalLM"
    } else {
        lmforge_model::hf::export_gpt2(&model, &args.output)?;
        "GPT2LMHeadModel"
    };
    copy_companions(&args.checkpoint, &args.output)?;
    println!(
        "wrote {} ({class}.from_pretrained loads it)",
        args.output.display()
    );
    Ok(())
}

/// The tokenizer a checkpoint folder carries, or the one given.
fn open_tokenizer(checkpoint: &Path, given: &Option<PathBuf>) -> Result<Box<dyn Tokenizer>> {
    let path = given
        .clone()
        .unwrap_or_else(|| checkpoint.join("tokenizer.json"));
    if !path.is_file() {
        bail!("{} is missing: give --tokenizer", path.display());
    }
    Ok(lmforge_dataset::open_tokenizer(&path)?)
}

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// A BERT checkpoint: a sentence-transformers folder, a Hugging Face BERT folder or ours.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text file, one sentence per line (`-` for standard input).
    #[arg(long)]
    input: PathBuf,
    /// tokenizer.json (default: the checkpoint's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,
    /// flex, wgpu, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceSpec,
}

fn embed(args: &EmbedArgs) -> Result<()> {
    let device = args.device.resolve()?;
    let bert = load_bert(&args.checkpoint, &device)?;
    let pooling = SentencePooling::of_folder(&args.checkpoint)?;
    let tokenizer = open_tokenizer(&args.checkpoint, &args.tokenizer)?;
    let special = |t: &str| {
        tokenizer
            .token_id(t)
            .with_context(|| format!("the tokenizer has no {t}"))
    };
    let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
    let pad = tokenizer.pad_id().unwrap_or(0);
    let limit = pooling
        .max_seq_len
        .unwrap_or(usize::MAX)
        .min(bert.config().max_seq_len)
        .max(2);
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut pending: Vec<Vec<u32>> = Vec::new();
    let flush = |pending: &mut Vec<Vec<u32>>, out: &mut dyn Write| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let batch = BertBatch::new(pending, pad, &device)?;
        let embeddings = pooling.embed(&bert, &batch)?;
        let d = embeddings.dims()[1];
        let values = lmforge_model::host_values(embeddings);
        for row in values.chunks(d) {
            serde_json::to_writer(&mut *out, row)?;
            out.write_all(b"\n")?;
        }
        pending.clear();
        Ok(())
    };
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", args.input.display(), n + 1))?;
        let mut ids = tokenizer
            .encode(&line)
            .with_context(|| format!("{}:{}", args.input.display(), n + 1))?;
        ids.truncate(limit - 2);
        let mut seq = Vec::with_capacity(ids.len() + 2);
        seq.push(cls);
        seq.extend(ids);
        seq.push(sep);
        pending.push(seq);
        if pending.len() == usize::from(args.batch_size) {
            flush(&mut pending, &mut out)?;
        }
    }
    flush(&mut pending, &mut out)?;
    out.flush()?;
    Ok(())
}

/// `lmforge generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// An lmforge GPT checkpoint or a Hugging Face GPT-2 folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Prompt text; repeat for a batch.
    #[arg(long, required = true, allow_hyphen_values = true)]
    prompt: Vec<String>,
    /// New tokens per prompt.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Always the most likely token (the default unless --temperature is given or the
    /// checkpoint's generation_config.json sets do_sample).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Sampling temperature (> 0).
    #[arg(long, allow_hyphen_values = true)]
    temperature: Option<f32>,
    /// Sample among the k most likely tokens.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    top_p: f32,
    /// Penalty on tokens already in the text (1: none).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    repetition_penalty: f32,
    /// Seed of the sampling (the i-th --prompt samples with seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Beam search of this width (one prompt; deterministic).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    beam_width: Option<usize>,
    /// Beam scores are divided by length^penalty.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
    /// Stop at this token (default: the tokenizer's end-of-document token).
    #[arg(long)]
    stop_token: Vec<String>,
    /// tokenizer.json (default: the checkpoint's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// cpu (the CPU engine: quantized weights read as codes), flex, wgpu[:N] or cuda[:N] (the
    /// device engine on that burn device: quantized weights dequantized), or auto (a real GPU
    /// when there is one, never lavapipe; else cpu).
    #[arg(long, default_value = "auto", value_parser = parse_placement)]
    device: Placement,
    /// f32, f16 or bf16: the device engine's weights, keys and values (the CPU engine: f32).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    dtype: Precision,
    /// Print JSON (prompt, text, tokens, finish, tokens/s) instead of text.
    #[arg(long)]
    json: bool,
    /// paged: the engine --device names, through the scheduler the server runs; dense: the
    /// burn model with its dense KV cache, the reference (on flex for --device cpu).
    #[arg(long, default_value = "paged")]
    engine: Engine,
}

/// What decodes.
enum Loaded {
    Paged(lmforge_infer::Loaded),
    Dense(Box<lmforge_model::Gpt>, burn::tensor::Device),
}

/// Which implementation decodes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The CPU or device engine, paged, through the scheduler.
    Paged,
    /// The burn model with its dense cache.
    Dense,
}

pub(crate) fn parse_placement(s: &str) -> Result<Placement, String> {
    s.parse().map_err(|e: lmforge_infer::Error| e.to_string())
}

pub(crate) fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse().map_err(|e: lmforge_infer::Error| e.to_string())
}

#[derive(Serialize)]
struct Sample {
    prompt: String,
    text: String,
    tokens: Vec<u32>,
    finish: String,
}

pub fn run_generate(args: &GenerateArgs) -> Result<()> {
    let placement = args.device.resolve();
    if args.device == Placement::Auto {
        eprintln!("--device auto: {}", placement.describe());
    }
    let loaded = match args.engine {
        Engine::Paged => Loaded::Paged(lmforge_infer::Loaded::load(
            &args.checkpoint,
            placement,
            args.dtype,
            0,
        )?),
        Engine::Dense => {
            let spec = match placement {
                Placement::Device(spec) => spec,
                Placement::Cpu | Placement::Auto => DeviceSpec::Flex,
            };
            let device = spec.resolve()?;
            let model = lmforge_quant::load_gpt(&args.checkpoint, &device)?;
            Loaded::Dense(Box::new(model), device)
        }
    };
    let tokenizer = open_tokenizer(&args.checkpoint, &args.tokenizer)?;
    let prompts: Vec<Vec<u32>> = args
        .prompt
        .iter()
        .map(|p| tokenizer.encode(p))
        .collect::<Result<_, _>>()?;
    if let Some(empty) = prompts.iter().position(Vec::is_empty) {
        bail!("--prompt {:?} encodes to no tokens", args.prompt[empty]);
    }
    let mut stop_tokens = Vec::new();
    for text in &args.stop_token {
        match tokenizer.token_id(text) {
            Some(id) => stop_tokens.push(id),
            None => bail!("--stop-token {text:?} is not a token of the tokenizer"),
        }
    }
    if args.stop_token.is_empty() {
        // The model's own end-of-sequence ids (generation_config.json), else the tokenizer's.
        stop_tokens =
            lmforge_infer::generation_config::stop_ids(&args.checkpoint, tokenizer.eod_id())?;
    }
    let started = Instant::now();
    let samples: Vec<(Vec<u32>, String)> = if let Some(width) = args.beam_width {
        if prompts.len() != 1 {
            bail!("--beam-width takes one --prompt");
        }
        fn beams<D: Decoder>(
            model: &D,
            prompt: &[u32],
            args: &GenerateArgs,
            width: usize,
            stops: &[u32],
        ) -> lmforge_infer::Result<Vec<lmforge_infer::Beam>> {
            beam_search(
                model,
                prompt,
                width,
                args.tokens,
                stops,
                args.length_penalty,
            )
        }
        let prompt = &prompts[0];
        let beams = match &loaded {
            Loaded::Paged(lmforge_infer::Loaded::Cpu(engine)) => {
                beams(engine.as_ref(), prompt, args, width, &stop_tokens)?
            }
            Loaded::Paged(lmforge_infer::Loaded::Device(engine)) => {
                beams(engine.as_ref(), prompt, args, width, &stop_tokens)?
            }
            Loaded::Dense(model, device) => {
                let decoder = BurnDecoder { model, device };
                beams(&decoder, prompt, args, width, &stop_tokens)?
            }
        };
        beams
            .into_iter()
            .map(|b| (b.tokens, "beam".to_string()))
            .collect()
    } else {
        // The checkpoint's generation_config.json samples by default, as transformers does,
        // unless told --greedy or a --temperature; --top-k/--top-p left at theirs take its.
        let defaults = if args.greedy || args.temperature.is_some() {
            None
        } else {
            lmforge_infer::generation_config::sampling_defaults(&args.checkpoint)?
        };
        if let Some(d) = defaults {
            eprintln!(
                "sampling as generation_config.json says: temperature {}, top-p {}, top-k {} \
                 (--greedy for the most likely tokens)",
                d.temperature, d.top_p, d.top_k
            );
        }
        let sampling = Sampling {
            temperature: if args.greedy {
                0.0
            } else {
                args.temperature
                    .or(defaults.map(|d| d.temperature as f32))
                    .unwrap_or(0.0)
            },
            top_k: match (args.top_k, defaults) {
                (0, Some(d)) => d.top_k,
                (k, _) => k,
            },
            top_p: match defaults {
                Some(d) if args.top_p == 1.0 => d.top_p as f32,
                _ => args.top_p,
            },
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        };
        if sampling.temperature == 0.0 && (args.top_k > 0 || args.top_p < 1.0) {
            bail!("--top-k/--top-p need --temperature (greedy decoding ignores them)");
        }
        let options = GenerateOptions {
            max_new_tokens: args.tokens,
            sampling,
            stop_tokens,
        };
        // One prompt streams to the terminal as it is generated.
        let stream = prompts.len() == 1 && !args.json;
        let mut shown = 0;
        let mut so_far = Vec::new();
        if stream {
            print!("{}", args.prompt[0]);
        }
        let on_token = |_: usize, token: u32| {
            if stream {
                so_far.push(token);
                // Decoding the whole continuation each time keeps multi-byte characters whole.
                if let Ok(text) = tokenizer.decode(&so_far) {
                    let text = text.trim_end_matches('\u{FFFD}');
                    if text.len() > shown && text.is_char_boundary(shown) {
                        print!("{}", &text[shown..]);
                        let _ = std::io::stdout().flush();
                        shown = text.len();
                    }
                }
            }
            true
        };
        let out = match &loaded {
            // The prompts are requests to the scheduler the server runs.
            Loaded::Paged(lmforge_infer::Loaded::Cpu(engine)) => {
                generate_batch(engine, &prompts, &options, on_token)?
            }
            Loaded::Paged(lmforge_infer::Loaded::Device(engine)) => {
                generate_batch(engine, &prompts, &options, on_token)?
            }
            Loaded::Dense(model, device) => {
                generate(&BurnDecoder { model, device }, &prompts, &options, on_token)?
            }
        };
        if stream {
            let text = tokenizer.decode(&out[0].tokens)?;
            println!("{}", text.get(shown..).unwrap_or(""));
        }
        out.into_iter()
            .map(|g| (g.tokens, format!("{:?}", g.finish).to_lowercase()))
            .collect()
    };
    let seconds = started.elapsed().as_secs_f64();
    let new_tokens: usize = samples.iter().map(|s| s.0.len()).sum();
    let streamed = prompts.len() == 1 && args.beam_width.is_none() && !args.json;
    for (i, (tokens, finish)) in samples.iter().enumerate() {
        let prompt = &args.prompt[i.min(args.prompt.len() - 1)];
        let text = tokenizer.decode(tokens)?;
        if args.json {
            let sample = Sample {
                prompt: prompt.clone(),
                text,
                tokens: tokens.clone(),
                finish: finish.clone(),
            };
            println!("{}", serde_json::to_string(&sample)?);
        } else if !streamed {
            println!("--- {prompt}{text}");
        }
    }
    eprintln!(
        "{new_tokens} tokens in {seconds:.2} s ({:.1} tokens/s)",
        new_tokens as f64 / seconds.max(1e-9)
    );
    Ok(())
}
