//! Hugging Face checkpoints: GPT-2 and BERT folders (`config.json` + `model.safetensors`)
//! imported into our modules, and our GPT exported in GPT-2's layout.
//!
//! Written by hand rather than with burn's `SafetensorsStore` + `KeyRemapper`: the layouts
//! differ by more than names — BERT's `nn.Linear` weights are `[out, in]` and ours `[in, out]`,
//! GPT-2's `Conv1D` is already `[in, out]`, old BERT files call LayerNorm's parameters
//! `gamma`/`beta`, the prefix (`bert.`, `transformer.`) depends on the head class that saved
//! it — and a user given a wrong file must be told which tensor is missing or misshapen, in
//! which file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::Value;

use crate::bert::{Bert, BertConfig, BertForMaskedLm, EncoderLayer, MlmHead};
use crate::config::{Activation, GptConfig, NormKind, Positions, RopeScaling};
use crate::gpt::{Attention, Block, Gpt};
use crate::layers::{Mlp, Norm};
use crate::{Error, Result, host_values};

/// The tensors of a safetensors file widened to f32, taken out by name as the model is built.
pub struct Tensors {
    file: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Tensors {
    /// Reads every tensor of `path` (F32, F16 or BF16; integer buffers such as BERT's
    /// `position_ids` are skipped).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// [`Tensors::read`] of bytes already in memory; `path` names them in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("not a safetensors file: {e}"),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                StDtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                StDtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                StDtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                _ => continue,
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self {
            file: path.to_path_buf(),
            tensors,
        })
    }

    /// Takes tensor `name` with whatever shape it has (optimizer state keyed by parameter path).
    pub fn remove(&mut self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        self.tensors.remove(name)
    }

    /// The names of the tensors not yet taken, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes tensor `name`, which must have `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some((found, values)) = self.tensors.remove(name) else {
            return Err(Error::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
            });
        };
        if found != shape {
            return Err(Error::TensorShape {
                file: self.file.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(values)
    }

    /// The first of `names` that exists (old and new spellings of one tensor).
    fn take_any(&mut self, names: &[String], shape: &[usize]) -> Result<Vec<f32>> {
        let name = names
            .iter()
            .find(|n| self.contains(n))
            .unwrap_or(&names[0])
            .clone();
        self.take(&name, shape)
    }

    fn vector(&mut self, name: &str, n: usize, device: &Device) -> Result<Param<Tensor<1>>> {
        Ok(Param::from_data(
            TensorData::new(self.take(name, &[n])?, [n]),
            device,
        ))
    }

    fn embedding(
        &mut self,
        name: &str,
        rows: usize,
        d: usize,
        device: &Device,
    ) -> Result<Embedding> {
        let values = self.take(name, &[rows, d])?;
        Ok(Embedding {
            weight: Param::from_data(TensorData::new(values, [rows, d]), device),
        })
    }

    /// A GPT-2 `Conv1D` (`weight` `[in, out]`, as burn's `Linear`) with its bias.
    fn conv1d(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Linear> {
        let weight = self.take(&format!("{prefix}.weight"), &[d_in, d_out])?;
        Ok(Linear {
            weight: Param::from_data(TensorData::new(weight, [d_in, d_out]), device),
            bias: Some(self.vector(&format!("{prefix}.bias"), d_out, device)?),
        })
    }

    /// A PyTorch `nn.Linear` (`weight` `[out, in]`, transposed here) with its bias.
    fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Linear> {
        let mut linear = self.linear_no_bias(prefix, d_in, d_out, device)?;
        linear.bias = Some(self.vector(&format!("{prefix}.bias"), d_out, device)?);
        Ok(linear)
    }

    /// A PyTorch `nn.Linear` without bias (`weight` `[out, in]`, transposed here).
    fn linear_no_bias(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Linear> {
        let weight = self.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        Ok(Linear {
            weight: Param::from_data(
                TensorData::new(transpose(&weight, d_out, d_in), [d_in, d_out]),
                device,
            ),
            bias: None,
        })
    }

    /// An RMSNorm's `weight`.
    fn rms_norm(&mut self, prefix: &str, d: usize, eps: f64, device: &Device) -> Result<Norm> {
        let mut norm = Norm::new(d, true, false, eps, device);
        norm.weight = self.vector(&format!("{prefix}.weight"), d, device)?;
        Ok(norm)
    }

    /// A LayerNorm saved as `weight`/`bias` or, by old BERT code, `gamma`/`beta`.
    fn layer_norm(&mut self, prefix: &str, d: usize, eps: f64, device: &Device) -> Result<Norm> {
        let mut norm = Norm::new(d, false, true, eps, device);
        let weight = self.take_any(
            &[format!("{prefix}.weight"), format!("{prefix}.gamma")],
            &[d],
        )?;
        let bias = self.take_any(&[format!("{prefix}.bias"), format!("{prefix}.beta")], &[d])?;
        norm.weight = Param::from_data(TensorData::new(weight, [d]), device);
        norm.bias = Some(Param::from_data(TensorData::new(bias, [d]), device));
        Ok(norm)
    }
}

/// `[rows, cols]` row-major as `[cols, rows]`: PyTorch's `nn.Linear` `[out, in]` as burn's
/// `[in, out]` (and back).
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// A Hugging Face folder's `config.json`, parsed.
fn read_config(dir: &Path) -> Result<(PathBuf, Value)> {
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        origin: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok((path, value))
}

fn field(config: &Value, path: &Path, key: &'static str) -> Result<usize> {
    config
        .get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| Error::Json {
            origin: path.display().to_string(),
            message: format!("`{key}` is missing or not a non-negative integer"),
        })
}

fn field_or(config: &Value, key: &str, default: f64) -> f64 {
    config.get(key).and_then(Value::as_f64).unwrap_or(default)
}

/// Which architecture a Hugging Face folder holds, from its `config.json`'s `model_type`.
pub fn model_type(dir: &Path) -> Result<String> {
    let (path, config) = read_config(dir)?;
    config
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Json {
            origin: path.display().to_string(),
            message: "`model_type` is missing".into(),
        })
}

/// The weights file of a folder: `model.safetensors`.
fn weights_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("model.safetensors");
    if path.is_file() {
        return Ok(path);
    }
    Err(Error::Checkpoint {
        path,
        message: "missing (only safetensors checkpoints are read; convert a pytorch_model.bin \
                  with transformers' `save_pretrained(safe_serialization=True)`)"
            .into(),
    })
}

