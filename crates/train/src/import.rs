//! Packages of weights trained elsewhere: a safetensors file (from PyTorch, say) whose
//! tensors are those of one of kiln's architectures becomes a kiln package.

use crate::{Error, Result, Sources, TrainConfig};
use kiln_model::Network;
use kiln_package::{Manifest, Package};
use std::path::Path;

/// Writes a package at `out` holding the weights in `weights` (a safetensors file) for the
/// architecture `config.model` describes, with the classes, input shape and image layout
/// of `config.data` (read from the training data, as training would). Normalisation:
/// when `config.data.normalize` is on, the statistics kiln's trainer would fit (so the
/// weights must have been trained on inputs normalised that way); off, none (inputs in
/// 0..1, as PyTorch's `ToTensor` gives). Every tensor's name, shape and dtype is checked
/// against the architecture; all mismatches are named in the error.
pub fn import_weights(config: &TrainConfig, weights: &Path, out: &Path) -> Result<Manifest> {
    config.validate()?;
    let sources = Sources::open(&config.data, config.seed)?;
    let shape: Vec<i64> = sources.train.sample_shape().iter().map(|&d| d as i64).collect();
    let mut spec = config.model.clone();
    spec.fit_to(&shape, sources.classes.len() as i64)?;
    let normalize = sources.normalization(config.data.normalize)?;
    let mut net = Network::new(spec, kiln_tensor::Device::Cpu)?;
    let bytes = std::fs::read(weights).map_err(|e| Error::io(weights, e))?;
    kiln_package::decode_weights(&bytes, &mut net).map_err(|e| Error::Input(format!("{}: {e}", weights.display())))?;
    let manifest = Manifest::new(
        &config.name,
        config.version,
        &net,
        sources.classes.clone(),
        normalize,
        sources.image,
    );
    Ok(Package::save(out, manifest, &net)?)
}
