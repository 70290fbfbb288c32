//! `TrainConfig`: everything a training run needs, from a JSON or TOML file plus overrides.

use crate::{Error, ParamGroup, Result, Schedule};
use kiln_data::{Augment, ImageLayout, LabelColumn};
use kiln_model::{CnnSpec, ModelSpec};
use kiln_tensor::DeviceChoice;
use kiln_text::CorpusSource;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A training run's configuration. Every field has a default: an empty file trains the
/// default CNN on Fashion-MNIST.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// What the model learns: `classification` (the default) or `language-model`.
    pub task: TaskKind,
    /// The model's name in its package.
    pub name: String,
    /// The model's version in its package (a positive integer).
    pub version: u64,
    /// Seed of parameter initialisation, data order, split and augmentation.
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceChoice,
    /// libtorch threads; 0 keeps libtorch's default (one per core).
    pub threads: usize,
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per training step.
    pub batch_size: usize,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
    /// The data of a classifier.
    pub data: DataConfig,
    /// The text of a language model.
    pub text: TextConfig,
    /// The architecture; `input` and `classes` are filled from the data when left out.
    pub model: ModelSpec,
    /// Start from this package's weights instead of fresh ones (fine-tuning). A language
    /// model also takes the package's architecture and tokenizer; a classifier's `model`
    /// must match the package's.
    pub init_from: Option<PathBuf>,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// Label smoothing of the cross-entropy loss (0 = none).
    pub label_smoothing: f64,
    /// The k of the top-k accuracy reported each epoch.
    pub top_k: usize,
    /// Write a `step` record to metrics.jsonl every this many optimizer steps.
    pub log_every_steps: usize,
    /// Also evaluate on the validation data every this many optimizer steps (0: only at
    /// the end of each epoch), as an `eval` record in metrics.jsonl.
    pub eval_every_steps: usize,
    /// `none` or `bf16` (autocast on CUDA; ignored with a warning on the CPU).
    pub mixed_precision: MixedPrecision,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
    /// The metric that picks the best epoch, whose weights become the package.
    pub monitor: String,
    /// Stop when the monitored metric stops improving.
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// Data-parallel training (used when the run is launched on several ranks).
    pub distributed: DistributedConfig,
}

/// What a run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// A classifier of images or tabular samples (`data`, and an mlp, cnn or resnet).
    #[default]
    Classification,
    /// A next-token language model (`text`, and a decoder).
    LanguageModel,
}

/// The text a language model trains on, and its tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// The corpus (default: the King James Bible prepared by the set-up in `data/kjv`,
    /// one document per book).
    pub corpus: CorpusSource,
    /// A `tokenizer.json` to use; without one, a byte-level BPE tokenizer of
    /// `vocab_size` tokens is trained on the training documents.
    pub tokenizer: Option<PathBuf>,
    /// The size of a trained tokenizer's vocabulary.
    pub vocab_size: usize,
    /// Tokens per training sequence (at most the model's context).
    pub seq_len: usize,
    /// Fraction of the documents held out, whole, for validation (chosen by the seed).
    pub validation: f64,
    /// Where tokenized corpora are cached.
    pub cache_dir: PathBuf,
    /// Evaluate on at most this many validation sequences (0: all).
    pub eval_sequences: usize,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            corpus: CorpusSource::Folder {
                path: "data/kjv".into(),
                extension: ".txt".into(),
            },
            tokenizer: None,
            vocab_size: 4096,
            seq_len: 128,
            validation: 0.1,
            cache_dir: "data/cache".into(),
            eval_sequences: 0,
        }
    }
}

/// Mixed precision on CUDA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixedPrecision {
    /// Full precision.
    #[default]
    None,
    /// bfloat16 autocast for the forward pass on CUDA.
    Bf16,
}

/// When to write checkpoints and how many to keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Also write one every this many optimizer steps (0: only at the end of each epoch).
    pub every_steps: usize,
    /// Keep the newest this many (at least 1).
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: 0,
            keep: 3,
        }
    }
}

/// Data-parallel training, when `kiln-train launch`, `torchrun` or a `PyTorchJob` starts
/// the run on several ranks (`WORLD_SIZE` > 1). `batch_size` is then per rank: a step
/// averages the gradients of `world × batch_size` samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedConfig {
    /// The largest gradient bucket, in MiB (PyTorch DDP's `bucket_cap_mb`; the first
    /// bucket is at most 1 MiB).
    pub bucket_mb: f64,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig { bucket_mb: 25.0 }
    }
}

