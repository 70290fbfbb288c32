//! Per-channel normalisation: `(x - mean) / std`.

use crate::{Dataset, Error, Result};
use serde::{Deserialize, Serialize};

/// Per-channel mean and standard deviation. A sample of `n` values with `k` channels is
/// split into `k` equal runs (channel-first layout); `k = 1` treats it as one channel, and
/// `k = n` normalises each feature of a tabular sample on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel (all positive).
    pub std: Vec<f32>,
}

impl Normalize {
    /// Checks that the statistics fit a sample of `sample_len` values.
    pub fn check(&self, sample_len: usize) -> Result<()> {
        let k = self.mean.len();
        if k == 0 || k != self.std.len() || !sample_len.is_multiple_of(k) {
            return Err(Error::Invalid(format!(
                "normalisation has {} means and {} stds; expected the same number, dividing the sample size {sample_len}",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Invalid(format!(
                "normalisation std {s} must be a positive number"
            )));
        }
        Ok(())
    }

    /// Normalises one sample in place (call [`check`](Self::check) first).
    pub fn apply(&self, sample: &mut [f32]) {
        let run = sample.len() / self.mean.len().max(1);
        for (k, chunk) in sample.chunks_mut(run.max(1)).enumerate() {
            let (m, inv) = (self.mean[k], 1.0 / self.std[k]);
            for v in chunk {
                *v = (*v - m) * inv;
            }
        }
    }

    /// Measures per-channel statistics over up to `max_samples` samples spread evenly over
    /// the dataset. A constant channel gets std 1 rather than a division by zero.
    pub fn fit(data: &dyn Dataset, channels: usize, max_samples: usize) -> Result<Normalize> {
        let n = data.sample_len();
        if channels == 0 || !n.is_multiple_of(channels) {
            return Err(Error::Invalid(format!(
                "cannot split a sample of {n} values into {channels} channels"
            )));
        }
        let take = data.len().min(max_samples.max(1));
        if take == 0 {
            return Err(Error::Invalid(
                "cannot measure normalisation on an empty dataset".into(),
            ));
        }
        let step = data.len() / take;
        let run = n / channels;
        let (mut sum, mut sq) = (vec![0f64; channels], vec![0f64; channels]);
        let mut buf = vec![0f32; n];
        for i in 0..take {
            data.read_into(i * step, &mut buf)?;
            for (k, chunk) in buf.chunks(run).enumerate() {
                for &v in chunk {
                    sum[k] += v as f64;
                    sq[k] += (v as f64) * (v as f64);
                }
            }
        }
        let count = (take * run) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| {
                let var = (q / count - (s / count).powi(2)).max(0.0);
                if var > 1e-12 {
                    var.sqrt() as f32
                } else {
                    1.0
                }
            })
            .collect();
        Ok(Normalize { mean, std })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_per_channel() {
        let n = Normalize {
            mean: vec![1.0, 10.0],
            std: vec![2.0, 5.0],
        };
        n.check(4).unwrap();
        let mut s = [3.0, 1.0, 20.0, 10.0];
        n.apply(&mut s);
        assert_eq!(s, [1.0, 0.0, 2.0, 0.0]);
        assert!(n.check(3).is_err());
        assert!(Normalize {
            mean: vec![0.0],
            std: vec![0.0]
        }
        .check(4)
        .is_err());
    }
}
