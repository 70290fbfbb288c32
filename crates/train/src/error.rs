//! The error type of kiln-train.

use std::path::PathBuf;

/// Everything that can stop a training, evaluation or prediction run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value or option that cannot be used; the message says which and why.
    #[error("config: {0}")]
    Config(String),
    /// A checkpoint that is damaged or does not fit the run's model and optimizer.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An input file or dataset that is malformed or does not fit the model (predict
    /// inputs, evaluation data, a test class the model does not know); the message names it.
    #[error("{0}")]
    Input(String),
    /// Something that should not happen, such as kiln's own records failing to serialise.
    #[error("internal error: {0}")]
    Internal(String),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] kiln_data::Error),
    /// Reading text or a tokenizer failed.
    #[error(transparent)]
    Text(#[from] kiln_text::Error),
    /// A GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::Error),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] kiln_model::Error),
    /// The package could not be written or read.
    #[error(transparent)]
    Package(#[from] kiln_package::Error),
    /// The tensor layer failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
    /// Data-parallel training failed: a lost rank, a bad launch variable.
    #[error("distributed training: {0}")]
    Dist(#[from] kiln_dist::Error),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] kiln_tensor::tch::TchError),
    /// The run was asked to stop (SIGINT, SIGTERM) and saved this checkpoint.
    #[error("interrupted; checkpoint saved in {0}: continue with `kiln-train resume`")]
    Interrupted(PathBuf),
    /// Training diverged (a non-finite loss).
    #[error("training diverged: {0}")]
    Diverged(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is a dataset that is not installed (the binary gives it its own
    /// exit code).
    pub fn is_missing_data(&self) -> bool {
        matches!(self, Error::Data(kiln_data::Error::NotFound { .. }))
    }
}

/// The result type of kiln-train.
pub type Result<T, E = Error> = std::result::Result<T, E>;
