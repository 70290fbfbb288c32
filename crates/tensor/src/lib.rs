//! kiln's libtorch layer: everything above it talks to libtorch through this crate.
//!
//! It chooses the device ([`DeviceChoice`]), sets libtorch's thread count and seeds
//! ([`Runtime`]), and converts between tensors and plain Rust data with the shape and
//! dtype checked first ([`convert`]), so a bad input is an [`Error`], never a panic.
//!
//! ```
//! use kiln_tensor::{convert, DType};
//! let t = convert::tensor_from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! assert_eq!(t.size(), vec![2, 3]);
//! assert_eq!(DType::of(&t)?, DType::F32);
//! let err = convert::tensor_from_f32(&[1.0, 2.0], &[2, 3]).unwrap_err();
//! assert!(err.to_string().contains("6 elements"));
//! # Ok::<(), kiln_tensor::Error>(())
//! ```

pub mod convert;
mod device;
mod dtype;
mod error;
mod host;
mod int4;
pub mod rng;
mod runtime;

pub use device::DeviceChoice;
pub use dtype::DType;
pub use error::{Error, Result};
pub use host::HostTensor;
pub use int4::Int4Weight;
pub use runtime::{keep_freed_memory, libtorch_version, Runtime};

/// The tch crate, re-exported so that the crates above use exactly this version.
pub use tch;
pub use tch::{nn, Device, Kind, Tensor};
