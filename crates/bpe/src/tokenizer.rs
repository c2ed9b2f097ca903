//! `Bpe` behind lmforge's shared [`lmforge_tokenizer::Tokenizer`] interface.

use lmforge_tokenizer::{Kind, Tokenizer};

use crate::{Allowed, Bpe};

fn boxed(e: crate::Error) -> lmforge_tokenizer::Error {
    lmforge_tokenizer::Error::Tokenizer(Box::new(e))
}

impl Tokenizer for Bpe {
    fn to_tokenizer_json(&self) -> Option<String> {
        Some(Bpe::to_tokenizer_json(self))
    }

    fn kind(&self) -> Kind {
        Kind::Bpe
    }

    /// Special-token text becomes the special token (Hugging Face's behaviour; tiktoken's
    /// `allowed_special="all"`).
    fn encode(&self, text: &str) -> lmforge_tokenizer::Result<Vec<u32>> {
        Bpe::encode(self, text, Allowed::All).map_err(boxed)
    }

    fn encode_batch(&self, texts: &[&str]) -> lmforge_tokenizer::Result<Vec<Vec<u32>>> {
        Bpe::encode_batch(self, texts, Allowed::All).map_err(boxed)
    }

    /// Lossy where ids split a character, as tiktoken's `decode`.
    fn decode(&self, ids: &[u32]) -> lmforge_tokenizer::Result<String> {
        Bpe::decode(self, ids).map_err(boxed)
    }

    fn vocab_size(&self) -> usize {
        Bpe::vocab_size(self)
    }

    fn token_id(&self, token: &str) -> Option<u32> {
        self.special_id(token)
            .or_else(|| Bpe::token_id(self, token.as_bytes()))
    }

    fn eod_id(&self) -> Option<u32> {
        self.special_id("<|endoftext|>")
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        Bpe::decode_bytes(self, &[id]).ok()
    }

    fn pad_id(&self) -> Option<u32> {
        ["<|pad|>", "<pad>", "[PAD]", "<|padding|>"]
            .iter()
            .find_map(|t| self.special_id(t))
    }
}