/// Our [`GptConfig`] of a GPT-2 `config.json`.
pub fn gpt2_config(dir: &Path) -> Result<GptConfig> {
    let (path, c) = read_config(dir)?;
    let activation = c
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
        return Err(Error::Json {
            origin: path.display().to_string(),
            message: format!(
                "`activation_function` {activation:?}: only GPT-2's tanh GELU is supported"
            ),
        });
    }
    for (key, supported) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("add_cross_attention", false),
    ] {
        if let Some(value) = c
            .get(key)
            .and_then(Value::as_bool)
            .filter(|&v| v != supported)
        {
            return Err(Error::Json {
                origin: path.display().to_string(),
                message: format!("`{key}` = {value} is not supported"),
            });
        }
    }
    let d_model = field(&c, &path, "n_embd")?;
    let config = GptConfig {
        vocab_size: field(&c, &path, "vocab_size")?,
        max_seq_len: field(&c, &path, "n_positions")?,
        n_layer: field(&c, &path, "n_layer")?,
        n_head: field(&c, &path, "n_head")?,
        d_model,
        d_ff: c.get("n_inner").and_then(Value::as_u64).map(|v| v as usize),
        dropout: 0.0,
        positions: Positions::Learned,
        norm: NormKind::LayerNorm,
        norm_eps: field_or(&c, "layer_norm_epsilon", 1e-5),
        activation: Activation::Gelu,
        bias: true,
        tie_embeddings: c
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        rope_theta: 10_000.0,
        n_kv_head: None,
        rope_scaling: None,
        qkv_bias: None,
        sliding_window: None,
        rotary_pct: None,
    };
    config.validate()?;
    Ok(config)
}

