//! A process group: the ranks of one job, met at rank 0's TCPStore, and the Gloo
//! collectives between them. A collective that fails (a peer died, hung past the
//! timeout, or became unreachable) is turned into [`Error::PeerLost`] naming the lost
//! ranks: each surviving rank reports its failure in the store and waits briefly for
//! the others' reports; the ranks that neither report nor can be reached are the lost
//! ones (when the store itself is gone, rank 0, which hosts it, is lost).

use crate::ffi;
use crate::{Error, Rendezvous, Result};
use kiln_tensor::{tch, Device, Kind, Tensor};
use std::time::{Duration, Instant};

/// How long a failed rank waits for the other survivors' reports.
const REPORT_GRACE: Duration = Duration::from_secs(3);

/// A reduction for [`ProcessGroup::allreduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over ranks.
    Sum,
    /// The mean over ranks (a sum divided by the world size: Gloo's own average
    /// divides only some tensors and refuses integer ones).
    Avg,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
}

/// One rank's membership of a process group.
pub struct ProcessGroup {
    group: ffi::Group,
    rank: usize,
    world: usize,
    /// Where the group's tensors live: the CPU (Gloo) or this rank's GPU (NCCL).
    device: Device,
}

/// A collective started by [`ProcessGroup::allreduce_start`]; [`Pending::wait`] finishes it.
pub struct Pending {
    work: ffi::Work,
    tensor: Tensor,
    avg: Option<f64>,
    what: &'static str,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", self.rank, self.world)
    }
}

impl ProcessGroup {
    /// Joins the group `rv` describes: blocks until all `world` ranks have arrived at
    /// `addr:port` (rank 0 hosts the store there), or fails after the timeout.
    pub fn join(rv: &Rendezvous) -> Result<ProcessGroup> {
        Self::join_on(rv, Device::Cpu)
    }

    /// Joins with tensors on `device`: Gloo for the CPU; NCCL for `Device::Cuda(i)`
    /// (usually `i` = the local rank), in builds with the `nccl` feature (kiln-train's
    /// `cuda` feature turns it on).
    pub fn join_on(rv: &Rendezvous, device: Device) -> Result<ProcessGroup> {
        rv.check()?;
        let cuda = match device {
            Device::Cuda(i) => Some(i),
            _ => None,
        };
        let timeout_ms = i64::try_from(rv.timeout.as_millis()).unwrap_or(i64::MAX);
        let failed = |detail| Error::Rendezvous {
            addr: rv.addr.clone(),
            port: rv.port,
            rank: rv.rank,
            world: rv.world,
            detail,
        };
        let group = ffi::Group::new(
            &rv.addr,
            rv.port,
            rv.rank,
            rv.world,
            timeout_ms,
            rv.bind.as_deref().unwrap_or(""),
            "kiln/",
            cuda,
        )
        .map_err(failed)?;
        let mut pg = ProcessGroup {
            group,
            rank: rv.rank,
            world: rv.world,
            device,
        };
        let key = format!("joined/{}", pg.rank);
        pg.group.store_set(&key, b"1").map_err(failed)?;
        tracing::debug!(rank = pg.rank, world = pg.world, "joined the process group");
        Ok(pg)
    }

    /// This rank, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Where the group's collectives take their tensors: the CPU, or a GPU with NCCL.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Reduces `t` in place across the ranks (every rank ends with the result).
    pub fn allreduce(&mut self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.allreduce_start(t, op)?.wait(self)
    }

    /// Starts reducing `t` in place; the result is there after [`Pending::wait`]. Several
    /// may be in flight (Gloo runs them in order on its own thread).
    pub fn allreduce_start(&mut self, t: &Tensor, op: ReduceOp) -> Result<Pending> {
        let code = match op {
            ReduceOp::Sum | ReduceOp::Avg => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        let what = "allreduce";
        let work = self.group.allreduce(t, code).map_err(|d| self.failure(what, d))?;
        Ok(Pending {
            work,
            tensor: t.shallow_clone(),
            avg: (op == ReduceOp::Avg).then_some(self.world as f64),
            what,
        })
    }

    /// Copies `root`'s `t` into every rank's `t`.
    pub fn broadcast(&mut self, t: &mut Tensor, root: usize) -> Result<()> {
        let what = "broadcast";
        if root >= self.world {
            return Err(Error::Collective {
                what,
                rank: self.rank,
                detail: format!("root {root} is not a rank of a group of {}", self.world),
            });
        }
        let work = self.group.broadcast(t, root).map_err(|d| self.failure(what, d))?;
        work.wait().map_err(|d| self.failure(what, d))
    }

    /// Every rank's `t`, in rank order (each rank's must have the same shape and kind).
    pub fn allgather(&mut self, t: &Tensor) -> Result<Vec<Tensor>> {
        let what = "allgather";
        let outputs: Vec<Tensor> = (0..self.world).map(|_| t.empty_like()).collect();
        let work = self.group.allgather(t, &outputs).map_err(|d| self.failure(what, d))?;
        work.wait().map_err(|d| self.failure(what, d))?;
        Ok(outputs)
    }

    /// Returns when every rank has called it.
    pub fn barrier(&mut self) -> Result<()> {
        let what = "barrier";
        let work = self.group.barrier().map_err(|d| self.failure(what, d))?;
        work.wait().map_err(|d| self.failure(what, d))
    }

    /// Sums `values` (scalars: losses, counts) across the ranks.
    pub fn sum_f64(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let mut t = Tensor::f_from_slice(values)?
            .f_to_kind(Kind::Double)?
            .f_to_device(self.device)?;
        self.allreduce(&mut t, ReduceOp::Sum)?;
        Ok(Vec::<f64>::try_from(&t.f_to_device(Device::Cpu)?)?)
    }

    /// The error for a failed collective: which ranks are lost, found through the store.
    fn failure(&mut self, what: &'static str, detail: String) -> Error {
        let lost = self.lost_ranks();
        if lost.is_empty() {
            Error::Collective {
                what,
                rank: self.rank,
                detail,
            }
        } else {
            Error::PeerLost {
                what,
                rank: self.rank,
                lost,
                detail,
            }
        }
    }

    /// Reports this rank's failure in the store, then waits up to [`REPORT_GRACE`] for the
    /// other ranks' reports. Ranks without a report are lost; all but this one when the
    /// store cannot be reached, since its host, rank 0, is then gone (or cut off).
    fn lost_ranks(&mut self) -> Vec<usize> {
        let others: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        if self.group.store_set(&format!("failed/{}", self.rank), b"1").is_err() {
            return if self.rank == 0 { others } else { vec![0] };
        }
        let deadline = Instant::now() + REPORT_GRACE;
        let mut missing = others;
        loop {
            let mut still = Vec::new();
            for &r in &missing {
                match self.group.store_check(&format!("failed/{r}")) {
                    Ok(true) => {}
                    Ok(false) => still.push(r),
                    Err(_) => return if self.rank == 0 { missing } else { vec![0] },
                }
            }
            missing = still;
            if missing.is_empty() || Instant::now() >= deadline {
                return missing;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Pending {
    /// Waits for the reduction; divides by the world size for [`ReduceOp::Avg`].
    pub fn wait(self, pg: &mut ProcessGroup) -> Result<()> {
        let Pending {
            work,
            mut tensor,
            avg,
            what,
        } = self;
        work.wait().map_err(|d| pg.failure(what, d))?;
        if let Some(n) = avg {
            let _ = tch::no_grad(|| tensor.f_div_scalar_(n))?;
        }
        Ok(())
    }
}
