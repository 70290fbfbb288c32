//! Packing documents into one token stream, cut into fixed-length training sequences.

use crate::{Error, Result, SpecialTokens, TokenizedCorpus};

/// Documents laid end to end, each as `[BOS] tokens [EOS]` (the special tokens the
/// tokenizer has), read as sequences of `seq_len + 1` tokens that overlap by one: a
/// sequence's inputs are its first `seq_len` tokens, its targets the last `seq_len`.
/// Tokens past the last whole sequence are left out (fewer than `seq_len`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    tokens: Vec<u32>,
    seq_len: usize,
}

impl Packed {
    /// Packs the documents `docs` of `corpus`, in that order.
    pub fn new(corpus: &TokenizedCorpus, docs: &[usize], special: SpecialTokens, seq_len: usize) -> Result<Packed> {
        if seq_len == 0 {
            return Err(Error::Invalid("the sequence length must be at least 1".into()));
        }
        let mut tokens = Vec::new();
        for &d in docs {
            tokens.extend(special.bos);
            tokens.extend_from_slice(corpus.document(d));
            tokens.extend(special.eos);
        }
        if tokens.len() < seq_len + 1 {
            return Err(Error::Invalid(format!(
                "{} documents make {} tokens, fewer than one sequence of {} needs; use more text or a shorter context",
                docs.len(),
                tokens.len(),
                seq_len + 1
            )));
        }
        Ok(Packed { tokens, seq_len })
    }

    /// The number of whole sequences.
    pub fn sequences(&self) -> usize {
        (self.tokens.len() - 1) / self.seq_len
    }

    /// Sequence `i`: `seq_len + 1` tokens (empty past the end).
    pub fn sequence(&self, i: usize) -> &[u32] {
        let start = i * self.seq_len;
        self.tokens.get(start..start + self.seq_len + 1).unwrap_or(&[])
    }

    /// The length of a sequence's inputs.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The whole stream.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}
