//! `KvCache`: the keys and values of every token a batch of sequences has seen, so that
//! generation feeds only new tokens.

use kiln_tensor::Tensor;

/// Keys and values per layer for a batch of sequences that may have different lengths.
///
/// Sequences share slots: slot `s` of every sequence was filled by the same forward call.
/// A sequence that had fewer tokens in a call (shorter prompt, left padding) has invalid
/// slots there, masked out of attention and skipped when counting positions, so each
/// sequence computes exactly what it would alone.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer, keys and values `[B, kv_heads, slots, head_dim]`.
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[B, slots]` bool: which slots hold a real token.
    pub(crate) valid: Option<Tensor>,
    /// Real tokens per sequence, which is the next token's position.
    pub(crate) lengths: Vec<i64>,
    /// Whether any slot is padding (otherwise masks can be skipped).
    pub(crate) padded: bool,
}

impl KvCache {
    pub(crate) fn new(layers: usize, batch: usize) -> KvCache {
        KvCache {
            layers: (0..layers).map(|_| None).collect(),
            valid: None,
            lengths: vec![0; batch],
            padded: false,
        }
    }

    /// The number of sequences.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// Real tokens each sequence has seen.
    pub fn lengths(&self) -> &[i64] {
        &self.lengths
    }

    /// Slots filled so far (the longest sequence plus padding).
    pub fn slots(&self) -> i64 {
        self.valid.as_ref().map_or(0, |v| v.size()[1])
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| k.numel() * k.kind().elt_size_in_bytes() + v.numel() * v.kind().elt_size_in_bytes())
            .sum()
    }
}