/// Imports a GPT-2 folder (`GPT2LMHeadModel` with its `transformer.` prefix, or a bare
/// `GPT2Model`).
pub fn import_gpt2(dir: &Path, device: &Device) -> Result<Gpt> {
    let config = gpt2_config(dir)?;
    let mut t = Tensors::read(&weights_file(dir)?)?;
    let p = if t.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, f, v) = (config.d_model, config.ffn_hidden(), config.vocab_size);
    let eps = config.norm_eps;
    let mut blocks = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let h = format!("{p}h.{i}");
        blocks.push(Block {
            ln_1: t.layer_norm(&format!("{h}.ln_1"), d, eps, device)?,
            attn: Attention {
                qkv: t.conv1d(&format!("{h}.attn.c_attn"), d, 3 * d, device)?,
                proj: t.conv1d(&format!("{h}.attn.c_proj"), d, d, device)?,
                n_head: config.n_head,
                n_kv_head: config.n_head,
            },
            ln_2: t.layer_norm(&format!("{h}.ln_2"), d, eps, device)?,
            mlp: Mlp {
                gate: None,
                up: t.conv1d(&format!("{h}.mlp.c_fc"), d, f, device)?,
                down: t.conv1d(&format!("{h}.mlp.c_proj"), f, d, device)?,
            },
            dropout: dropout(0.0),
        });
    }
    let lm_head = if config.tie_embeddings {
        None
    } else {
        let weight = t.take("lm_head.weight", &[v, d])?;
        Some(Linear {
            weight: Param::from_data(TensorData::new(transpose(&weight, v, d), [d, v]), device),
            bias: None,
        })
    };
    Ok(Gpt {
        wte: t.embedding(&format!("{p}wte.weight"), v, d, device)?,
        wpe: Some(t.embedding(&format!("{p}wpe.weight"), config.max_seq_len, d, device)?),
        blocks,
        ln_f: t.layer_norm(&format!("{p}ln_f"), d, eps, device)?,
        lm_head,
        dropout: dropout(0.0),
        config,
    })
}

/// The tensors of a folder: `model.safetensors`, or every shard that
/// `model.safetensors.index.json` names (sharded checkpoints, as `save_pretrained` writes
/// models past its shard size).
fn read_weights(dir: &Path) -> Result<Tensors> {
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Tensors::read(&weights_file(dir)?);
    }
    let text = fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        origin: index.display().to_string(),
        message: e.to_string(),
    })?;
    let Some(map) = value.get("weight_map").and_then(Value::as_object) else {
        return Err(Error::Json {
            origin: index.display().to_string(),
            message: "`weight_map` is missing or not an object".into(),
        });
    };
    let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
    shards.sort_unstable();
    shards.dedup();
    let mut all = Tensors {
        file: index.clone(),
        tensors: BTreeMap::new(),
    };
    for shard in shards {
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(Error::Json {
                origin: index.display().to_string(),
                message: format!("shard {shard:?} is not a file name in the folder"),
            });
        }
        all.tensors.extend(Tensors::read(&dir.join(shard))?.tensors);
    }
    for name in map.keys() {
        if !all.tensors.contains_key(name) {
            return Err(Error::MissingTensor {
                file: dir.join(map[name].as_str().unwrap_or_default()),
                name: name.clone(),
            });
        }
    }
    Ok(all)
}

