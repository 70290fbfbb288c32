//! The error type of kiln-package.

use std::path::PathBuf;

/// Everything that can go wrong writing or loading a package.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A package file whose contents are wrong; the message says what and what was expected.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// A safetensors file that is malformed or does not fit the architecture (every
    /// mismatch listed); callers that know the file wrap it in [`Error::Invalid`].
    #[error("{0}")]
    Weights(String),
    /// A manifest that disagrees with itself or its architecture; the message names the field.
    #[error("{0}")]
    Manifest(String),
    /// A caller's input that does not fit the model (wrong value count, a value that is not
    /// finite, an undecodable image): the caller's mistake, not the package's.
    #[error("{0}")]
    Input(String),
    /// A caller's input over a limit set to protect memory (an image declaring too many
    /// pixels); the message names the size and the limit.
    #[error("{0}")]
    InputTooLarge(String),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] kiln_model::Error),
    /// The tensor layer failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] kiln_tensor::tch::TchError),
}

impl Error {
    /// Whether the caller's input caused the error (a server answers 4xx for these).
    pub fn is_input_error(&self) -> bool {
        matches!(self, Error::Input(_) | Error::InputTooLarge(_))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The result type of kiln-package.
pub type Result<T, E = Error> = std::result::Result<T, E>;
