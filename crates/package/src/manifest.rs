//! `manifest.json`: what a package holds, what its model takes and gives, how it was made.

use kiln_data::{ImageLayout, Normalize};
use kiln_model::{Decoder, ModelSpec, Network, Sampling};
use kiln_tensor::DType;
use kiln_text::SpecialTokens;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The package format this kiln writes. Version 2 added the task, the tokenizer, the
/// generation defaults and the chat template; version 1 packages (classifiers) still load.
pub const FORMAT_VERSION: u32 = 2;

/// The package formats this kiln reads.
pub const READS_FORMATS: [u32; 2] = [1, 2];

/// What a packaged model does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Classifies a sample into one of `output.labels` (format 1 packages are all these).
    #[default]
    Classification,
    /// Predicts the next token of a text: `input_ids` `[B, T]` int64 to `logits`
    /// `[B, T, vocab]`.
    LanguageModel,
    /// Maps named, typed tensors to named, typed tensors (a TorchScript module of several
    /// inputs or outputs, or of other dtypes: `model.inputs` and `model.outputs` list
    /// them; `input` and `output` repeat the first of each).
    Tensors,
}

/// A language model's tokenizer file, its checksum and the roles of its special tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerRef {
    /// File name inside the package (`tokenizer.json`).
    pub file: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Which ids are BOS, EOS and PAD.
    pub special: SpecialTokens,
}

/// How a language model generates unless a request says otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationDefaults {
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Temperature, top-k, top-p, repetition penalty and seed.
    pub sampling: Sampling,
    /// Texts that end generation (not included in the output).
    pub stop: Vec<String>,
}

impl Default for GenerationDefaults {
    fn default() -> Self {
        GenerationDefaults {
            max_tokens: 128,
            sampling: Sampling::default(),
            stop: Vec::new(),
        }
    }
}