/// Early stopping: stop after `patience` epochs without an improvement of at least
/// `min_delta` in `monitor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    /// The metric watched, e.g. `val_loss` (lower is better) or `val_accuracy`.
    pub monitor: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    pub min_delta: f64,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        EarlyStoppingConfig {
            monitor: "val_loss".into(),
            patience: 3,
            min_delta: 0.0,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            task: TaskKind::Classification,
            name: "fashion-cnn".into(),
            version: 1,
            seed: 42,
            device: DeviceChoice::Auto,
            threads: 0,
            epochs: 10,
            batch_size: 128,
            eval_batch_size: 1000,
            data: DataConfig::default(),
            text: TextConfig::default(),
            model: ModelSpec::Cnn(CnnSpec::default()),
            init_from: None,
            optimizer: OptimizerConfig::default(),
            label_smoothing: 0.0,
            top_k: 5,
            log_every_steps: 1,
            eval_every_steps: 0,
            mixed_precision: MixedPrecision::None,
            checkpoint: CheckpointConfig::default(),
            monitor: "val_accuracy".into(),
            early_stopping: None,
            distributed: DistributedConfig::default(),
        }
    }
}

/// Which reader to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST IDX files in `dir` (default: Debian's install location).
    FashionMnist,
    /// MNIST IDX files in `dir`.
    Mnist,
    /// CSV files `train` and optionally `test`, with a `label_column`.
    Csv,
    /// Image folders `train` and optionally `test`, one sub-folder per class.
    ImageFolder,
}

/// Where the data comes from and how it is prepared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Which reader to use.
    pub dataset: DatasetKind,
    /// Folder of the IDX files (fashion-mnist, mnist).
    pub dir: Option<PathBuf>,
    /// Training file or folder (csv, image-folder).
    pub train: Option<PathBuf>,
    /// Test file or folder (csv, image-folder); optional.
    pub test: Option<PathBuf>,
    /// The label column of CSV files (name or zero-based index).
    pub label_column: LabelColumn,
    /// Size and channels images are brought to (image-folder).
    pub image: Option<ImageLayout>,
    /// Fraction of the training data held out for validation each epoch.
    pub validation: f64,
    /// Normalise inputs with per-channel mean and std measured on the training data.
    pub normalize: bool,
    /// Augmentation of training images.
    pub augment: Augment,
    /// Use at most this many training samples (0: all), for quick runs.
    pub limit_train: usize,
    /// Use at most this many test samples (0: all).
    pub limit_test: usize,
    /// Batches prepared ahead of training.
    pub prefetch: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: DatasetKind::FashionMnist,
            dir: None,
            train: None,
            test: None,
            label_column: LabelColumn::default(),
            image: None,
            validation: 0.1,
            normalize: true,
            augment: Augment::default(),
            limit_train: 0,
            limit_test: 0,
            prefetch: 4,
        }
    }
}

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with optional momentum and Nesterov.
    Sgd,
    /// Adam.
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
}

/// The optimizer and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Momentum (SGD).
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Adam's beta1 and beta2.
    pub betas: (f64, f64),
    /// Adam's epsilon.
    pub eps: f64,
    /// How the learning rate changes over the run.
    pub schedule: Schedule,
    /// Per-parameter settings, e.g. `{ match = "bias", weight_decay = 0.0 }`.
    pub groups: Vec<ParamGroup>,
    /// Clip the global gradient norm to this (none when absent).
    pub clip_grad_norm: Option<f64>,
    /// Accumulate gradients over this many batches per optimizer step.
    pub accumulate: usize,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            schedule: Schedule::Constant,
            groups: Vec::new(),
            clip_grad_norm: None,
            accumulate: 1,
        }
    }
}

