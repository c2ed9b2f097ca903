//! Quantized checkpoints: the folder layout, writing one from any GPT checkpoint, reading it
//! back with every tensor checked, and loading it as a burn model.
//!
//! ```text
//! out/
//!   lmforge.json       {"format": 1, "architecture": "gpt", "config": {…},
//!                       "quantization": {"scheme": "q4_0", "tensors": {
//!                         "blocks.0.attn.qkv.weight": {"shape": [128, 384], "transposed": true}, …}}}
//!   model.safetensors  NAME.qweight (I8 [rows, cols], or U8 [rows, blocks·16] for q4_0)
//!                      NAME.scales  (F32 [1] | F32 [rows] | F16 [rows, blocks])
//!                      every other tensor (norms, biases, positions) F32 under its own name
//!   tokenizer.json     copied from the input
//! ```
//!
//! `shape` is the model parameter's shape; a quantized matrix always has output channels as
//! rows, so burn's `Linear` weights (`[in, out]`) are stored transposed and say so.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{Device, TensorData};
use half::f16;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use lmforge_model::checkpoint::{META_FILE, WEIGHTS_FILE, write_atomic};
use lmforge_model::hf::transpose;
use lmforge_model::{Gpt, GptConfig};

use crate::matrix::{ErrorStats, QMatrix};
use crate::scheme::{BLOCK, Scheme};
use crate::{Error, Result};

/// The `quantization` entry of a quantized checkpoint's `lmforge.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// The scheme of every quantized tensor.
    pub scheme: Scheme,
    /// The quantized tensors by parameter path.
    pub tensors: BTreeMap<String, QuantizedTensor>,
    /// `"2:4"` when the `Linear` weights were pruned before quantizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<String>,
}

/// What [`quantize_checkpoint`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// The scheme of every matrix.
    pub scheme: Scheme,
    /// Magnitude 2:4 structured sparsity on the `Linear` weights before quantizing: in every
    /// group of four consecutive inputs of an output channel, the two smallest are zeroed (the
    /// pattern NVIDIA's sparse tensor cores run at twice the speed; here only its quality cost
    /// is measured). The token embedding — also the tied head — is left dense.
    pub prune_2_4: bool,
}

impl From<Scheme> for QuantizeOptions {
    fn from(scheme: Scheme) -> Self {
        QuantizeOptions {
            scheme,
            prune_2_4: false,
        }
    }
}

/// Zeroes the two smallest magnitudes of every group of four consecutive values of each row
/// (`rows × cols`, row-major; a last group shorter than four keeps its largest half, rounded
/// up). Ties keep the first.
pub fn prune_2_4(values: &mut [f32], cols: usize) {
    for row in values.chunks_mut(cols.max(1)) {
        for group in row.chunks_mut(4) {
            let mut order: Vec<usize> = (0..group.len()).collect();
            order.sort_by(|&a, &b| group[b].abs().total_cmp(&group[a].abs()).then(a.cmp(&b)));
            for &i in &order[group.len().div_ceil(2)..] {
                group[i] = 0.0;
            }
        }
    }
}

/// Where a quantized tensor goes in the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizedTensor {
    /// The parameter's shape in the model.
    pub shape: [usize; 2],
    /// Whether the stored matrix is the parameter transposed (burn's `Linear` weights).
    pub transposed: bool,
}

impl QuantizedTensor {
    /// `(rows, cols)` of the stored matrix.
    pub fn stored(&self) -> (usize, usize) {
        let [a, b] = self.shape;
        if self.transposed { (b, a) } else { (a, b) }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: u32,
    architecture: String,
    config: GptConfig,
    quantization: Quantization,
}

/// A weight as held in memory: f32 in the model's layout, or quantized with rows as outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// f32 values, row-major in the parameter's own shape.
    F32 {
        /// The shape.
        shape: Vec<usize>,
        /// The values.
        values: Vec<f32>,
    },
    /// Codes and scales, with where they go.
    Quantized(QMatrix, QuantizedTensor),
}

