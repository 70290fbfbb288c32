//! The one error type of kiln-text.

use std::path::PathBuf;

/// What went wrong reading text, training or loading a tokenizer, or loading token data;
/// every message says what was found and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file whose contents are not what its format requires (a tokenizer.json that does
    /// not parse, a JSON Lines record without its text field, text that is not UTF-8...).
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        reason: String,
    },
    /// The tokenizer library failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A setting or request that cannot be honoured (a vocabulary too small, a sequence
    /// length of 0, a corpus too small for one sequence...).
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

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Error {
        Error::Tokenizer(e.to_string())
    }
}

/// The result type of kiln-text.
pub type Result<T, E = Error> = std::result::Result<T, E>;