/// Our [`GptConfig`] of a Llama-family `config.json` (`llama`, `mistral`, `qwen2`): RMSNorm,
/// SwiGLU, RoPE, no biases (but Qwen2's on q, k and v), grouped-query attention. What our model cannot compute — RoPE scaling, a
/// sliding window shorter than the context, biases, another activation — is refused naming
/// the key, rather than imported into a model that would compute something else.
pub fn llama_config(dir: &Path) -> Result<GptConfig> {
    let (path, c) = read_config(dir)?;
    let origin = || path.display().to_string();
    let refuse = |message: String| Error::Json {
        origin: origin(),
        message,
    };
    let act = c
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return Err(refuse(format!(
            "`hidden_act` {act:?}: only SiLU (SwiGLU) is supported"
        )));
    }
    // Qwen2 has biases on q, k and v (and nowhere else) without saying so in its config.
    let qwen2 = c.get("model_type").and_then(Value::as_str) == Some("qwen2");
    for key in ["attention_bias", "mlp_bias"] {
        if c.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(refuse(format!("`{key}` = true is not supported")));
        }
    }
    if let Some(kind) = c
        .get("layer_types")
        .and_then(Value::as_array)
        .and_then(|kinds| kinds.iter().find(|k| k.as_str() != Some("full_attention")))
    {
        return Err(refuse(format!(
            "`layer_types` has {kind}: only full attention is supported yet"
        )));
    }
    if qwen2 && c.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(refuse(
            "`use_sliding_window` = true is not supported yet".into(),
        ));
    }
    // transformers 5 writes `rope_parameters` ({rope_type, rope_theta, factor, …}); 4 a
    // top-level `rope_theta` and `rope_scaling` ({rope_type or type, factor, …}).
    let rope = ["rope_parameters", "rope_scaling"]
        .iter()
        .find_map(|key| c.get(*key).filter(|v| v.is_object()).map(|v| (*key, v)));
    let rope_theta = rope
        .and_then(|(_, r)| r.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| field_or(&c, "rope_theta", 10_000.0));
    let rope_scaling = match rope {
        None => None,
        Some((key, r)) => rope_scaling(key, r).map_err(refuse)?,
    };
    let max_seq_len = field(&c, &path, "max_position_embeddings")?;
    // Mistral's window applies to every layer; a window as long as the context is none.
    let sliding_window = match c.get("sliding_window").and_then(Value::as_u64) {
        Some(window) if (window as usize) < max_seq_len && !qwen2 => Some(window as usize),
        _ => None,
    };
    let (d_model, n_head) = (
        field(&c, &path, "hidden_size")?,
        field(&c, &path, "num_attention_heads")?,
    );
    if let Some(head_dim) = c.get("head_dim").and_then(Value::as_u64)
        && n_head > 0
        && head_dim as usize * n_head != d_model
    {
        return Err(refuse(format!(
            "`head_dim` = {head_dim}: only hidden_size / num_attention_heads ({}) is supported",
            d_model / n_head
        )));
    }
    let n_kv_head = c
        .get("num_key_value_heads")
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .filter(|&kv| kv != n_head);
    let config = GptConfig {
        vocab_size: field(&c, &path, "vocab_size")?,
        max_seq_len,
        n_layer: field(&c, &path, "num_hidden_layers")?,
        n_head,
        d_model,
        d_ff: Some(field(&c, &path, "intermediate_size")?),
        dropout: 0.0,
        positions: Positions::Rope,
        norm: NormKind::RmsNorm,
        norm_eps: field_or(&c, "rms_norm_eps", 1e-6),
        activation: Activation::Swiglu,
        bias: false,
        tie_embeddings: c
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        rope_theta,
        n_kv_head,
        rope_scaling,
        qkv_bias: qwen2.then_some(true),
        sliding_window,
        rotary_pct: None,
    };
    config.validate()?;
    Ok(config)
}

/// Our [`RopeScaling`] of a `rope_parameters` or `rope_scaling` object (`key`): `default`,
/// `dynamic` (the default within the context), `linear` and `llama3`; any other kind (YaRN,
/// LongRoPE) is refused by name.
fn rope_scaling(key: &str, r: &Value) -> std::result::Result<Option<RopeScaling>, String> {
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |name: &str| {
        r.get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("`{key}.{name}` is missing or not a number"))
    };
    match kind {
        // Dynamic NTK scaling stretches θ only for sequences past `max_position_embeddings`,
        // which is our model's context (`max_seq_len`): within it, the frequencies are the
        // default ones (transformers gives the same logits and greedy text).
        "default" | "dynamic" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: number("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")? as usize,
        })),
        other => Err(format!(
            "`{key}.rope_type` {other:?}: lmforge computes default, dynamic, linear and llama3 RoPE"
        )),
    }
}

