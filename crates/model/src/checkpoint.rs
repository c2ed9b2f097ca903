//! Our checkpoints — a folder with `lmforge.json` (architecture and config) and
//! `model.safetensors` (weights under burn's module paths, written by burn's store) — and the
//! loaders that also take a Hugging Face folder in their place.
//!
//! ```text
//! run/checkpoint/
//!   lmforge.json        {"format": 1, "architecture": "gpt", "config": {…GptConfig…}}
//!   model.safetensors   blocks.0.attn.qkv.weight, … (f32)
//!   tokenizer.json      optional: copied beside it by the caller
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::bert::{Bert, BertConfig, BertForMaskedLm};
use crate::config::GptConfig;
use crate::gpt::Gpt;
use crate::{Error, Result, hf};

/// The file that makes a folder one of our checkpoints.
pub const META_FILE: &str = "lmforge.json";
/// The weights beside it.
pub const WEIGHTS_FILE: &str = "model.safetensors";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: u32,
    architecture: String,
    config: serde_json::Value,
    /// Written by lmforge-quant: the scheme and the quantized tensors' layout. Such a folder's
    /// weights are integer codes that only lmforge-quant reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quantization: Option<serde_json::Value>,
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a reader never sees
/// half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| fs::File::create(tmp)?.write_all(bytes))
}

/// Like [`write_atomic`], for a writer that creates the file itself: `write` makes the
/// temporary sibling it is given, which is synced and renamed into place.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = write(&tmp)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    remove_stale_siblings(path);
    Ok(())
}

/// Removes the temporary siblings of `path` that killed writers left (another pid's name): a
/// file written again after a `kill -9` leaves no stray file beside it. One process writes a
/// file at a time, so none of them is still being written.
fn remove_stale_siblings(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Saves any module as our checkpoint: `model.safetensors` (burn's parameter paths) and
/// `lmforge.json` naming `architecture` with `config`, the metadata last. Heads and models of
/// other crates (a fine-tuned classifier) are saved through this.
pub fn save_module<M: Module>(
    model: &M,
    architecture: &str,
    config: serde_json::Value,
    dir: &Path,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights = dir.join(WEIGHTS_FILE);
    let tmp = temp_sibling(&weights);
    let mut store = SafetensorsStore::from_file(&tmp).metadata("architecture", architecture);
    model.save_into(&mut store).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::Checkpoint {
            path: weights.clone(),
            message: e.to_string(),
        }
    })?;
    sort_header(&tmp).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(&weights, e)
    })?;
    fs::rename(&tmp, &weights).map_err(|e| Error::io(&weights, e))?;
    remove_stale_siblings(&weights);
    // The metadata goes last: a folder with `lmforge.json` has its weights.
    let meta = Meta {
        format: 1,
        architecture: architecture.to_string(),
        config,
        quantization: None,
    };
    let json = serde_json::to_string_pretty(&meta).unwrap_or_default();
    write_atomic(&dir.join(META_FILE), json.as_bytes())
}

/// Saves a GPT as our checkpoint in `dir` (created if needed; its files replaced atomically).
pub fn save_gpt(model: &Gpt, dir: &Path) -> Result<()> {
    let config = serde_json::to_value(model.config()).unwrap_or_default();
    save_module(model, "gpt", config, dir)
}

/// Saves a BERT encoder as our checkpoint in `dir`.
pub fn save_bert(model: &Bert, dir: &Path) -> Result<()> {
    let config = serde_json::to_value(model.config()).unwrap_or_default();
    save_module(model, "bert", config, dir)
}

/// Saves BERT with its masked-LM head (architecture `bert-mlm`): what MLM pretraining
/// checkpoints, so that it can resume with the head; [`load_bert`] reads the encoder out of it.
pub fn save_bert_mlm(model: &BertForMaskedLm, dir: &Path) -> Result<()> {
    let config = serde_json::to_value(model.bert.config()).unwrap_or_default();
    save_module(model, "bert-mlm", config, dir)
}

