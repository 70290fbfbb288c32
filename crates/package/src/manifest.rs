//! `manifest.json`: what a package holds, what its model takes and gives, how it was made.

use kiln_data::{ImageLayout, Normalize};
use kiln_model::{ModelSpec, Network};
use kiln_tensor::DType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The package format this kiln writes and reads. A loader refuses any other.
pub const FORMAT_VERSION: u32 = 1;

/// The contents of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The package format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The model's name.
    pub name: String,
    /// The model's version, a positive integer.
    pub version: u64,
    /// When the package was written (RFC 3339, UTC).
    pub created_at: String,
    /// The kiln version that wrote it.
    pub kiln_version: String,
    /// The libtorch version it was trained with.
    pub libtorch_version: String,
    /// The architecture: rebuilding it gives exactly the tensors in the weights file.
    pub model: ModelSpec,
    /// What the model takes.
    pub input: InputSpec,
    /// What the model gives.
    pub output: OutputSpec,
    /// How the model was trained, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSummary>,
    /// The weights file and its checksum.
    pub weights: WeightsRef,
}

/// The model's input and how raw data becomes it.
///
/// Image inputs are decoded, converted to `image.channels` channels, resized to
/// `image.height` x `image.width`, scaled from 0..255 to 0..1, then normalised per
/// channel with `normalize` (x - mean) / std. Tabular inputs are normalised only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input tensor's name.
    pub name: String,
    /// Its shape, with -1 for the batch, e.g. `[-1, 1, 28, 28]`.
    pub shape: Vec<i64>,
    /// Its element type.
    pub dtype: DType,
    /// Per-channel normalisation applied after scaling, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// For image models: the channels and size images are brought to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageLayout>,
}

/// The model's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output tensor's name.
    pub name: String,
    /// Its shape, `[-1, classes]`.
    pub shape: Vec<i64>,
    /// Its element type.
    pub dtype: DType,
    /// The class names, indexed by class.
    pub labels: Vec<String>,
}

/// A summary of the training run that produced the weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSummary {
    /// The dataset trained on.
    pub dataset: String,
    /// Epochs run.
    pub epochs: usize,
    /// Training samples seen per epoch.
    pub train_samples: usize,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Final metrics, e.g. `test_accuracy`, `val_loss`.
    pub metrics: BTreeMap<String, f64>,
}

/// The weights file of a package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRef {
    /// File name inside the package folder.
    pub file: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

impl Manifest {
    /// A manifest for `net`, with its input and output taken from the network's spec.
    /// The weights reference is filled in by [`Package::save`](crate::Package::save).
    pub fn new(
        name: &str,
        version: u64,
        net: &Network,
        labels: Vec<String>,
        normalize: Option<Normalize>,
        image: Option<ImageLayout>,
    ) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            name: name.to_string(),
            version,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch_version: kiln_tensor::libtorch_version().to_string(),
            model: net.spec().clone(),
            input: InputSpec {
                name: "input".into(),
                shape: net.input_shape(),
                dtype: DType::Fp32,
                normalize,
                image,
            },
            output: OutputSpec {
                name: "logits".into(),
                shape: vec![-1, net.spec().classes()],
                dtype: DType::Fp32,
                labels,
            },
            training: None,
            weights: WeightsRef {
                file: crate::WEIGHTS_FILE.into(),
                sha256: String::new(),
                bytes: 0,
            },
        }
    }

    /// Checks that the manifest agrees with itself and with its architecture; the
    /// message says which field is wrong and what was expected.
    pub fn check(&self) -> crate::Result<()> {
        self.check_fields().map_err(crate::Error::Manifest)
    }

    fn check_fields(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not supported; this kiln reads version {FORMAT_VERSION}",
                self.format_version
            ));
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.contains("..") {
            return Err(format!(
                "name {:?} must be non-empty without path separators or `..`",
                self.name
            ));
        }
        if self.version == 0 {
            return Err("version must be a positive integer".into());
        }
        self.model.validate().map_err(|e| e.to_string())?;
        let want_in: Vec<i64> = std::iter::once(-1).chain(self.model.input().iter().copied()).collect();
        if self.input.shape != want_in {
            return Err(format!(
                "input.shape {:?} does not match the model's {want_in:?}",
                self.input.shape
            ));
        }
        let classes = self.model.classes();
        if self.output.shape != [-1, classes] {
            return Err(format!(
                "output.shape {:?} does not match the model's [-1, {classes}]",
                self.output.shape
            ));
        }
        if self.output.labels.len() as i64 != classes {
            return Err(format!(
                "output.labels has {} names for {classes} classes",
                self.output.labels.len()
            ));
        }
        if let Some(n) = &self.input.normalize {
            let len = self.model.input().iter().product::<i64>() as usize;
            n.check(len).map_err(|e| format!("input.normalize: {e}"))?;
        }
        if let Some(img) = &self.input.image {
            let shape = [img.channels as i64, img.height as i64, img.width as i64];
            if self.model.input() != shape {
                return Err(format!(
                    "input.image {shape:?} does not match the model input {:?}",
                    self.model.input()
                ));
            }
        }
        if self.weights.file.contains(['/', '\\']) || self.weights.file.contains("..") {
            return Err(format!(
                "weights.file {:?} must be a plain file name",
                self.weights.file
            ));
        }
        Ok(())
    }
}
