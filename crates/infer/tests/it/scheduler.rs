//! The continuous-batching scheduler over the CPU engine: every request gets what it would
//! alone, however busy the batch, however small the pool, with prefix caching on or off.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use proptest::prelude::*;

use burn::tensor::Device;
use lmforge_infer::scheduler::{
    EVENT_BUFFER, Engine, EngineOptions, Event, Fork, Job, Metrics, Rejected, Scheduler,
};
use lmforge_infer::{CpuGpt, Finish, GenerateOptions, KvStore, Sampling, generate};

use crate::{small, variants};

fn job(prompt: &[u32], max_new_tokens: usize) -> (Job, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::sync_channel(EVENT_BUFFER);
    let job = Job {
        prompt: prompt.to_vec(),
        max_new_tokens,
        sampling: Sampling::greedy(),
        stop_tokens: Vec::new(),
        prompt_logprobs: false,
        forks: Vec::new(),
        events: Box::new(tx),
    };
    (job, rx)
}

/// The tokens of a finished request.
fn tokens(rx: &mpsc::Receiver<Event>) -> (Vec<u32>, Finish) {
    let mut out = Vec::new();
    loop {
        match rx.recv().expect("the scheduler ends every request") {
            Event::Token { id, logprob } => {
                assert!(logprob <= 0.0 && logprob.is_finite());
                out.push(id);
            }
            Event::Done(finish) => return (out, finish),
            Event::Failed(message) => panic!("failed: {message}"),
            Event::PromptLogprobs(_) | Event::Cached(_) => {}
        }
    }
}

fn alone(engine: &CpuGpt, prompt: &[u32], n: usize) -> Vec<u32> {
    let options = GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::greedy(),
        stop_tokens: vec![],
    };
    generate(engine, &[prompt.to_vec()], &options, |_, _| true).unwrap()[0]
        .tokens
        .clone()
}

/// Prompts of many lengths, some sharing long prefixes.
fn prompts() -> Vec<Vec<u32>> {
    let shared: Vec<u32> = (0..40).map(|i| (i * 37 % 300) as u32).collect();
    (0..10)
        .map(|i| match i % 3 {
            0 => shared.iter().copied().chain([i as u32, 7]).collect(),
            1 => (0..1 + i * 5)
                .map(|j| ((i * 11 + j * 3) % 300) as u32)
                .collect(),
            _ => shared[..16 + i].to_vec(),
        })
        .collect()
}

fn start(engine: &Arc<CpuGpt>, options: EngineOptions) -> (Engine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let (handle, _thread) = Engine::start(engine.clone(), options, metrics.clone());
    (handle, metrics)
}

#[test]
fn a_busy_batch_gives_every_request_its_tokens_alone_on_every_architecture() {
    for (i, config) in variants().into_iter().enumerate() {
        let engine = Arc::new(
            CpuGpt::from_gpt(&config.init(&Device::flex(), 20 + i as u64).unwrap()).unwrap(),
        );
        for prefix_caching in [true, false] {
            let (handle, metrics) = start(
                &engine,
                EngineOptions {
                    max_batch: 4,
                    prefill_chunk: 13,
                    prefix_caching,
                    ..EngineOptions::default()
                },
            );
            let prompts = prompts();
            let receivers: Vec<_> = prompts
                .iter()
                .map(|p| {
                    let (job, rx) = job(p, 9);
                    handle.submit(job).unwrap();
                    rx
                })
                .collect();
            for (prompt, rx) in prompts.iter().zip(&receivers) {
                let (got, finish) = tokens(rx);
                assert_eq!(finish, Finish::Length);
                assert_eq!(
                    got,
                    alone(&engine, prompt, 9),
                    "variant {i}, caching {prefix_caching}"
                );
            }
            let hits = metrics.prefix_hit_tokens.load(Ordering::Relaxed);
            assert_eq!(
                hits > 0,
                prefix_caching,
                "variant {i}: {hits} tokens reused"
            );
            assert_eq!(metrics.completed.load(Ordering::Relaxed), prompts.len());
        }
    }
}

