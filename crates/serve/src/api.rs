//! The HTTP routes: Megatron's `PUT /api`, OpenAI's `/v1/completions` and `/v1/models`,
//! `/tokenize`, `/detokenize`, health, readiness, metrics and the playground.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use lmforge_infer::scheduler::{EVENT_BUFFER, Event, Events, Fork, Job, Rejected};
use lmforge_infer::{Finish, Sampling};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::fields::{ApiError, boolean, integer, number, object, strings};
use crate::text::TextStream;

const PLAYGROUND: &str = include_str!("playground.html");

/// One prompt's finished generation.
struct Outcome {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    prompt_logprobs: Vec<f32>,
    /// Prompt tokens that came from the prefix cache.
    cached: usize,
    text: String,
    finish: Finish,
}

/// What a handler asks of the scheduler for one prompt.
struct Ask {
    prompt: Vec<u32>,
    max_new_tokens: usize,
    sampling: Sampling,
    stop_tokens: Vec<u32>,
    stops: Vec<String>,
    keep_stop: bool,
    prompt_logprobs: bool,
}

fn rejected(e: Rejected) -> ApiError {
    match e {
        Rejected::QueueFull(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        Rejected::TooLong { .. } => ApiError::field("max_tokens", e.to_string()),
        Rejected::TooWide { .. } => ApiError::field("n", e.to_string()),
        Rejected::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A request's events on their way to its handler (a bounded tokio channel).
struct Channel(mpsc::Sender<Event>);

impl Events for Channel {
    fn send(&self, event: Event) -> bool {
        self.0.try_send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl AppState {
    /// Queues every ask (all or none: a refusal drops the ones queued, which cancels them).
    /// Each run of `n` asks is one prompt's `n` completions: one job, whose prompt is computed
    /// once, with `n - 1` forks.
    fn submit(&self, asks: &[Ask], n: usize) -> Result<Vec<mpsc::Receiver<Event>>, ApiError> {
        let mut receivers = Vec::with_capacity(asks.len());
        for group in asks.chunks(n.max(1)) {
            let ask = &group[0];
            let (tx, rx) = mpsc::channel(EVENT_BUFFER);
            receivers.push(rx);
            let forks = group[1..]
                .iter()
                .map(|other| {
                    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
                    receivers.push(rx);
                    Fork {
                        sampling: other.sampling.clone(),
                        events: Box::new(Channel(tx)),
                    }
                })
                .collect();
            self.engine
                .submit(Job {
                    prompt: ask.prompt.clone(),
                    max_new_tokens: ask.max_new_tokens,
                    sampling: ask.sampling.clone(),
                    stop_tokens: ask.stop_tokens.clone(),
                    prompt_logprobs: ask.prompt_logprobs,
                    events: Box::new(Channel(tx)),
                    forks,
                })
                .map_err(rejected)?;
            self.metrics
                .prompt_tokens
                .fetch_add(ask.prompt.len(), Ordering::Relaxed);
        }
        Ok(receivers)
    }

    /// Reads one generation to its end.
    async fn collect(&self, ask: &Ask, mut rx: mpsc::Receiver<Event>) -> Result<Outcome, ApiError> {
        let mut text = TextStream::new(ask.stops.clone(), ask.keep_stop);
        let mut out = Outcome {
            prompt: ask.prompt.clone(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            prompt_logprobs: Vec::new(),
            cached: 0,
            text: String::new(),
            finish: Finish::Length,
        };
        loop {
            match rx.recv().await {
                Some(Event::PromptLogprobs(lp)) => out.prompt_logprobs.extend(lp),
                Some(Event::Cached(n)) => out.cached = n,
                Some(Event::Token { id, logprob }) => {
                    out.text.push_str(&text.push(id, self.tokenizer.as_ref()));
                    out.tokens.push(id);
                    out.logprobs.push(logprob);
                    if text.stopped() {
                        // Dropping the receiver cancels the rest of the generation.
                        out.finish = Finish::Stop;
                        return Ok(out);
                    }
                }
                Some(Event::Done(finish)) => {
                    out.text.push_str(&text.finish(self.tokenizer.as_ref()));
                    out.finish = finish;
                    return Ok(out);
                }
                Some(Event::Failed(message)) => {
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the generation was dropped",
                    ));
                }
            }
        }
    }

    async fn run_all(&self, asks: &[Ask], n: usize) -> Result<Vec<Outcome>, ApiError> {
        let receivers = self.submit(asks, n)?;
        let work = async {
            let mut outcomes = Vec::with_capacity(asks.len());
            for (ask, rx) in asks.iter().zip(receivers) {
                outcomes.push(self.collect(ask, rx).await?);
            }
            Ok(outcomes)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the request took over {} s; its generation was cancelled",
                    self.timeout.as_secs()
                ),
            )),
        }
    }

    fn encode(&self, field: &str, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| ApiError::field(field, e.to_string()))
    }

    fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id]).unwrap_or_default()
    }
}

