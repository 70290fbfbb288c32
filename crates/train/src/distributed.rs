//! Data-parallel training with PyTorch DDP's semantics, on kiln-dist's process group:
//! rank 0's initial weights and buffers are broadcast to every rank; before each optimizer
//! step the gradients are averaged across the ranks in flattened buckets, so clipping sees
//! the global gradient and every rank takes the same step. Batch-norm batch statistics
//! stay local to each rank, as in DDP.
//!
//! Running statistics: DDP's default (`broadcast_buffers=True`) copies rank 0's buffers
//! to every rank before each forward pass, so rank 0's running statistics are updated by
//! rank 0's batches alone; the other ranks' copies are overwritten each step and never
//! read. kiln reads running statistics only on rank 0 (evaluation, checkpoints, the
//! package), whose values are the same with or without that broadcast, so kiln skips it:
//! the same result, one collective per step fewer.

use crate::{Error, Result, TrainConfig};
use kiln_data::Shard;
use kiln_dist::{GradBuckets, ProcessGroup, Rendezvous};
use kiln_tensor::{nn, tch, Device, DeviceChoice, Kind, Tensor};
use std::time::Duration;

/// The scalars that ride along with the last gradient bucket each step.
pub(crate) const EXTRAS: usize = 2;

/// This process's rank in a data-parallel run.
pub(crate) struct DataParallel {
    pg: ProcessGroup,
    buckets: GradBuckets,
    /// Time spent in the gradient allreduce since the last [`take_comm`](Self::take_comm).
    comm: Duration,
}

/// Joins the process group the environment describes (`WORLD_SIZE` > 1), or `None`:
/// Gloo when `config` trains on the CPU; NCCL on `cuda:LOCAL_RANK` when it trains on a GPU
/// (`config.device` is then set to that GPU).
pub(crate) fn join(config: &mut TrainConfig) -> Result<Option<ProcessGroup>> {
    let Some(rv) = Rendezvous::from_env()? else {
        return Ok(None);
    };
    if rv.world == 1 {
        return Ok(None);
    }
    let device = match config.device.resolve()? {
        Device::Cuda(_) => {
            config.device = DeviceChoice::Cuda(rv.local_rank);
            Device::Cuda(rv.local_rank)
        }
        _ => Device::Cpu,
    };
    tracing::info!(
        rank = rv.rank,
        world = rv.world,
        "rank {} of {}: meeting the other ranks at {}:{}",
        rv.rank,
        rv.world,
        rv.addr,
        rv.port
    );
    Ok(Some(ProcessGroup::join_on(&rv, device)?))
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
        let params: Vec<Tensor> = named
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t)
            .collect();
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
            buckets,
            comm: Duration::ZERO,
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.pg.rank()
    }

    pub(crate) fn world(&self) -> usize {
        self.pg.world()
    }

    /// Fails unless every rank starts at optimizer step `steps` (rank 0's position): a
    /// rank that could not read the checkpoint rank 0 resumes from would silently train
    /// on other data with other optimizer state.
    pub(crate) fn check_position(&mut self, steps: u64) -> Result<()> {
        let mine = Tensor::from_slice(&[steps as i64]).f_to_device(self.pg.device())?;
        let all = self.pg.allgather(&mine)?;
        let all = all
            .iter()
            .map(|t| t.f_int64_value(&[0]))
            .collect::<Result<Vec<i64>, _>>()?;
        if let Some((r, s)) = all.iter().enumerate().find(|(_, &s)| s != all[0]) {
            return Err(Error::Config(format!(
                "the ranks do not start at the same step: rank 0 at step {}, rank {r} at step {s}. To resume a \
                 data-parallel run, every rank must read the run folder's newest checkpoint (a volume shared by \
                 the machines)",
                all[0]
            )));
        }
        Ok(())
    }

    /// Averages the gradients across the ranks and sums `extras` across them.
    pub(crate) fn average_gradients(&mut self, extras: &mut [f64; EXTRAS]) -> Result<()> {
        self.comm += self.buckets.average(&mut self.pg, extras)?;
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
        let mut t = Tensor::from_slice(&[u8::from(flag)]).f_to_device(self.pg.device())?;
        self.pg.broadcast(&mut t, 0)?;
        Ok(t.f_int64_value(&[0])? != 0)
    }

    /// Waits for every rank.
    pub(crate) fn barrier(&mut self) -> Result<()> {
        Ok(self.pg.barrier()?)
    }
}
