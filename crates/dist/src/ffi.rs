//! The C interface of `cpp/shim.cpp`, and the only `unsafe` code in kiln: each function
//! here wraps one C call, checks its error string and frees what C++ allocated.

#![allow(unsafe_code)]

use kiln_tensor::Tensor;
use std::ffi::{c_char, c_int, CStr, CString};

#[repr(C)]
pub(crate) struct RawGroup {
    _private: [u8; 0],
}

#[repr(C)]
pub(crate) struct RawWork {
    _private: [u8; 0],
}

/// libtorch's `at::Tensor`, as torch-sys hands it out.
type RawTensor = torch_sys::C_tensor;

extern "C" {
    fn kiln_dist_free_string(s: *mut c_char);
    #[allow(clippy::too_many_arguments)]
    fn kiln_group_new(
        host: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        bind: *const c_char,
        prefix: *const c_char,
        cuda_device: c_int,
        err: *mut *mut c_char,
    ) -> *mut RawGroup;
    fn kiln_group_free(g: *mut RawGroup);
    fn kiln_allreduce(g: *mut RawGroup, t: *mut RawTensor, op: c_int, err: *mut *mut c_char) -> *mut RawWork;
    fn kiln_broadcast(g: *mut RawGroup, t: *mut RawTensor, root: c_int, err: *mut *mut c_char) -> *mut RawWork;
    fn kiln_allgather(
        g: *mut RawGroup,
        input: *mut RawTensor,
        outputs: *mut *mut RawTensor,
        n: usize,
        err: *mut *mut c_char,
    ) -> *mut RawWork;
    fn kiln_barrier(g: *mut RawGroup, err: *mut *mut c_char) -> *mut RawWork;
    fn kiln_work_wait(w: *mut RawWork, err: *mut *mut c_char) -> bool;
    fn kiln_store_set(
        g: *mut RawGroup,
        key: *const c_char,
        value: *const u8,
        len: usize,
        err: *mut *mut c_char,
    ) -> bool;
    fn kiln_store_check(g: *mut RawGroup, key: *const c_char, err: *mut *mut c_char) -> c_int;
    fn kiln_set_grad(param: *mut RawTensor, grad: *mut RawTensor, err: *mut *mut c_char) -> bool;
}

/// Makes `grad` the gradient of `param` (libtorch's `mutable_grad()`): backward passes then
/// accumulate into `grad`'s storage in place.
pub(crate) fn set_grad(param: &Tensor, grad: &Tensor) -> Result<(), String> {
    let mut err = std::ptr::null_mut();
    // SAFETY: both are live tensors; the shim copies the handle (a refcount) into the
    // parameter's grad slot.
    if unsafe { kiln_set_grad(raw(param), raw(grad), &mut err) } {
        Ok(())
    } else {
        Err(take_error(err))
    }
}

/// Takes the message C++ left in `err` (if any) and frees it.
fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: a non-null `err` is a NUL-terminated string the shim malloc'd for us.
    let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    // SAFETY: freed once, by the allocator that made it.
    unsafe { kiln_dist_free_string(err) };
    msg
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"))
}

/// An owned c10d store and Gloo group.
pub(crate) struct Group(*mut RawGroup);

// SAFETY: c10d's ProcessGroupGloo and TCPStore are thread-safe objects; kiln calls a
// group from one thread at a time (`&mut self` methods above this layer).
unsafe impl Send for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the pointer came from kiln_group_new and is freed once.
        unsafe { kiln_group_free(self.0) }
    }
}

/// A collective in flight. Dropping it without waiting leaves libtorch's work running.
pub(crate) struct Work(*mut RawWork);

// SAFETY: c10d's Work may be waited on from any thread.
unsafe impl Send for Work {}

impl Work {
    fn from_raw(w: *mut RawWork, err: *mut c_char) -> Result<Work, String> {
        if w.is_null() {
            Err(take_error(err))
        } else {
            Ok(Work(w))
        }
    }

