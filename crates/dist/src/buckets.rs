//! Gradient averaging as PyTorch's DistributedDataParallel does it: the gradients live in
//! flat buckets (parameters in reverse order, the first bucket small so that
//! communication starts early, the others up to a configurable size), each bucket is
//! summed across the ranks and divided by the world size. Each parameter's gradient is a
//! view into its bucket (DDP's `gradient_as_bucket_view`), so backward writes straight
//! into the buckets and nothing is copied in or out; a gradient that was replaced by
//! another tensor since is copied in and viewed again. A few extra scalars (a loss, a stop
//! flag) ride along in the last bucket.

use crate::{ProcessGroup, ReduceOp, Result};
use kiln_tensor::{tch, Kind, Tensor};
use std::time::{Duration, Instant};

/// DDP's default bucket size (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;
/// DDP's first bucket (1 MiB).
const FIRST_BUCKET_BYTES: usize = 1 << 20;

struct Bucket {
    /// The parameters whose gradients it holds, in order, with their offsets.
    params: Vec<(Tensor, i64, i64)>,
    /// Their gradients side by side (f32), then the extra scalars in the last bucket.
    flat: Tensor,
    /// Values that are gradients (the rest are the extras).
    grads: i64,
}

/// The gradient buckets of a model's trainable parameters.
pub struct GradBuckets {
    buckets: Vec<Bucket>,
    extras: usize,
}

impl std::fmt::Debug for GradBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GradBuckets({} buckets, sizes {:?})",
            self.buckets.len(),
            self.sizes()
        )
    }
}

impl Bucket {
    /// Makes the bucket's slice at `offset` the gradient of `p`, holding the gradient `p`
    /// had (if any).
    fn view_as_grad(&self, p: &Tensor, offset: i64) -> Result<()> {
        let view = self
            .flat
            .f_narrow(0, offset, p.numel() as i64)?
            .f_view(p.size().as_slice())?;
        let old = p.grad();
        if old.defined() {
            tch::no_grad(|| view.shallow_clone().f_copy_(&old))?;
        }
        crate::ffi::set_grad(p, &view).map_err(crate::Error::Buckets)
    }

    /// Whether `p`'s gradient is still the bucket's view at `offset`.
    fn holds(&self, p: &Tensor, offset: i64) -> bool {
        let g = p.grad();
        g.defined() && g.data_ptr() as usize == self.flat.data_ptr() as usize + offset as usize * 4
    }
}

impl GradBuckets {
    /// Buckets over `params` (in the model's order; filled from the last one) of at most
    /// `bucket_bytes` each (a parameter larger than that gets a bucket of its own), with
    /// room for `extras` scalars.
    pub fn new(params: &[Tensor], bucket_bytes: usize, extras: usize) -> Result<GradBuckets> {
        let mut groups: Vec<Vec<Tensor>> = Vec::new();
        let (mut cur, mut bytes) = (Vec::new(), 0usize);
        for p in params.iter().rev() {
            let size = p.numel() * 4;
            let cap = if groups.is_empty() {
                FIRST_BUCKET_BYTES.min(bucket_bytes)
            } else {
                bucket_bytes
            };
            if !cur.is_empty() && bytes + size > cap {
                groups.push(std::mem::take(&mut cur));
                bytes = 0;
            }
            cur.push(p.shallow_clone());
            bytes += size;
        }
        if !cur.is_empty() || groups.is_empty() {
            groups.push(cur);
        }
        let last = groups.len() - 1;
        let mut buckets = Vec::with_capacity(groups.len());
        for (i, group) in groups.into_iter().enumerate() {
            let mut offset = 0i64;
            let mut params = Vec::with_capacity(group.len());
            let device = group.first().map_or(kiln_tensor::Device::Cpu, Tensor::device);
            for p in group {
                let n = p.numel() as i64;
                params.push((p, offset, n));
                offset += n;
            }
            let len = offset + if i == last { extras as i64 } else { 0 };
            let flat = Tensor::f_zeros([len], (Kind::Float, device))?;
            let bucket = Bucket {
                params,
                flat,
                grads: offset,
            };
            for (p, offset, _) in &bucket.params {
                bucket.view_as_grad(p, *offset)?;
            }
            buckets.push(bucket);
        }
        Ok(GradBuckets { buckets, extras })
    }

    /// Values per bucket (extras included).
    pub fn sizes(&self) -> Vec<i64> {
        self.buckets.iter().map(|b| b.flat.numel() as i64).collect()
    }

    /// Averages every parameter's gradient across the ranks (a parameter that got no
    /// gradient counts as zeros) and sums `extras` across them.
    /// Returns the time spent in the collectives.
    pub fn average(&mut self, pg: &mut ProcessGroup, extras: &mut [f64]) -> Result<Duration> {
        debug_assert_eq!(extras.len(), self.extras);
        let world = pg.world() as f64;
        tch::no_grad(|| -> Result<Duration> {
            let mut pending = Vec::with_capacity(self.buckets.len());
            let mut comm = Duration::ZERO;
            let last = self.buckets.len() - 1;
            for (i, b) in self.buckets.iter_mut().enumerate() {
                for (p, offset, _) in &b.params {
                    if !b.holds(p, *offset) {
                        b.view_as_grad(p, *offset)?;
                    }
                }
                if i == last && !extras.is_empty() {
                    let at = b.flat.numel() as i64 - extras.len() as i64;
                    let values: Vec<f32> = extras.iter().map(|&x| x as f32).collect();
                    b.flat
                        .f_narrow(0, at, extras.len() as i64)?
                        .f_copy_(&Tensor::f_from_slice(&values)?)?;
                }
                let t = Instant::now();
                pending.push(pg.allreduce_start(&b.flat, ReduceOp::Sum)?);
                comm += t.elapsed();
            }
            let t = Instant::now();
            for p in pending {
                p.wait(pg)?;
            }
            comm += t.elapsed();
            for (i, b) in self.buckets.iter_mut().enumerate() {
                if i == last && !extras.is_empty() {
                    let at = b.flat.numel() as i64 - extras.len() as i64;
                    let tail = b.flat.f_narrow(0, at, extras.len() as i64)?;
                    let summed = Vec::<f32>::try_from(&tail.f_to_device(kiln_tensor::Device::Cpu)?)?;
                    for (e, s) in extras.iter_mut().zip(summed) {
                        *e = f64::from(s);
                    }
                }
                let _ = b.flat.f_narrow(0, 0, b.grads)?.f_div_scalar_(world)?;
            }
            Ok(comm)
        })
    }
}
