//! Data-parallel training with PyTorch DDP's semantics, on kiln-dist's process group:
//! rank 0's initial weights are broadcast to every rank; before each forward pass the
//! buffers (batch-norm running statistics) are broadcast from rank 0, as DDP's default
//! `broadcast_buffers=True` does, while the batch statistics stay local to each rank;
//! before each optimizer step the gradients are averaged across the ranks in flattened
//! buckets, so clipping sees the global gradient and every rank takes the same step.

use crate::{Error, Result, TrainConfig};
use kiln_data::Shard;
use kiln_dist::{GradBuckets, ProcessGroup, Rendezvous};
use kiln_tensor::{nn, tch, Kind, Tensor};
use std::time::Duration;

/// The scalars that ride along with the last gradient bucket each step.
pub(crate) const EXTRAS: usize = 2;

/// This process's rank in a data-parallel run.
pub(crate) struct DataParallel {
    pg: ProcessGroup,
    buckets: Option<GradBuckets>,
    /// Non-trainable tensors (running statistics), name-sorted.
    buffers: Vec<Tensor>,
    /// Time spent in the gradient allreduce since the last [`take_comm`](Self::take_comm).
    comm: Duration,
}

/// Joins the process group the environment describes (`WORLD_SIZE` > 1), or `None`.
pub(crate) fn join() -> Result<Option<ProcessGroup>> {
    let Some(rv) = Rendezvous::from_env()? else {
        return Ok(None);
    };
    if rv.world == 1 {
        return Ok(None);
    }
    tracing::info!(
        rank = rv.rank,
        world = rv.world,
        "rank {} of {}: meeting the other ranks at {}:{}",
        rv.rank,
        rv.world,
        rv.addr,
        rv.port
    );
    Ok(Some(ProcessGroup::join(&rv)?))
}

/// The shard of the training data a rank reads (all of it without a group).
pub(crate) fn shard(pg: Option<&ProcessGroup>) -> Shard {
    pg.map_or(Shard::default(), |pg| Shard {
        rank: pg.rank(),
        world: pg.world(),
    })
}

impl DataParallel {
    /// Broadcasts rank 0's weights and buffers and sets up the gradient buckets.
    pub(crate) fn new(mut pg: ProcessGroup, vars: &nn::VarStore, config: &TrainConfig) -> Result<DataParallel> {
        let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            for (_, t) in &named {
                pg.broadcast(&mut t.shallow_clone(), 0)?;
            }
            Ok(())
        })?;
        let (params, buffers): (Vec<_>, Vec<_>) = named.into_iter().partition(|(_, t)| t.requires_grad());
        let params: Vec<Tensor> = params.into_iter().map(|(_, t)| t).collect();
        if params.iter().any(|p| p.kind() != Kind::Float) {
            return Err(Error::Config(
                "data-parallel training averages f32 gradients; this model has parameters of another type".into(),
            ));
        }
        let bucket_bytes = (config.distributed.bucket_mb * (1 << 20) as f64) as usize;
        let buckets = GradBuckets::new(&params, bucket_bytes.max(4), EXTRAS)?;
        tracing::debug!(rank = pg.rank(), "{buckets:?}");
        Ok(DataParallel {
            pg,
            buckets: Some(buckets),
            buffers: buffers.into_iter().map(|(_, t)| t).collect(),
            comm: Duration::ZERO,
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.pg.rank()
    }

    pub(crate) fn world(&self) -> usize {
        self.pg.world()
    }

    /// Copies rank 0's buffers to every rank (before a forward pass).
    pub(crate) fn sync_buffers(&mut self) -> Result<()> {
        for b in &self.buffers {
            tch::no_grad(|| self.pg.broadcast(&mut b.shallow_clone(), 0))?;
        }
        Ok(())
    }

    /// Averages the gradients across the ranks and sums `extras` across them.
    pub(crate) fn average_gradients(&mut self, extras: &mut [f64; EXTRAS]) -> Result<()> {
        let Some(buckets) = self.buckets.as_mut() else {
            return Err(Error::Internal("the gradient buckets are gone".into()));
        };
        self.comm += buckets.average(&mut self.pg, extras)?;
        Ok(())
    }

    /// Seconds spent averaging gradients since the last call.
    pub(crate) fn take_comm(&mut self) -> f64 {
        std::mem::take(&mut self.comm).as_secs_f64()
    }

    /// Sums `values` across the ranks.
    pub(crate) fn sum(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        Ok(self.pg.sum_f64(values)?)
    }

    /// Rank 0's `flag`, on every rank.
    pub(crate) fn decide(&mut self, flag: bool) -> Result<bool> {
        let mut t = Tensor::from_slice(&[u8::from(flag)]);
        self.pg.broadcast(&mut t, 0)?;
        Ok(t.int64_value(&[0]) != 0)
    }

    /// Waits for every rank.
    pub(crate) fn barrier(&mut self) -> Result<()> {
        Ok(self.pg.barrier()?)
    }
}
