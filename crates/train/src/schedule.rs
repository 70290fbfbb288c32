//! Learning-rate schedules: the rate to use at each optimizer step.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the learning rate changes over a run. Steps count optimizer updates from 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// The base rate times `gamma` after every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Factor applied at each decay.
        gamma: f64,
    },
    /// A linear warm-up from 0 over `warmup_epochs`, then a cosine decay to `min_factor`
    /// times the base rate at the last step.
    Cosine {
        /// Epochs of linear warm-up (may be fractional, may be 0).
        #[serde(default)]
        warmup_epochs: f64,
        /// The final rate as a fraction of the base rate.
        #[serde(default)]
        min_factor: f64,
    },
}

impl Schedule {
    /// Checks the schedule's values.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { every_epochs, gamma } if every_epochs == 0 || !(gamma > 0.0 && gamma <= 1.0) => {
                Err(Error::Config(format!(
                    "optimizer.schedule step needs every_epochs >= 1 (got {every_epochs}) and 0 < gamma <= 1 (got {gamma})"
                )))
            }
            Schedule::Cosine { warmup_epochs, min_factor }
                if !(warmup_epochs >= 0.0 && warmup_epochs.is_finite() && (0.0..=1.0).contains(&min_factor)) =>
            {
                Err(Error::Config(format!(
                    "optimizer.schedule cosine needs warmup_epochs >= 0 (got {warmup_epochs}) and min_factor in [0, 1] (got {min_factor})"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The rate at `step` of a run of `total` steps with `per_epoch` steps an epoch.
    pub fn rate(&self, base: f64, step: usize, total: usize, per_epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step {
                every_epochs,
                gamma,
            } => {
                let epoch = step / per_epoch.max(1);
                base * gamma.powi((epoch / every_epochs.max(1)) as i32)
            }
            Schedule::Cosine {
                warmup_epochs,
                min_factor,
            } => {
                let warmup = (warmup_epochs * per_epoch as f64).round() as usize;
                if step < warmup {
                    return base * (step + 1) as f64 / warmup as f64;
                }
                let span = total.saturating_sub(warmup).saturating_sub(1).max(1) as f64;
                let t = ((step - warmup) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                base * (min_factor + (1.0 - min_factor) * cos)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn constant_and_step() {
        assert_eq!(Schedule::Constant.rate(0.1, 500, 1000, 100), 0.1);
        let s = Schedule::Step {
            every_epochs: 2,
            gamma: 0.5,
        };
        assert!(close(s.rate(0.1, 199, 1000, 100), 0.1));
        assert!(close(s.rate(0.1, 200, 1000, 100), 0.05));
        assert!(close(s.rate(0.1, 450, 1000, 100), 0.025));
    }

    #[test]
    fn cosine_warms_up_linearly_then_decays_to_the_floor() {
        let s = Schedule::Cosine {
            warmup_epochs: 1.0,
            min_factor: 0.0,
        };
        assert!(close(s.rate(1.0, 0, 1100, 100), 0.01));
        assert!(close(s.rate(1.0, 49, 1100, 100), 0.5));
        assert!(
            close(s.rate(1.0, 100, 1100, 100), 1.0),
            "the first step after warm-up is at the base rate"
        );
        assert!(close(
            s.rate(1.0, 600, 1100, 100),
            0.5 * (1.0 + (std::f64::consts::PI * 500.0 / 999.0).cos())
        ));
        assert!(
            close(s.rate(1.0, 1099, 1100, 100), 0.0),
            "the last step reaches the floor"
        );
        let floor = Schedule::Cosine {
            warmup_epochs: 0.0,
            min_factor: 0.1,
        };
        assert!(close(floor.rate(2.0, 0, 10, 5), 2.0));
        assert!(close(floor.rate(2.0, 9, 10, 5), 0.2));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Schedule::Step {
            every_epochs: 0,
            gamma: 0.5
        }
        .validate()
        .is_err());
        assert!(Schedule::Cosine {
            warmup_epochs: -1.0,
            min_factor: 0.0
        }
        .validate()
        .is_err());
        assert!(Schedule::Cosine {
            warmup_epochs: 0.5,
            min_factor: 0.0
        }
        .validate()
        .is_ok());
    }
}
