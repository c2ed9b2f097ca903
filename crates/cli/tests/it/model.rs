//! `lmforge model …` and `lmforge generate` as a user runs them.

use std::fs;
use std::path::{Path, PathBuf};

use lmforge_model::{GptConfig, save_gpt};

use crate::bpe::s;
use crate::{fails_with, lmforge, ok};

fn tempdir(name: &str) -> PathBuf {
    crate::tempdir("model", name)
}

/// A tiny GPT checkpoint with a BPE tokenizer trained for it.
fn checkpoint(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    let text = "the cat sat on the mat. le chat est sur le tapis. el gato está en la alfombra.\n";
    fs::write(&corpus, text.repeat(50)).unwrap();
    let ckpt = dir.join("ckpt");
    fs::create_dir_all(&ckpt).unwrap();
    let tokenizer = ckpt.join("tokenizer.json");
    ok(&lmforge(&[
        "bpe",
        "train",
        "--input",
        s(&corpus),
        "--vocab-size",
        "300",
        "--special-tokens",
        "<|endoftext|>",
        "--output",
        s(&tokenizer),
    ]));
    let config = GptConfig {
        n_layer: 2,
        d_model: 32,
        max_seq_len: 64,
        ..GptConfig::tiny(300)
    };
    let model = config.init(&burn::tensor::Device::flex(), 1).unwrap();
    save_gpt(&model, &ckpt).unwrap();
    ckpt
}

#[test]
fn generate_greedy_sampled_and_beam() {
    let dir = tempdir("generate");
    let ckpt = checkpoint(&dir);
    let run_on = |device: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--prompt",
            "the cat",
            "--tokens",
            "6",
            "--device",
            device,
            "--json",
        ];
        args.extend(extra);
        let out = ok(&lmforge(&args));
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| run_on("flex", extra);
    let greedy = run(&["--greedy"]);
    assert_eq!(greedy.len(), 1);
    // The device engine (flex), the CPU engine and the dense reference agree.
    assert_eq!(run_on("cpu", &["--greedy"]), greedy);
    assert_eq!(run(&["--greedy", "--engine", "dense"]), greedy);
    assert_eq!(
        run_on("cpu", &["--beam-width", "3"]),
        run(&["--beam-width", "3"])
    );
    // Half precision is the device engine's.
    let half = run(&["--greedy", "--dtype", "f16"]);
    assert_eq!(half.len(), 1);
    let tokens = greedy[0]["tokens"].as_array().unwrap();
    assert!(!tokens.is_empty() && tokens.len() <= 6);
    assert_eq!(greedy, run(&[]), "greedy is the default");
    let sampled = |seed: &str| run(&["--temperature", "1.0", "--top-k", "50", "--seed", seed]);
    assert_eq!(sampled("3"), sampled("3"));
    let beams = run(&["--beam-width", "3"]);
    assert!(!beams.is_empty() && beams.len() <= 3);
    // Plain text streams the continuation after the prompt.
    let text = ok(&lmforge(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--prompt",
        "le chat",
        "--tokens",
        "4",
        "--device",
        "flex",
    ]));
    assert!(text.starts_with("le chat"), "{text}");
    // Several prompts at once.
    let out = ok(&lmforge(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--prompt",
        "the",
        "--prompt",
        "el gato está",
        "--tokens",
        "3",
        "--device",
        "flex",
        "--json",
    ]));
    assert_eq!(out.lines().count(), 2);

    // Bad requests.
    let bad = |extra: &[&str], message: &str| {
        let mut args = vec![
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--prompt",
            "the",
            "--device",
            "flex",
        ];
        args.extend(extra);
        fails_with(&lmforge(&args), message);
    };
    bad(&["--temperature", "-1"], "temperature");
    bad(&["--temperature", "1", "--top-p", "1.5"], "top_p");
    bad(&["--top-k", "5"], "--temperature");
    bad(&["--stop-token", "<nope>"], "<nope>");
    bad(&["--greedy", "--temperature", "1"], "--temperature");
    bad(&["--dtype", "f8"], "f32, f16 or bf16");
    fails_with(
        &lmforge(&[
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--prompt",
            "the",
            "--device",
            "cpu",
            "--dtype",
            "f16",
        ]),
        "the CPU engine runs f32 or quantized weights",
    );
    fails_with(
        &lmforge(&[
            "generate",
            "--checkpoint",
            s(&dir),
            "--prompt",
            "x",
            "--device",
            "flex",
        ]),
        "neither lmforge.json",
    );
    fs::remove_dir_all(dir).unwrap();
}

