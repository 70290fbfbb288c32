//! `KvCache`: the keys and values of every token a batch of sequences has seen, so that
//! generation feeds only new tokens.

use crate::{Error, Result};
use kiln_tensor::Tensor;

/// Keys and values per layer for a batch of sequences that may have different lengths,
/// in one of two layouts.
///
/// **Shared slots** ([`Decoder::new_cache`](super::Decoder::new_cache)): slot `s` of every
/// sequence was filled by the same forward call, and the cache grows with each call. A
/// sequence that had fewer tokens in a call (shorter prompt, left padding) has invalid
/// slots there, masked out of attention and skipped when counting positions, so each
/// sequence computes exactly what it would alone.
///
/// **Rows** ([`Decoder::new_row_cache`](super::Decoder::new_row_cache)): a fixed number of
/// rows, each with room for `capacity` tokens allocated up front, each row one sequence
/// with its own length; slot `s` of a row holds its token at position `s`. Keys and values
/// are written in place, and sequences join and leave between calls
/// ([`clear_row`](Self::clear_row), [`move_row`](Self::move_row)): what continuous
/// batching needs.
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
    /// The row layout's room per row; `None` for shared slots.
    pub(crate) capacity: Option<i64>,
}

impl KvCache {
    pub(crate) fn new(layers: usize, batch: usize) -> KvCache {
        KvCache {
            layers: (0..layers).map(|_| None).collect(),
            valid: None,
            lengths: vec![0; batch],
            padded: false,
            capacity: None,
        }
    }

    /// The row layout over preallocated `[rows, kv_heads, capacity, head_dim]` keys and
    /// values per layer.
    pub(crate) fn rows(layers: Vec<(Tensor, Tensor)>, rows: usize, capacity: i64) -> KvCache {
        KvCache {
            layers: layers.into_iter().map(Some).collect(),
            valid: None,
            lengths: vec![0; rows],
            padded: false,
            capacity: Some(capacity),
        }
    }

    /// Tokens each row can hold, in the row layout.
    pub fn capacity(&self) -> Option<i64> {
        self.capacity
    }

    /// Empties row `row` (row layout) for a new sequence. Its old keys and values stay in
    /// memory but are never read again: a row attends only to slots below its length.
    pub fn clear_row(&mut self, row: usize) -> Result<()> {
        self.check_row(row)?;
        self.lengths[row] = 0;
        Ok(())
    }

    /// Moves the sequence of row `from` into row `to` (row layout), which it replaces;
    /// `from` is left empty. Keeping the running sequences in rows `0..n` lets one call
    /// serve them all.
    pub fn move_row(&mut self, from: usize, to: usize) -> Result<()> {
        self.check_row(from)?;
        self.check_row(to)?;
        if from != to {
            let len = self.lengths[from];
            if len > 0 {
                self.copy_slots(from, to, len)?;
            }
            self.lengths[to] = len;
            self.lengths[from] = 0;
        }
        Ok(())
    }

    /// Row `to` (row layout) starts over from the first `len` slots of row `from`, copied
    /// (or kept, when `from == to`), and then holds `len` tokens: prefix caching. The
    /// caller vouches that those slots hold the keys and values of the tokens it means,
    /// which they do for a running row and for a cleared one (its slots stay as they were
    /// until the row is filled again) up to the length that sequence had.
    pub fn reuse_prefix(&mut self, from: usize, to: usize, len: i64) -> Result<()> {
        self.check_row(from)?;
        self.check_row(to)?;
        let capacity = self.capacity.unwrap_or(0);
        if !(0..capacity).contains(&len) {
            return Err(Error::Input(format!(
                "a reused prefix of {len} tokens must leave room in rows of {capacity}"
            )));
        }
        if from != to && len > 0 {
            self.copy_slots(from, to, len)?;
        }
        self.lengths[to] = len;
        Ok(())
    }

    /// Copies the first `len` slots of row `from` into row `to`, every layer.
    fn copy_slots(&self, from: usize, to: usize, len: i64) -> Result<()> {
        kiln_tensor::tch::no_grad(|| -> Result<()> {
            for (k, v) in self.layers.iter().flatten() {
                for t in [k, v] {
                    let src = t.f_select(0, from as i64)?.f_narrow(1, 0, len)?;
                    t.f_select(0, to as i64)?.f_narrow(1, 0, len)?.f_copy_(&src)?;
                }
            }
            Ok(())
        })
    }

    fn check_row(&self, row: usize) -> Result<()> {
        if self.capacity.is_none() {
            return Err(Error::Input("rows are cleared and moved only in a row cache".into()));
        }
        if row >= self.lengths.len() {
            return Err(Error::Input(format!(
                "row {row} is outside the cache's {} rows",
                self.lengths.len()
            )));
        }
        Ok(())
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