/// Imports a `LlamaForCausalLM`, `MistralForCausalLM` or `Qwen2ForCausalLM` folder (`model.` prefix, `lm_head`
/// unless tied): q, k and v become our one `qkv` matrix, queries first.
pub fn import_llama(dir: &Path, device: &Device) -> Result<Gpt> {
    let config = llama_config(dir)?;
    let mut t = read_weights(dir)?;
    let (d, f, v, kv) = (
        config.d_model,
        config.ffn_hidden(),
        config.vocab_size,
        config.kv_width(),
    );
    let eps = config.norm_eps;
    let mut blocks = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let h = format!("model.layers.{i}");
        let a = format!("{h}.self_attn");
        // [out, in] each; stacked by rows they are the [d + 2·kv, d] of one matrix.
        let mut qkv = t.take(&format!("{a}.q_proj.weight"), &[d, d])?;
        qkv.extend(t.take(&format!("{a}.k_proj.weight"), &[kv, d])?);
        qkv.extend(t.take(&format!("{a}.v_proj.weight"), &[kv, d])?);
        let width = d + 2 * kv;
        let qkv_bias = if config.has_qkv_bias() {
            let mut bias = t.take(&format!("{a}.q_proj.bias"), &[d])?;
            bias.extend(t.take(&format!("{a}.k_proj.bias"), &[kv])?);
            bias.extend(t.take(&format!("{a}.v_proj.bias"), &[kv])?);
            Some(Param::from_data(TensorData::new(bias, [width]), device))
        } else {
            None
        };
        blocks.push(Block {
            ln_1: t.rms_norm(&format!("{h}.input_layernorm"), d, eps, device)?,
            attn: Attention {
                qkv: Linear {
                    weight: Param::from_data(
                        TensorData::new(transpose(&qkv, width, d), [d, width]),
                        device,
                    ),
                    bias: qkv_bias,
                },
                proj: t.linear_no_bias(&format!("{a}.o_proj"), d, d, device)?,
                n_head: config.n_head,
                n_kv_head: config.kv_heads(),
            },
            ln_2: t.rms_norm(&format!("{h}.post_attention_layernorm"), d, eps, device)?,
            mlp: Mlp {
                gate: Some(t.linear_no_bias(&format!("{h}.mlp.gate_proj"), d, f, device)?),
                up: t.linear_no_bias(&format!("{h}.mlp.up_proj"), d, f, device)?,
                down: t.linear_no_bias(&format!("{h}.mlp.down_proj"), f, d, device)?,
            },
            dropout: dropout(0.0),
        });
    }
    let lm_head = if config.tie_embeddings {
        None
    } else {
        Some(t.linear_no_bias("lm_head", d, v, device)?)
    };
    Ok(Gpt {
        wte: t.embedding("model.embed_tokens.weight", v, d, device)?,
        wpe: None,
        blocks,
        ln_f: t.rms_norm("model.norm", d, eps, device)?,
        lm_head,
        dropout: dropout(0.0),
        config,
    })
}

fn dropout(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
}

/// Our [`BertConfig`] of a BERT `config.json`.
pub fn bert_config(dir: &Path) -> Result<BertConfig> {
    let (path, c) = read_config(dir)?;
    let act = c
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    if act != "gelu" {
        return Err(Error::Json {
            origin: path.display().to_string(),
            message: format!("`hidden_act` {act:?}: only BERT's exact GELU is supported"),
        });
    }
    let kind = c
        .get("position_embedding_type")
        .and_then(Value::as_str)
        .unwrap_or("absolute");
    if kind != "absolute" {
        return Err(Error::Json {
            origin: path.display().to_string(),
            message: format!(
                "`position_embedding_type` {kind:?}: only absolute positions are supported"
            ),
        });
    }
    let config = BertConfig {
        vocab_size: field(&c, &path, "vocab_size")?,
        max_seq_len: field(&c, &path, "max_position_embeddings")?,
        type_vocab_size: field(&c, &path, "type_vocab_size")?,
        n_layer: field(&c, &path, "num_hidden_layers")?,
        n_head: field(&c, &path, "num_attention_heads")?,
        d_model: field(&c, &path, "hidden_size")?,
        d_ff: field(&c, &path, "intermediate_size")?,
        norm_eps: field_or(&c, "layer_norm_eps", 1e-12),
        dropout: 0.0,
    };
    config.validate()?;
    Ok(config)
}