/// Every weight of a GPT by parameter path.
pub type Weights = BTreeMap<String, Stored>;

/// What quantizing one tensor cost and saved (error against the original values: pruning's
/// included).
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// Parameter path.
    pub name: String,
    /// Parameter shape.
    pub shape: Vec<usize>,
    /// The scheme, or `f32` for tensors kept as they were.
    pub scheme: String,
    /// Bytes as f32.
    pub bytes_before: usize,
    /// Bytes stored.
    pub bytes_after: usize,
    /// Error of the dequantized values (zero when kept).
    pub error: ErrorStats,
}

/// Comparison of the original and quantized models on one measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Comparison {
    /// The f32 model.
    pub before: f64,
    /// The quantized model.
    pub after: f64,
}

/// What `lmforge quantize` reports (`quantize_report.json` beside the output).
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    /// The scheme.
    pub scheme: Scheme,
    /// `"2:4"` when the `Linear` weights were pruned first.
    pub sparsity: Option<String>,
    /// The checkpoint quantized.
    pub input: String,
    /// The quantized checkpoint.
    pub output: String,
    /// Size of the weights as f32 (what the input's model.safetensors holds).
    pub bytes_before: usize,
    /// Size of the quantized model.safetensors.
    pub bytes_after: usize,
    /// `bytes_before / bytes_after`.
    pub compression: f64,
    /// Per tensor, in parameter order.
    pub tensors: Vec<TensorReport>,
    /// Validation perplexity, where the caller measured it.
    pub perplexity: Option<Comparison>,
    /// CPU generation speed at batch 1 (tokens/s), where the caller measured it.
    pub tokens_per_second: Option<Comparison>,
}

/// A parameter as (path, shape, f32 values), the form `lmforge_model::hf::write_safetensors`
/// takes.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The parameters of `model`, in burn's module order.
pub fn gpt_tensors(model: &Gpt) -> Result<Vec<NamedTensor>> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let data = bridge::into_data(t)
                .map_err(|e| Error::checkpoint(Path::new(&name), e.to_string()))?;
            let shape = data.shape().to_vec();
            let values = data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::checkpoint(Path::new(&name), format!("{e:?}")))?;
            Ok((name, shape, values))
        })
        .collect()
}

/// Which parameters are quantized, and how they are laid out: the token embedding as it is
/// (its rows are also the tied head's output channels), every other matrix — the `Linear`
/// weights, `[in, out]` in burn — transposed. Learned positions, norms and biases stay f32:
/// they are a few kilobytes and every token reads them.
fn quantized_layout(name: &str, shape: &[usize]) -> Option<QuantizedTensor> {
    let &[a, b] = shape else { return None };
    match name {
        "wpe.weight" => None,
        "wte.weight" => Some(QuantizedTensor {
            shape: [a, b],
            transposed: false,
        }),
        _ if name.ends_with(".weight") => Some(QuantizedTensor {
            shape: [a, b],
            transposed: true,
        }),
        _ => None,
    }
}

