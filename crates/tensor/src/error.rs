//! The error type of kiln-tensor.

/// Everything that can go wrong in the libtorch layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data does not fit the shape it was given.
    #[error("shape {shape:?} needs {expected} elements, got {got}")]
    ElementCount {
        /// The requested shape.
        shape: Vec<i64>,
        /// The number of elements the shape needs.
        expected: usize,
        /// The number of elements provided.
        got: usize,
    },
    /// A shape had a negative or otherwise unusable dimension.
    #[error("invalid shape {shape:?}: {reason}")]
    InvalidShape {
        /// The shape as given.
        shape: Vec<i64>,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor had another dtype than the one required.
    #[error("expected a tensor of dtype {expected}, got {got}")]
    DType {
        /// The dtype required.
        expected: String,
        /// The dtype found.
        got: String,
    },
    /// A device name could not be parsed or the device is not present.
    #[error("device {0}")]
    Device(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// The result type of kiln-tensor.
pub type Result<T, E = Error> = std::result::Result<T, E>;
