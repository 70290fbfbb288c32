//! GGUF, the model file format of llama.cpp, read in Rust: the header, the metadata
//! (architecture, tokenizer, chat template), the tensor table, and tensors dequantised to
//! `f32` (F32, F16, Q8_0 and Q4_1 blocks).
//!
//! Every length and count in the file is checked against the file's size before anything
//! is allocated, so a damaged or hostile file is an [`Error`], never a panic or a huge
//! allocation.

mod dequant;
mod error;
mod file;
mod value;

pub use dequant::{dequantize, GgmlType};
pub use error::{Error, Result};
pub use file::{GgufFile, TensorInfo};
pub use value::Value;
