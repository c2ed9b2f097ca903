//! `WordPiece` behind lmforge's shared [`lmforge_tokenizer::Tokenizer`] interface.

use lmforge_tokenizer::{Kind, Tokenizer};

use crate::WordPiece;

impl Tokenizer for WordPiece {
    fn to_tokenizer_json(&self) -> Option<String> {
        Some(WordPiece::to_tokenizer_json(self))
    }

    fn kind(&self) -> Kind {
        Kind::WordPiece
    }

    /// The text's own tokens: no `[CLS]`/`[SEP]`, truncation or padding (what corpus
    /// conversion wants; Megatron's BERT preprocessing adds them at batching time).
    fn encode(&self, text: &str) -> lmforge_tokenizer::Result<Vec<u32>> {
        Ok(self.encode_ordinary(text))
    }

    fn encode_batch(&self, texts: &[&str]) -> lmforge_tokenizer::Result<Vec<Vec<u32>>> {
        Ok(self.encode_batch_ordinary(texts))
    }

    /// Through the WordPiece decoder, special tokens kept.
    fn decode(&self, ids: &[u32]) -> lmforge_tokenizer::Result<String> {
        WordPiece::decode(self, ids, false)
            .map_err(|e| lmforge_tokenizer::Error::Tokenizer(Box::new(e)))
    }

    fn vocab_size(&self) -> usize {
        WordPiece::vocab_size(self)
    }

    fn token_id(&self, token: &str) -> Option<u32> {
        WordPiece::token_id(self, token)
    }

    fn eod_id(&self) -> Option<u32> {
        WordPiece::token_id(self, "[SEP]")
    }

    fn pad_id(&self) -> Option<u32> {
        self.padding()
            .map(|p| p.pad_id)
            .or_else(|| WordPiece::token_id(self, "[PAD]"))
    }
}
