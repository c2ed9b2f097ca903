//! Generation over any `Decoder`: batched equals alone, seeds, stop tokens, cancellation, beam
//! search, on the burn model and on the CPU engine alike.

use burn::tensor::{Device, Int, Tensor, TensorData};
use lmforge_infer::{
    BurnDecoder, CpuGpt, Decoder, Finish, GenerateOptions, Sampling, beam_search, generate,
};
use lmforge_model::{Gpt, GptConfig, Positions};

fn model(positions: Positions) -> Gpt {
    let config = GptConfig {
        n_layer: 2,
        d_model: 32,
        max_seq_len: 40,
        positions,
        ..GptConfig::tiny(30)
    };
    config.init(&Device::flex(), 9).unwrap()
}

fn options(max_new_tokens: usize, sampling: Sampling) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling,
        stop_tokens: Vec::new(),
    }
}

/// Greedy decoding by full forward passes, no cache: the reference.
fn greedy_reference(model: &Gpt, prompt: &[u32], n: usize) -> Vec<u32> {
    let device = Device::flex();
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let ids: Vec<i64> = seq.iter().map(|&t| t as i64).collect();
        let len = ids.len();
        let logits = model
            .forward(Tensor::<2, Int>::from_ints(
                TensorData::new(ids, [1, len]),
                &device,
            ))
            .unwrap();
        let last = logits.slice([0..1, len - 1..len, 0..30]).argmax(2);
        seq.push(last.into_scalar::<i64>() as u32);
    }
    seq[prompt.len()..].to_vec()
}