impl TrainConfig {
    /// Reads a config from a `.json` or `.toml` file and applies `overrides`, each
    /// `path.to.key=value` with the value parsed as TOML (a bare word is a string).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<TrainConfig> {
        let mut value = match path {
            None => serde_json::to_value(TrainConfig::default()).map_err(|e| Error::Internal(e.to_string()))?,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let parsed: std::result::Result<serde_json::Value, String> =
                    match path.extension().and_then(|e| e.to_str()) {
                        Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string()),
                        Some("toml") => toml::from_str(&text).map_err(|e| e.to_string()),
                        _ => Err("the file name must end in .json or .toml".into()),
                    };
                parsed.map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
        };
        for item in overrides {
            apply_override(&mut value, item)?;
        }
        let config: TrainConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let source = path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "defaults".into());
            Error::Config(format!("{source}: {}: {}", e.path(), e.inner()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot be used.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad(format!(
                "batch_size ({}) and eval_batch_size ({}) must be at least 1",
                self.batch_size, self.eval_batch_size
            ));
        }
        if self.version == 0 {
            return bad("version must be a positive integer".into());
        }
        if !(self.distributed.bucket_mb > 0.0 && self.distributed.bucket_mb <= 4096.0) {
            return bad(format!(
                "distributed.bucket_mb must be above 0 and at most 4096 (MiB), not {}",
                self.distributed.bucket_mb
            ));
        }
        match (self.task, self.model.is_language_model()) {
            (TaskKind::LanguageModel, false) => {
                return bad(format!(
                    "task = \"language-model\" needs model.arch = \"decoder\", not {:?}",
                    self.model.arch()
                ))
            }
            (TaskKind::Classification, true) => {
                return bad("model.arch = \"decoder\" is a language model: set task = \"language-model\"".into())
            }
            _ => {}
        }
        if self.task == TaskKind::LanguageModel && self.text.seq_len == 0 {
            return bad("text.seq_len must be at least 1".into());
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.contains("..") {
            return bad(format!(
                "name {:?} must be non-empty, without path separators or `..`",
                self.name
            ));
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad(format!(
                "optimizer.lr is {}; expected a positive number such as 0.001",
                o.lr
            ));
        }
        if !(0.0..1.0).contains(&o.momentum) || o.weight_decay < 0.0 || !o.weight_decay.is_finite() {
            return bad(format!(
                "optimizer.momentum ({}) must be in [0, 1) and weight_decay ({}) non-negative",
                o.momentum, o.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&o.betas.0) || !(0.0..1.0).contains(&o.betas.1) {
            return bad(format!("optimizer.betas {:?} must both be in [0, 1)", o.betas));
        }
        o.schedule.validate()?;
        if o.accumulate == 0 {
            return bad("optimizer.accumulate must be at least 1".into());
        }
        if o.clip_grad_norm.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return bad(format!(
                "optimizer.clip_grad_norm {:?} must be positive",
                o.clip_grad_norm
            ));
        }
        if o.eps.is_nan() || o.eps <= 0.0 {
            return bad(format!("optimizer.eps {} must be positive", o.eps));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label_smoothing {} must be in [0, 1)", self.label_smoothing));
        }
        if self.top_k == 0 || self.log_every_steps == 0 || self.checkpoint.keep == 0 {
            return bad("top_k, log_every_steps and checkpoint.keep must be at least 1".into());
        }
        crate::early_stop::Monitor::parse(&self.monitor)?;
        if let Some(es) = &self.early_stopping {
            crate::early_stop::Monitor::parse(&es.monitor)?;
            if es.min_delta.is_nan() || es.min_delta < 0.0 {
                return bad(format!(
                    "early_stopping.min_delta {} must be non-negative",
                    es.min_delta
                ));
            }
        }
        let d = &self.data;
        if !(0.0..1.0).contains(&d.validation) {
            return bad(format!(
                "data.validation is {}; expected a fraction at least 0 and below 1",
                d.validation
            ));
        }
        match d.dataset {
            DatasetKind::Csv | DatasetKind::ImageFolder if d.train.is_none() => {
                return bad("data.train must name the training file or folder for csv and image-folder data".into())
            }
            DatasetKind::ImageFolder if d.image.is_none() => {
                return bad("data.image = { channels, height, width } is needed for image-folder data".into())
            }
            _ => {}
        }
        Ok(())
    }
}

/// Sets `path.to.key` in `value` to `raw` parsed as a TOML value (or a string).
fn apply_override(value: &mut serde_json::Value, item: &str) -> Result<()> {
    let (key, raw) = item.split_once('=').ok_or_else(|| {
        Error::Config(format!(
            "override {item:?} must look like key=value, e.g. optimizer.lr=0.01"
        ))
    })?;
    let parsed: serde_json::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| serde_json::Value::String(raw.to_string()));
    let mut slot = value;
    for part in key.trim().split('.') {
        if !slot.is_object() {
            *slot = serde_json::Value::Object(Default::default());
        }
        let serde_json::Value::Object(map) = slot else {
            unreachable!()
        };
        slot = map.entry(part.to_string()).or_insert(serde_json::Value::Null);
    }
    *slot = parsed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_nested_fields_and_parse_types() {
        let c = TrainConfig::load(
            None,
            &[
                "optimizer.lr=0.05".into(),
                "data.augment.hflip=true".into(),
                "name=shirt".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optimizer.lr, 0.05);
        assert!(c.data.augment.hflip);
        assert_eq!(c.name, "shirt");
        let c = TrainConfig::load(None, &["model={arch=\"mlp\", hidden=[64]}".into()]).unwrap();
        assert_eq!(c.model.arch(), "mlp");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let err = TrainConfig::load(None, &["optimizer.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("optimizer.lr is -1"), "{err}");
        let err = TrainConfig::load(None, &["epochs=\"many\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("epochs: invalid type") && err.contains("\"many\""),
            "{err}"
        );
        let err = TrainConfig::load(None, &["optimiser.lr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `optimiser`"), "{err}");
        let err = TrainConfig::load(None, &["data.validation=1.5".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.validation is 1.5"), "{err}");
        let err = TrainConfig::load(None, &["noequals".into()]).unwrap_err().to_string();
        assert!(err.contains("key=value"), "{err}");
    }
}
