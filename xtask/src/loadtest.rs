//! `cargo xtask loadtest`: a closed-loop load generator for `lmforge serve`, or any server that
//! streams OpenAI's `POST /v1/completions`, on loopback only.
//!
//! At every concurrency level `C`, `C` clients take the next of `N` requests until none is left
//! (or the time bound passes) and stream its tokens over server-sent events. The requests are
//! the same at every level and against every server: each one's prompt (words cut from the
//! embedded corpus), output length (log-uniform, so lengths have a long tail, as chat and
//! completion traffic does) and disconnect point derive from `--seed` and its number alone.
//! Requests set `ignore_eos` (vLLM's extension) so that every request generates exactly its
//! length whatever the model predicts; otherwise runs would not be comparable.
//!
//! Measured per request: time to first token (request sent → first token event) and end to end
//! (request sent → `[DONE]`); per level: tokens/s (every token received, disconnected requests'
//! included) and completed requests/s. After each level the server's `/metrics` (when it has
//! lmforge's) tell the KV blocks still in use and the server's resident memory, which is how
//! the disconnect run shows that cancelled requests give their blocks back.

use std::io::{BufRead, BufReader, Read};
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use serde_json::{Value, json};

use crate::dataset::{self, LANGUAGES};
use crate::flags::Loadtest;

/// One request of the workload.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    prompt: String,
    max_tokens: usize,
    /// Close the connection after this many tokens (0: right after the response headers).
    disconnect_after: Option<usize>,
}

#[derive(Debug)]
enum Outcome {
    Completed {
        ttft: Duration,
        e2e: Duration,
        tokens: usize,
    },
    Disconnected {
        tokens: usize,
    },
    Failed(String),
}

#[derive(Serialize, Debug, Default, PartialEq)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// What the server's `/metrics` said once a level ended (absent for servers without them).
#[derive(Serialize, Debug, Default)]
struct ServerState {
    kv_blocks_used: Option<f64>,
    kv_blocks_total: Option<f64>,
    running: Option<f64>,
    queued: Option<f64>,
    resident_bytes: Option<f64>,
}

#[derive(Serialize, Debug)]
struct Level {
    concurrency: usize,
    /// Requests sent; the rest were not started because the time bound passed.
    sent: usize,
    completed: usize,
    disconnected: usize,
    failed: usize,
    /// The first few failures, verbatim.
    failures: Vec<String>,
    seconds: f64,
    tokens: usize,
    tokens_per_s: f64,
    requests_per_s: f64,
    /// Over completed requests, in milliseconds.
    ttft_ms: Percentiles,
    e2e_ms: Percentiles,
    server_after: ServerState,
}

#[derive(Serialize)]
struct Report<'a> {
    url: &'a str,
    model: String,
    requests: usize,
    seed: u64,
    max_tokens: [usize; 2],
    prompt_words: [usize; 2],
    temperature: f64,
    disconnect: f64,
    max_seconds: f64,
    client_cores: usize,
    server_before: ServerState,
    levels: Vec<Level>,
}

