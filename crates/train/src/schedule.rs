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
    /// One-cycle (as PyTorch's `OneCycleLR`, cosine): from `base / div_factor` up to
    /// `base` over the first `pct_start` of the steps, then down to
    /// `base / (div_factor * final_div_factor)`.
    OneCycle {
        /// Fraction of the steps spent rising.
        #[serde(default = "one_cycle_pct")]
        pct_start: f64,
        /// The start rate is `base / div_factor`.
        #[serde(default = "one_cycle_div")]
        div_factor: f64,
        /// The final rate is the start rate divided by this.
        #[serde(default = "one_cycle_final_div")]
        final_div_factor: f64,
    },
}

fn one_cycle_pct() -> f64 {
    0.3
}
fn one_cycle_div() -> f64 {
    25.0
}
fn one_cycle_final_div() -> f64 {
    1e4
}

fn cos_anneal(from: f64, to: f64, t: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
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
            Schedule::OneCycle { pct_start, div_factor, final_div_factor }
                if !(pct_start > 0.0 && pct_start < 1.0 && div_factor >= 1.0 && final_div_factor >= 1.0) =>
            {
                Err(Error::Config(format!(
                    "optimizer.schedule one-cycle needs 0 < pct_start < 1 (got {pct_start}), div_factor >= 1 (got {div_factor}) and final_div_factor >= 1 (got {final_div_factor})"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The rate at `step` of a run of `total` steps with `per_epoch` steps an epoch.
    pub fn rate(&self, base: f64, step: usize, total: usize, per_epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every_epochs, gamma } => {
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
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = base / div_factor;
                let last = initial / final_div_factor;
                let rise_end = (pct_start * total as f64) - 1.0;
                let end = total.saturating_sub(1) as f64;
                let s = step as f64;
                if s <= rise_end {
                    cos_anneal(initial, base, s / rise_end.max(1e-9))
                } else {
                    cos_anneal(base, last, ((s - rise_end) / (end - rise_end).max(1e-9)).min(1.0))
                }
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
    fn one_cycle_matches_pytorch_at_its_phase_ends() {
        // PyTorch: OneCycleLR(max_lr=1, total_steps=100) gives 0.04 at step 0, 1.0 at
        // step 29 (pct_start 0.3: the peak is at 0.3 * 100 - 1) and 4e-6 at step 99.
        let s = Schedule::OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        };
        assert!(close(s.rate(1.0, 0, 100, 10), 0.04));
        assert!(close(s.rate(1.0, 29, 100, 10), 1.0));
        assert!(close(s.rate(1.0, 99, 100, 10), 0.04 / 1e4));
        let mid = s.rate(1.0, 64, 100, 10);
        assert!(close(mid, cos_anneal(1.0, 4e-6, 35.0 / 70.0)), "{mid}");
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