/// BERT with its masked-LM head from a `bert-mlm` checkpoint.
pub fn load_bert_mlm(dir: &Path, device: &Device) -> Result<BertForMaskedLm> {
    let config: BertConfig = read_config(dir, "bert-mlm")?;
    config.validate()?;
    load_weights(BertForMaskedLm::new(config.init(device, 0)?, 0), dir)
}

/// What a folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Ours, with the architecture named in `lmforge.json`.
    Lmforge(String),
    /// A Hugging Face folder, with its `model_type`.
    HuggingFace(String),
}

/// Tells our checkpoints from Hugging Face folders.
pub fn format(dir: &Path) -> Result<Format> {
    let meta = dir.join(META_FILE);
    if meta.is_file() {
        return Ok(Format::Lmforge(read_meta(dir)?.architecture));
    }
    if dir.join("config.json").is_file() {
        return Ok(Format::HuggingFace(hf::model_type(dir)?));
    }
    Err(Error::Checkpoint {
        path: dir.to_path_buf(),
        message: format!(
            "neither {META_FILE} (an lmforge checkpoint) nor config.json (a Hugging Face folder)"
        ),
    })
}

fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::Json {
        origin: path.display().to_string(),
        message: e.to_string(),
    })?;
    if meta.format != 1 {
        return Err(Error::Json {
            origin: path.display().to_string(),
            message: format!("`format` {} is newer than this lmforge (1)", meta.format),
        });
    }
    Ok(meta)
}

/// The shape of the GPT in `dir` without reading its weights: ours (quantized or not) or a
/// Hugging Face GPT-2 folder. What a loader checks against the memory it has.
pub fn gpt_config(dir: &Path) -> Result<GptConfig> {
    let config: GptConfig = match format(dir)? {
        Format::Lmforge(_) => meta_config(dir, read_meta(dir)?, "gpt")?,
        Format::HuggingFace(kind) if kind == "gpt2" => hf::gpt2_config(dir)?,
        Format::HuggingFace(kind) if matches!(kind.as_str(), "llama" | "mistral" | "qwen2") => {
            hf::llama_config(dir)?
        }
        Format::HuggingFace(kind) => {
            return Err(Error::Checkpoint {
                path: dir.join("config.json"),
                message: format!("model_type `{kind}` is not a GPT this crate reads (gpt2)"),
            });
        }
    };
    config.validate()?;
    Ok(config)
}

/// The `config` of our checkpoint in `dir`, which must be of `architecture`.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path, architecture: &str) -> Result<T> {
    meta_config(dir, read_meta(dir)?, architecture)
}

fn meta_config<T: serde::de::DeserializeOwned>(dir: &Path, meta: Meta, want: &str) -> Result<T> {
    let path = dir.join(META_FILE);
    if meta.architecture != want {
        return Err(Error::Checkpoint {
            path,
            message: format!("holds a {} model, not a {want}", meta.architecture),
        });
    }
    serde_json::from_value(meta.config).map_err(|e| Error::Json {
        origin: format!("{}: `config`", path.display()),
        message: e.to_string(),
    })
}

/// Rewrites a safetensors header in place with its keys sorted. burn's store keeps the
/// `__metadata__` entries in a `HashMap`, so two saves of the same weights differed in the
/// order of four keys; sorted, the same model is the same bytes (reproducible runs compare
/// checkpoints by hash). The header keeps its length: same keys, same values, compact JSON,
/// padded with the spaces the format allows.
fn sort_header(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut file = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let n = usize::try_from(u64::from_le_bytes(len)).map_err(|_| invalid("header length"))?;
    if n > 100 << 20 {
        return Err(invalid("a header over 100 MB"));
    }
    let mut header = vec![0u8; n];
    file.read_exact(&mut header)?;
    // serde_json's map is a BTreeMap (no `preserve_order`): re-serialising sorts every level.
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| invalid("header is not JSON"))?;
    let mut sorted = serde_json::to_vec(&value).map_err(|_| invalid("header"))?;
    if sorted.len() > n {
        return Err(invalid("the sorted header is longer"));
    }
    sorted.resize(n, b' ');
    file.seek(SeekFrom::Start(8))?;
    file.write_all(&sorted)?;
    file.sync_all()
}

