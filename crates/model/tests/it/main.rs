//! Integration tests of lmforge-model: one binary, a module per area.

mod backends;
mod bert;
mod checkpoint;
mod hf;

use std::path::{Path, PathBuf};

/// A fetched fixture (`cargo xtask fixtures`), or `None` with a note when it is missing and
/// `LMFORGE_REQUIRE_FIXTURES` is unset.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LMFORGE_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures"),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{} is missing: run `cargo xtask fixtures`", path.display());
    if std::env::var_os("LMFORGE_REQUIRE_FIXTURES").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// A committed fixture under `tests/fixtures/` (made by `benches/peers/model_fixtures.py`).
pub fn committed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The f32 (or i64, widened) tensors of a safetensors file, by name.
pub fn read_expected(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// The largest absolute difference, asserting the lengths agree.
pub fn max_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max)
}
