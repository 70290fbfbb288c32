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

/// What a TorchScript classifier's package needs besides the module: the facts its
/// manifest records, which the module itself does not carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TorchScriptFacts {
    /// The model's name.
    pub name: String,
    /// Its version, a positive integer.
    pub version: u64,
    /// The shape of one input sample, without the batch, e.g. `[1, 28, 28]`.
    pub input: Vec<i64>,
    /// The class names, indexed by class (their number is the width of the logits).
    pub labels: Vec<String>,
    /// Whether inputs are images (`[channels, height, width]`, 1 or 3 channels): requests
    /// may then carry PNG or JPEG files, decoded and resized to that layout, pixels in 0..1.
    pub image: bool,
    /// Per-channel normalisation applied to inputs before the module, if the module was
    /// trained on normalised inputs and does not normalise itself.
    pub normalize: Option<kiln_data::Normalize>,
    /// For a module of named tensors instead of a classifier: its inputs, in the order
    /// `forward` takes them (then `input`, `labels`, `image` and `normalize` stay empty).
    pub inputs: Vec<kiln_model::TensorSpec>,
    /// For a module of named tensors: its outputs, in the order `forward` returns them
    /// (or the keys of the dict it returns).
    pub outputs: Vec<kiln_model::TensorSpec>,
}

/// Writes a package at `out` holding the TorchScript module in the file `module` (from
/// `torch.jit.script(model).save(...)` or `torch.jit.trace`), with a manifest made of
/// `facts`. The module is loaded and run once on zeros of the declared input shape, and
/// must give float logits `[1, classes]`. A file that is not TorchScript (a pickled
/// `state_dict`) is refused, saying how to save the model instead.
pub fn import_torchscript(module: &Path, facts: &TorchScriptFacts, out: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(module).map_err(|e| Error::io(module, e))?;
    if !facts.inputs.is_empty() || !facts.outputs.is_empty() {
        return import_tensors_module(module, &bytes, facts, out);
    }
    let image = if facts.image {
        match *facts.input.as_slice() {
            [c @ (1 | 3), h, w] if h > 0 && w > 0 => Some(kiln_data::ImageLayout {
                channels: c as usize,
                height: h as usize,
                width: w as usize,
            }),
            _ => {
                return Err(Error::Config(format!(
                    "--image needs an input shape [channels, height, width] with 1 or 3 channels, not {:?}",
                    facts.input
                )))
            }
        }
    } else {
        None
    };
    let spec = kiln_model::ModelSpec::Torchscript(kiln_model::TorchScriptSpec {
        input: facts.input.clone(),
        classes: facts.labels.len() as i64,
        ..Default::default()
    });
    let manifest = Manifest::classifier(
        &facts.name,
        facts.version,
        spec,
        facts.labels.clone(),
        facts.normalize.clone(),
        image,
    );
    save_torchscript(module, &bytes, manifest, out)
}

fn save_torchscript(module: &Path, bytes: &[u8], manifest: Manifest, out: &Path) -> Result<Manifest> {
    Package::save_torchscript(out, manifest, bytes).map_err(|e| match e {
        kiln_package::Error::Model(m) => Error::Input(format!("{}: {m}", module.display())),
        other => other.into(),
    })
}

/// A package of task `tensors`: the module's named inputs and outputs, nothing of a
/// classifier's.
fn import_tensors_module(module: &Path, bytes: &[u8], facts: &TorchScriptFacts, out: &Path) -> Result<Manifest> {
    if facts.inputs.is_empty() || facts.outputs.is_empty() {
        return Err(Error::Config(
            "a module of named tensors needs its inputs and its outputs (--input-tensor and --output-tensor, \
             each at least once)"
                .into(),
        ));
    }
    if !facts.input.is_empty() || !facts.labels.is_empty() || facts.image || facts.normalize.is_some() {
        return Err(Error::Config(
            "--input-tensor/--output-tensor describe a module of named tensors; --input, --labels, --classes, \
             --image, --mean and --std describe a classifier: give one or the other"
                .into(),
        ));
    }
    let spec = kiln_model::TorchScriptSpec {
        inputs: facts.inputs.clone(),
        outputs: facts.outputs.clone(),
        ..Default::default()
    };
    let manifest = Manifest::tensors(&facts.name, facts.version, spec);
    save_torchscript(module, bytes, manifest, out)
}
