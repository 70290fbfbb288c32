//! Batching in a seeded order, decoded in parallel and prepared ahead of training.

use crate::{permutation, Augment, Dataset, Error, Normalize, Result, Shard, SplitMix64};
use kiln_tensor::{convert, Tensor};
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Batches of at least this many values are augmented in parallel.
const PARALLEL_AUGMENT_VALUES: usize = 1 << 18;

/// How a [`DataLoader`] batches and transforms samples.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle each epoch (from `seed` and the epoch number) or keep dataset order.
    pub shuffle: bool,
    /// Seed of the order and of the augmentation.
    pub seed: u64,
    /// Drop the last batch when it is smaller than `batch_size` (kept by default).
    pub drop_last: bool,
    /// Batches prepared ahead on a background thread; 0 prepares each on demand.
    pub prefetch: usize,
    /// Augmentation of `[C, H, W]` samples.
    pub augment: Augment,
    /// Normalisation, applied after augmentation.
    pub normalize: Option<Normalize>,
    /// This rank's share of each epoch in data-parallel training (all of it by default).
    pub shard: Shard,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            shuffle: true,
            seed: 0,
            drop_last: false,
            prefetch: 4,
            augment: Augment::default(),
            normalize: None,
            shard: Shard::default(),
        }
    }
}