/// Imports a BERT folder: `BertModel` (as sentence-transformers saves it, no prefix) or a
/// head class (`bert.` prefix), with the masked-LM head when `cls.predictions` is there.
pub fn import_bert(dir: &Path, device: &Device) -> Result<(Bert, Option<BertForMaskedLmParts>)> {
    let config = bert_config(dir)?;
    let mut t = Tensors::read(&weights_file(dir)?)?;
    let p = if t.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let (d, f, eps) = (config.d_model, config.d_ff, config.norm_eps);
    let e = format!("{p}embeddings");
    let mut layers = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let l = format!("{p}encoder.layer.{i}");
        layers.push(EncoderLayer {
            query: t.linear(&format!("{l}.attention.self.query"), d, d, device)?,
            key: t.linear(&format!("{l}.attention.self.key"), d, d, device)?,
            value: t.linear(&format!("{l}.attention.self.value"), d, d, device)?,
            attn_out: t.linear(&format!("{l}.attention.output.dense"), d, d, device)?,
            attn_norm: t.layer_norm(&format!("{l}.attention.output.LayerNorm"), d, eps, device)?,
            ff_in: t.linear(&format!("{l}.intermediate.dense"), d, f, device)?,
            ff_out: t.linear(&format!("{l}.output.dense"), f, d, device)?,
            ff_norm: t.layer_norm(&format!("{l}.output.LayerNorm"), d, eps, device)?,
            dropout: dropout(0.0),
            n_head: config.n_head,
        });
    }
    let pooler = if t.contains(&format!("{p}pooler.dense.weight")) {
        Some(t.linear(&format!("{p}pooler.dense"), d, d, device)?)
    } else {
        None
    };
    let bert = Bert {
        word: t.embedding(
            &format!("{e}.word_embeddings.weight"),
            config.vocab_size,
            d,
            device,
        )?,
        position: t.embedding(
            &format!("{e}.position_embeddings.weight"),
            config.max_seq_len,
            d,
            device,
        )?,
        token_type: t.embedding(
            &format!("{e}.token_type_embeddings.weight"),
            config.type_vocab_size,
            d,
            device,
        )?,
        emb_norm: t.layer_norm(&format!("{e}.LayerNorm"), d, eps, device)?,
        layers,
        pooler,
        dropout: dropout(0.0),
        config: config.clone(),
    };
    let head = if t.contains("cls.predictions.transform.dense.weight") {
        Some(BertForMaskedLmParts(MlmHead {
            dense: t.linear("cls.predictions.transform.dense", d, d, device)?,
            norm: t.layer_norm("cls.predictions.transform.LayerNorm", d, eps, device)?,
            bias: t.vector("cls.predictions.bias", config.vocab_size, device)?,
        }))
    } else {
        None
    };
    Ok((bert, head))
}

/// The masked-LM head found in a BERT checkpoint; [`BertForMaskedLmParts::attach`] puts it on
/// its encoder.
#[derive(Debug)]
pub struct BertForMaskedLmParts(MlmHead);

impl BertForMaskedLmParts {
    /// The encoder with this head.
    pub fn attach(self, bert: Bert) -> BertForMaskedLm {
        BertForMaskedLm { bert, head: self.0 }
    }
}

