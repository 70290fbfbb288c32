//! The error type of kiln-data.

use std::path::PathBuf;

/// Everything that can go wrong while reading or loading data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A dataset that is not installed where it was looked for.
    #[error("{what} not found at {path}. {hint}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// Where.
        path: PathBuf,
        /// How to install it.
        hint: String,
    },
    /// A file whose contents are not what its format requires.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        reason: String,
    },
    /// An input larger than a limit set to protect memory (an image declaring more pixels
    /// than allowed); the message names the size and the limit.
    #[error("{0}")]
    TooLarge(String),
    /// A request the dataset cannot honour (an index out of range, a wrong buffer size...).
    #[error("{0}")]
    Invalid(String),
    /// The tensor layer failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] kiln_tensor::tch::TchError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The result type of kiln-data.
pub type Result<T, E = Error> = std::result::Result<T, E>;
