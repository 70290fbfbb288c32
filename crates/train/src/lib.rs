//! kiln's training loop.
//!
//! A [`TrainConfig`] (JSON or TOML, with `key=value` overrides) says what to train on
//! what; [`train`] runs it: seeded data loading, forward, loss, backward and kiln's own
//! [`Optimizer`] (its state is checkpointed), a learning-rate [`Schedule`], gradient
//! clipping and accumulation, an evaluation each epoch (loss, accuracy, top-k, per-class
//! precision/recall/F1, confusion matrix), the best epoch kept as the package, early
//! stopping, checkpoints that [`resume`] continues exactly, a progress bar,
//! `metrics.jsonl`, and SVG plots of the curves and the confusion matrix.
//!
//! libtorch's random generator is global to the process: run one training at a time
//! per process for reproducible results.
//!
//! ```no_run
//! use kiln_train::{train, TrainConfig, TrainOptions};
//! let mut config = TrainConfig::default();
//! config.epochs = 2;
//! let report = train(&config, "runs/example".as_ref(), &TrainOptions::default())?;
//! println!("test accuracy {:.4}", report.test.map(|t| t.accuracy).unwrap_or(f64::NAN));
//! # Ok::<(), kiln_train::Error>(())
//! ```

mod checkpoint;
mod config;
mod distributed;
mod early_stop;
mod error;
mod evaluate;
mod generate;
mod gguf_import;
mod import;
mod metrics;
mod metrics_log;
mod optim;
pub mod plot;
mod predict;
mod progress;
mod schedule;
mod sources;
mod task;
mod trainer;

pub use checkpoint::{load_latest as load_checkpoint, Checkpoint, RunState};
pub use config::{
    CheckpointConfig, DataConfig, DatasetKind, DistributedConfig, EarlyStoppingConfig, MixedPrecision, OptimizerConfig,
    OptimizerKind, TaskKind, TextConfig, TrainConfig,
};
pub use early_stop::{EarlyStopping, Monitor};
pub use error::{Error, Result};
pub use evaluate::{evaluate, evaluate_package, EvalResult};
pub use generate::{generate_text, TextReport, TextRequest};
pub use gguf_import::{import_gguf, GgufImport};
pub use import::{import_torchscript, import_weights, TorchScriptFacts};
pub use metrics::{ClassMetrics, Confusion};
pub use metrics_log::MetricsLog;
pub use optim::{Optimizer, ParamGroup};
pub use predict::{predict_files, Prediction};
pub use schedule::Schedule;
pub use sources::{open_split, Sources};
pub use task::{Evaluation, LmEval};
pub use trainer::{resume, train, EpochReport, TrainOptions, TrainReport};
