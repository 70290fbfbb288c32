//! kiln's process groups, on libtorch's own distributed engine: c10d's `TCPStore`
//! rendezvous and `ProcessGroupGloo` collectives (the code PyTorch's
//! DistributedDataParallel runs on CPUs), through a small C++ shim.
//!
//! - [`Rendezvous`]: where the ranks meet, from `torchrun`'s variables (`RANK`,
//!   `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`).
//! - [`ProcessGroup`]: allreduce (sum, average, max, min), broadcast, all-gather and
//!   barrier on tensors; a timeout turns a dead or hung peer into [`Error::PeerLost`]
//!   naming the rank instead of a hang.
//! - [`GradBuckets`]: DDP's gradient averaging in flat buckets.
//!
//! ```no_run
//! use kiln_dist::{ProcessGroup, ReduceOp, Rendezvous};
//! use kiln_tensor::Tensor;
//! let rv = Rendezvous::from_env()?.expect("run me under torchrun or kiln-train launch");
//! let mut pg = ProcessGroup::join(&rv)?;
//! let mut t = Tensor::from_slice(&[rv.rank as f32]);
//! pg.allreduce(&mut t, ReduceOp::Sum)?;
//! # Ok::<(), kiln_dist::Error>(())
//! ```
//!
//! Every `unsafe` line of kiln is in this crate's `ffi` module.

mod buckets;
mod error;
mod ffi;
mod group;
mod launch;
mod rendezvous;

pub use buckets::{GradBuckets, DEFAULT_BUCKET_BYTES};
pub use error::{Error, Result};
pub use group::{Pending, ProcessGroup, ReduceOp};
pub use launch::{describe, Launch, Outcome};
pub use rendezvous::{is_loopback, Rendezvous, DEFAULT_TIMEOUT};
