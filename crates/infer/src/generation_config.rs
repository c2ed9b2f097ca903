//! What a Hugging Face model folder's `generation_config.json` tells a decoder: the ids that end
//! a sequence (`eos_token_id`: Llama 3's `<|eot_id|>` and `<|end_of_text|>`, Mistral's `</s>`),
//! and the sampling its makers chose (`do_sample`, `temperature`, `top_p`, `top_k`). `lmforge
//! model import` and `export-*` carry the file along; `generate` and `serve` stop on these ids
//! (on the tokenizer's end-of-document token where a folder has none), and `generate` samples
//! as the file says unless told otherwise.

use std::path::Path;

use serde_json::Value;

use crate::Result;

/// The file's name in a model folder.
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// The end-of-sequence ids of `dir`'s `generation_config.json` (one id or a list); empty where
/// the folder has no such file or names none. A file that is not JSON, or ids that are not
/// non-negative integers, are errors naming the file.
pub fn eos_ids(dir: &Path) -> Result<Vec<u32>> {
    let Some(value) = read(dir)? else {
        return Ok(Vec::new());
    };
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(dir, format!("`eos_token_id` has {v}, not a token id")))
    };
    match value.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids.iter().map(id).collect(),
        Some(one) => Ok(vec![id(one)?]),
    }
}

/// What ends a sequence of `dir`'s model: its [`eos_ids`], else the tokenizer's
/// end-of-document token `eod`.
pub fn stop_ids(dir: &Path, eod: Option<u32>) -> Result<Vec<u32>> {
    let eos = eos_ids(dir)?;
    Ok(if eos.is_empty() {
        eod.into_iter().collect()
    } else {
        eos
    })
}

/// The file's JSON; `None` without the file.
fn read(dir: &Path) -> Result<Option<Value>> {
    let Ok(text) = std::fs::read_to_string(dir.join(GENERATION_CONFIG)) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| bad(dir, e.to_string()))
}

/// An error naming `dir`'s file.
fn bad(dir: &Path, message: String) -> crate::Error {
    crate::Error::Model(lmforge_model::Error::Json {
        origin: dir.join(GENERATION_CONFIG).display().to_string(),
        message,
    })
}

/// Sampling as a `generation_config.json` asks for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// `temperature` (transformers' default 1).
    pub temperature: f64,
    /// `top_p` (default 1: off).
    pub top_p: f64,
    /// `top_k` (transformers' default 50; 0: off).
    pub top_k: usize,
}

/// The sampling `dir`'s `generation_config.json` asks for, where it sets `do_sample`; `None`
/// where it does not (greedy) or there is no file. Values transformers would refuse are
/// errors naming the file and the field.
pub fn sampling_defaults(dir: &Path) -> Result<Option<SamplingDefaults>> {
    let Some(value) = read(dir)? else {
        return Ok(None);
    };
    if value.get("do_sample").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    let number = |key: &str, default: f64, ok: fn(f64) -> bool| match value.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|&x| ok(x))
            .ok_or_else(|| bad(dir, format!("`{key}` has {v}"))),
    };
    Ok(Some(SamplingDefaults {
        temperature: number("temperature", 1.0, |t| t > 0.0 && t.is_finite())?,
        top_p: number("top_p", 1.0, |p| p > 0.0 && p <= 1.0)?,
        top_k: number("top_k", 50.0, |k| k >= 0.0 && k.fract() == 0.0)? as usize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_a_list_none_and_bad_values() {
        let dir = std::env::temp_dir().join(format!("lmforge-genconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(eos_ids(&dir).unwrap(), Vec::<u32>::new());
        let write = |text: &str| std::fs::write(dir.join(GENERATION_CONFIG), text).unwrap();
        write(r#"{"bos_token_id": 1, "eos_token_id": 2}"#);
        assert_eq!(eos_ids(&dir).unwrap(), [2]);
        write(r#"{"eos_token_id": [128001, 128008, 128009]}"#);
        assert_eq!(eos_ids(&dir).unwrap(), [128001, 128008, 128009]);
        write(r#"{"eos_token_id": null}"#);
        assert!(eos_ids(&dir).unwrap().is_empty());
        write(r#"{"eos_token_id": -1}"#);
        let err = eos_ids(&dir).unwrap_err().to_string();
        assert!(
            err.contains(GENERATION_CONFIG) && err.contains("eos_token_id"),
            "{err}"
        );
        write("not json");
        assert!(
            eos_ids(&dir)
                .unwrap_err()
                .to_string()
                .contains(GENERATION_CONFIG)
        );
        write(r#"{"eos_token_id": 2}"#);
        assert_eq!(sampling_defaults(&dir).unwrap(), None);
        write(r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.9}"#);
        let want = SamplingDefaults {
            temperature: 0.6,
            top_p: 0.9,
            top_k: 50,
        };
        assert_eq!(sampling_defaults(&dir).unwrap(), Some(want));
        write(r#"{"do_sample": true, "temperature": -1}"#);
        let err = sampling_defaults(&dir).unwrap_err().to_string();
        assert!(err.contains("temperature"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
