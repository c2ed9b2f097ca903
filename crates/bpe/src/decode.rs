//! Streaming decoding: text out as ids come in, never a broken character.
//!
//! A byte-level token can end inside a multi-byte UTF-8 character (an emoji is often two or
//! three tokens). Decoding each id alone and concatenating gives U+FFFD garbage, the bug behind
//! Hugging Face `tokenizers` #1141 and many streaming servers; this decoder holds back an
//! incomplete sequence until the bytes that finish it arrive.

use crate::{Bpe, Error, Result};

/// Decodes one id at a time; see [`Bpe::decode_stream`].
#[derive(Debug)]
pub struct DecodeStream<'a> {
    bpe: &'a Bpe,
    pending: Vec<u8>,
    position: usize,
}

impl<'a> DecodeStream<'a> {
    pub(crate) fn new(bpe: &'a Bpe) -> Self {
        Self {
            bpe,
            pending: Vec::new(),
            position: 0,
        }
    }

    /// Adds one id; returns the text it completes (possibly empty). Bytes that can never
    /// become valid UTF-8 are emitted as U+FFFD at once, so the stream never stalls.
    pub fn step(&mut self, id: u32) -> Result<String> {
        let bytes = self.bpe.token_bytes(id).ok_or(Error::UnknownId {
            id,
            position: self.position,
        })?;
        self.position += 1;
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Invalid for good: replace it and go on.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[len..];
                        }
                        // Incomplete: wait for the next token.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        Ok(out)
    }

    /// Ends the stream: whatever is held back (an unfinished character) as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}
