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