/// The contents of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The package format version ([`FORMAT_VERSION`] when written by this kiln).
    pub format_version: u32,
    /// What the model does (absent in format 1: classification).
    #[serde(default)]
    pub task: Task,
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
    /// A language model's tokenizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerRef>,
    /// A language model's generation defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationDefaults>,
    /// A chat model's template (Jinja, as in Hugging Face's `tokenizer_config.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
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
        Manifest::classifier(name, version, net.spec().clone(), labels, normalize, image)
    }

    /// A classifier's manifest for the architecture `model` (one of kiln's, or a
    /// TorchScript module's interface), its input `[-1, ...input]` float and its output
    /// `[-1, classes]` float logits. The weights reference is filled in when the package
    /// is saved.
    pub fn classifier(
        name: &str,
        version: u64,
        model: ModelSpec,
        labels: Vec<String>,
        normalize: Option<Normalize>,
        image: Option<ImageLayout>,
    ) -> Manifest {
        let input_shape = std::iter::once(-1).chain(model.input().iter().copied()).collect();
        let classes = model.classes();
        Manifest {
            format_version: FORMAT_VERSION,
            task: Task::Classification,
            name: name.to_string(),
            version,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch_version: kiln_tensor::libtorch_version().to_string(),
            model,
            input: InputSpec {
                name: "input".into(),
                shape: input_shape,
                dtype: DType::Fp32,
                normalize,
                image,
            },
            output: OutputSpec {
                name: "logits".into(),
                shape: vec![-1, classes],
                dtype: DType::Fp32,
                labels,
            },
            training: None,
            weights: WeightsRef {
                file: crate::WEIGHTS_FILE.into(),
                sha256: String::new(),
                bytes: 0,
            },
            tokenizer: None,
            generation: None,
            chat_template: None,
        }
    }

    /// A manifest for a TorchScript module of named tensors (`spec.inputs` and
    /// `spec.outputs`). The weights reference is filled in when the package is saved.
    pub fn tensors(name: &str, version: u64, spec: kiln_model::TorchScriptSpec) -> Manifest {
        let first = |t: Option<&kiln_model::TensorSpec>| {
            t.map_or((String::new(), Vec::new(), DType::Fp32), |t| {
                (t.name.clone(), t.batched_shape(), t.dtype)
            })
        };
        let (in_name, in_shape, in_dtype) = first(spec.inputs.first());
        let (out_name, out_shape, out_dtype) = first(spec.outputs.first());
        let mut m = Manifest::classifier(name, version, ModelSpec::Torchscript(spec), Vec::new(), None, None);
        m.task = Task::Tensors;
        m.input = InputSpec {
            name: in_name,
            shape: in_shape,
            dtype: in_dtype,
            normalize: None,
            image: None,
        };
        m.output = OutputSpec {
            name: out_name,
            shape: out_shape,
            dtype: out_dtype,
            labels: Vec::new(),
        };
        m
    }

    /// A manifest for a language model. The weights and tokenizer references are filled
    /// in by [`LanguagePackage::save`](crate::LanguagePackage::save).
    pub fn language_model(name: &str, version: u64, model: &Decoder, special: SpecialTokens) -> Manifest {
        let vocab = model.spec().vocab;
        Manifest {
            format_version: FORMAT_VERSION,
            task: Task::LanguageModel,
            name: name.to_string(),
            version,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch_version: kiln_tensor::libtorch_version().to_string(),
            model: ModelSpec::Decoder(model.spec().clone()),
            input: InputSpec {
                name: "input_ids".into(),
                shape: vec![-1, -1],
                dtype: DType::Int64,
                normalize: None,
                image: None,
            },
            output: OutputSpec {
                name: "logits".into(),
                shape: vec![-1, -1, vocab],
                dtype: DType::Fp32,
                labels: Vec::new(),
            },
            training: None,
            weights: WeightsRef {
                file: crate::WEIGHTS_FILE.into(),
                sha256: String::new(),
                bytes: 0,
            },
            tokenizer: Some(TokenizerRef {
                file: crate::TOKENIZER_FILE.into(),
                sha256: String::new(),
                bytes: 0,
                special,
            }),
            generation: Some(GenerationDefaults::default()),
            chat_template: None,
        }
    }

    /// Checks that the manifest agrees with itself and with its architecture; the
    /// message says which field is wrong and what was expected.
    pub fn check(&self) -> crate::Result<()> {
        self.check_fields().map_err(crate::Error::Manifest)
    }

    fn check_fields(&self) -> std::result::Result<(), String> {
        if !READS_FORMATS.contains(&self.format_version) {
            return Err(format!(
                "format version {} is not supported; this kiln reads versions {READS_FORMATS:?}",
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
        for file in [Some(&self.weights.file), self.tokenizer.as_ref().map(|t| &t.file)]
            .into_iter()
            .flatten()
        {
            if file.contains(['/', '\\']) || file.contains("..") {
                return Err(format!("file name {file:?} must be a plain file name"));
            }
        }
        match (self.task, self.model.is_language_model(), self.model.is_tensors()) {
            (Task::LanguageModel, true, _) => return self.check_language_model(),
            (Task::Tensors, _, true) => return self.check_tensors(),
            (Task::Classification, false, false) => {}
            (task, _, _) => {
                return Err(format!(
                    "task {task:?} does not fit model arch {:?} (a decoder is a language model; mlp, cnn and resnet \
                     are classifiers; a torchscript module with named inputs and outputs has task \"tensors\")",
                    self.model.arch()
                ))
            }
        }
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

    fn check_tensors(&self) -> std::result::Result<(), String> {
        let ModelSpec::Torchscript(spec) = &self.model else {
            return Err("a tensors package holds a torchscript model".into());
        };
        let expected = Manifest::tensors(&self.name, self.version, spec.clone());
        if self.input != expected.input || self.output != expected.output {
            return Err(format!(
                "input and output must repeat the first of model.inputs and model.outputs: {:?} {:?} and {:?} {:?}",
                expected.input.name, expected.input.shape, expected.output.name, expected.output.shape
            ));
        }
        Ok(())
    }

    fn check_language_model(&self) -> std::result::Result<(), String> {
        let vocab = self.model.classes();
        if self.input.shape != [-1, -1] || self.input.dtype != DType::Int64 {
            return Err(format!(
                "a language model's input must be int64 [-1, -1] token ids, not {:?} {:?}",
                self.input.dtype, self.input.shape
            ));
        }
        if self.output.shape != [-1, -1, vocab] {
            return Err(format!(
                "output.shape {:?} does not match the model's [-1, -1, {vocab}]",
                self.output.shape
            ));
        }
        let Some(tok) = &self.tokenizer else {
            return Err("a language-model package needs a tokenizer entry".into());
        };
        for (role, id) in [
            ("bos", tok.special.bos),
            ("eos", tok.special.eos),
            ("pad", tok.special.pad),
        ] {
            if let Some(id) = id.filter(|&i| i as i64 >= vocab) {
                return Err(format!(
                    "tokenizer.special.{role} {id} is outside the model's vocabulary of {vocab}"
                ));
            }
        }
        Ok(())
    }
}
