//! `cargo bench -p lmforge-benches`: every criterion bench of lmforge, a module per area.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main};

mod bpe;
mod clean;
mod dataset;
mod model;
mod quant;
mod wordpiece;

criterion_group!(
    benches,
    bpe::encode,
    bpe::train,
    clean::minhash,
    clean::pipeline,
    dataset::convert,
    dataset::samples,
    model::gpt,
    quant::kernels,
    wordpiece::encode,
    wordpiece::train
);
criterion_main!(benches);
