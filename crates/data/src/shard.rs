//! One rank's share of every epoch in data-parallel training, as PyTorch's
//! `DistributedSampler` (with `drop_last=False`) takes it: the epoch's seeded order is
//! padded to a multiple of the number of ranks by repeating its first indices, then rank
//! `r` takes positions `r, r + world, r + 2 world, ...`. Every rank gets the same number
//! of samples, so every rank runs the same number of batches and collectives; the
//! remainder (`len % world`, when not 0) costs `world - remainder` samples seen twice.

/// Rank `rank` of `world`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This rank, from 0.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { rank: 0, world: 1 }
    }
}

impl Shard {
    /// Samples per rank per epoch for a dataset of `len` samples.
    pub fn len(&self, len: usize) -> usize {
        len.div_ceil(self.world.max(1))
    }

    /// Whether the shard of a dataset of `len` samples is empty.
    pub fn is_empty(&self, len: usize) -> bool {
        self.len(len) == 0
    }

    /// This rank's part of an epoch's `order`.
    pub fn take(&self, order: Vec<usize>) -> Vec<usize> {
        let world = self.world.max(1);
        if world == 1 || order.is_empty() {
            return order;
        }
        let total = order.len().div_ceil(world) * world;
        (self.rank..total)
            .step_by(world)
            .map(|i| order[i % order.len()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_take_every_world_th_index_and_the_remainder_wraps_to_the_start() {
        let order = vec![7, 3, 9, 1, 4];
        assert_eq!(Shard { rank: 0, world: 2 }.take(order.clone()), vec![7, 9, 4]);
        assert_eq!(Shard { rank: 1, world: 2 }.take(order.clone()), vec![3, 1, 7]);
        assert_eq!(Shard { rank: 2, world: 3 }.take(order.clone()), vec![9, 7]);
        assert_eq!(Shard::default().take(order.clone()), order);
        assert_eq!(Shard { rank: 1, world: 2 }.len(5), 3);
        // Together the ranks cover every index.
        let mut all: Vec<usize> = (0..3)
            .flat_map(|r| Shard { rank: r, world: 3 }.take(order.clone()))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all, vec![1, 3, 4, 7, 9]);
    }
}