fn batched_equals_alone<D: Decoder>(decoder: &D, model: &Gpt, what: &str) {
    let prompts = vec![vec![1, 2, 3], vec![7], vec![4, 4, 4, 4, 4, 9]];
    let greedy = options(12, Sampling::greedy());
    let together = generate(decoder, &prompts, &greedy, |_, _| true).unwrap();
    for (prompt, got) in prompts.iter().zip(&together) {
        let alone = generate(decoder, std::slice::from_ref(prompt), &greedy, |_, _| true).unwrap();
        assert_eq!(got.tokens, alone[0].tokens, "{what}");
        assert_eq!(got.tokens, greedy_reference(model, prompt, 12), "{what}");
        assert_eq!(got.finish, Finish::Length);
        assert!(got.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
    }
}

#[test]
fn batched_greedy_equals_each_prompt_alone_and_the_uncached_reference() {
    let device = Device::flex();
    for positions in [Positions::Learned, Positions::Rope, Positions::Alibi] {
        let model = model(positions);
        let burn = BurnDecoder {
            model: &model,
            device: &device,
        };
        batched_equals_alone(&burn, &model, &format!("burn {positions:?}"));
        let cpu = CpuGpt::from_gpt(&model).unwrap();
        batched_equals_alone(&cpu, &model, &format!("cpu {positions:?}"));
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let model = CpuGpt::from_gpt(&model(Positions::Learned)).unwrap();
    let sampling = |seed| Sampling {
        temperature: 1.5,
        top_k: 20,
        top_p: 0.95,
        repetition_penalty: 1.2,
        seed,
    };
    let run = |seed| {
        generate(
            &model,
            &[vec![1, 2], vec![3]],
            &options(16, sampling(seed)),
            |_, _| true,
        )
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    // Bad options name their field.
    let mut bad = options(4, Sampling::greedy());
    bad.sampling.top_p = 1.5;
    let err = generate(&model, &[vec![1]], &bad, |_, _| true).unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

#[test]
fn stop_tokens_callbacks_and_the_context_end_sequences() {
    let gpt = model(Positions::Learned);
    let model = CpuGpt::from_gpt(&gpt).unwrap();
    let prompt = vec![1, 2, 3];
    let free = greedy_reference(&gpt, &prompt, 10);
    // Stop on the fifth greedy token: the sequence ends with it.
    let stop = free[4];
    let first = free.iter().position(|&t| t == stop).unwrap();
    let mut opts = options(10, Sampling::greedy());
    opts.stop_tokens = vec![stop];
    let out = generate(&model, std::slice::from_ref(&prompt), &opts, |_, _| true).unwrap();
    assert_eq!(out[0].tokens, free[..=first]);
    assert_eq!(out[0].finish, Finish::Stop);
    // The callback streams every token and can cancel.
    let mut streamed = Vec::new();
    let out = generate(
        &model,
        std::slice::from_ref(&prompt),
        &options(10, Sampling::greedy()),
        |row, t| {
            streamed.push((row, t));
            streamed.len() < 3
        },
    )
    .unwrap();
    assert_eq!(out[0].finish, Finish::Cancelled);
    assert_eq!(out[0].tokens.len(), 3);
    assert_eq!(
        streamed.iter().map(|p| p.1).collect::<Vec<_>>(),
        out[0].tokens
    );
    // The context (40) ends a long request early.
    let out = generate(
        &model,
        &[vec![1; 35]],
        &options(100, Sampling::greedy()),
        |_, _| true,
    )
    .unwrap();
    assert_eq!(out[0].tokens.len(), 5);
    // Token ids outside the vocabulary are an error, not a panic.
    let err = generate(
        &model,
        &[vec![30]],
        &options(1, Sampling::greedy()),
        |_, _| true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("30"), "{err}");
}

fn beams_are_ranked<D: Decoder>(decoder: &D, model: &Gpt) -> Vec<Vec<u32>> {
    let prompt = [5, 6, 7];
    let one = beam_search(decoder, &prompt, 1, 8, &[], 1.0).unwrap();
    assert_eq!(one[0].tokens, greedy_reference(model, &prompt, 8));
    let four = beam_search(decoder, &prompt, 4, 8, &[], 0.0).unwrap();
    assert_eq!(four.len(), 4);
    assert!(four.windows(2).all(|w| w[0].score >= w[1].score));
    // Summed log-probability: the best of four beams is at least the greedy path's.
    assert!(
        four[0].logprob >= one[0].logprob - 1e-4,
        "{} < {}",
        four[0].logprob,
        one[0].logprob
    );
    let mut seen: Vec<_> = four.iter().map(|b| b.tokens.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "distinct hypotheses");
    four.into_iter().map(|b| b.tokens).collect()
}

#[test]
fn beam_search_of_width_one_is_greedy_and_beams_are_ranked_on_every_engine() {
    let device = Device::flex();
    let model = model(Positions::Learned);
    let burn = beams_are_ranked(
        &BurnDecoder {
            model: &model,
            device: &device,
        },
        &model,
    );
    let cpu = beams_are_ranked(&CpuGpt::from_gpt(&model).unwrap(), &model);
    assert_eq!(burn, cpu, "the same beams over forked paged rows");
    assert!(beam_search(&CpuGpt::from_gpt(&model).unwrap(), &[1], 0, 4, &[], 1.0).is_err());
}

/// `generate_batch`: the same prompts through the scheduler give what `generate` gives — greedy
/// token for token, the first prompt's sampling draw for draw — and stop tokens, cancellation
/// and the context end behave alike.
#[test]
fn a_batch_through_the_scheduler_generates_as_the_decoding_loop_does() {
    use std::sync::Arc;

    use lmforge_infer::generate_batch;

    let gpt = model(Positions::Rope);
    let engine = Arc::new(CpuGpt::from_gpt(&gpt).unwrap());
    let prompts = vec![vec![1, 2, 3], vec![7], vec![4, 4, 4, 4, 4, 9], vec![1; 35]];
    let greedy = options(12, Sampling::greedy());
    let looped = generate(engine.as_ref(), &prompts, &greedy, |_, _| true).unwrap();
    let mut streamed = vec![Vec::new(); prompts.len()];
    let scheduled = generate_batch(&engine, &prompts, &greedy, |row, t| {
        streamed[row].push(t);
        true
    })
    .unwrap();
    assert_eq!(scheduled, looped);
    assert_eq!(scheduled[3].tokens.len(), 5, "the context (40) ends it");
    for (s, g) in streamed.iter().zip(&scheduled) {
        assert_eq!(s, &g.tokens);
    }
    // One prompt sampled: the same draws as the loop's.
    let sampled = options(
        16,
        Sampling {
            temperature: 1.3,
            top_k: 10,
            seed: 4,
            ..Sampling::greedy()
        },
    );
    let one = [vec![2, 3]];
    assert_eq!(
        generate_batch(&engine, &one, &sampled, |_, _| true).unwrap(),
        generate(engine.as_ref(), &one, &sampled, |_, _| true).unwrap()
    );
    // Equal prompts in one batch draw differently (seed + row).
    let twice = generate_batch(&engine, &[vec![2, 3], vec![2, 3]], &sampled, |_, _| true).unwrap();
    assert_ne!(twice[0].tokens, twice[1].tokens);
    // Stop tokens and cancellation.
    let free = &looped[0].tokens;
    let mut stopping = greedy.clone();
    stopping.stop_tokens = vec![free[4]];
    let first = free.iter().position(|&t| t == free[4]).unwrap();
    let out = generate_batch(&engine, &prompts[..2], &stopping, |row, _| row == 0).unwrap();
    assert_eq!(out[0].tokens, free[..=first]);
    assert_eq!(out[0].finish, Finish::Stop);
    assert_eq!((out[1].tokens.len(), out[1].finish), (1, Finish::Cancelled));
    // Bad input is an error naming it, not a panic.
    let err = generate_batch(&engine, &[vec![30]], &greedy, |_, _| true).unwrap_err();
    assert!(err.to_string().contains("30"), "{err}");
    let err = generate_batch(&engine, &[vec![]], &greedy, |_, _| true).unwrap_err();
    assert!(err.to_string().contains("prompt 0"), "{err}");
    let err = generate_batch(&engine, &[vec![1; 40]], &greedy, |_, _| true).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
