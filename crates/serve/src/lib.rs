//! An HTTP server for lmforge GPTs: Megatron-LM's `PUT /api` and OpenAI's `/v1/completions`
//! (with server-sent events) over one scheduler that batches requests continuously, keeps
//! their keys and values in a paged block pool, and pushes back (HTTP 429) when full.
//!
//! - [`Server`]: a checkpoint (f32 or quantized) and [`ServeOptions`] in, a running server out;
//! - the scheduler is `lmforge-infer`'s ([`lmforge_infer::scheduler`]): continuous or static
//!   batching, chunked prefill, admission by KV blocks, prefix caching, cancellation of
//!   abandoned requests; this crate is the HTTP in front of it (routes, fields, text, metrics);
//! - [`text::TextStream`]: tokens to streamed text with stop sequences;
//! - routes: `PUT /api`, `POST /v1/completions`, `GET /v1/models`, `POST /tokenize`,
//!   `POST /detokenize`, `GET /health`, `GET /ready`, `GET /metrics`, `GET /` (playground).
//!
//! ```no_run
//! use lmforge_serve::{ServeOptions, Server};
//!
//! # async fn run() -> Result<(), lmforge_serve::Error> {
//! let options = ServeOptions { checkpoint: "runs/default/train".into(), ..ServeOptions::default() };
//! let server = Server::load(options)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await.map_err(lmforge_serve::Error::Io)?;
//! // curl -X PUT localhost:5000/api -d '{"prompts":["Il était une fois"], "tokens_to_generate":50}'
//! server.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod api;
mod beam;
pub mod fields;
pub mod metrics;
pub mod text;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use lmforge_tokenizer::Tokenizer;

use fields::ApiError;
use lmforge_infer::Loaded;
use lmforge_infer::scheduler::Engine;
pub use lmforge_infer::scheduler::{EngineOptions, Scheduler};
pub use lmforge_infer::{Placement, Precision};
use metrics::Metrics;

/// What can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint could not be loaded.
    #[error("loading {path}: {message}")]
    Load {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A bad option.
    #[error("{option}: {message}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The socket failed.
    #[error("server: {0}")]
    Io(std::io::Error),
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// An lmforge GPT checkpoint (quantized or not) with its `tokenizer.json`.
    pub checkpoint: PathBuf,
    /// tokenizer.json (default: the checkpoint's).
    pub tokenizer: Option<PathBuf>,
    /// The scheduler's limits.
    pub engine: EngineOptions,
    /// Bearer token every API request must carry (none: open).
    pub api_key: Option<String>,
    /// Longest a request may take before it is cancelled (HTTP 504).
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a client may take to send a request's headers; past it the connection is closed
    /// (a slow-loris client sending them a byte at a time holds no socket for long).
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body; past it the answer is 408 and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// The name `/v1/models` lists (default: the checkpoint folder's name).
    pub model_name: Option<String>,
    /// Where the model decodes: the CPU engine or the device engine on a burn device.
    pub device: Placement,
    /// The device engine's weights, keys and values.
    pub dtype: Precision,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            checkpoint: PathBuf::new(),
            tokenizer: None,
            engine: EngineOptions::default(),
            api_key: None,
            request_timeout: Duration::from_secs(300),
            max_body_bytes: 1 << 20,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            model_name: None,
            device: Placement::Cpu,
            dtype: Precision::F32,
        }
    }
}

/// What the handlers share.
pub(crate) struct AppState {
    engine: Engine,
    tokenizer: Box<dyn Tokenizer>,
    /// What ends a completion: the model's `generation_config.json` ids, else the tokenizer's
    /// end-of-document token.
    eos: Vec<u32>,
    metrics: Arc<Metrics>,
    model_name: String,
    api_key: Option<String>,
    timeout: Duration,
    ready: AtomicBool,
    next_id: AtomicU64,
    started_unix: u64,
    /// The engine the scheduler runs, shared with beam search (which forks rows of its own
    /// paged cache beside the scheduler's pool).
    model: Loaded,
}