#[test]
fn a_cached_prefix_skips_its_prefill_and_changes_no_token() {
    let engine = Arc::new(CpuGpt::from_gpt(&small().init(&Device::flex(), 5).unwrap()).unwrap());
    let (handle, metrics) = start(&engine, EngineOptions::default());
    let system: Vec<u32> = (0..50).map(|i| (i * 13 % 300) as u32).collect();
    let first: Vec<u32> = system.iter().copied().chain([1, 2, 3]).collect();
    let (j, rx) = job(&first, 6);
    handle.submit(j).unwrap();
    assert_eq!(tokens(&rx).0, alone(&engine, &first, 6));
    assert_eq!(metrics.prefix_hit_tokens.load(Ordering::Relaxed), 0);
    // Its three full blocks (48 positions) stay cached after it ends, held by nobody.
    assert_eq!(metrics.kv_blocks_cached.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.kv_blocks_used.load(Ordering::Relaxed), 0);
    let second: Vec<u32> = system.iter().copied().chain([9, 8]).collect();
    let (j, rx) = job(&second, 6);
    handle.submit(j).unwrap();
    // The request hears first how much of its prompt came from the cache.
    assert_eq!(rx.recv().unwrap(), Event::Cached(48));
    assert_eq!(tokens(&rx).0, alone(&engine, &second, 6));
    assert_eq!(metrics.prefix_hit_tokens.load(Ordering::Relaxed), 48);
    assert_eq!(
        metrics.prefix_query_tokens.load(Ordering::Relaxed),
        first.len() + second.len()
    );
    // A prompt that is exactly cached blocks still computes its last block: the logits of
    // its last token choose the first new one.
    let exact = system[..48].to_vec();
    let (j, rx) = job(&exact, 4);
    handle.submit(j).unwrap();
    assert_eq!(tokens(&rx).0, alone(&engine, &exact, 4));
    assert_eq!(metrics.prefix_hit_tokens.load(Ordering::Relaxed), 48 + 32);
    // Prompt log-probabilities need every position: no reuse, the same values as cold.
    let (tx, rx) = mpsc::sync_channel(EVENT_BUFFER);
    let mut j = job(&second, 2).0;
    j.prompt_logprobs = true;
    j.events = Box::new(tx);
    handle.submit(j).unwrap();
    let Event::PromptLogprobs(lp) = rx.recv().unwrap() else {
        panic!("prompt log-probabilities first")
    };
    assert_eq!(lp.len(), second.len() - 1);
    assert_eq!(metrics.prefix_hit_tokens.load(Ordering::Relaxed), 80);
}

#[test]
fn a_pool_for_two_requests_serves_ten_without_overflowing() {
    let engine = Arc::new(CpuGpt::from_gpt(&small().init(&Device::flex(), 6).unwrap()).unwrap());
    let block_bytes = lmforge_infer::HostKv::new(engine.config(), 16).block_bytes();
    // Six blocks of 16: two requests of up to 48 positions at once.
    let (handle, metrics) = start(
        &engine,
        EngineOptions {
            kv_cache_bytes: 6 * block_bytes,
            prefill_chunk: 16,
            ..EngineOptions::default()
        },
    );
    assert_eq!(metrics.kv_blocks_total.load(Ordering::Relaxed), 6);
    assert_eq!(handle.limit, 96, "the model's context fits the whole pool");
    let prompts = prompts();
    let receivers: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (j, rx) = job(&p[..p.len().min(30)], 12);
            handle.submit(j).unwrap();
            rx
        })
        .collect();
    for (p, rx) in prompts.iter().zip(&receivers) {
        assert_eq!(tokens(rx).0, alone(&engine, &p[..p.len().min(30)], 12));
        assert!(metrics.kv_blocks_used.load(Ordering::Relaxed) <= 6);
    }
    // Too long for the pool, refused at once with the numbers.
    let (j, _) = job(&[1; 90], 10);
    let err = handle.submit(j).unwrap_err();
    assert_eq!(
        err,
        Rejected::TooLong {
            prompt: 90,
            new: 10,
            limit: 96
        }
    );
    assert!(err.to_string().contains("at most 96"));
}

