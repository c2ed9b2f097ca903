//! What a Hugging Face model folder's `generation_config.json` tells a decoder: the ids that end
//! a sequence (`eos_token_id`: Llama 3's `<|eot_id|>` and `<|end_of_text|>`, Mistral's `</s>`).
//! `lmforge model import` and `export-*` carry the file along; `generate` and `serve` stop on
//! these ids, and on the tokenizer's end-of-document token where a folder has none.

use std::path::Path;

use serde_json::Value;

use crate::Result;

/// The file's name in a model folder.
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// The end-of-sequence ids of `dir`'s `generation_config.json` (one id or a list); empty where
/// the folder has no such file or names none. A file that is not JSON, or ids that are not
/// non-negative integers, are errors naming the file.
pub fn eos_ids(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join(GENERATION_CONFIG);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let bad = |message: String| {
        crate::Error::Model(lmforge_model::Error::Json {
            origin: path.display().to_string(),
            message,
        })
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(format!("`eos_token_id` has {v}, not a token id")))
    };
    match value.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids.iter().map(id).collect(),
        Some(one) => Ok(vec![id(one)?]),
    }
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
