//! `Sampling` and `Sampler`: choosing the next token from logits (greedy, temperature,
//! top-k, top-p, repetition penalty) with a generator seeded per sequence.

use crate::{Error, Result};
use kiln_tensor::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Divides the logits; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Draw only from the k most likely tokens (0: all).
    pub top_k: usize,
    /// Draw only from the most likely tokens whose probabilities add up to p (1: all).
    pub top_p: f64,
    /// Above 1, makes tokens already in the sequence less likely (the CTRL paper's rule,
    /// as Hugging Face `transformers` applies it: positive logits divided, negative
    /// multiplied). 1: off.
    pub repetition_penalty: f64,
    /// The seed of this sequence's draws.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Checks the values are in range; the error names the value and the range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Spec(format!(
                "temperature {} must be 0 (greedy) or positive",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Spec(format!(
                "top_p {} must be above 0 and at most 1",
                self.top_p
            )));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::Spec(format!(
                "repetition_penalty {} must be positive (1 is off)",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// Draws tokens for one sequence.
#[derive(Clone, Debug)]
pub struct Sampler {
    sampling: Sampling,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler seeded by `sampling.seed`.
    pub fn new(sampling: Sampling) -> Sampler {
        let rng = SplitMix64::for_stream(sampling.seed, &[0x5A_3B1E]);
        Sampler { sampling, rng }
    }

    /// The next token given the logits of the last position and the tokens so far.
    pub fn next(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        let penalty = self.sampling.repetition_penalty as f32;
        if penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                }
            }
        }
        if self.sampling.temperature == 0.0 || self.sampling.top_k == 1 {
            return argmax(&logits);
        }
        // Candidates, most likely first (ties by id, so the order is deterministic).
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let k = self.sampling.top_k;
        if k > 0 && k < order.len() {
            order.select_nth_unstable_by(k - 1, by_logit);
            order.truncate(k);
        }
        order.sort_unstable_by(by_logit);
        let t = self.sampling.temperature;
        let top = logits[order[0] as usize] as f64;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i as usize] as f64 - top) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.sampling.top_p < 1.0 {
            let mut sum = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    sum += p;
                    sum >= self.sampling.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.unit() * total;
        for (p, &id) in probs.iter().zip(&order) {
            if u < *p {
                return id;
            }
            u -= p;
        }
        order.last().copied().unwrap_or(0)
    }
}

/// The index of the largest value (the first of equal ones).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}
