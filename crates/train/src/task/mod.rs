//! What a run learns, behind one interface: the training loop asks a [`Task`] for
//! batches, a forward pass, an evaluation, a package and plots, and does the rest
//! (optimizer, schedule, accumulation, clipping, checkpoints, resume, logging) the same
//! way for every task. Two tasks: [`classify`] and [`language`].

pub(crate) mod classify;
pub(crate) mod language;

use crate::checkpoint::RunState;
use crate::{Confusion, EvalResult, Result};
use kiln_package::Manifest;
use kiln_tensor::{nn, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub use language::LmEval;

/// One training batch's forward pass and loss, as the loop needs it.
pub(crate) struct Forward {
    /// A scalar to call `backward` on; its value is the batch's mean loss.
    pub objective: Tensor,
    /// The batch's mean loss.
    pub loss: f64,
    /// Predictions made (samples, or tokens of a language model).
    pub predictions: usize,
    /// Predictions that were right (the target class scored highest).
    pub correct: i64,
    /// Sequences or samples in the batch (for the progress bar and samples/s).
    pub samples: usize,
}

/// What a run learns.
pub(crate) trait Task {
    /// A batch of training data.
    type Batch;

    /// The model's parameters (the optimizer's and the checkpoints').
    fn vars(&self) -> &nn::VarStore;

    /// What is trained on what, for the log line that opens a run.
    fn describe(&self) -> String;

    /// The unit `samples` counts in the progress bar and the step records.
    fn unit(&self) -> &'static str;

    /// Training batches per epoch.
    fn batches_per_epoch(&self) -> usize;

    /// Epoch `epoch`'s training batches from batch `first` on, in the seeded order.
    fn batches(&self, epoch: u64, first: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_>;

    /// The training-mode forward pass of a batch and its loss (autocast to bf16 when
    /// asked; label smoothing as the config says).
    fn forward(&self, batch: &Self::Batch, autocast: bool) -> Result<Forward>;

    /// The model on the validation data, when there is some.
    fn evaluate(&self) -> Result<Option<Evaluation>>;

    /// Writes the model as the run's package (the best epoch so far).
    fn save_package(&self, out: &Path, state: &RunState) -> Result<()>;

    /// Redraws the run's plots.
    fn write_plots(&self, out: &Path, state: &RunState, last: Option<&Evaluation>) -> Result<()>;

    /// After the last epoch: evaluates the packaged (best) model on the test data where
    /// there is some, rewrites the package with it, and returns both.
    fn finish(&self, out: &Path, state: &RunState) -> Result<(Option<EvalResult>, Manifest)>;
}

/// An evaluation on held-out data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Evaluation {
    /// A classifier's: loss, accuracy, top-k, per-class metrics, confusion matrix.
    Classification(EvalResult),
    /// A language model's: loss, perplexity, bits per byte, next-token accuracy.
    LanguageModel(LmEval),
}

impl Evaluation {
    /// Mean cross-entropy.
    pub fn loss(&self) -> f64 {
        match self {
            Evaluation::Classification(e) => e.loss,
            Evaluation::LanguageModel(e) => e.loss,
        }
    }

    /// Fraction of samples (or next tokens) predicted right.
    pub fn accuracy(&self) -> f64 {
        match self {
            Evaluation::Classification(e) => e.accuracy,
            Evaluation::LanguageModel(e) => e.accuracy,
        }
    }

    /// A classifier's confusion matrix.
    pub fn confusion(&self) -> Option<&Confusion> {
        match self {
            Evaluation::Classification(e) => Some(&e.confusion),
            Evaluation::LanguageModel(_) => None,
        }
    }

    /// The scalar metrics by name, each prefixed (`val_loss`, `val_bits_per_byte`...).
    pub fn metrics(&self, prefix: &str) -> BTreeMap<String, f64> {
        let pairs: Vec<(&str, f64)> = match self {
            Evaluation::Classification(v) => vec![
                ("loss", v.loss),
                ("accuracy", v.accuracy),
                ("top_k_accuracy", v.top_k_accuracy),
                ("macro_f1", v.macro_f1),
            ],
            Evaluation::LanguageModel(v) => vec![
                ("loss", v.loss),
                ("accuracy", v.accuracy),
                ("perplexity", v.perplexity),
                ("bits_per_byte", v.bits_per_byte),
            ],
        };
        pairs.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect()
    }

    /// The figures for an epoch's log line.
    pub fn summary(&self) -> String {
        match self {
            Evaluation::Classification(v) => format!("val loss {:.4} acc {:.4}", v.loss, v.accuracy),
            Evaluation::LanguageModel(v) => format!(
                "val loss {:.4} ppl {:.2} bits/byte {:.4}",
                v.loss, v.perplexity, v.bits_per_byte
            ),
        }
    }
}

/// Copies every tensor of `from` into `to` (fine-tuning's starting point); names and
/// shapes must match, and every tensor of `to` must be found.
pub(crate) fn copy_weights(from: &nn::VarStore, to: &nn::VarStore, source: &Path) -> Result<()> {
    let src = from.variables();
    kiln_tensor::tch::no_grad(|| {
        for (name, var) in to.variables() {
            let w = src.get(&name).ok_or_else(|| {
                crate::Error::Config(format!(
                    "init_from {}: the package has no tensor {name}",
                    source.display()
                ))
            })?;
            if w.size() != var.size() {
                return Err(crate::Error::Config(format!(
                    "init_from {}: tensor {name} is {:?} in the package, {:?} in the model",
                    source.display(),
                    w.size(),
                    var.size()
                )));
            }
            var.shallow_clone().f_copy_(w)?;
        }
        Ok(())
    })
}