/// A loaded model behind its scheduler, ready to serve.
pub struct Server {
    state: Arc<AppState>,
    scheduler: std::thread::JoinHandle<()>,
    limits: Limits,
}

/// What a client's request may take, in bytes and time.
#[derive(Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    header_timeout: Duration,
    body_timeout: Duration,
}

impl Server {
    /// Loads the checkpoint and tokenizer and starts the scheduler.
    pub fn load(options: ServeOptions) -> Result<Server, Error> {
        let e = &options.engine;
        for (option, timeout) in [
            ("--header-timeout-s", options.header_timeout),
            ("--body-timeout-s", options.body_timeout),
        ] {
            if timeout.is_zero() {
                return Err(Error::Option {
                    option,
                    message: "must be at least 1".into(),
                });
            }
        }
        for (option, value) in [
            ("--max-batch", e.max_batch),
            ("--max-queue", e.max_queue),
            ("--block-tokens", e.block_tokens),
            ("--prefill-chunk", e.prefill_chunk),
        ] {
            if value == 0 {
                return Err(Error::Option {
                    option,
                    message: "must be at least 1".into(),
                });
            }
        }
        let load = |path: &PathBuf, message: String| Error::Load {
            path: path.clone(),
            message,
        };
        let model = Loaded::load(
            &options.checkpoint,
            options.device,
            options.dtype,
            options.engine.kv_cache_bytes,
        )
        .map_err(|e| load(&options.checkpoint, e.to_string()))?;
        tracing::info!(engine = %model.placement(), "loaded");
        let tokenizer_path = options
            .tokenizer
            .clone()
            .unwrap_or_else(|| options.checkpoint.join("tokenizer.json"));
        let tokenizer = lmforge_tokenizers::open_tokenizer(&tokenizer_path)
            .map_err(|e| load(&tokenizer_path, e.to_string()))?;
        if tokenizer.vocab_size() > model.config().vocab_size {
            return Err(load(
                &tokenizer_path,
                format!(
                    "the tokenizer has {} tokens, the model {}",
                    tokenizer.vocab_size(),
                    model.config().vocab_size
                ),
            ));
        }
        let eos =
            lmforge_infer::generation_config::stop_ids(&options.checkpoint, tokenizer.eod_id())
                .map_err(|e| load(&options.checkpoint, e.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let block_bytes = model.block_bytes(e.block_tokens);
        if options.engine.kv_cache_bytes < block_bytes {
            return Err(Error::Option {
                option: "--kv-cache-mb",
                message: format!("holds no block of {block_bytes} bytes"),
            });
        }
        let (engine, scheduler) = model.start(options.engine.clone(), metrics.engine.clone());
        let model_name = options.model_name.clone().unwrap_or_else(|| {
            let c = options
                .checkpoint
                .canonicalize()
                .unwrap_or(options.checkpoint.clone());
            c.file_name()
                .map_or("lmforge".into(), |n| n.to_string_lossy().into_owned())
        });
        let state = Arc::new(AppState {
            engine,
            tokenizer,
            eos,
            metrics,
            model_name,
            api_key: options.api_key.clone(),
            timeout: options.request_timeout,
            ready: AtomicBool::new(true),
            next_id: AtomicU64::new(0),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model,
        });
        Ok(Server {
            state,
            scheduler,
            limits: Limits {
                max_body_bytes: options.max_body_bytes,
                header_timeout: options.header_timeout,
                body_timeout: options.body_timeout,
            },
        })
    }

    /// The longest prompt + generation a request may have.
    pub fn context_limit(&self) -> usize {
        self.state.engine.limit
    }

    /// The routes, for serving or for in-process tests.
    pub fn router(&self) -> Router {
        router(self.state.clone(), self.limits)
    }

    /// Serves on `listener` until `shutdown` resolves, then stops taking connections, lets
    /// the requests in flight finish and stops the scheduler.
    ///
    /// Connections are served by hyper's HTTP/1 directly rather than `axum::serve`, which sets
    /// no timer, so hyper's header read timeout never fired and a client sending its headers a
    /// byte at a time kept its socket forever.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = self.router();
        // Each connection holds a receiver of `stop` (to start its graceful shutdown) and of
        // `open` (dropped when it ends): the server waits until no `open` is left.
        let (stop, stopping) = tokio::sync::watch::channel(());
        let (open, connections) = tokio::sync::watch::channel(());
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors or a connection reset before it was
                        // accepted: the listener itself is fine, so wait and go on.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(
                stream,
                app.clone(),
                self.limits.header_timeout,
                stopping.clone(),
                connections.clone(),
            ));
        }
        drop(listener);
        self.state.ready.store(false, Ordering::Relaxed);
        tracing::info!("shutting down: finishing the requests in flight");
        drop(stopping);
        let _ = stop.send(());
        drop(connections);
        open.closed().await;
        drop(app);
        drop(self.state);
        // The last handle to the scheduler is gone: it finishes its work and returns.
        let _ = tokio::task::spawn_blocking(move || self.scheduler.join()).await;
        Ok(())
    }
}

