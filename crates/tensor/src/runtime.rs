//! Process-wide libtorch settings: thread count, random seeds and how freed memory is
//! kept.

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
        keep_freed_memory();
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

/// Tells the C allocator to keep freed blocks for reuse instead of handing them back to
/// the kernel, once per process; returns whether the settings took.
///
/// libtorch allocates every CPU tensor with `malloc`. glibc serves blocks above its
/// mmap threshold (128 KiB at first, adjusted up to 32 MiB as it goes) with a fresh
/// `mmap` and unmaps them on free, so a training step's activations, all of that size,
/// arrive as new pages each step: page faults and zeroing took 5-10% of a language-model
/// step on 2 cores (`perf`), and the same settings made PyTorch eager's steps 12% faster
/// (`MALLOC_MMAP_THRESHOLD_` and friends, benches/lm_train.sh). With a 32 MiB threshold,
/// no trimming and a 512 MiB top pad, memory freed by one step is reused by the next;
/// the price is that the process keeps its peak heap. An operator who sets glibc's own
/// variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_` or
/// `GLIBC_TUNABLES`) or `KILN_KEEP_FREED_MEMORY=0` keeps glibc's behaviour.
pub fn keep_freed_memory() -> bool {
    static APPLIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APPLIED.get_or_init(|| {
        let own = [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_",
            "GLIBC_TUNABLES",
        ];
        if own.iter().any(|v| std::env::var_os(v).is_some())
            || std::env::var("KILN_KEEP_FREED_MEMORY").is_ok_and(|v| v == "0")
        {
            return false;
        }
        glibc::mallopt_keep_freed()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    // <malloc.h>
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_TOP_PAD: c_int = -2;
    const M_MMAP_THRESHOLD: c_int = -3;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    #[allow(unsafe_code)]
    pub(super) fn mallopt_keep_freed() -> bool {
        // SAFETY: mallopt only changes the allocator's tuning parameters, under its own
        // lock; it is safe to call at any time from any thread and returns 0 on a value it
        // refuses (we then report that the settings did not take).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
                && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1
                && mallopt(M_TOP_PAD, 512 << 20) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub(super) fn mallopt_keep_freed() -> bool {
        false
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
