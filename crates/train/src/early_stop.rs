//! Watching a metric across epochs: picking the best epoch, and stopping early.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const METRICS: &[&str] = &[
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_top_k_accuracy",
    "val_macro_f1",
];

/// A metric and which way is better (lower for losses, higher for the rest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    /// The metric's name, as in the epoch records.
    pub name: String,
    /// Whether a higher value is better.
    pub higher_is_better: bool,
}

impl Monitor {
    /// Parses a metric name; an error names the metrics there are.
    pub fn parse(name: &str) -> Result<Monitor> {
        if !METRICS.contains(&name) {
            return Err(Error::Config(format!(
                "unknown metric {name:?} to monitor; expected one of {METRICS:?}"
            )));
        }
        Ok(Monitor {
            name: name.to_string(),
            higher_is_better: !name.ends_with("_loss"),
        })
    }

    /// The monitored value among an epoch's metrics.
    pub fn value(&self, metrics: &BTreeMap<String, f64>) -> Result<f64> {
        metrics.get(&self.name).copied().ok_or_else(|| {
            Error::Config(format!(
                "metric {:?} is not measured in this run (is data.validation 0?)",
                self.name
            ))
        })
    }

    /// Whether `new` beats `best` by more than `min_delta`.
    pub fn improves(&self, new: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => new.is_finite(),
            Some(b) if self.higher_is_better => new > b + min_delta,
            Some(b) => new < b - min_delta,
        }
    }
}

/// Early stopping's state (it is checkpointed with the run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// The metric watched.
    pub monitor: Monitor,
    /// Epochs without improvement allowed.
    pub patience: usize,
    /// The smallest change that counts.
    pub min_delta: f64,
    /// The best value so far.
    pub best: Option<f64>,
    /// Epochs since the last improvement.
    pub bad_epochs: usize,
}

impl EarlyStopping {
    /// A fresh tracker.
    pub fn new(monitor: Monitor, patience: usize, min_delta: f64) -> EarlyStopping {
        EarlyStopping {
            monitor,
            patience,
            min_delta,
            best: None,
            bad_epochs: 0,
        }
    }

    /// Records an epoch's value; returns true when training should stop.
    pub fn update(&mut self, value: f64) -> bool {
        if self.monitor.improves(value, self.best, self.min_delta) {
            self.best = Some(value);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        self.bad_epochs > self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_a_large_enough_improvement() {
        let mut es = EarlyStopping::new(Monitor::parse("val_loss").unwrap(), 2, 0.01);
        assert!(!es.update(1.0));
        assert!(!es.update(0.995), "0.005 is below min_delta: 1 bad epoch");
        assert!(!es.update(0.98), "0.02 better: resets");
        assert_eq!(es.bad_epochs, 0);
        assert!(!es.update(0.99));
        assert!(!es.update(0.975));
        assert!(es.update(0.99), "third epoch without improvement with patience 2");
        let mut acc = EarlyStopping::new(Monitor::parse("val_accuracy").unwrap(), 0, 0.0);
        assert!(!acc.update(0.5));
        assert!(!acc.update(0.6));
        assert!(acc.update(0.6), "equal is not better");
    }

    #[test]
    fn unknown_metrics_are_refused_and_direction_follows_the_name() {
        assert!(Monitor::parse("val_acc")
            .unwrap_err()
            .to_string()
            .contains("val_accuracy"));
        assert!(!Monitor::parse("train_loss").unwrap().higher_is_better);
        assert!(Monitor::parse("val_macro_f1").unwrap().higher_is_better);
    }
}
