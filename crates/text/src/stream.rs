//! `StreamDecoder`: text from tokens as they are generated, in pieces that are always
//! whole UTF-8 characters.

use crate::{Result, Tokenizer};

const REPLACEMENT: char = '\u{FFFD}';

/// Turns a stream of token ids into text pieces. A character whose bytes are split over
/// several tokens is held back until its last byte arrives, so that no piece ever holds a
/// replacement character that the whole text would not.
///
/// It decodes a short window of recent tokens rather than each token alone, because a
/// tokenizer's decoder may depend on neighbours (spaces, byte fallback).
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Tokens before this index are no longer needed as context.
    prefix: usize,
    /// Tokens before this index have been emitted as text.
    read: usize,
    skip_special: bool,
}

impl StreamDecoder {
    /// A decoder that leaves special tokens out of the text when `skip_special`.
    pub fn new(skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            skip_special,
            ..StreamDecoder::default()
        }
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn step(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() <= before.len() || now.ends_with(REPLACEMENT) {
            return Ok(None);
        }
        let Some(piece) = now.get(before.len()..) else {
            return Ok(None);
        };
        let piece = piece.to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(piece))
    }

    /// What is still held back when the stream ends (bytes of an unfinished character,
    /// as U+FFFD), or `None`.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).filter(|p| !p.is_empty()).map(str::to_string))
    }

    /// Every token added so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