fn seed_or_random(seed: i64) -> u64 {
    if seed >= 0 {
        return seed as u64;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `PUT /api`: Megatron-LM's text generation server.
pub async fn megatron(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map = object(&body)?;
    for (old, new) in [("max_len", "tokens_to_generate"), ("sentences", "prompts")] {
        if map.contains_key(old) {
            return Err(ApiError::field(
                old,
                format!("is no longer used; replace it with {new}"),
            ));
        }
    }
    let prompts = match map.get("prompts") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 128 => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::field("prompts", "must be a list of strings"))?,
        None => return Err(ApiError::field("prompts", "is required")),
        Some(_) => {
            return Err(ApiError::field(
                "prompts",
                "must be a list of 1 to 128 strings",
            ));
        }
    };
    let tokens_to_generate = integer(&map, "tokens_to_generate", 64, 0, 1 << 20)? as usize;
    let logprobs = boolean(&map, "logprobs", false)?;
    if tokens_to_generate == 0 && !logprobs {
        return Err(ApiError::field(
            "tokens_to_generate",
            "0 needs logprobs: true",
        ));
    }
    let temperature = number(&map, "temperature", 1.0, "(0, 100]", |t| {
        t > 0.0 && t <= 100.0
    })?;
    let top_k = integer(&map, "top_k", 0, 0, 1000)? as usize;
    let top_p = number(&map, "top_p", 0.0, "[0, 1]", |p| (0.0..=1.0).contains(&p))?;
    if top_k > 0 && top_p > 0.0 {
        return Err(ApiError::field(
            "top_p",
            "cannot be set together with top_k",
        ));
    }
    let add_bos = boolean(&map, "add_BOS", false)?;
    if !add_bos && prompts.iter().any(String::is_empty) {
        return Err(ApiError::field(
            "prompts",
            "an empty prompt needs add_BOS: true",
        ));
    }
    let stop_on_eol = boolean(&map, "stop_on_eol", false)?;
    let stop_on_double_eol = boolean(&map, "stop_on_double_eol", false)?;
    let seed = seed_or_random(integer(&map, "random_seed", -1, -1, i64::MAX)?);
    let beam_width = match map.get("beam_width") {
        None | Some(Value::Null) => None,
        Some(_) => Some(integer(&map, "beam_width", 1, 1, 64)? as usize),
    };
    if beam_width.is_some() && prompts.len() > 1 {
        return Err(ApiError::field(
            "beam_width",
            "beam search takes exactly one prompt",
        ));
    }
    let vocab = state.tokenizer.vocab_size() as i64;
    let stop_tokens: Vec<u32> = match map.get("stop_token") {
        None | Some(Value::Null) => state.eos.clone(),
        Some(_) => vec![integer(&map, "stop_token", 0, 0, vocab - 1)? as u32],
    };
    let length_penalty = number(&map, "length_penalty", 1.0, "a finite number", |_| true)?;
    let mut encoded = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let mut ids = Vec::new();
        if add_bos {
            ids.push(state.tokenizer.eod_id().ok_or_else(|| {
                ApiError::field("add_BOS", "the tokenizer has no end-of-document token")
            })?);
        }
        ids.extend(state.encode("prompts", p)?);
        if ids.is_empty() {
            return Err(ApiError::field("prompts", "a prompt encodes to no tokens"));
        }
        encoded.push(ids);
    }
    if let Some(width) = beam_width {
        let beams = crate::beam::search(
            &state,
            encoded.remove(0),
            width,
            tokens_to_generate,
            stop_tokens.clone(),
            length_penalty as f32,
        )
        .await?;
        let texts: Vec<String> = beams
            .iter()
            .map(|(tokens, _)| {
                format!(
                    "{}{}",
                    prompts[0],
                    state.tokenizer.decode(tokens).unwrap_or_default()
                )
            })
            .collect();
        let segments: Vec<Vec<String>> = beams
            .iter()
            .map(|(tokens, _)| tokens.iter().map(|&t| state.token_text(t)).collect())
            .collect();
        let scores: Vec<f32> = beams.iter().map(|b| b.1).collect();
        return Ok(
            axum::Json(json!({"text": texts, "segments": segments, "scores": scores}))
                .into_response(),
        );
    }
    let stops: Vec<String> = match (stop_on_double_eol, stop_on_eol) {
        (true, _) => vec!["\n\n".into()],
        (false, true) => vec!["\n".into()],
        _ => Vec::new(),
    };
    let asks: Vec<Ask> = encoded
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| Ask {
            prompt,
            max_new_tokens: tokens_to_generate,
            sampling: Sampling {
                temperature: temperature as f32,
                top_k,
                top_p: if top_p > 0.0 { top_p as f32 } else { 1.0 },
                repetition_penalty: 1.0,
                seed: seed.wrapping_add(i as u64),
            },
            stop_tokens: stop_tokens.clone(),
            stops: stops.clone(),
            keep_stop: true,
            prompt_logprobs: logprobs,
        })
        .collect();
    let outcomes = state.run_all(&asks, 1).await?;
    let text: Vec<String> = outcomes
        .iter()
        .zip(&prompts)
        .map(|(o, p)| format!("{p}{}", o.text))
        .collect();
    let segments: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            o.prompt
                .iter()
                .chain(&o.tokens)
                .map(|&t| state.token_text(t))
                .collect()
        })
        .collect();
    let logprobs: Value = if logprobs {
        json!(
            outcomes
                .iter()
                .map(|o| o
                    .prompt_logprobs
                    .iter()
                    .chain(&o.logprobs)
                    .copied()
                    .collect::<Vec<f32>>())
                .collect::<Vec<_>>()
        )
    } else {
        Value::Null
    };
    Ok(
        axum::Json(json!({"text": text, "segments": segments, "logprobs": logprobs}))
            .into_response(),
    )
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::Cancelled => "stop",
        Finish::Length => "length",
    }
}

