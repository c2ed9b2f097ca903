//! `lmforge serve`: the HTTP server of lmforge-serve on a checkpoint.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use lmforge_serve::{EngineOptions, Placement, Precision, Scheduler, ServeOptions, Server};

#[derive(clap::Args)]
pub struct Args {
    /// An lmforge GPT checkpoint (quantized or not) with its tokenizer.json.
    #[arg(long)]
    checkpoint: PathBuf,
    /// tokenizer.json (default: the checkpoint's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Sequences decoded together at most.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Requests waiting at most; more get HTTP 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Memory of the paged KV cache, MiB.
    #[arg(long, default_value_t = 256)]
    kv_cache_mb: usize,
    /// Prompt tokens prefilled per step at most.
    #[arg(long, default_value_t = 256)]
    prefill_chunk: usize,
    /// continuous (requests join and leave between steps) or static (a batch runs to its end).
    #[arg(long, default_value = "continuous")]
    scheduler: Scheduler,
    /// Compute every prompt from its first token (no reuse of cached prefix blocks).
    #[arg(long)]
    no_prefix_cache: bool,
    /// A file holding the Bearer key API requests must carry.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Seconds a request may take before it is cancelled.
    #[arg(long, default_value_t = 300)]
    request_timeout_s: u64,
    /// Seconds a client may take to send a request's headers; past them its connection is
    /// closed (clients sending them a byte at a time hold no socket for long).
    #[arg(long, default_value_t = 30)]
    header_timeout_s: u64,
    /// Seconds a client may take to send a request's body; past them it gets 408.
    #[arg(long, default_value_t = 30)]
    body_timeout_s: u64,
    /// Seconds to finish the requests in flight after SIGTERM or Ctrl-C; past them the server
    /// exits anyway (status 1), as a client that never finishes its request would hold it.
    #[arg(long, default_value_t = 30)]
    drain_timeout_s: u64,
    /// cpu (the CPU engine), flex, wgpu[:N] or cuda[:N] (the device engine on that burn
    /// device), or auto (a real GPU when there is one, never lavapipe; else cpu).
    #[arg(long, default_value = "auto", value_parser = crate::model::parse_placement)]
    device: Placement,
    /// f32, f16 or bf16: the device engine's weights, keys and values (the CPU engine: f32).
    #[arg(long, default_value = "f32", value_parser = crate::model::parse_precision)]
    dtype: Precision,
}

pub fn run(args: &Args) -> Result<()> {
    let device = args.device.resolve();
    if args.device == Placement::Auto {
        eprintln!("--device auto: {}", device.describe());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let api_key = match &args.api_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--api-key-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let options = ServeOptions {
        checkpoint: args.checkpoint.clone(),
        tokenizer: args.tokenizer.clone(),
        engine: EngineOptions {
            max_batch: args.max_batch,
            max_queue: args.max_queue,
            kv_cache_bytes: args.kv_cache_mb << 20,
            prefill_chunk: args.prefill_chunk,
            scheduler: args.scheduler,
            prefix_caching: !args.no_prefix_cache,
            ..EngineOptions::default()
        },
        api_key,
        request_timeout: Duration::from_secs(args.request_timeout_s),
        header_timeout: Duration::from_secs(args.header_timeout_s),
        body_timeout: Duration::from_secs(args.body_timeout_s),
        device,
        dtype: args.dtype,
        ..ServeOptions::default()
    };
    let server = Server::load(options)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))?;
        eprintln!(
            "serving {} on http://{address} (context {}); try:\n  curl -X PUT {address}/api -H 'Content-Type: application/json' -d '{{\"prompts\":[\"Il était une fois\"], \"tokens_to_generate\":50}}'",
            args.checkpoint.display(),
            server.context_limit()
        );
        // Ctrl-C, or SIGTERM as systemd, Kubernetes and Slurm stop a service: stop taking
        // connections, finish the requests in flight, exit 0; within the drain timeout.
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("listening for SIGTERM")?;
        let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
        let signalled = stopping.clone();
        let drain = std::time::Duration::from_secs(args.drain_timeout_s);
        tokio::select! {
            served = server.run(listener, async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
                eprintln!("stopping: finishing the requests in flight");
                signalled.notify_one();
            }) => served?,
            () = async {
                stopping.notified().await;
                tokio::time::sleep(drain).await;
            } => anyhow::bail!(
                "stopped with requests still in flight: they did not finish within \
                 --drain-timeout-s {}",
                args.drain_timeout_s
            ),
        }
        eprintln!("stopped");
        anyhow::Ok(())
    })
}