/// Quantizes every matrix of `model` (pruned first where `options` say); the rest stays f32.
pub fn quantize_gpt(
    model: &Gpt,
    options: impl Into<QuantizeOptions>,
) -> Result<(Weights, Vec<TensorReport>)> {
    let QuantizeOptions {
        scheme,
        prune_2_4: prune,
    } = options.into();
    let mut weights = Weights::new();
    let mut reports = Vec::new();
    for (name, shape, values) in gpt_tensors(model)? {
        let bytes_before = values.len() * 4;
        let Some(layout) = quantized_layout(&name, &shape) else {
            reports.push(TensorReport {
                name: name.clone(),
                shape: shape.clone(),
                scheme: "f32".into(),
                bytes_before,
                bytes_after: bytes_before,
                error: ErrorStats::default(),
            });
            weights.insert(name, Stored::F32 { shape, values });
            continue;
        };
        let (rows, cols) = layout.stored();
        let rows_major = if layout.transposed {
            transpose(&values, shape[0], shape[1])
        } else {
            values
        };
        let q = if prune && layout.transposed {
            let mut pruned = rows_major.clone();
            prune_2_4(&mut pruned, cols);
            QMatrix::quantize(&name, &pruned, rows, cols, scheme)?
        } else {
            QMatrix::quantize(&name, &rows_major, rows, cols, scheme)?
        };
        reports.push(TensorReport {
            name: name.clone(),
            shape,
            scheme: scheme.to_string(),
            bytes_before,
            bytes_after: q.bytes(),
            error: q.error_stats(&rows_major),
        });
        weights.insert(name, Stored::Quantized(q, layout));
    }
    Ok((weights, reports))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `weights` as safetensors bytes (layout in the module docs).
fn serialize(weights: &Weights, path: &Path) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, stored) in weights {
        match stored {
            Stored::F32 { shape, values } => {
                tensors.push((name.clone(), Dtype::F32, shape.clone(), f32_bytes(values)))
            }
            Stored::Quantized(q, _) => {
                let (rows, row_bytes) = (q.rows, q.scheme.row_bytes(q.cols));
                let code_type = if q.scheme == Scheme::Q4_0 {
                    Dtype::U8
                } else {
                    Dtype::I8
                };
                tensors.push((
                    format!("{name}.qweight"),
                    code_type,
                    vec![rows, row_bytes],
                    q.codes.clone(),
                ));
                let (scale_type, shape, bytes) = match q.scheme {
                    Scheme::Int8Tensor => (Dtype::F32, vec![1], f32_bytes(&q.scales)),
                    Scheme::Int8 => (Dtype::F32, vec![rows], f32_bytes(&q.scales)),
                    Scheme::Q8_0 | Scheme::Q4_0 => (
                        Dtype::F16,
                        vec![rows, q.cols.div_ceil(BLOCK)],
                        q.scales
                            .iter()
                            .flat_map(|&s| f16::from_f32(s).to_le_bytes())
                            .collect(),
                    ),
                };
                tensors.push((format!("{name}.scales"), scale_type, shape, bytes));
            }
        }
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // One metadata entry: safetensors keeps them in a HashMap, and one entry is one order.
    let metadata = HashMap::from([("format".to_string(), "lmforge-quant".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::checkpoint(path, e.to_string()))
}

/// Writes a quantized checkpoint to `dir`: weights, then the input's tokenizer, then
/// `lmforge.json` last (a folder with `lmforge.json` has its weights).
pub fn save_quantized(
    config: &GptConfig,
    weights: &Weights,
    options: QuantizeOptions,
    tokenizer: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(WEIGHTS_FILE);
    write_atomic(&path, &serialize(weights, &path)?)?;
    if let Some(tokenizer) = tokenizer {
        let bytes = fs::read(tokenizer).map_err(|e| Error::io(tokenizer, e))?;
        write_atomic(&dir.join("tokenizer.json"), &bytes)?;
    }
    let tensors = weights
        .iter()
        .filter_map(|(name, stored)| match stored {
            Stored::Quantized(_, layout) => Some((name.clone(), layout.clone())),
            Stored::F32 { .. } => None,
        })
        .collect();
    let meta = Meta {
        format: 1,
        architecture: "gpt".into(),
        config: config.clone(),
        quantization: Quantization {
            scheme: options.scheme,
            tensors,
            sparsity: options.prune_2_4.then(|| "2:4".to_string()),
        },
    };
    let json = serde_json::to_string_pretty(&meta).unwrap_or_default();
    write_atomic(&dir.join(META_FILE), json.as_bytes())?;
    Ok(())
}

/// Quantizes the GPT checkpoint in `input` (ours or a Hugging Face GPT-2 folder) into
/// `output` and reports sizes and per-tensor errors.
pub fn quantize_checkpoint(
    input: &Path,
    output: &Path,
    options: impl Into<QuantizeOptions>,
) -> Result<QuantizeReport> {
    let options = options.into();
    if input == output {
        return Err(Error::checkpoint(
            output,
            "the output would overwrite the input checkpoint",
        ));
    }
    let model = lmforge_model::load_gpt(input, &Device::flex())?;
    let (weights, tensors) = quantize_gpt(&model, options)?;
    let tokenizer = input.join("tokenizer.json");
    save_quantized(
        model.config(),
        &weights,
        options,
        tokenizer.is_file().then_some(tokenizer.as_path()),
        output,
    )?;
    let weights_file = output.join(WEIGHTS_FILE);
    let bytes_after = fs::metadata(&weights_file)
        .map_err(|e| Error::io(&weights_file, e))?
        .len() as usize;
    let bytes_before = tensors.iter().map(|t| t.bytes_before).sum::<usize>();
    Ok(QuantizeReport {
        scheme: options.scheme,
        sparsity: options.prune_2_4.then(|| "2:4".to_string()),
        input: input.display().to_string(),
        output: output.display().to_string(),
        bytes_before,
        bytes_after,
        compression: bytes_before as f64 / bytes_after.max(1) as f64,
        tensors,
        perplexity: None,
        tokens_per_second: None,
    })
}

/// The config and quantization of `dir` when it is a quantized checkpoint; `None` for any
/// other folder.
pub fn read_meta(dir: &Path) -> Result<Option<(GptConfig, Quantization)>> {
    let path = dir.join(META_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(None);
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    if value.get("quantization").is_none() {
        return Ok(None);
    }
    let meta: Meta =
        serde_json::from_value(value).map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    if meta.format != 1 || meta.architecture != "gpt" {
        return Err(Error::checkpoint(
            &path,
            format!(
                "format {} architecture `{}`: expected a format 1 gpt",
                meta.format, meta.architecture
            ),
        ));
    }
    meta.config.validate()?;
    Ok(Some((meta.config, meta.quantization)))
}

fn tensor_values(
    file: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    path: &Path,
) -> Result<Vec<u8>> {
    let view = file
        .tensor(name)
        .map_err(|_| Error::checkpoint(path, format!("tensor `{name}` is missing")))?;
    if view.dtype() != dtype || view.shape() != shape {
        return Err(Error::checkpoint(
            path,
            format!(
                "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                view.dtype(),
                view.shape()
            ),
        ));
    }
    Ok(view.data().to_vec())
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Reads the weights of the quantized checkpoint `dir`, checking every tensor's dtype and
/// shape against `lmforge.json` and the model's parameters (`expected`: path → shape).
pub fn read_weights(
    dir: &Path,
    quantization: &Quantization,
    expected: &[(String, Vec<usize>)],
) -> Result<Weights> {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let file =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    let scheme = quantization.scheme;
    let mut weights = Weights::new();
    let mut used = 0;
    for (name, shape) in expected {
        if let Some(layout) = quantization.tensors.get(name) {
            if layout.shape.as_slice() != shape.as_slice() {
                return Err(Error::checkpoint(
                    &dir.join(META_FILE),
                    format!(
                        "tensor `{name}` is {:?} there, the model's is {shape:?}",
                        layout.shape
                    ),
                ));
            }
            let (rows, cols) = layout.stored();
            let code_type = if scheme == Scheme::Q4_0 {
                Dtype::U8
            } else {
                Dtype::I8
            };
            let codes = tensor_values(
                &file,
                &format!("{name}.qweight"),
                code_type,
                &[rows, scheme.row_bytes(cols)],
                &path,
            )?;
            let scales_name = format!("{name}.scales");
            let scales = match scheme {
                Scheme::Int8Tensor => le_f32(&tensor_values(
                    &file,
                    &scales_name,
                    Dtype::F32,
                    &[1],
                    &path,
                )?),
                Scheme::Int8 => le_f32(&tensor_values(
                    &file,
                    &scales_name,
                    Dtype::F32,
                    &[rows],
                    &path,
                )?),
                Scheme::Q8_0 | Scheme::Q4_0 => {
                    let blocks = cols.div_ceil(BLOCK);
                    tensor_values(&file, &scales_name, Dtype::F16, &[rows, blocks], &path)?
                        .chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect()
                }
            };
            let q = QMatrix::from_parts(name, scheme, rows, cols, codes, scales)
                .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
            weights.insert(name.clone(), Stored::Quantized(q, layout.clone()));
            used += 2;
        } else {
            let values = le_f32(&tensor_values(&file, name, Dtype::F32, shape, &path)?);
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::checkpoint(
                    &path,
                    format!("tensor `{name}` has {} at {i}", values[i]),
                ));
            }
            weights.insert(
                name.clone(),
                Stored::F32 {
                    shape: shape.clone(),
                    values,
                },
            );
            used += 1;
        }
    }
    if let Some(name) = quantization
        .tensors
        .keys()
        .find(|n| !weights.contains_key(*n))
    {
        return Err(Error::checkpoint(
            &dir.join(META_FILE),
            format!("quantized tensor `{name}` belongs to no parameter of this model"),
        ));
    }
    if file.len() != used {
        let extra = file
            .names()
            .into_iter()
            .find(|n| {
                let base = n.trim_end_matches(".qweight").trim_end_matches(".scales");
                !weights.contains_key(base)
            })
            .map(str::to_string)
            .unwrap_or_default();
        return Err(Error::checkpoint(
            &path,
            format!("tensor `{extra}` belongs to no parameter of this model"),
        ));
    }
    Ok(weights)
}

/// An f32 lmforge GPT checkpoint's config and weights read straight from its safetensors, as
/// the host engines hold them, without building a burn model: building one first draws a
/// random initialisation of every parameter and copies each tensor twice more, seconds for
/// gpt2-small's 500 MB. `None` when `dir` is not our unquantized GPT (a quantized one, a
/// Hugging Face folder); an error when it is one whose weights are not every parameter in f32
/// with its shape (burn's loader then says what it makes of them).
pub fn read_f32(dir: &Path) -> Result<Option<(GptConfig, Weights)>> {
    let path = dir.join(META_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(None);
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    if value.get("quantization").is_some() || value["architecture"] != "gpt" || value["format"] != 1
    {
        return Ok(None);
    }
    let config: GptConfig = serde_json::from_value(value["config"].clone())
        .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    config.validate()?;
    // The quantized reader with no tensor quantized: every parameter read as f32, with the
    // same shape, finiteness and leftover-tensor checks (the scheme is never consulted).
    let none = Quantization {
        scheme: Scheme::Int8,
        tensors: BTreeMap::new(),
        sparsity: None,
    };
    let weights = read_weights(dir, &none, &config.parameter_shapes())?;
    Ok(Some((config, weights)))
}

/// A quantized checkpoint's config and weights (`None` when `dir` is not quantized).
pub fn read_quantized(dir: &Path) -> Result<Option<(GptConfig, Quantization, Weights)>> {
    let Some((config, quantization)) = read_meta(dir)? else {
        return Ok(None);
    };
    // Checked against the config's parameter list without building the model: a quantized
    // model's point is not to hold its f32 weights.
    let weights = read_weights(dir, &quantization, &config.parameter_shapes())?;
    Ok(Some((config, quantization, weights)))
}

/// Any GPT checkpoint — ours, quantized, or a Hugging Face GPT-2 folder — as a burn model on
/// `device`. Quantized weights are dequantized: the model computes exactly what the codes
/// represent, so its perplexity is the quantized model's.
pub fn load_gpt(dir: &Path, device: &Device) -> Result<Gpt> {
    let Some((config, _, weights)) = read_quantized(dir)? else {
        return Ok(lmforge_model::load_gpt(dir, device)?);
    };
    let tensors = weights
        .into_iter()
        .map(|(name, stored)| {
            let (shape, values) = match stored {
                Stored::F32 { shape, values } => (shape, values),
                Stored::Quantized(q, layout) => {
                    let (rows, cols) = layout.stored();
                    let values = q.dequantize();
                    let values = if layout.transposed {
                        transpose(&values, rows, cols)
                    } else {
                        values
                    };
                    (layout.shape.to_vec(), values)
                }
            };
            bridge::from_data(TensorData::new(values, shape), name, None)
        })
        .collect();
    let mut model = config.init(device, 0)?;
    let result = model.apply(tensors, None, None, false);
    let path = dir.join(WEIGHTS_FILE);
    if let Some(error) = result.errors.first() {
        return Err(Error::checkpoint(&path, error.to_string()));
    }
    if let Some((name, _)) = result.missing.first() {
        return Err(Error::checkpoint(
            &path,
            format!("tensor `{name}` is missing"),
        ));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_are_quantized_with_outputs_as_rows() {
        let embedding = quantized_layout("wte.weight", &[300, 64]).unwrap();
        assert_eq!(
            (embedding.stored(), embedding.transposed),
            ((300, 64), false)
        );
        let linear = quantized_layout("blocks.0.attn.qkv.weight", &[64, 192]).unwrap();
        assert_eq!((linear.stored(), linear.transposed), ((192, 64), true));
        assert!(quantized_layout("wpe.weight", &[48, 64]).is_none());
        assert!(quantized_layout("blocks.0.ln_1.weight", &[64]).is_none());
        assert!(quantized_layout("blocks.0.attn.qkv.bias", &[192]).is_none());
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }

    #[test]
    fn two_of_every_four_survive_by_magnitude() {
        let mut w = vec![
            0.1, -0.9, 0.3, 0.2, /* row 2 */ 5.0, 5.0, -5.0, 1.0, /* tail */ 0.5, -0.7,
        ];
        // Two rows of five: groups [0..4] and the short [4..5] in each.
        prune_2_4(&mut w[..8], 4);
        assert_eq!(&w[..8], &[0.0, -0.9, 0.3, 0.0, 5.0, 5.0, 0.0, 0.0]);
        let mut tail = vec![0.5f32, -0.7, 0.1];
        prune_2_4(&mut tail, 3);
        assert_eq!(tail, [0.5, -0.7, 0.0]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

        /// Whatever a model's weights, scheme and pruning, the written folder reads back as the
        /// same codes, scales and f32 tensors.
        #[test]
        fn quantized_folders_read_back_exactly(seed in 0u64..1000, s in 0usize..4, prune: bool) {
            let config = GptConfig { n_layer: 1, d_model: 40, n_head: 2, max_seq_len: 8, ..GptConfig::tiny(37) };
            let model = config.init(&Device::flex(), seed).unwrap();
            let options = QuantizeOptions { scheme: Scheme::ALL[s], prune_2_4: prune };
            let (weights, _) = quantize_gpt(&model, options).unwrap();
            let dir = std::env::temp_dir().join(format!("lmforge-quant-rt-{}-{seed}-{s}", std::process::id()));
            save_quantized(&config, &weights, options, None, &dir).unwrap();
            let (read_config, quantization, read) = read_quantized(&dir).unwrap().unwrap();
            fs::remove_dir_all(&dir).unwrap();
            proptest::prop_assert_eq!(read_config, config);
            proptest::prop_assert_eq!(quantization.scheme, options.scheme);
            proptest::prop_assert_eq!(quantization.sparsity.is_some(), prune);
            proptest::prop_assert_eq!(read, weights);
        }
    }

    #[test]
    fn folders_without_quantization_are_not_read_here() {
        let dir = std::env::temp_dir().join(format!("lmforge-quant-meta-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(read_meta(&dir).unwrap().is_none(), "no lmforge.json");
        fs::write(
            dir.join(META_FILE),
            r#"{"format": 1, "architecture": "gpt", "config": {}}"#,
        )
        .unwrap();
        assert!(read_meta(&dir).unwrap().is_none(), "an f32 checkpoint");
        fs::write(dir.join(META_FILE), "{not json").unwrap();
        assert!(read_meta(&dir).unwrap_err().to_string().contains(META_FILE));
        fs::remove_dir_all(&dir).unwrap();
    }
}