    /// Waits for the collective; its error, if it failed.
    pub(crate) fn wait(self) -> Result<(), String> {
        let mut err = std::ptr::null_mut();
        let w = self.0;
        std::mem::forget(self);
        // SAFETY: `w` is a live handle; kiln_work_wait frees it.
        if unsafe { kiln_work_wait(w, &mut err) } {
            Ok(())
        } else {
            Err(take_error(err))
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let mut err = std::ptr::null_mut();
        // SAFETY: a handle never waited on: wait (the tensors it uses must outlive it), then free.
        if !unsafe { kiln_work_wait(self.0, &mut err) } {
            let _ = take_error(err);
        }
    }
}

fn raw(t: &Tensor) -> *mut RawTensor {
    t.as_ptr() as *mut RawTensor
}

impl Group {
    /// Rendezvous and group creation (blocks until every rank arrived or the timeout):
    /// Gloo, or NCCL on `cuda_device`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        host: &str,
        port: u16,
        rank: usize,
        world: usize,
        timeout_ms: i64,
        bind: &str,
        prefix: &str,
        cuda_device: Option<usize>,
    ) -> Result<Group, String> {
        let (host, bind, prefix) = (cstring(host)?, cstring(bind)?, cstring(prefix)?);
        let mut err = std::ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string for the call's duration.
        let g = unsafe {
            kiln_group_new(
                host.as_ptr(),
                port,
                rank as c_int,
                world as c_int,
                timeout_ms,
                bind.as_ptr(),
                prefix.as_ptr(),
                cuda_device.map_or(-1, |d| d as c_int),
                &mut err,
            )
        };
        if g.is_null() {
            Err(take_error(err))
        } else {
            Ok(Group(g))
        }
    }

    /// Starts an in-place allreduce (op: 0 sum, 1 max, 2 min). The shim holds its own
    /// reference to the tensor's storage until the work finishes.
    pub(crate) fn allreduce(&mut self, t: &Tensor, op: i32) -> Result<Work, String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensor; the shim copies the tensor handle (a refcount).
        let w = unsafe { kiln_allreduce(self.0, raw(t), op, &mut err) };
        Work::from_raw(w, err)
    }

    /// Starts an in-place broadcast from `root`.
    pub(crate) fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<Work, String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as for allreduce.
        let w = unsafe { kiln_broadcast(self.0, raw(t), root as c_int, &mut err) };
        Work::from_raw(w, err)
    }

    /// Starts an all-gather of `input` into `outputs`.
    pub(crate) fn allgather(&mut self, input: &Tensor, outputs: &[Tensor]) -> Result<Work, String> {
        let mut ptrs: Vec<*mut RawTensor> = outputs.iter().map(raw).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: as for allreduce; `ptrs` lives through the call and the shim copies the handles.
        let w = unsafe { kiln_allgather(self.0, raw(input), ptrs.as_mut_ptr(), ptrs.len(), &mut err) };
        Work::from_raw(w, err)
    }

    /// Starts a barrier.
    pub(crate) fn barrier(&mut self) -> Result<Work, String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group.
        let w = unsafe { kiln_barrier(self.0, &mut err) };
        Work::from_raw(w, err)
    }

    /// Sets `key` in the group's store.
    pub(crate) fn store_set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let key = cstring(key)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group, key string and value slice for the call's duration.
        if unsafe { kiln_store_set(self.0, key.as_ptr(), value.as_ptr(), value.len(), &mut err) } {
            Ok(())
        } else {
            Err(take_error(err))
        }
    }

    /// Whether `key` is set in the store; an error when the store cannot be reached.
    pub(crate) fn store_check(&mut self, key: &str) -> Result<bool, String> {
        let key = cstring(key)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and key string.
        match unsafe { kiln_store_check(self.0, key.as_ptr(), &mut err) } {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(take_error(err)),
        }
    }
}

/// Sends `signal` to process `pid`; false when it is gone.
pub(crate) fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a child's pid; no memory is involved.
    unsafe { libc::kill(pid, signal) == 0 }
}