pub fn run(root: &Path, flags: &Loadtest) -> Result<()> {
    let base = loopback_url(&flags.url)?;
    let mut texts = Vec::new();
    for lang in LANGUAGES {
        let path = root.join(format!("datasets/default/{lang}.jsonl.gz"));
        texts.extend(dataset::read_jsonl_gz(&path)?.into_iter().map(|d| d.text));
    }
    ensure!(
        !texts.is_empty(),
        "the embedded corpus has no documents to cut prompts from"
    );
    let plans: Vec<Plan> = (0..flags.requests)
        .map(|i| plan(flags, &texts, i as u64))
        .collect();

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let models = get_text(&agent, &format!("{base}/v1/models"))
        .with_context(|| format!("is a server listening on {base}?"))?;
    let model = serde_json::from_str::<Value>(&models)
        .ok()
        .and_then(|v| v["data"][0]["id"].as_str().map(str::to_string))
        .with_context(|| format!("{base}/v1/models lists no model: {models}"))?;
    let server_before = server_state(&agent, &base, false);
    println!(
        "{} requests per level against {base} ({model}): max_tokens {}..{} (log-uniform), \
         prompts of {}..{} words, temperature {}, {:.0}% disconnecting",
        flags.requests,
        flags.max_tokens[0],
        flags.max_tokens[1],
        flags.prompt_words[0],
        flags.prompt_words[1],
        flags.temperature,
        flags.disconnect * 100.0
    );

    let mut levels = Vec::new();
    for &concurrency in &flags.concurrency {
        let mut level = run_level(flags, &base, &model, &plans, concurrency);
        level.server_after = server_state(&agent, &base, true);
        levels.push(level);
    }
    print_table(&levels);

    let report = Report {
        url: &base,
        model,
        requests: flags.requests,
        seed: flags.seed,
        max_tokens: flags.max_tokens,
        prompt_words: flags.prompt_words,
        temperature: flags.temperature,
        disconnect: flags.disconnect,
        max_seconds: flags.max_seconds,
        client_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        server_before,
        levels,
    };
    let out = match &flags.out {
        Some(path) => path.into(),
        None => crate::target_dir(root).join("loadtest.json"),
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::write_atomic(
        &out,
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    println!("report: {}", out.display());
    let failed: usize = report.levels.iter().map(|l| l.failed).sum();
    ensure!(failed == 0, "{failed} requests failed (see the report)");
    Ok(())
}

/// `http://HOST:PORT` without a trailing slash, when HOST resolves to loopback addresses only:
/// a load generator pointed at someone else's server is an attack, not a benchmark.
fn loopback_url(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url {url}: give http://127.0.0.1:PORT (loadtest speaks plain HTTP to loopback)");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if rest.trim_end_matches('/') != authority {
        bail!("--url {url}: give the server's root, without a path");
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .with_context(|| format!("--url {url}: cannot resolve {authority}"))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!(
            "--url {url}: {authority} is not a loopback address; loadtest only targets this machine"
        );
    }
    Ok(format!("http://{authority}"))
}

/// splitmix64 of (seed, request, what): every draw depends on nothing else, so the workload is
/// the same whatever order, concurrency or time bound the requests run under.
fn draw(seed: u64, request: u64, what: u64) -> u64 {
    let mut z = seed
        ^ request.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ what.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1).
fn unit(seed: u64, request: u64, what: u64) -> f64 {
    (draw(seed, request, what) >> 11) as f64 / (1u64 << 53) as f64
}

fn plan(flags: &Loadtest, texts: &[String], i: u64) -> Plan {
    let seed = flags.seed;
    let text = &texts[(draw(seed, i, 0) % texts.len().max(1) as u64) as usize];
    let [lo, hi] = flags.prompt_words;
    let words = lo + (draw(seed, i, 1) % (hi - lo + 1) as u64) as usize;
    let prompt = text.split_whitespace().take(words).collect::<Vec<_>>();
    let [lo, hi] = flags.max_tokens.map(|n| n as f64);
    let max_tokens = (lo.ln() + unit(seed, i, 2) * (hi.ln() - lo.ln()))
        .exp()
        .round()
        .clamp(lo, hi) as usize;
    let disconnect_after = (unit(seed, i, 3) < flags.disconnect)
        .then(|| (draw(seed, i, 4) % max_tokens as u64) as usize);
    Plan {
        prompt: prompt.join(" "),
        max_tokens,
        disconnect_after,
    }
}

fn run_level(
    flags: &Loadtest,
    base: &str,
    model: &str,
    plans: &[Plan],
    concurrency: usize,
) -> Level {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(plans.len()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(flags.max_seconds);
    let url = format!("{base}/v1/completions");
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                // One connection per client, kept alive between its requests, as real clients do.
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(plan) = plans.get(i) else { break };
                    let body = json!({
                        "model": model,
                        "prompt": plan.prompt,
                        "max_tokens": plan.max_tokens,
                        "temperature": flags.temperature,
                        "seed": flags.seed.wrapping_add(i as u64) % (1 << 62),
                        "stream": true,
                        "ignore_eos": true,
                    });
                    let outcome = request(&agent, &url, &body, plan, deadline - now)
                        .unwrap_or_else(|e| Outcome::Failed(format!("request {i}: {e:#}")));
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let outcomes = outcomes.into_inner().unwrap();
    let (mut ttft, mut e2e, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let (mut completed, mut disconnected, mut tokens) = (0, 0, 0);
    for outcome in &outcomes {
        match outcome {
            Outcome::Completed {
                ttft: t,
                e2e: e,
                tokens: n,
            } => {
                completed += 1;
                tokens += n;
                ttft.push(t.as_secs_f64() * 1e3);
                e2e.push(e.as_secs_f64() * 1e3);
            }
            Outcome::Disconnected { tokens: n } => {
                disconnected += 1;
                tokens += n;
            }
            Outcome::Failed(message) => failures.push(message.clone()),
        }
    }
    let failed = failures.len();
    failures.truncate(5);
    Level {
        concurrency,
        sent: outcomes.len(),
        completed,
        disconnected,
        failed,
        failures,
        seconds,
        tokens,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        requests_per_s: completed as f64 / seconds.max(1e-9),
        ttft_ms: percentiles(&mut ttft),
        e2e_ms: percentiles(&mut e2e),
        server_after: ServerState::default(),
    }
}

/// Sends one streaming completion and reads its events until `[DONE]` (or the planned
/// disconnect, which drops the connection mid-stream).
fn request(
    agent: &ureq::Agent,
    url: &str,
    body: &Value,
    plan: &Plan,
    time_left: Duration,
) -> Result<Outcome> {
    let sent = Instant::now();
    let mut response = agent
        .post(url)
        .config()
        .timeout_global(Some(time_left.max(Duration::from_secs(1))))
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())?;
    let status = response.status().as_u16();
    if status != 200 {
        let mut text = String::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(1000)
            .read_to_string(&mut text);
        return Ok(Outcome::Failed(format!("HTTP {status}: {text}")));
    }
    if plan.disconnect_after == Some(0) {
        return Ok(Outcome::Disconnected { tokens: 0 });
    }
    let (mut tokens, mut first) = (0, None);
    for line in BufReader::new(response.body_mut().as_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data:") else {
            continue; // blank separators and keep-alive comments
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            let Some(ttft) = first else {
                bail!("the stream ended without a token");
            };
            return Ok(Outcome::Completed {
                ttft,
                e2e: sent.elapsed(),
                tokens,
            });
        }
        let event: Value = serde_json::from_str(data).with_context(|| format!("event {data}"))?;
        if let Some(error) = event.get("error") {
            return Ok(Outcome::Failed(format!("error event: {error}")));
        }
        // One event per token; the last event of a choice carries its finish reason instead.
        if event["choices"][0]["finish_reason"].is_null() {
            tokens += 1;
            first.get_or_insert_with(|| sent.elapsed());
            if plan.disconnect_after == Some(tokens) {
                return Ok(Outcome::Disconnected { tokens });
            }
        }
    }
    bail!("the stream ended without [DONE] after {tokens} tokens")
}

/// Nearest-rank percentiles (0 when there is nothing to rank).
fn percentiles(values: &mut [f64]) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_unstable_by(f64::total_cmp);
    let rank =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Percentiles {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: values[values.len() - 1],
    }
}

