//! The one error type of kiln-gguf.

/// What went wrong reading a GGUF file; every message says what was found and what was
/// expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading the GGUF file: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a GGUF file kiln can read (bad magic, version, type, size...).
    #[error("not a readable GGUF file: {0}")]
    Format(String),
    /// A tensor or metadata key that was asked for is absent or of another type.
    #[error("{0}")]
    Missing(String),
    /// The tensor's storage type is one kiln does not dequantise.
    #[error("tensor {name:?} is stored as GGML type {kind}, which kiln cannot dequantise (it reads F32, F16, Q8_0 and Q4_1)")]
    Unsupported {
        /// The tensor.
        name: String,
        /// Its GGML type id.
        kind: u32,
    },
}

/// The result type of kiln-gguf.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn format(reason: impl Into<String>) -> Error {
    Error::Format(reason.into())
}