/// One batch: inputs `[B, ...sample_shape]` (`f32`) and labels `[B]` (`i64`), on the CPU.
#[derive(Debug)]
pub struct Batch {
    /// The inputs, `[B, ...sample_shape]`.
    pub inputs: Tensor,
    /// The class labels, `[B]`.
    pub labels: Tensor,
    /// The dataset index of each sample.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch is empty (never true for batches a loader yields).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Yields the batches of a dataset, epoch by epoch.
#[derive(Clone)]
pub struct DataLoader {
    data: Arc<dyn Dataset>,
    config: Arc<LoaderConfig>,
    /// The whole prepared dataset as tensors, for in-memory data without augmentation.
    cache: Arc<Mutex<Option<Arc<Mutex<Cached>>>>>,
}

/// Every sample, prepared (normalised), as `[N, ...shape]` inputs and `[N]` labels.
struct Cached {
    inputs: Tensor,
    labels: Tensor,
}

/// Datasets up to this many values are prepared once and kept as one tensor.
const CACHE_MAX_VALUES: usize = 1 << 28;

impl DataLoader {
    /// A loader over `data`.
    pub fn new(data: Arc<dyn Dataset>, config: LoaderConfig) -> DataLoader {
        DataLoader {
            data,
            config: Arc::new(config),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether batches come from a prepared copy of the whole dataset: in-memory data
    /// without augmentation, up to 2^28 values. A batch is then one `index_select` on the
    /// training thread, as an in-memory PyTorch loop would do, and holds exactly the values
    /// the general path would build.
    pub fn is_cached(&self) -> bool {
        self.data.is_in_memory()
            && self.config.augment.is_identity()
            && self.data.len().saturating_mul(self.data.sample_len()) <= CACHE_MAX_VALUES
    }

    fn cached(&self) -> Result<Arc<Mutex<Cached>>> {
        let mut slot = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let all: Vec<usize> = (0..self.data.len()).collect();
        let batch = self.build(&all, 0)?;
        let c = Arc::new(Mutex::new(Cached {
            inputs: batch.inputs,
            labels: batch.labels,
        }));
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.data
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Number of batches in one epoch (of this rank's shard).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.config.shard.len(self.data.len()), self.config.batch_size.max(1));
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the dataset (this rank's shard of it).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let all = if self.config.shuffle {
            permutation(self.data.len(), &mut SplitMix64::for_stream(self.config.seed, &[epoch]))
        } else {
            (0..self.data.len()).collect()
        };
        self.config.shard.take(all)
    }

    /// The batches of epoch `epoch`.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of epoch `epoch` from batch `first` on (to continue an interrupted epoch).
    pub fn epoch_from(&self, epoch: u64, first: usize) -> EpochIter {
        let b = self.config.batch_size.max(1);
        let order = self.order(epoch);
        let mut chunks: Vec<Vec<usize>> = order.chunks(b).map(<[usize]>::to_vec).collect();
        if self.config.drop_last && chunks.last().is_some_and(|c| c.len() < b) {
            chunks.pop();
        }
        let chunks: Vec<Vec<usize>> = chunks.into_iter().skip(first).collect();
        let remaining = chunks.len();
        if self.is_cached() {
            return match self.cached() {
                Ok(cache) => EpochIter {
                    source: Source::Cached {
                        cache,
                        chunks: chunks.into_iter(),
                    },
                    remaining,
                },
                Err(e) => EpochIter {
                    source: Source::Failed(Some(e)),
                    remaining: 1,
                },
            };
        }
        if self.config.prefetch == 0 {
            return EpochIter {
                source: Source::Inline {
                    loader: self.clone(),
                    chunks: chunks.into_iter(),
                    epoch,
                },
                remaining,
            };
        }
        let (tx, rx) = sync_channel(self.config.prefetch);
        let loader = self.clone();
        let handle = std::thread::Builder::new().name("kiln-loader".into()).spawn(move || {
            for chunk in chunks {
                let batch = loader.build(&chunk, epoch);
                let failed = batch.is_err();
                // The receiver is gone when training stopped early: stop preparing.
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        match handle {
            Ok(handle) => EpochIter {
                source: Source::Thread { rx, _handle: handle },
                remaining,
            },
            Err(e) => EpochIter {
                source: Source::Failed(Some(Error::Invalid(format!("cannot start the loader thread: {e}")))),
                remaining: 1,
            },
        }
    }

    /// Builds the batch of the given dataset indices: reads, augments and normalises each
    /// sample in parallel. Augmentation draws from a generator seeded by (seed, epoch,
    /// index), so the result does not depend on thread scheduling.
    pub fn build(&self, indices: &[usize], epoch: u64) -> Result<Batch> {
        let data = &*self.data;
        let cfg = &*self.config;
        let n = data.sample_len();
        if let Some(norm) = &cfg.normalize {
            norm.check(n)?;
        }
        let shape = data.sample_shape();
        let mut inputs = vec![0f32; indices.len() * n];
        let mut labels = vec![0i64; indices.len()];
        let one = |scratch: &mut Vec<f32>, ((out, label), &i): ((&mut [f32], &mut i64), &usize)| -> Result<()> {
            data.read_into(i, out)?;
            *label = data.label(i)?;
            if !cfg.augment.is_identity() {
                let mut rng = SplitMix64::for_stream(cfg.seed, &[epoch, i as u64, 0xA06]);
                cfg.augment.apply(out, shape, &mut rng, scratch);
            }
            if let Some(norm) = &cfg.normalize {
                norm.apply(out);
            }
            Ok(())
        };
        // Copying in-memory samples is cheaper than waking the thread pool (whose threads
        // would also compete with libtorch's for the cores); decoding files is not.
        let heavy = !data.is_in_memory() || (!cfg.augment.is_identity() && inputs.len() >= PARALLEL_AUGMENT_VALUES);
        if heavy {
            inputs
                .par_chunks_mut(n.max(1))
                .zip(labels.par_iter_mut())
                .zip(indices.par_iter())
                .with_min_len(4)
                .try_for_each_init(Vec::new, one)?;
        } else {
            let mut scratch = Vec::new();
            for item in inputs.chunks_mut(n.max(1)).zip(labels.iter_mut()).zip(indices.iter()) {
                one(&mut scratch, item)?;
            }
        }
        let mut dims = vec![indices.len() as i64];
        dims.extend(shape.iter().map(|&d| d as i64));
        Ok(Batch {
            inputs: convert::tensor_from_f32(&inputs, &dims)?,
            labels: convert::tensor_from_i64(&labels, &[indices.len() as i64])?,
            indices: indices.to_vec(),
        })
    }
}

enum Source {
    Cached {
        cache: Arc<Mutex<Cached>>,
        chunks: std::vec::IntoIter<Vec<usize>>,
    },
    Inline {
        loader: DataLoader,
        chunks: std::vec::IntoIter<Vec<usize>>,
        epoch: u64,
    },
    Thread {
        rx: Receiver<Result<Batch>>,
        _handle: JoinHandle<()>,
    },
    Failed(Option<Error>),
}

/// The batches of one epoch, in order. Dropping it stops the background thread.
pub struct EpochIter {
    source: Source,
    remaining: usize,
}

impl EpochIter {
    /// Batches still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let item = match &mut self.source {
            Source::Cached { cache, chunks } => chunks.next().map(|c| {
                let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                let idx =
                    convert::tensor_from_i64(&c.iter().map(|&i| i as i64).collect::<Vec<_>>(), &[c.len() as i64])?;
                Ok(Batch {
                    inputs: cache.inputs.f_index_select(0, &idx)?,
                    labels: cache.labels.f_index_select(0, &idx)?,
                    indices: c,
                })
            }),
            Source::Inline { loader, chunks, epoch } => chunks.next().map(|c| loader.build(&c, *epoch)),
            Source::Thread { rx, .. } => rx.recv().ok(),
            Source::Failed(e) => e.take().map(Err),
        };
        self.remaining = if item.is_some() {
            self.remaining.saturating_sub(1)
        } else {
            0
        };
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