fn get_text(agent: &ureq::Agent, url: &str) -> Result<String> {
    let mut response = agent.get(url).call()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    ensure!(status == 200, "GET {url}: HTTP {status}: {text}");
    Ok(text)
}

/// The server's lmforge metrics; `settle` waits (up to 5 s) for cancelled requests to give
/// their blocks back, since a disconnect reaches the engine a step later.
fn server_state(agent: &ureq::Agent, base: &str, settle: bool) -> ServerState {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let Ok(text) = get_text(agent, &format!("{base}/metrics")) else {
            return ServerState::default();
        };
        let state = ServerState {
            kv_blocks_used: gauge(&text, "lmforge_kv_blocks_used"),
            kv_blocks_total: gauge(&text, "lmforge_kv_blocks_total"),
            running: gauge(&text, "lmforge_running_sequences"),
            queued: gauge(&text, "lmforge_queue_depth"),
            resident_bytes: gauge(&text, "process_resident_memory_bytes"),
        };
        let busy = state.kv_blocks_used.unwrap_or(0.0) > 0.0 || state.running.unwrap_or(0.0) > 0.0;
        if !settle || !busy || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of an unlabelled Prometheus sample.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

fn print_table(levels: &[Level]) {
    println!(
        "\n{:>5} {:>6} {:>6} {:>5} {:>5} {:>8} {:>9} {:>7} {:>22} {:>22} {:>8} {:>8}",
        "conc",
        "sent",
        "ok",
        "cut",
        "fail",
        "seconds",
        "tokens/s",
        "req/s",
        "TTFT p50/p90/p99 ms",
        "e2e p50/p90/p99 ms",
        "KV used",
        "RSS MiB"
    );
    let show =
        |x: Option<f64>, scale: f64| x.map_or("-".to_string(), |v| format!("{:.0}", v / scale));
    for l in levels {
        let p = |p: &Percentiles| format!("{:.0}/{:.0}/{:.0}", p.p50, p.p90, p.p99);
        println!(
            "{:>5} {:>6} {:>6} {:>5} {:>5} {:>8.1} {:>9.1} {:>7.2} {:>22} {:>22} {:>8} {:>8}",
            l.concurrency,
            l.sent,
            l.completed,
            l.disconnected,
            l.failed,
            l.seconds,
            l.tokens_per_s,
            l.requests_per_s,
            p(&l.ttft_ms),
            p(&l.e2e_ms),
            show(l.server_after.kv_blocks_used, 1.0),
            show(l.server_after.resident_bytes, 1048576.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Loadtest {
        Loadtest {
            url: "http://127.0.0.1:5000".into(),
            requests: 1000,
            disconnect: 0.3,
            seed: 7,
            ..Loadtest::default()
        }
    }

    #[test]
    fn only_loopback_urls() {
        assert_eq!(
            loopback_url("http://127.0.0.1:5000/").unwrap(),
            "http://127.0.0.1:5000"
        );
        assert!(loopback_url("http://localhost:8000").is_ok());
        assert!(loopback_url("http://[::1]:8000").is_ok());
        for (url, says) in [
            ("https://127.0.0.1:5000", "plain HTTP"),
            ("http://10.0.0.1:5000", "not a loopback"),
            ("http://8.8.8.8", "not a loopback"),
            ("http://127.0.0.1:5000/v1", "without a path"),
        ] {
            let err = loopback_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn the_workload_depends_on_the_seed_only() {
        let texts: Vec<String> = ["one two three four five", "uno dos tres", "un deux"]
            .map(String::from)
            .to_vec();
        let f = flags();
        let a: Vec<Plan> = (0..1000).map(|i| plan(&f, &texts, i)).collect();
        let b: Vec<Plan> = (0..1000).rev().map(|i| plan(&f, &texts, i)).collect();
        assert!(a.iter().eq(b.iter().rev()));
        assert!(a.iter().all(|p| (8..=192).contains(&p.max_tokens)));
        assert!(
            a.iter()
                .all(|p| p.disconnect_after.is_none_or(|k| k < p.max_tokens))
        );
        // Log-uniform: the median sits near the geometric mean (≈ 39), and the tail is long.
        let mut lengths: Vec<usize> = a.iter().map(|p| p.max_tokens).collect();
        lengths.sort_unstable();
        assert!((25..=55).contains(&lengths[500]), "{}", lengths[500]);
        assert!(lengths[990] > 150);
        let cut = a.iter().filter(|p| p.disconnect_after.is_some()).count();
        assert!((240..=360).contains(&cut), "{cut}");
        let other = Loadtest { seed: 8, ..flags() };
        let c: Vec<Plan> = (0..1000).map(|i| plan(&other, &texts, i)).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut []), Percentiles::default());
        assert_eq!(percentiles(&mut [3.0]).p99, 3.0);
    }

    #[test]
    fn reads_unlabelled_gauges() {
        let text = "# TYPE lmforge_kv_blocks_used gauge\nlmforge_kv_blocks_used 3\n\
                    lmforge_kv_blocks_total 64\nprocess_resident_memory_bytes 1.5e8\n";
        assert_eq!(gauge(text, "lmforge_kv_blocks_used"), Some(3.0));
        assert_eq!(gauge(text, "lmforge_kv_blocks"), None);
        assert_eq!(gauge(text, "process_resident_memory_bytes"), Some(1.5e8));
    }
}
