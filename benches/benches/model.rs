//! The tiny GPT of the default pipeline: a forward pass and one cached decode step, on flex.
//! The gpt2-small and generation comparisons with PyTorch are in `src/bin/model_speed.rs`
//! (each takes seconds per sample).

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, Throughput};
use lmforge_model::GptConfig;

pub fn gpt(c: &mut Criterion) {
    let device = Device::flex();
    let config = GptConfig::tiny(8192);
    let model = config.init(&device, 0).unwrap();
    let (batch, seq) = (4, 128);
    let ids: Vec<i64> = (0..batch * seq)
        .map(|i| (i * 104_729 % 8192) as i64)
        .collect();
    let input = Tensor::<2, Int>::from_ints(TensorData::new(ids, [batch, seq]), &device);
    let mut group = c.benchmark_group("model");
    group.sample_size(20);
    group.throughput(Throughput::Elements((batch * seq) as u64));
    group.bench_function("tiny-forward-4x128", |b| {
        b.iter(|| model.forward(input.clone()).unwrap().into_data())
    });
    let prompt: Vec<u32> = (0..128).map(|i| (i * 31 % 8192) as u32).collect();
    let (cache, _) = model.prefill(&[prompt], &device).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("tiny-decode-at-128", |b| {
        b.iter(|| {
            let mut cache = cache.clone();
            model.decode(&mut cache, &[7]).unwrap().into_data()
        })
    });
    group.finish();
}