/// Writes `model` as a GPT-2 folder transformers loads with `GPT2LMHeadModel.from_pretrained`:
/// `config.json` and `model.safetensors` with `transformer.`-prefixed `Conv1D` weights.
/// Only GPT-2's architecture has that layout: learned positions, LayerNorm with biases,
/// GELU, biases, a tied head.
pub fn export_gpt2(model: &Gpt, dir: &Path) -> Result<()> {
    let c = model.config();
    let incompatible = |field: &'static str, what: &str| {
        Err(Error::config(
            field,
            format!("{what}: GPT-2's layout cannot hold it"),
        ))
    };
    if c.kv_heads() != c.n_head {
        return incompatible("n_kv_head", "grouped-query attention");
    }
    if c.positions != Positions::Learned {
        return incompatible("positions", "not learned");
    }
    if c.norm != NormKind::LayerNorm || !c.bias {
        return incompatible("norm", "not LayerNorm with bias");
    }
    if c.activation != Activation::Gelu {
        return incompatible("activation", "not GELU");
    }
    if !c.tie_embeddings {
        return incompatible("tie_embeddings", "an untied head");
    }
    let matrix = |name: String, t: Tensor<2>| (name, t.dims().to_vec(), t);
    let vector = |name: String, p: &Param<Tensor<1>>| {
        let t = p.val();
        (name, t.dims().to_vec(), t.unsqueeze::<2>())
    };
    let mut named = vec![matrix(
        "transformer.wte.weight".into(),
        model.wte.weight.val(),
    )];
    if let Some(wpe) = &model.wpe {
        named.push(matrix("transformer.wpe.weight".into(), wpe.weight.val()));
    }
    let norms = |name: String, n: &Norm| {
        let mut out = vec![vector(format!("{name}.weight"), &n.weight)];
        out.extend(n.bias.as_ref().map(|b| vector(format!("{name}.bias"), b)));
        out
    };
    for (i, block) in model.blocks.iter().enumerate() {
        let h = format!("transformer.h.{i}");
        named.extend(norms(format!("{h}.ln_1"), &block.ln_1));
        named.extend(norms(format!("{h}.ln_2"), &block.ln_2));
        for (name, linear) in [
            ("attn.c_attn", &block.attn.qkv),
            ("attn.c_proj", &block.attn.proj),
            ("mlp.c_fc", &block.mlp.up),
            ("mlp.c_proj", &block.mlp.down),
        ] {
            named.push(matrix(format!("{h}.{name}.weight"), linear.weight.val()));
            named.extend(
                linear
                    .bias
                    .as_ref()
                    .map(|b| vector(format!("{h}.{name}.bias"), b)),
            );
        }
    }
    named.extend(norms("transformer.ln_f".into(), &model.ln_f));
    let tensors = named
        .into_iter()
        .map(|(name, shape, t)| (name, shape, host_values(t)))
        .collect::<Vec<_>>();
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let config = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.max_seq_len,
        "n_ctx": c.max_seq_len,
        "n_embd": c.d_model,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": c.d_ff,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
    });
    crate::checkpoint::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config)
            .unwrap_or_default()
            .as_bytes(),
    )
}

