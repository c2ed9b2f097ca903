//! `lmforge`: the command line of lmforge, one subcommand per stage.
//!
//! ```text
//! lmforge device --device auto        # open a device and train a tiny GPT one step on it
//! lmforge clean --input raw/ --output clean/ --languages fr,es --blacklist datasets/blacklists
//! lmforge bpe train --input corpus.jsonl.gz --vocab-size 32000 --output tokenizer.json
//! echo "Bonjour" | lmforge bpe encode --tokenizer tokenizer.json
//! lmforge wordpiece train --input corpus.jsonl.gz --vocab-size 30000 --lowercase --output bert.json
//! lmforge convert --input corpus.jsonl.gz --tokenizer tokenizer.json --output-prefix data/corpus --append-eod
//! lmforge dataset samples --data-path data/corpus_text_document --seq-length 1024 --split 969,30,1
//! lmforge model info --config 1.7b
//! lmforge model import --from hf/gpt2 --output ckpt/gpt2
//! lmforge generate --checkpoint ckpt/gpt2 --prompt "Il était une fois" --tokens 50 --temperature 0.8 --top-p 0.9
//! lmforge quantize --checkpoint runs/default/train --scheme q4_0 --output ckpt/q4_0 --data-path data/corpus_text_document
//! lmforge serve --checkpoint runs/default/train --port 5000 --kv-cache-mb 256
//! lmforge model embed --checkpoint all-MiniLM-L6-v2 --input sentences.txt
//! ```
//!
//! Every subcommand that computes takes `--device` (`flex`, `wgpu`, `cuda:N`, `auto`), parsed
//! once by [`lmforge_model::DeviceSpec`].

mod bpe;
mod clean;
mod corpus;
mod dataset;
mod device;
mod lines;
mod model;
mod output;
mod quant;
mod serve;
mod sharding;
mod train;
mod training;
mod wordpiece;

use clap::{Parser, Subcommand};

// Training frees and reallocates [tokens × vocab] buffers every step; glibc returns them to the
// OS and faults them in again, mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lmforge",
    version,
    about = "From a raw text corpus to a served language model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open a compute device and check that it trains: a forward and backward pass of a tiny
    /// GPT, timed, with a JSON report.
    Device(device::Args),
    /// Clean a jsonl/parquet corpus: exact and MinHash near dedup, language, cleaning,
    /// blacklists, Gopher quality filters; a report.
    Clean(Box<clean::Args>),
    /// Byte-level BPE (the GPT tokenizer): train, encode, decode.
    #[command(subcommand)]
    Bpe(bpe::Command),
    /// WordPiece (the BERT tokenizer): train by likelihood, encode, decode.
    #[command(subcommand)]
    Wordpiece(wordpiece::Command),
    /// Tokenize a jsonl/parquet corpus into Megatron's .bin/.idx (preprocess_data.py).
    Convert(dataset::ConvertArgs),
    /// Megatron .bin/.idx datasets: inspect, merge, draw GPT samples.
    #[command(subcommand)]
    Dataset(dataset::Command),
    /// Models: size and memory of a config, Hugging Face import and GPT-2 export, sentence
    /// embeddings.
    #[command(subcommand)]
    Model(model::Command),
    /// Continue prompts with a GPT checkpoint (greedy, sampling or beam search).
    Generate(model::GenerateArgs),
    /// Pretrain a GPT or BERT on .bin/.idx data, Megatron-style (resumable checkpoints,
    /// metrics.jsonl, loss curve).
    #[command(subcommand)]
    Train(Box<train::TrainCommand>),
    /// Validation and test loss and perplexity of a checkpoint on .bin/.idx data.
    Eval(train::EvalArgs),
    /// Quantize a GPT checkpoint's weights (int8, int8-tensor, q8_0, q4_0), reporting size,
    /// error, perplexity and decoding speed before and after.
    Quantize(quant::Args),
    /// Serve a GPT over HTTP: Megatron's PUT /api and OpenAI's /v1/completions, continuous
    /// batching over a paged KV cache.
    Serve(serve::Args),
    /// Fine-tune a pretrained model on a labelled task.
    #[command(subcommand)]
    Finetune(train::FinetuneCommand),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Device(args) => device::run(&args),
        Command::Clean(args) => clean::run(&args),
        Command::Bpe(command) => bpe::run(command),
        Command::Wordpiece(command) => wordpiece::run(command),
        Command::Convert(args) => dataset::run_convert(&args),
        Command::Dataset(command) => dataset::run(command),
        Command::Model(command) => model::run(command),
        Command::Generate(args) => model::run_generate(&args),
        Command::Train(command) => train::run_train(*command),
        Command::Eval(args) => train::run_eval(&args),
        Command::Quantize(args) => quant::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Finetune(command) => train::run_finetune(command),
    }
}
