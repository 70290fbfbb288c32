//! The error type of kiln-model.

/// Everything that can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec describes no model that can be built.
    #[error("invalid model spec: {0}")]
    Spec(String),
    /// An input that does not fit the model.
    #[error("input {0}")]
    Input(String),
    /// The tensor layer failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] kiln_tensor::tch::TchError),
}

/// The result type of kiln-model.
pub type Result<T, E = Error> = std::result::Result<T, E>;