#[test]
fn stop_tokens_and_departed_clients_end_requests_and_free_their_blocks() {
    let engine = Arc::new(CpuGpt::from_gpt(&small().init(&Device::flex(), 7).unwrap()).unwrap());
    let (handle, metrics) = start(
        &engine,
        EngineOptions {
            scheduler: Scheduler::Static,
            max_queue: 3,
            ..EngineOptions::default()
        },
    );
    let prompt = [4u32, 5, 6];
    let free = alone(&engine, &prompt, 10);
    let (mut j, rx) = job(&prompt, 10);
    j.stop_tokens = vec![free[3]];
    handle.submit(j).unwrap();
    let (got, finish) = tokens(&rx);
    let first = free.iter().position(|&t| t == free[3]).unwrap();
    assert_eq!((got, finish), (free[..=first].to_vec(), Finish::Stop));
    // A client gone before its request runs: dropped at its first event, its blocks back.
    let (j, rx) = job(&prompt, 50);
    drop(rx);
    handle.submit(j).unwrap();
    let (j, rx) = job(&prompt, 3);
    handle.submit(j).unwrap();
    assert_eq!(tokens(&rx).0, free[..3]);
    assert_eq!(metrics.cancelled.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.running.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.kv_blocks_used.load(Ordering::Relaxed), 0);
    // Out-of-vocabulary ids fail the request with the model's message.
    let (j, rx) = job(&[300], 3);
    handle.submit(j).unwrap();
    match rx.recv().unwrap() {
        Event::Failed(message) => assert!(message.contains("300"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (j, _) = job(&[], 3);
    assert!(matches!(handle.submit(j), Err(Rejected::TooLong { .. })));
}

/// One request of a random schedule: its prompt (a shared system prefix of some length, then
/// its own tokens), new tokens, its forks (`n - 1`), how long after the previous one it
/// arrives, and whether its clients leave at once or stop reading after their first events.
#[derive(Debug, Clone)]
struct Arrival {
    shared: usize,
    own: Vec<u32>,
    new_tokens: usize,
    forks: usize,
    after_micros: u64,
    client: Client,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    Reads,
    Leaves,
    StopsReading,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0usize..40,
        proptest::collection::vec(0u32..300, 1..20),
        1usize..10,
        prop_oneof![3 => Just(0usize), 1 => 1usize..3],
        0u64..3000,
        prop_oneof![
            6 => Just(Client::Reads),
            1 => Just(Client::Leaves),
            1 => Just(Client::StopsReading),
        ],
    )
        .prop_map(
            |(shared, own, new_tokens, forks, after_micros, client)| Arrival {
                shared,
                own,
                new_tokens,
                forks,
                after_micros,
                client,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Whatever the arrivals, lengths, forks, departures and pool size: every sequence that is
    /// read to its end gets exactly its greedy tokens decoded alone, and the pool ends with no
    /// block held. (The scheduler audits the pool's books after every step in this build.)
    #[test]
    fn random_schedules_give_every_request_its_tokens_alone_and_free_the_pool(
        arrivals in proptest::collection::vec(arrival(), 1..8),
        blocks in 5usize..12,
        max_batch in 1usize..5,
        prefill_chunk in 1usize..40,
        prefix_caching: bool,
        continuous: bool,
    ) {
        let engine = schedule_engine();
        let block_bytes = lmforge_infer::HostKv::new(engine.config(), 8).block_bytes();
        let (handle, metrics) = start(
            engine,
            EngineOptions {
                max_batch,
                kv_cache_bytes: blocks * block_bytes,
                block_tokens: 8,
                prefill_chunk,
                prefix_caching,
                scheduler: if continuous { Scheduler::Continuous } else { Scheduler::Static },
                ..EngineOptions::default()
            },
        );
        let system: Vec<u32> = (0..40).map(|i| (i * 53 % 300) as u32).collect();
        let mut read = Vec::new();
        let mut kept = Vec::new();
        let mut accepted = 0;
        for a in &arrivals {
            std::thread::sleep(std::time::Duration::from_micros(a.after_micros));
            let prompt: Vec<u32> = system[..a.shared].iter().chain(&a.own).copied().collect();
            let bound = if a.client == Client::StopsReading { 1 } else { EVENT_BUFFER };
            let (tx, rx) = mpsc::sync_channel(bound);
            let (mut j, _) = job(&prompt, a.new_tokens);
            j.events = Box::new(tx);
            let mut receivers = vec![rx];
            for _ in 0..a.forks {
                let (tx, rx) = mpsc::sync_channel(bound);
                j.forks.push(Fork { sampling: Sampling::greedy(), events: Box::new(tx) });
                receivers.push(rx);
            }
            if prompt.len() + a.new_tokens > handle.limit {
                let refused = matches!(handle.submit(j), Err(Rejected::TooLong { .. }));
                prop_assert!(refused, "a request past the limit is refused");
                continue;
            }
            let own = (prompt.len() + a.new_tokens).div_ceil(8);
            if own + a.forks * (own - prompt.len() / 8) > blocks {
                let refused = matches!(handle.submit(j), Err(Rejected::TooWide { .. }));
                prop_assert!(refused, "forks the pool cannot hold together are refused");
                continue;
            }
            handle.submit(j).unwrap();
            accepted += 1 + a.forks;
            for rx in receivers {
                match a.client {
                    Client::Reads => read.push((prompt.clone(), a.new_tokens, rx)),
                    Client::Leaves => drop(rx),
                    Client::StopsReading => kept.push(rx),
                }
            }
        }
        for (prompt, n, rx) in &read {
            let (got, finish) = tokens(rx);
            prop_assert_eq!(finish, Finish::Length);
            prop_assert_eq!(got, alone(engine, prompt, *n));
        }
        // The departed ones are dropped at their next event: wait until every request has
        // ended (the gauges are published before a request is counted as ended).
        let ended = || {
            metrics.completed.load(Ordering::Relaxed) + metrics.cancelled.load(Ordering::Relaxed)
        };
        let started = std::time::Instant::now();
        while ended() < accepted {
            prop_assert!(started.elapsed().as_secs() < 60, "the batch never drained");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        prop_assert_eq!(ended(), accepted);
        prop_assert_eq!(metrics.running.load(Ordering::Relaxed), 0);
        prop_assert_eq!(metrics.kv_blocks_used.load(Ordering::Relaxed), 0);
        drop(kept);
    }
}

/// The model the random schedules run on, built once.
fn schedule_engine() -> &'static Arc<CpuGpt> {
    static ENGINE: std::sync::OnceLock<Arc<CpuGpt>> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = lmforge_model::GptConfig {
            max_seq_len: 64,
            ..small()
        };
        Arc::new(CpuGpt::from_gpt(&config.init(&Device::flex(), 11).unwrap()).unwrap())
    })
}

/// The CPU engine, counting the tokens it is given.
struct Counting {
    inner: CpuGpt,
    tokens: std::sync::atomic::AtomicUsize,
}

impl lmforge_infer::paged::Batched for Counting {
    type Store = <CpuGpt as lmforge_infer::paged::Batched>::Store;

    fn config(&self) -> &lmforge_model::GptConfig {
        lmforge_infer::paged::Batched::config(&self.inner)
    }

    fn store(&self, block_tokens: usize) -> Self::Store {
        self.inner.store(block_tokens)
    }

    fn forward(
        &self,
        pool: &mut lmforge_infer::paged::KvPool<Self::Store>,
        chunks: &mut [lmforge_infer::paged::Chunk<'_>],
    ) -> lmforge_infer::Result<Vec<Vec<f32>>> {
        let n: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        self.tokens.fetch_add(n, Ordering::Relaxed);
        self.inner.forward(pool, chunks)
    }
}

#[test]
fn forks_compute_the_prompt_once_and_draw_what_separate_requests_draw() {
    let model = CpuGpt::from_gpt(&small().init(&Device::flex(), 9).unwrap()).unwrap();
    let engine = Arc::new(Counting {
        inner: model,
        tokens: Default::default(),
    });
    let metrics = Arc::new(Metrics::default());
    let options = EngineOptions {
        prefix_caching: false,
        ..EngineOptions::default()
    };
    let (handle, _thread) = Engine::start(engine.clone(), options, metrics.clone());
    // 37 tokens: two full blocks and a partial one the forks copy when they first write.
    let prompt: Vec<u32> = (0..37).map(|i| (i * 29 % 300) as u32).collect();
    let sampled = |seed| Sampling {
        temperature: 0.9,
        top_k: 40,
        seed,
        ..Sampling::greedy()
    };
    let new = 9;
    // Each seed alone, as separate requests.
    let mut separate = Vec::new();
    for seed in [3, 4, 5, 6] {
        let (mut j, rx) = job(&prompt, new);
        j.sampling = sampled(seed);
        handle.submit(j).unwrap();
        separate.push(tokens(&rx).0);
    }
    let before = engine.tokens.load(Ordering::Relaxed);
    assert_eq!(before, 4 * (prompt.len() + new - 1));
    // One request with three forks.
    let (mut j, rx) = job(&prompt, new);
    j.sampling = sampled(3);
    let mut receivers = vec![rx];
    for seed in [4, 5, 6] {
        let (tx, rx) = mpsc::sync_channel(EVENT_BUFFER);
        j.forks.push(Fork {
            sampling: sampled(seed),
            events: Box::new(tx),
        });
        receivers.push(rx);
    }
    handle.submit(j).unwrap();
    let forked: Vec<Vec<u32>> = receivers.iter().map(|rx| tokens(rx).0).collect();
    assert_eq!(forked, separate);
    assert!(
        forked.iter().any(|t| *t != forked[0]),
        "the seeds draw apart"
    );
    // The prompt once, then one token per sequence and step.
    let after = engine.tokens.load(Ordering::Relaxed) - before;
    assert_eq!(after, prompt.len() + 4 * (new - 1));
    // Counted just after `Done` is sent.
    let started = std::time::Instant::now();
    while metrics.completed.load(Ordering::Relaxed) < 8 {
        assert!(
            started.elapsed().as_secs() < 30,
            "every sequence is counted as completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(metrics.kv_blocks_used.load(Ordering::Relaxed), 0);
}

#[test]
fn a_fork_of_a_job_with_no_new_tokens_or_a_failing_one_ends_with_it() {
    let engine = schedule_engine();
    let (handle, metrics) = start(engine, EngineOptions::default());
    let fork = || {
        let (tx, rx) = mpsc::sync_channel(EVENT_BUFFER);
        let f = Fork {
            sampling: Sampling::greedy(),
            events: Box::new(tx),
        };
        (f, rx)
    };
    let (mut j, rx) = job(&[1, 2, 3], 0);
    let (f, frx) = fork();
    j.forks.push(f);
    handle.submit(j).unwrap();
    assert_eq!(tokens(&rx), (vec![], Finish::Length));
    assert_eq!(tokens(&frx), (vec![], Finish::Length));
    // An id past the vocabulary fails the step: the fork hears it too.
    let (mut j, rx) = job(&[1, 100_000], 3);
    let (f, frx) = fork();
    j.forks.push(f);
    handle.submit(j).unwrap();
    for rx in [rx, frx] {
        let failed = std::iter::from_fn(|| rx.recv().ok()).any(|e| matches!(e, Event::Failed(_)));
        assert!(failed);
    }
    let started = std::time::Instant::now();
    while metrics.cancelled.load(Ordering::Relaxed) < 2 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the failed job and its fork end"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(metrics.kv_blocks_used.load(Ordering::Relaxed), 0);
}