/// Completions one request may ask for (prompts × `n`).
const MAX_CHOICES: usize = 64;

/// `POST /v1/completions`: OpenAI's legacy completions, streamed or not; choice `i * n + j` is
/// prompt `i`'s `j`-th completion.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map = object(&body)?;
    let prompts = strings(&map, "prompt", 32, true)?;
    let max_tokens = integer(&map, "max_tokens", 16, 0, 1 << 20)? as usize;
    let temperature = number(&map, "temperature", 1.0, "[0, 2]", |t| {
        (0.0..=2.0).contains(&t)
    })?;
    let top_p = number(&map, "top_p", 1.0, "(0, 1]", |p| p > 0.0 && p <= 1.0)?;
    let top_k = integer(&map, "top_k", 0, 0, 1 << 20)? as usize;
    let stops = strings(&map, "stop", 4, false)?;
    let seed = seed_or_random(integer(&map, "seed", -1, -1, i64::MAX)?);
    let logprobs = match map.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(_) => Some(integer(&map, "logprobs", 0, 0, 5)?),
    };
    let stream = boolean(&map, "stream", false)?;
    // vLLM's extension: load tests need exact output lengths, whatever the model predicts.
    let ignore_eos = boolean(&map, "ignore_eos", false)?;
    // OpenAI's `n`: completions per prompt, forked once the prompt is computed (seed + the
    // completion's index).
    let n = integer(&map, "n", 1, 1, 16)? as usize;
    if prompts.len() * n > MAX_CHOICES {
        return Err(ApiError::field(
            "n",
            format!(
                "{} prompts × n = {} completions; at most {MAX_CHOICES}",
                prompts.len(),
                prompts.len() * n
            ),
        ));
    }
    if let Some(model) = map.get("model")
        && !model.is_null()
        && model.as_str() != Some(state.model_name.as_str())
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            field: Some("model".into()),
            message: format!("model: this server serves `{}`", state.model_name),
        });
    }
    let mut asks = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let prompt = state.encode("prompt", p)?;
        if prompt.is_empty() {
            return Err(ApiError::field("prompt", "a prompt encodes to no tokens"));
        }
        for j in 0..n {
            asks.push(Ask {
                prompt: prompt.clone(),
                max_new_tokens: max_tokens,
                sampling: Sampling {
                    temperature: temperature as f32,
                    top_k,
                    top_p: top_p as f32,
                    repetition_penalty: 1.0,
                    seed: seed.wrapping_add((i * n + j) as u64),
                },
                stop_tokens: if ignore_eos {
                    Vec::new()
                } else {
                    state.eos.clone()
                },
                stops: stops.clone(),
                keep_stop: false,
                prompt_logprobs: false,
            });
        }
    }
    let id = format!("cmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if stream {
        return stream_completions(state, asks, n, id, created, logprobs.is_some());
    }
    let outcomes = state.run_all(&asks, n).await?;
    // Each prompt counted once, however many completions it has (as OpenAI counts).
    let prompt_tokens: usize = outcomes.iter().step_by(n).map(|o| o.prompt.len()).sum();
    let cached_tokens: usize = outcomes.iter().step_by(n).map(|o| o.cached).sum();
    let completion_tokens: usize = outcomes.iter().map(|o| o.tokens.len()).sum();
    let choices: Vec<Value> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            json!({
                "index": i,
                "text": o.text,
                "finish_reason": finish_reason(o.finish),
                "logprobs": logprobs.map(|_| json!({
                    "tokens": o.tokens.iter().map(|&t| state.token_text(t)).collect::<Vec<_>>(),
                    "token_logprobs": o.logprobs,
                    "top_logprobs": Value::Null,
                })),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": state.model_name,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached_tokens}},
    }))
    .into_response())
}