/// One client connection until it closes, or until `stop` asks it to finish its request in
/// flight and close.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<()>,
    open: tokio::sync::watch::Receiver<()>,
) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
    drop(open);
}

fn router(state: Arc<AppState>, limits: Limits) -> Router {
    let api = Router::new()
        .route("/api", put(api::megatron))
        .route("/v1/completions", post(api::completions))
        .route("/v1/models", get(api::models))
        .route("/tokenize", post(api::tokenize))
        .route("/detokenize", post(api::detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(api)
        .route("/", get(api::playground))
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(limits, read_body))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Bearer-token check (constant time in the key's length).
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same = given.len() == key.len()
            && given
                .bytes()
                .zip(key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer` key is required",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// A request id, a log line and a count per response; `Retry-After` on 429.
/// Reads the whole request body before the route sees it, within the body timeout: a client
/// that sends it a byte at a time (slow loris) gets 408 and the connection closed instead of
/// holding it open until the request timeout. Bodies are JSON of at most `max_body_bytes`, which
/// every route buffers anyway.
async fn read_body(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = read_limited(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(Body::TooLarge)) => {
            let mut response = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes",
                    limits.max_body_bytes
                ),
            )
            .into_response();
            // Past the drained bytes the rest is not read: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Ok(Err(Body::Failed(e))) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )
        .into_response(),
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Bytes of an oversized body read and thrown away before the 413 is sent: a client still
/// writing its body when the server closes gets a TCP reset, which loses the 413 it was sent
/// (curl and Python's `requests` then report a broken connection). Go's server does the same.
const DRAIN_BYTES: usize = 16 << 20;

/// Why a request body was not read.
enum Body {
    /// Over the limit (read on, and discarded, up to [`DRAIN_BYTES`] more).
    TooLarge,
    Failed(axum::Error),
}

/// The whole body if it is at most `limit` bytes.
async fn read_limited(mut body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, Body> {
    use http_body_util::BodyExt;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Body::Failed)?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                kept.extend_from_slice(&data);
            } else if seen > limit.saturating_add(DRAIN_BYTES) {
                return Err(Body::TooLarge);
            }
        }
    }
    if seen > limit {
        return Err(Body::TooLarge);
    }
    Ok(axum::body::Bytes::from(kept))
}

async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let start = Instant::now();
    let span = tracing::info_span!("request", id, %method, route = %route);
    let mut response = next.run(request).await;
    let status = response.status();
    state.metrics.count_response(&route, status.as_u16());
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("req-{id}")) {
        headers.insert("x-request-id", v);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            ms = api::elapsed_ms(start),
            "response"
        )
    });
    response
}
