//! kiln's serialization layer: the model package.
//!
//! A package is a folder holding `manifest.json` (what the model is, what it takes and
//! gives, how it was trained, the sha256 of its weights) and `weights.safetensors`. No
//! pickle, no code: loading a package runs nothing from it. [`Package::save`] writes the
//! folder atomically; [`Package::load`] verifies the format version, the weights' hash,
//! and every tensor's name, shape and dtype against the architecture before a model is
//! returned.
//!
//! ```
//! use kiln_model::{ModelSpec, Network};
//! use kiln_package::{Manifest, Package};
//! use kiln_tensor::Device;
//! let dir = tempfile::tempdir()?;
//! let net = Network::new(ModelSpec::classic_mlp(), Device::Cpu)?;
//! let labels = (0..10).map(|i| i.to_string()).collect();
//! let manifest = Manifest::new("digits", 1, &net, labels, None, None);
//! Package::save(dir.path().join("digits"), manifest, &net)?;
//! let loaded = Package::load(dir.path().join("digits"), Device::Cpu)?;
//! assert_eq!(loaded.manifest.name, "digits");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod atomic;
mod classify;
mod error;
mod language;
mod manifest;
mod package;
mod tensors;
mod weights;

pub use classify::{softmax, top_k, ClassScore};
pub use error::{Error, Result};
pub use language::{LanguagePackage, TOKENIZER_FILE};
pub use manifest::{
    GenerationDefaults, InputSpec, Manifest, OutputSpec, Task, TokenizerRef, TrainingSummary, WeightsRef,
    FORMAT_VERSION, READS_FORMATS,
};
pub use package::{Package, MANIFEST_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE};
pub use weights::{decode_tensors, decode_weights, encode_tensors, encode_weights, sha256_hex};
