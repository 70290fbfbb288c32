//! `TokenLoader`: batches of packed sequences in a seeded order that is a function of the
//! seed, the epoch and the position, so a resumed run reads exactly what an uninterrupted
//! one would.

use crate::{Error, Packed, Result};
use kiln_data::{permutation, Shard, SplitMix64};
use kiln_tensor::{Kind, Tensor};
use std::sync::Arc;

/// One batch: `inputs` and `targets`, both `[B, seq_len]` int64, `targets` shifted by one.
#[derive(Debug)]
pub struct TokenBatch {
    /// Token ids the model reads.
    pub inputs: Tensor,
    /// The next token after each input.
    pub targets: Tensor,
}

impl TokenBatch {
    /// The number of sequences.
    pub fn len(&self) -> usize {
        self.inputs.size().first().copied().unwrap_or(0) as usize
    }

    /// Whether the batch holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Batches of a [`Packed`] stream.
#[derive(Clone, Debug)]
pub struct TokenLoader {
    packed: Arc<Packed>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    shard: Shard,
}

impl TokenLoader {
    /// A loader of `batch_size` sequences per batch (the last batch of an epoch may be
    /// smaller), shuffled each epoch by `seed` when `shuffle`.
    pub fn new(packed: Arc<Packed>, batch_size: usize, shuffle: bool, seed: u64) -> Result<TokenLoader> {
        if batch_size == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        Ok(TokenLoader {
            packed,
            batch_size,
            shuffle,
            seed,
            shard: Shard::default(),
        })
    }

    /// The loader of this rank's share of each epoch in data-parallel training.
    pub fn sharded(mut self, shard: Shard) -> TokenLoader {
        self.shard = shard;
        self
    }

    /// The packed stream.
    pub fn packed(&self) -> &Arc<Packed> {
        &self.packed
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.shard.len(self.packed.sequences()).div_ceil(self.batch_size)
    }

    /// The order of the sequences in `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.packed.sequences();
        let all = if self.shuffle {
            permutation(n, &mut SplitMix64::for_stream(self.seed, &[epoch, 0x70CE_5EED]))
        } else {
            (0..n).collect()
        };
        self.shard.take(all)
    }

    /// The batch of sequences `indices`.
    pub fn batch(&self, indices: &[usize]) -> Result<TokenBatch> {
        let t = self.packed.seq_len();
        let mut inputs = Vec::with_capacity(indices.len() * t);
        let mut targets = Vec::with_capacity(indices.len() * t);
        for &i in indices {
            let s = self.packed.sequence(i);
            if s.len() != t + 1 {
                return Err(Error::Invalid(format!(
                    "sequence {i} is out of range: the stream holds {}",
                    self.packed.sequences()
                )));
            }
            inputs.extend(s[..t].iter().map(|&x| x as i64));
            targets.extend(s[1..].iter().map(|&x| x as i64));
        }
        let shape = [indices.len() as i64, t as i64];
        Ok(TokenBatch {
            inputs: Tensor::f_from_slice(&inputs)?.f_view(shape)?.f_to_kind(Kind::Int64)?,
            targets: Tensor::f_from_slice(&targets)?.f_view(shape)?,
        })
    }

    /// The batches of `epoch` from batch `first` on.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> impl Iterator<Item = Result<TokenBatch>> + '_ {
        let order = self.order(epoch);
        let chunks: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .skip(first)
            .map(<[usize]>::to_vec)
            .collect();
        chunks.into_iter().map(move |c| self.batch(&c))
    }
}
