//! Evaluating a network on a dataset: loss, accuracy, top-k accuracy, per-class metrics
//! and the confusion matrix.

use crate::{ClassMetrics, Confusion, Result};
use kiln_data::DataLoader;
use kiln_model::Network;
use kiln_tensor::{convert, tch, Kind, Tensor};
use serde::{Deserialize, Serialize};

/// The evaluation of a model on a dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean cross-entropy (without label smoothing).
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Fraction whose true class is among the `k` most probable.
    pub top_k_accuracy: f64,
    /// The `k` of `top_k_accuracy`.
    pub k: usize,
    /// Unweighted mean F1 over classes.
    pub macro_f1: f64,
    /// Samples evaluated.
    pub samples: usize,
    /// Precision, recall and F1 per class.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion.counts[true][predicted]`.
    pub confusion: Confusion,
}

/// Running sums of a training epoch's loss and correct predictions (checkpointed with
/// the run so a resumed epoch reports the same numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    /// Correct predictions.
    pub correct: i64,
    /// Samples seen.
    pub samples: usize,
}

impl Tally {
    /// Adds a batch: `loss` is its mean loss over `n` predictions, `correct` of them right.
    pub(crate) fn add(&mut self, loss: f64, n: usize, correct: i64) {
        self.loss_sum += loss * n as f64;
        self.correct += correct;
        self.samples += n;
    }

    /// Mean loss and accuracy.
    pub(crate) fn means(&self) -> (f64, f64) {
        let n = self.samples.max(1) as f64;
        (self.loss_sum / n, self.correct as f64 / n)
    }
}

/// Mean cross-entropy of logits `[B, C]` against class labels `[B]`.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, label_smoothing)?)
}

/// Evaluates `net` (evaluation mode, no gradients) on every batch of `loader`'s epoch 0.
pub fn evaluate(net: &Network, loader: &DataLoader, k: usize, labels: &[String]) -> Result<EvalResult> {
    let classes = labels.len().max(net.spec().classes() as usize);
    let k = k.clamp(1, classes.max(1));
    let mut confusion = Confusion::new(classes);
    let (mut loss_sum, mut top_k, mut samples) = (0f64, 0i64, 0usize);
    tch::no_grad(|| -> Result<()> {
        for batch in loader.epoch(0) {
            let batch = batch?;
            let y = batch.labels.f_to_device(net.device())?;
            let logits = net.forward(&batch.inputs, false)?.f_to_kind(Kind::Float)?;
            let n = batch.len();
            loss_sum += cross_entropy(&logits, &y, 0.0)?.f_double_value(&[])? * n as f64;
            let (_, top) = logits.f_topk(k as i64, -1, true, true)?;
            top_k += top
                .f_eq_tensor(&y.f_unsqueeze(1)?)?
                .f_any_dim(1, false)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            let predicted = convert::tensor_to_i64(&logits.f_argmax(-1, false)?)?;
            for (&t, &p) in convert::tensor_to_i64(&batch.labels)?.iter().zip(&predicted) {
                confusion.add(t as usize, p as usize);
            }
            samples += n;
        }
        Ok(())
    })?;
    let n = samples.max(1) as f64;
    let correct: u64 = (0..classes).map(|c| confusion.counts[c][c]).sum();
    Ok(EvalResult {
        loss: loss_sum / n,
        accuracy: correct as f64 / n,
        top_k_accuracy: top_k as f64 / n,
        k,
        macro_f1: confusion.macro_f1(labels),
        samples,
        per_class: confusion.per_class(labels),
        confusion,
    })
}

/// Evaluates a loaded package on `data`, normalising as its manifest says. The data's
/// sample shape must be the model's input shape.
pub fn evaluate_package(
    package: &kiln_package::Package,
    data: std::sync::Arc<dyn kiln_data::Dataset>,
    batch_size: usize,
    k: usize,
) -> Result<EvalResult> {
    package.require_classifier()?;
    let want = package.manifest.model.input();
    let got: Vec<i64> = data.sample_shape().iter().map(|&d| d as i64).collect();
    if got != want {
        return Err(crate::Error::Input(format!(
            "the data's samples have shape {got:?}, the model takes {want:?}"
        )));
    }
    // Labels mean the model's classes, matched by name.
    let data = kiln_data::relabel(data, &package.manifest.output.labels, "the data")?;
    let loader = DataLoader::new(
        data,
        kiln_data::LoaderConfig {
            batch_size: batch_size.max(1),
            shuffle: false,
            normalize: package.manifest.input.normalize.clone(),
            ..Default::default()
        },
    );
    evaluate(&package.network, &loader, k, &package.manifest.output.labels)
}
