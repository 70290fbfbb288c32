//! Splitting a corpus into training and validation documents by seed: a document is never
//! cut between the two.

use crate::{Error, Result};
use kiln_data::{permutation, SplitMix64};

/// Which documents train and which validate, each list in ascending order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSplit {
    /// Indices of the training documents.
    pub train: Vec<usize>,
    /// Indices of the held-out documents.
    pub validation: Vec<usize>,
}

/// Holds out `round(documents × validation)` whole documents, at least one when
/// `validation > 0`, chosen by `seed`; the rest train.
pub fn split_documents(documents: usize, validation: f64, seed: u64) -> Result<DocumentSplit> {
    if !(0.0..1.0).contains(&validation) {
        return Err(Error::Invalid(format!(
            "validation must be a fraction at least 0 and below 1, got {validation}"
        )));
    }
    let held = if validation > 0.0 {
        ((documents as f64 * validation).round() as usize).max(1)
    } else {
        0
    };
    if documents == 0 || held >= documents {
        return Err(Error::Invalid(format!(
            "a corpus of {documents} documents cannot hold out {held} for validation and still train: \
             give it more documents (a text corpus with a separator cuts one file into several) or a smaller validation fraction"
        )));
    }
    let order = permutation(documents, &mut SplitMix64::for_stream(seed, &[0x5B17_D0C5]));
    let mut validation: Vec<usize> = order[..held].to_vec();
    let mut train: Vec<usize> = order[held..].to_vec();
    validation.sort_unstable();
    train.sort_unstable();
    Ok(DocumentSplit { train, validation })
}
