//! The trait crate stands alone: a toy implementation through `dyn Tokenizer`.

use lmforge_tokenizer::{Kind, Result, Tokenizer};

/// One id per byte.
struct Bytes;

impl Tokenizer for Bytes {
    fn kind(&self) -> Kind {
        Kind::Bpe
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
        String::from_utf8(bytes).map_err(|e| lmforge_tokenizer::Error::Tokenizer(Box::new(e)))
    }
    fn vocab_size(&self) -> usize {
        256
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        (token.len() == 1).then(|| token.as_bytes()[0] as u32)
    }
    fn eod_id(&self) -> Option<u32> {
        None
    }
    fn pad_id(&self) -> Option<u32> {
        None
    }
}

#[test]
fn default_batch_is_encode_of_each() {
    let t: &dyn Tokenizer = &Bytes;
    assert_eq!(t.encode_batch(&["ab", ""]).unwrap(), [vec![97, 98], vec![]]);
    assert!(t.decode(&[0xff]).unwrap_err().to_string().contains("utf-8"));
}