/// A model too large for its device's free memory is refused before the server binds its
/// port, naming the bytes needed and available; a device that cannot be opened is named with
/// the adapters found.
#[test]
fn serve_refuses_what_its_device_cannot_hold_before_binding() {
    let dir = tempdir("too-large");
    let ckpt = checkpoint(&dir);
    let port = free_port().to_string();
    for device in ["cpu", "flex"] {
        let out = lmforge(&[
            "serve",
            "--checkpoint",
            s(&ckpt),
            "--port",
            &port,
            "--device",
            device,
            // 1 PiB of KV cache: more than any host here has.
            "--kv-cache-mb",
            "1000000000",
        ]);
        fails_with(&out, "the model needs 976562.50 GiB");
        fails_with(&out, "is available there");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("serving "), "{err}");
        assert!(
            err.contains(if device == "cpu" { "on cpu" } else { "on flex" }),
            "{err}"
        );
    }
    // The same checkpoint fits with a KV cache of a sane size (the check counts the weights
    // as they are held, which a tiny model's are far below).
    let out = lmforge(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--prompt",
        "the",
        "--tokens",
        "2",
        "--device",
        "flex",
    ]);
    ok(&out);
    // No machine here has nine discrete GPUs; lavapipe (CI) is listed, or the missing driver.
    for command in [
        &["serve", "--port", &port][..],
        &["generate", "--prompt", "the"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--checkpoint", s(&ckpt), "--device", "wgpu:8"]);
        let out = lmforge(&args);
        fails_with(&out, "wgpu:8");
        fails_with(&out, "wgpu found");
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn info_counts_gpt2_small_and_the_seed_model() {
    let out = ok(&lmforge(&[
        "model",
        "info",
        "--config",
        "gpt2-small",
        "--json",
    ]));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["params"]["total"], 124_439_808);
    let table = ok(&lmforge(&["model", "info", "--config", "1.7b"]));
    assert!(table.contains("1,649,926,656"), "{table}");
    fails_with(
        &lmforge(&["model", "info", "--config", "gpt5"]),
        "neither a preset",
    );
    let dir = tempdir("info");
    let bad = dir.join("bad.json");
    fs::write(&bad, r#"{"vocab_size": 10, "max_seq_len": 8, "n_layer": 1, "n_head": 3, "d_model": 8, "dropout": 0.0}"#).unwrap();
    fails_with(
        &lmforge(&["model", "info", "--config", s(&bad)]),
        "`d_model`",
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn import_then_export_gpt2_keeps_the_weights() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/gpt2-tiny");
    let dir = tempdir("import");
    let ours = dir.join("ours");
    let back = dir.join("back");
    ok(&lmforge(&[
        "model",
        "import",
        "--from",
        s(&fixture),
        "--output",
        s(&ours),
    ]));
    assert!(ours.join("lmforge.json").is_file());
    ok(&lmforge(&[
        "model",
        "export-gpt2",
        "--checkpoint",
        s(&ours),
        "--output",
        s(&back),
    ]));
    let device = burn::tensor::Device::flex();
    let a = lmforge_model::hf::import_gpt2(&fixture, &device).unwrap();
    let b = lmforge_model::hf::import_gpt2(&back, &device).unwrap();
    let tokens = burn::tensor::Tensor::<2, burn::tensor::Int>::from_ints([[1, 2, 3]], &device);
    assert_eq!(
        a.forward(tokens.clone()).unwrap().into_data(),
        b.forward(tokens).unwrap().into_data()
    );
    fs::remove_dir_all(dir).unwrap();
}

/// A Llama folder (grouped-query attention) imported by `lmforge model import`: the CPU
/// engine decodes transformers' greedy continuations from the checkpoint, also after
/// `lmforge quantize --scheme q8_0` within a few tokens' drift at most; GPT-2's export
/// refuses it, naming the switch.
#[test]
fn an_imported_llama_decodes_transformers_greedy_text_on_the_cpu_engine() {
    use lmforge_infer::{CpuGpt, Decoder};

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/llama-tiny");
    let dir = tempdir("llama");
    let ours = dir.join("ours");
    let out = ok(&lmforge(&[
        "model",
        "import",
        "--from",
        s(&fixture),
        "--output",
        s(&ours),
    ]));
    assert!(
        out.contains("imported Llama") && out.contains("(2 key/value)"),
        "{out}"
    );
    assert!(
        ours.join("generation_config.json").is_file(),
        "the import keeps the model's end-of-sequence ids"
    );
    let bytes = fs::read(fixture.join("expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = |name: &str| -> Vec<u32> {
        let view = expected.tensor(name).unwrap();
        view.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    };
    let argmax = |row: &Vec<f32>| -> u32 {
        (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as u32
    };
    let greedy = |engine: &CpuGpt, prompt: &[u32], n: usize| -> Vec<u32> {
        let (mut cache, logits) = engine.prefill(&[prompt.to_vec()]).unwrap();
        let mut out = vec![argmax(&logits[0])];
        while out.len() < n {
            let logits = engine.decode(&mut cache, &[*out.last().unwrap()]).unwrap();
            out.push(argmax(&logits[0]));
        }
        out
    };
    let engine = CpuGpt::load(&ours).unwrap();
    for i in 0..3 {
        let prompt = &ids(&format!("ids.{i}"))[..5];
        let want = ids(&format!("greedy.{i}"));
        assert_eq!(greedy(&engine, prompt, want.len()), want, "sequence {i}");
    }
    let quantized = dir.join("q8_0");
    ok(&lmforge(&[
        "quantize",
        "--checkpoint",
        s(&ours),
        "--scheme",
        "q8_0",
        "--output",
        s(&quantized),
        "--device",
        "flex",
    ]));
    let engine = CpuGpt::load(&quantized).unwrap();
    let prompt = &ids("ids.0")[..5];
    let want = ids("greedy.0");
    assert_eq!(greedy(&engine, prompt, 4), want[..4], "q8_0");
    fails_with(
        &lmforge(&[
            "model",
            "export-gpt2",
            "--checkpoint",
            s(&ours),
            "--output",
            s(&dir.join("gpt2")),
        ]),
        "n_kv_head",
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn embed_prints_sentence_transformers_embeddings() {
    let fixtures = std::env::var_os("LMFORGE_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures"),
        PathBuf::from,
    );
    let folder = fixtures.join("all-MiniLM-L6-v2");
    if !folder.exists() {
        assert!(
            std::env::var_os("LMFORGE_REQUIRE_FIXTURES").is_none(),
            "{} missing",
            folder.display()
        );
        eprintln!("skipped: run `cargo xtask fixtures`");
        return;
    }
    let expected = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/fixtures/minilm-expected.safetensors");
    let bytes = fs::read(&expected).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let sentences: Vec<String> =
        serde_json::from_str(&metadata.metadata().as_ref().unwrap()["sentences"]).unwrap();
    let want: Vec<f32> = file
        .tensor("embeddings")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let dir = tempdir("embed");
    let input = dir.join("sentences.txt");
    fs::write(&input, sentences.join("\n") + "\n").unwrap();
    let out = ok(&lmforge(&[
        "model",
        "embed",
        "--checkpoint",
        s(&folder),
        "--input",
        s(&input),
        "--device",
        "flex",
        "--batch-size",
        "5",
    ]));
    let got: Vec<f32> = out
        .lines()
        .flat_map(|l| serde_json::from_str::<Vec<f32>>(l).unwrap())
        .collect();
    assert_eq!(out.lines().count(), sentences.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max |Δ| {worst}");
    fs::remove_dir_all(dir).unwrap();
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lmforge serve` of `ckpt` on the CPU engine with `extra` flags, its stderr kept; its
/// address and a first connection once it answers. The caller waits for it (`exit_of`).
#[allow(clippy::zombie_processes)]
fn start_serve(ckpt: &Path, extra: &[&str]) -> (std::process::Child, String, std::net::TcpStream) {
    let port = free_port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(["serve", "--checkpoint", s(ckpt), "--device", "cpu"])
        .args(["--port", &port.to_string()])
        .args(extra)
        // Its request log: a soak's would fill the test's output.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    loop {
        if let Ok(stream) = std::net::TcpStream::connect(&addr) {
            return (server, addr, stream);
        }
        if started.elapsed() >= std::time::Duration::from_secs(60) {
            let _ = server.kill();
            let _ = server.wait();
            panic!("the server never answered");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `server`.
fn sigterm(server: &std::process::Child) {
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// `server`'s exit status and stderr once it exits, failing with `why` after 30 s.
fn exit_of(server: &mut std::process::Child, why: &str) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "{why}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut err).unwrap();
    (exit, err)
}

/// `lmforge serve` stopped with SIGTERM (as systemd, Kubernetes and Slurm stop a service)
/// finishes the stream in flight, then exits 0 and refuses new connections.
#[test]
fn serve_drains_on_sigterm_and_exits_0() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let dir = tempdir("sigterm");
    let ckpt = checkpoint(&dir);
    let (mut server, addr, mut stream) = start_serve(&ckpt, &[]);
    let body = r#"{"prompt": "the cat", "max_tokens": 48, "stream": true}"#;
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    // The stream has begun: stop the server now.
    sigterm(&server);
    let mut rest = String::new();
    for line in reader.lines() {
        let line = line.expect("the stream in flight was cut");
        rest.push_str(&line);
        rest.push('\n');
        if line.contains("[DONE]") {
            break;
        }
    }
    assert!(rest.contains("data: [DONE]"), "{rest}");
    let (exit, err) = exit_of(&mut server, "the server did not exit after SIGTERM");
    assert!(exit.success(), "{exit}: {err}");
    assert!(
        err.contains("stopping: finishing the requests in flight"),
        "{err}"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still accepting after exit"
    );
    fs::remove_dir_all(dir).unwrap();
}

/// A request that never finishes (a body promised and never sent) cannot hold a stopping
/// server: past `--drain-timeout-s` it exits anyway, non-zero, saying why.
#[test]
fn serve_stops_within_its_drain_timeout() {
    use std::io::Write;

    let dir = tempdir("drain-timeout");
    let ckpt = checkpoint(&dir);
    let (mut server, _, mut stuck) = start_serve(&ckpt, &["--drain-timeout-s", "1"]);
    write!(
        stuck,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"pro"
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    sigterm(&server);
    let (exit, err) = exit_of(
        &mut server,
        "a request that never finishes held the stopping server",
    );
    assert!(!exit.success(), "{err}");
    assert!(err.contains("--drain-timeout-s 1"), "{err}");
    drop(stuck);
    fs::remove_dir_all(dir).unwrap();
}

/// A soak of 10,000 requests against `lmforge serve` from 8 clients, seeded: completions
/// streamed and not, clients that hang up before or during their answer, and bad bodies
/// (cut JSON, wrong types, bytes that are not UTF-8). No answer is a 5xx and no connection is
/// dropped by the server; once idle it holds no KV block and runs no sequence; its resident
/// memory ends within 10 % of what it was after a warm-up of the same mix.
#[test]
fn serve_soaks_ten_thousand_requests_with_disconnects_and_bad_bodies() {
    let dir = tempdir("soak");
    let ckpt = checkpoint(&dir);
    let (mut server, addr, first) = start_serve(&ckpt, &["--max-queue", "64"]);
    drop(first);
    let rss = || -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    };
    let metrics = || -> String { soak::request(&addr, "GET", "/metrics", b"", true).1 };
    let idle = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let text = metrics();
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                    .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            };
            let (used, running) = (
                value("lmforge_kv_blocks_used "),
                value("lmforge_running_sequences "),
            );
            if used == 0.0 && running == 0.0 {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not idle 60 s after the last request: {used} KV blocks used, {running} running"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let warm = soak::run(&addr, 8, 1_000, 1);
    idle();
    let before = rss();
    let tally = soak::run(&addr, 8, 10_000, 2);
    let text = idle();
    let after = rss();
    eprintln!(
        "soak: {tally:?}; resident {before} kB after the warm-up ({warm:?}), {after} kB after"
    );
    assert_eq!(tally.sent, 10_000);
    assert_eq!(tally.server_errors, 0, "{tally:?}");
    assert_eq!(tally.dropped, 0, "{tally:?}");
    assert!(tally.ok > 5_000 && tally.client_errors > 1_000, "{tally:?}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("lmforge_requests_total") && l.contains("status=\"5")),
        "a 5xx in /metrics:\n{text}"
    );
    assert!(
        after as f64 <= before as f64 * 1.10,
        "resident memory grew from {before} kB to {after} kB over the soak"
    );
    sigterm(&server);
    let (exit, err) = exit_of(&mut server, "the server did not exit after SIGTERM");
    assert!(exit.success(), "{exit}: {err}");
    fs::remove_dir_all(dir).unwrap();
}

/// The soak's clients.
mod soak {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// What the clients saw.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Tally {
        pub sent: usize,
        pub ok: usize,
        pub busy: usize,
        pub client_errors: usize,
        pub server_errors: usize,
        /// Connections the server closed without an answer, where one was waited for.
        pub dropped: usize,
        pub hung_up: usize,
    }

    /// One request on its own connection: status and body (empty status 0 when the server
    /// closed without answering). `read` false hangs up once the request is written.
    pub fn request(addr: &str, method: &str, path: &str, body: &[u8], read: bool) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(body));
        if !read {
            return (0, String::new());
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = raw
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    /// A stream read until its first bytes, then dropped mid-generation.
    fn hang_up_mid_stream(addr: &str, body: &[u8]) -> u16 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut first = [0u8; 32];
        match s.read(&mut first) {
            Ok(n) if n >= 12 => String::from_utf8_lossy(&first[9..12]).parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// xorshift64*: the clients' seeded choices.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `total` requests from `clients` threads, seeded by `seed`.
    pub fn run(addr: &str, clients: usize, total: usize, seed: u64) -> Tally {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let addr = addr.to_string();
                let count = total / clients + usize::from(c < total % clients);
                std::thread::spawn(move || {
                    let mut state =
                        ((seed << 32) | (c as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let mut tally = Tally::default();
                    for _ in 0..count {
                        one(&addr, &mut state, &mut tally);
                        tally.sent += 1;
                    }
                    tally
                })
            })
            .collect();
        threads.into_iter().fold(Tally::default(), |mut sum, t| {
            let t = t.join().unwrap();
            sum.sent += t.sent;
            sum.ok += t.ok;
            sum.busy += t.busy;
            sum.client_errors += t.client_errors;
            sum.server_errors += t.server_errors;
            sum.dropped += t.dropped;
            sum.hung_up += t.hung_up;
            sum
        })
    }

    fn one(addr: &str, state: &mut u64, tally: &mut Tally) {
        let roll = next(state) % 100;
        let tokens = 1 + next(state) % 6;
        let prompt =
            ["the cat", "le chat est", "el gato", "sur le tapis"][(next(state) % 4) as usize];
        let good = format!(
            r#"{{"prompt": "{prompt}", "max_tokens": {tokens}, "temperature": 0.8, "seed": {}}}"#,
            next(state) % 1000
        );
        let status = match roll {
            // Completions, answered whole.
            0..=54 => request(addr, "POST", "/v1/completions", good.as_bytes(), true).0,
            55..=64 => {
                let body =
                    format!(r#"{{"prompt": "{prompt}", "max_tokens": {tokens}, "stream": true}}"#);
                request(addr, "POST", "/v1/completions", body.as_bytes(), true).0
            }
            // A stream dropped once it has begun; a request dropped before any answer.
            65..=74 => {
                tally.hung_up += 1;
                let body = format!(r#"{{"prompt": "{prompt}", "max_tokens": 40, "stream": true}}"#);
                hang_up_mid_stream(addr, body.as_bytes())
            }
            75..=79 => {
                tally.hung_up += 1;
                request(addr, "POST", "/v1/completions", good.as_bytes(), false);
                return;
            }
            // Bad bodies: cut, mistyped, out of range, not UTF-8, not JSON at all.
            _ => {
                let bad: Vec<u8> = match next(state) % 5 {
                    0 => good.as_bytes()[..(next(state) as usize % good.len())].to_vec(),
                    1 => br#"{"prompt": 7, "max_tokens": "many"}"#.to_vec(),
                    2 => br#"{"prompt": "x", "max_tokens": -3, "temperature": 1e309}"#.to_vec(),
                    3 => (0..64).map(|_| next(state) as u8).collect(),
                    _ => b"prompt=the+cat".to_vec(),
                };
                request(addr, "POST", "/v1/completions", &bad, true).0
            }
        };
        match status {
            200 => tally.ok += 1,
            429 => tally.busy += 1,
            400..=499 => tally.client_errors += 1,
            500..=599 => tally.server_errors += 1,
            _ => tally.dropped += 1,
        }
    }
}

/// A checkpoint's `generation_config.json` (as Hugging Face folders carry it, and `model
/// import` keeps) names the ids that end a sequence: greedy generation stops at the first of
/// them rather than at the tokenizer's end-of-document token only.
#[test]
fn generation_config_eos_ids_end_generation() {
    let dir = tempdir("eos");
    let ckpt = checkpoint(&dir);
    // The tokens of a generation (greedy unless the flags or the file say otherwise).
    let run = |extra: &[&str]| -> Vec<u64> {
        let mut args = vec![
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--prompt",
            "the cat",
            "--tokens",
            "8",
            "--device",
            "cpu",
            "--json",
            "--seed",
            "3",
        ];
        args.extend(extra);
        let out = ok(&lmforge(&args));
        let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        line["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
    let all = run(&[]);
    assert!(all.len() >= 3, "{all:?}");
    let eos = all[2];
    let first = all.iter().position(|&t| t == eos).unwrap();
    fs::write(
        ckpt.join("generation_config.json"),
        format!(r#"{{"bos_token_id": 1, "eos_token_id": [{eos}, 299]}}"#),
    )
    .unwrap();
    let stopped = run(&[]);
    assert!(
        stopped == all[..first] || stopped == all[..=first],
        "{stopped:?} does not stop at {eos} in {all:?}"
    );
    // Sampling as the file says, unless told otherwise.
    fs::write(
        ckpt.join("generation_config.json"),
        r#"{"do_sample": true, "temperature": 1.5, "top_k": 40}"#,
    )
    .unwrap();
    assert_eq!(run(&[]), run(&["--temperature", "1.5", "--top-k", "40"]));
    assert_eq!(run(&["--greedy"]), all, "--greedy overrides the file");
    fs::write(
        ckpt.join("generation_config.json"),
        r#"{"eos_token_id": "x"}"#,
    )
    .unwrap();
    fails_with(
        &lmforge(&[
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--prompt",
            "the cat",
            "--device",
            "cpu",
        ]),
        "generation_config.json",
    );
    fs::remove_dir_all(dir).unwrap();
}