/// Applies the weights file of `dir` to `model`, every tensor present and of its shape; the
/// loader of [`save_module`]'s folders once the caller has built the module from the config.
pub fn load_weights<M: Module + ModuleSnapshot>(mut model: M, dir: &Path) -> Result<M> {
    let path = dir.join(WEIGHTS_FILE);
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path,
            message: "missing".into(),
        });
    }
    let mut store = SafetensorsStore::from_file(&path)
        .allow_partial(true)
        .validate(false);
    let result = model.load_from(&mut store).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if let Some(error) = result.errors.first() {
        return Err(Error::Checkpoint {
            path,
            message: error.to_string(),
        });
    }
    if let Some((name, _)) = result.missing.first() {
        return Err(Error::MissingTensor {
            file: path,
            name: name.clone(),
        });
    }
    if let Some(name) = result.unused.first() {
        return Err(Error::Checkpoint {
            path,
            message: format!("tensor `{name}` belongs to no parameter of this model"),
        });
    }
    Ok(model)
}

/// A GPT from our checkpoint or a Hugging Face GPT-2 folder.
pub fn load_gpt(dir: &Path, device: &Device) -> Result<Gpt> {
    match format(dir)? {
        Format::Lmforge(_) => {
            let meta = read_meta(dir)?;
            if let Some(quantization) = &meta.quantization {
                return Err(Error::Checkpoint {
                    path: dir.join(META_FILE),
                    message: format!(
                        "holds weights quantized with {}: lmforge_quant::load_gpt reads it",
                        quantization
                            .get("scheme")
                            .unwrap_or(&serde_json::Value::Null)
                    ),
                });
            }
            let config: GptConfig = meta_config(dir, meta, "gpt")?;
            config.validate()?;
            load_weights(config.init(device, 0)?, dir)
        }
        Format::HuggingFace(kind) if kind == "gpt2" => hf::import_gpt2(dir, device),
        Format::HuggingFace(kind) if matches!(kind.as_str(), "llama" | "mistral" | "qwen2") => {
            hf::import_llama(dir, device)
        }
        Format::HuggingFace(kind) => Err(Error::Checkpoint {
            path: dir.join("config.json"),
            message: format!("model_type `{kind}` is not a GPT this crate reads (gpt2)"),
        }),
    }
}

/// A BERT encoder from our checkpoint or a Hugging Face BERT folder.
pub fn load_bert(dir: &Path, device: &Device) -> Result<Bert> {
    match format(dir)? {
        Format::Lmforge(kind) if kind == "bert-mlm" => Ok(load_bert_mlm(dir, device)?.bert),
        Format::Lmforge(_) => {
            let config: BertConfig = meta_config(dir, read_meta(dir)?, "bert")?;
            config.validate()?;
            load_weights(config.init(device, 0)?, dir)
        }
        Format::HuggingFace(kind) if kind == "bert" => Ok(hf::import_bert(dir, device)?.0),
        Format::HuggingFace(kind) => Err(Error::Checkpoint {
            path: dir.join("config.json"),
            message: format!("model_type `{kind}` is not a BERT this crate reads (bert)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_removes_what_a_killed_writer_left_beside_its_file() {
        let dir = std::env::temp_dir().join(format!("lmforge-atomic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // A killed writer of `a.json` (pid 1), and another file's temporary, which stays.
        fs::write(dir.join(".a.json.tmp-1"), b"half").unwrap();
        fs::write(dir.join(".b.json.tmp-1"), b"other").unwrap();
        write_atomic(&dir.join("a.json"), b"whole").unwrap();
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".b.json.tmp-1", "a.json"]);
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), b"whole");
        fs::remove_dir_all(&dir).unwrap();
    }
}
