//! kiln's training loop.
//!
//! A [`TrainConfig`] (JSON or TOML, with `key=value` overrides) says what to train on
//! what; [`train`] runs it: seeded data loading, forward, loss, backward and an optimizer
//! step per batch, a validation pass each epoch, a progress bar, one JSON line per epoch in
//! `metrics.jsonl`, and at the end a test pass and the model package. The resolved
//! config is written next to the results, so a run can be rebuilt from its folder.
//!
//! ```no_run
//! use kiln_train::{train, TrainConfig};
//! let mut config = TrainConfig::default();
//! config.epochs = 2;
//! let report = train(&config, "runs/example".as_ref())?;
//! println!("test accuracy {:.4}", report.test.map(|t| t.accuracy).unwrap_or(f64::NAN));
//! # Ok::<(), kiln_train::Error>(())
//! ```

mod checkpoint;
mod config;
mod early_stop;
mod error;
mod evaluate;
mod metrics;
mod metrics_log;
mod optim;
mod plot;
mod predict;
mod progress;
mod schedule;
mod sources;
mod trainer;

pub use checkpoint::{Checkpoint, RunState};
pub use config::{
    CheckpointConfig, DataConfig, DatasetKind, EarlyStoppingConfig, MixedPrecision, OptimizerConfig, OptimizerKind,
    TrainConfig,
};
pub use early_stop::{EarlyStopping, Monitor};
pub use error::{Error, Result};
pub use evaluate::{evaluate, evaluate_package, EvalResult};
pub use metrics::{ClassMetrics, Confusion};
pub use metrics_log::MetricsLog;
pub use optim::{Optimizer, ParamGroup};
pub use predict::{predict_files, Prediction};
pub use schedule::Schedule;
pub use sources::{open_split, Sources};
pub use trainer::{resume, train, EpochReport, TrainOptions, TrainReport};