/// Server-sent events: one task per prompt turns its tokens into text chunks and sends them
/// into the response's bounded channel; a client that disconnects closes that channel, the
/// tasks end, and dropping their receivers cancels the generations.
fn stream_completions(
    state: Arc<AppState>,
    asks: Vec<Ask>,
    n: usize,
    id: String,
    created: u64,
    logprobs: bool,
) -> Result<Response, ApiError> {
    let receivers = state.submit(&asks, n)?;
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let deadline = tokio::time::Instant::now() + state.timeout;
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(asks.len()));
    for (index, (ask, mut events)) in asks.into_iter().zip(receivers).enumerate() {
        let (state, tx, id, pending) = (state.clone(), tx.clone(), id.clone(), pending.clone());
        tokio::spawn(async move {
            let chunk = |text: &str, finish: Option<&str>, token: Option<(u32, f32)>| {
                let lp = token.filter(|_| logprobs).map(|(t, l)| {
                    json!({"tokens": [state.token_text(t)], "token_logprobs": [l], "top_logprobs": Value::Null})
                });
                let body = json!({
                    "id": id, "object": "text_completion", "created": created,
                    "model": state.model_name,
                    "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": lp}],
                });
                Ok(SseEvent::default().data(body.to_string()))
            };
            let mut text = TextStream::new(ask.stops.clone(), false);
            loop {
                let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(e) => e,
                    Err(_) => {
                        let error =
                            json!({"error": {"message": "the request timed out", "code": 504}});
                        let _ = tx
                            .send(Ok(SseEvent::default().data(error.to_string())))
                            .await;
                        break;
                    }
                };
                let sent = match event {
                    Some(Event::Token { id: t, logprob }) => {
                        let piece = text.push(t, state.tokenizer.as_ref());
                        if text.stopped() {
                            let _ = tx.send(chunk(&piece, None, Some((t, logprob)))).await;
                            let _ = tx.send(chunk("", Some("stop"), None)).await;
                            break;
                        }
                        tx.send(chunk(&piece, None, Some((t, logprob)))).await
                    }
                    Some(Event::Done(finish)) => {
                        let rest = text.finish(state.tokenizer.as_ref());
                        let _ = tx
                            .send(chunk(&rest, Some(finish_reason(finish)), None))
                            .await;
                        break;
                    }
                    Some(Event::Failed(message)) => {
                        let error = json!({"error": {"message": message, "code": 400}});
                        let _ = tx
                            .send(Ok(SseEvent::default().data(error.to_string())))
                            .await;
                        break;
                    }
                    Some(Event::PromptLogprobs(_) | Event::Cached(_)) => Ok(()),
                    None => break,
                };
                if sent.is_err() {
                    break; // the client is gone
                }
            }
            drop(events);
            if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
            }
        });
    }
    drop(tx);
    let sse = Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    let mut response = sse.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{
        "id": state.model_name, "object": "model", "created": state.started_unix,
        "owned_by": "lmforge", "max_model_len": state.engine.limit,
    }]}))
    .into_response()
}

/// `POST /tokenize` (vLLM's schema): `{"prompt": text}` → ids.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map = object(&body)?;
    let prompt = match map.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::field("prompt", "must be a string")),
    };
    let tokens = state.encode("prompt", &prompt)?;
    Ok(axum::Json(
        json!({"tokens": tokens, "count": tokens.len(), "max_model_len": state.engine.limit}),
    )
    .into_response())
}

/// `POST /detokenize`: `{"tokens": [ids]}` → text.
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map = object(&body)?;
    let vocab = state.tokenizer.vocab_size() as u64;
    let bad = || {
        ApiError::field(
            "tokens",
            format!("must be a list of token ids below {vocab}"),
        )
    };
    let ids: Vec<u32> = match map.get("tokens") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|&id| id < vocab)
                    .map(|id| id as u32)
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    let text = state
        .tokenizer
        .decode(&ids)
        .map_err(|e| ApiError::field("tokens", e.to_string()))?;
    Ok(axum::Json(json!({"prompt": text})).into_response())
}

/// `GET /health`: the process answers.
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /ready`: the model is loaded and the server is not draining.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.engine.queued()),
    )
        .into_response()
}

/// `GET /`: the playground page.
pub async fn playground() -> Html<&'static str> {
    Html(PLAYGROUND)
}

/// Started at, for logs.
pub fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