/// Writes `model` as a Hugging Face folder of the Llama family that transformers loads with
/// `AutoModelForCausalLM.from_pretrained` (and vLLM, TGI and llama.cpp's converter read):
/// `LlamaForCausalLM`, or `MistralForCausalLM` for a sliding window, or `Qwen2ForCausalLM` for
/// biases on q, k and v; our `qkv` cut back into `q_proj`, `k_proj`, `v_proj`, every
/// `nn.Linear` as `[out, in]`. Only a model of that architecture maps: RoPE, RMSNorm, SwiGLU,
/// no other biases.
pub fn export_llama(model: &Gpt, dir: &Path) -> Result<()> {
    let c = model.config();
    let incompatible = |field: &'static str, what: &str| {
        Err(Error::config(
            field,
            format!("{what}: Llama's layout cannot hold it"),
        ))
    };
    if c.positions != Positions::Rope {
        return incompatible("positions", "not RoPE");
    }
    if c.norm != NormKind::RmsNorm {
        return incompatible("norm", "not RMSNorm");
    }
    if c.activation != Activation::Swiglu {
        return incompatible("activation", "not SwiGLU");
    }
    if c.bias {
        return incompatible("bias", "biases");
    }
    if c.rotary_pct.is_some_and(|p| p < 1.0) {
        return incompatible("rotary_pct", "partial rotary");
    }
    // The family member that holds the switches: Qwen2 for biases on q, k and v, Mistral for
    // a sliding window.
    let (class, model_type) = match (c.has_qkv_bias(), c.sliding_window) {
        (true, Some(_)) => {
            return incompatible("sliding_window", "a sliding window with q/k/v biases");
        }
        (true, None) => ("Qwen2ForCausalLM", "qwen2"),
        (false, Some(_)) => ("MistralForCausalLM", "mistral"),
        (false, None) => ("LlamaForCausalLM", "llama"),
    };
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (d, kv) = (c.d_model, c.kv_width());
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    // burn's `[in, out]` as PyTorch's `[out, in]`.
    let linear = |name: String, l: &Linear| {
        let [d_in, d_out] = l.weight.val().dims();
        let values = transpose(&host_values(l.weight.val()), d_in, d_out);
        (name, vec![d_out, d_in], values)
    };
    let vector = |name: String, p: &Param<Tensor<1>>| {
        let t = p.val();
        (name, t.dims().to_vec(), host_values(t.unsqueeze::<2>()))
    };
    let embedding = model.wte.weight.val();
    let shape = embedding.dims().to_vec();
    tensors.push((
        "model.embed_tokens.weight".into(),
        shape,
        host_values(embedding),
    ));
    for (i, block) in model.blocks.iter().enumerate() {
        let h = format!("model.layers.{i}");
        tensors.push(vector(
            format!("{h}.input_layernorm.weight"),
            &block.ln_1.weight,
        ));
        tensors.push(vector(
            format!("{h}.post_attention_layernorm.weight"),
            &block.ln_2.weight,
        ));
        // `[d + 2·kv, d]` as PyTorch holds it: the rows of q, then k, then v.
        let (_, _, qkv) = linear(String::new(), &block.attn.qkv);
        let rows = |from: usize, n: usize| qkv[from * d..(from + n) * d].to_vec();
        let a = format!("{h}.self_attn");
        tensors.push((format!("{a}.q_proj.weight"), vec![d, d], rows(0, d)));
        tensors.push((format!("{a}.k_proj.weight"), vec![kv, d], rows(d, kv)));
        tensors.push((format!("{a}.v_proj.weight"), vec![kv, d], rows(d + kv, kv)));
        if let Some(bias) = &block.attn.qkv.bias {
            let bias = host_values(bias.val().unsqueeze::<2>());
            tensors.push((format!("{a}.q_proj.bias"), vec![d], bias[..d].to_vec()));
            tensors.push((
                format!("{a}.k_proj.bias"),
                vec![kv],
                bias[d..d + kv].to_vec(),
            ));
            tensors.push((
                format!("{a}.v_proj.bias"),
                vec![kv],
                bias[d + kv..].to_vec(),
            ));
        }
        tensors.push(linear(format!("{a}.o_proj.weight"), &block.attn.proj));
        let gate = block.mlp.gate.as_ref().ok_or_else(|| {
            Error::config("activation", "a SwiGLU block without its gate".to_string())
        })?;
        tensors.push(linear(format!("{h}.mlp.gate_proj.weight"), gate));
        tensors.push(linear(format!("{h}.mlp.up_proj.weight"), &block.mlp.up));
        tensors.push(linear(format!("{h}.mlp.down_proj.weight"), &block.mlp.down));
    }
    tensors.push(vector("model.norm.weight".into(), &model.ln_f.weight));
    if let Some(head) = &model.lm_head {
        tensors.push(linear("lm_head.weight".into(), head));
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let rope_scaling = match c.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            serde_json::json!({"rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => serde_json::json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    };
    // transformers 4's keys (`rope_theta`, `rope_scaling`), which 5 also reads.
    let mut config = serde_json::json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": d,
        "intermediate_size": c.ffn_hidden(),
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.kv_heads(),
        "head_dim": c.head_dim(),
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": rope_scaling,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": "float32",
    });
    match model_type {
        "mistral" => config["sliding_window"] = c.sliding_window.into(),
        "qwen2" => {
            config["use_sliding_window"] = false.into();
            config["sliding_window"] = Value::Null;
        }
        _ => {}
    }
    crate::checkpoint::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config)
            .unwrap_or_default()
            .as_bytes(),
    )
}

/// Writes f32 tensors as one safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    // The values are viewed as their bytes, not copied (safetensors is little-endian, as is
    // every target lmforge builds for), and streamed to the file: a checkpoint costs no more
    // memory than the tensors themselves (it cost three times their size, which made writing
    // the optimizer the peak of a training run).
    const _: () = assert!(cfg!(target_endian = "little"));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            safetensors::tensor::TensorView::new(
                StDtype::F32,
                shape.clone(),
                bytemuck::cast_slice(values),
            )
            .map(|view| (name.clone(), view))
            .map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("tensor {name}: {e}"),
            })
        })
        .collect::<Result<_>>()?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    crate::checkpoint::write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
}
