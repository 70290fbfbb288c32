//! Evaluating a network on a dataset: mean loss and accuracy.

use crate::Result;
use kiln_data::DataLoader;
use kiln_model::Network;
use kiln_tensor::{tch, Kind, Tensor};
use serde::Serialize;

/// Loss and accuracy over a dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EvalResult {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// Running sums of loss and correct predictions, read out as means.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    loss_sum: f64,
    correct: i64,
    samples: usize,
}

impl Tally {
    /// Adds a batch: `loss` is the batch's mean loss, `logits` `[B, C]`, `labels` `[B]`.
    pub(crate) fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let n = labels.size()[0] as usize;
        self.loss_sum += loss.f_double_value(&[])? * n as f64;
        self.correct += logits
            .f_argmax(-1, false)?
            .f_eq_tensor(labels)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        self.samples += n;
        Ok(())
    }

    pub(crate) fn result(&self) -> EvalResult {
        let n = self.samples.max(1) as f64;
        EvalResult {
            loss: self.loss_sum / n,
            accuracy: self.correct as f64 / n,
            samples: self.samples,
        }
    }
}

/// Evaluates `net` (evaluation mode, no gradients) on every batch of `loader`'s epoch 0.
pub fn evaluate(net: &Network, loader: &DataLoader) -> Result<EvalResult> {
    let mut tally = Tally::default();
    tch::no_grad(|| -> Result<()> {
        for batch in loader.epoch(0) {
            let batch = batch?;
            let labels = batch.labels.f_to_device(net.device())?;
            let logits = net.forward(&batch.inputs, false)?;
            let loss = crate::evaluate::cross_entropy(&logits, &labels)?;
            tally.add(&loss, &logits, &labels)?;
        }
        Ok(())
    })?;
    Ok(tally.result())
}

/// Mean cross-entropy of logits `[B, C]` against class labels `[B]`.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, 0.0)?)
}

/// Evaluates a loaded package on `data`, normalising as its manifest says. The data's
/// sample shape must be the model's input shape.
pub fn evaluate_package(
    package: &kiln_package::Package,
    data: std::sync::Arc<dyn kiln_data::Dataset>,
    batch_size: usize,
) -> Result<EvalResult> {
    let want = package.manifest.model.input();
    let got: Vec<i64> = data.sample_shape().iter().map(|&d| d as i64).collect();
    if got != want {
        return Err(crate::Error::Config(format!(
            "the data's samples have shape {got:?}, the model takes {want:?}"
        )));
    }
    let loader = DataLoader::new(
        data,
        kiln_data::LoaderConfig {
            batch_size: batch_size.max(1),
            shuffle: false,
            normalize: package.manifest.input.normalize.clone(),
            ..Default::default()
        },
    );
    evaluate(&package.network, &loader)
}
