//! The quantized kernels against f32 on the tiny GPT's largest product (its tied head, 32,000 ×
//! 128, batch 1), and quantizing it. Whole-model decoding, with PyTorch's int8 beside it, is
//! `src/bin/quant_speed.rs` and `peers/quant.py`.

use criterion::{Criterion, Throughput};
use lmforge_quant::{Matrix, QMatrix, Scheme, kernel};

pub fn kernels(c: &mut Criterion) {
    let (rows, cols) = (32_000, 128);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 10_007) as f32 / 10_007.0 - 0.5) * 0.04)
        .collect();
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut group = c.benchmark_group("quant");
    group.sample_size(30);
    group.throughput(Throughput::Elements((rows * cols) as u64));
    let dense = Matrix::f32(rows, cols, &values);
    group.bench_function("matvec-f32-32000x128", |b| {
        b.iter(|| kernel::matmul(&dense, &x))
    });
    // A batched decoding step's head: eight and 32 inputs (throughput still per weight, so
    // the figure compares with the matrix-vector product's per input).
    for n in [8, 32] {
        let xs: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        group.throughput(Throughput::Elements((n * rows * cols) as u64));
        group.bench_function(format!("matmul-f32-32000x128-batch{n}"), |b| {
            b.iter(|| kernel::matmul(&dense, &xs))
        });
    }
    group.throughput(Throughput::Elements((rows * cols) as u64));
    for scheme in Scheme::ALL {
        let q = Matrix::Quantized(QMatrix::quantize("head", &values, rows, cols, scheme).unwrap());
        group.bench_function(format!("matvec-{scheme}-32000x128"), |b| {
            b.iter(|| kernel::matmul(&q, &x))
        });
    }
    for scheme in [Scheme::Int8, Scheme::Q4_0] {
        group.bench_function(format!("quantize-{scheme}-32000x128"), |b| {
            b.iter(|| QMatrix::quantize("head", &values, rows, cols, scheme).unwrap())
        });
    }
    group.finish();
}
