//! Process-wide libtorch settings: thread count and random seeds.

use crate::{DeviceChoice, Result};
use tch::Device;

/// The libtorch settings a run starts with.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// Where tensors live.
    pub device: Device,
    /// libtorch's intra-op thread count.
    pub threads: usize,
}

impl Runtime {
    /// Resolves the device, sets libtorch's thread count (0 keeps libtorch's default,
    /// one per core) and seeds every libtorch generator, CUDA's included.
    pub fn init(device: DeviceChoice, threads: usize, seed: u64) -> Result<Runtime> {
        let device = device.resolve()?;
        if threads > 0 {
            tch::set_num_threads(threads as i32);
        }
        seed_all(seed);
        Ok(Runtime {
            device,
            threads: tch::get_num_threads().max(1) as usize,
        })
    }
}

/// Seeds libtorch's CPU generator and, when present, every CUDA generator.
pub fn seed_all(seed: u64) {
    // libtorch takes an i64; wrap rather than fail so that any u64 seed is accepted.
    tch::manual_seed(seed as i64);
    if tch::Cuda::is_available() {
        tch::Cuda::manual_seed_all(seed);
    }
}

/// The libtorch version this process runs on, for example `2.13.0`.
pub fn libtorch_version() -> &'static str {
    // tch 0.26 accepts libtorch 2.13.0 only: its build script checks the version, so the
    // version linked is the one it was built for.
    "2.13.0"
}
