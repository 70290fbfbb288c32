//! From raw inputs to classes with a package: preprocessing as the manifest says, a
//! batched forward pass, and the top-k classes with their labels.

use crate::{Error, Manifest, Package, Result};
use kiln_data::{decode_image_within, DecodeLimits};
use kiln_tensor::{convert, Kind};
use serde::Serialize;

/// One class and its probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// The class index.
    pub class: usize,
    /// Its label from the manifest.
    pub label: String,
    /// Its softmax probability.
    pub probability: f32,
}

fn invalid(reason: String) -> Error {
    Error::Input(reason)
}

impl Manifest {
    /// Values in one input sample (the product of the input shape without the batch).
    pub fn sample_len(&self) -> usize {
        self.model.input().iter().product::<i64>().max(0) as usize
    }

    /// Model-ready values from sample values as a dataset gives them (images scaled to
    /// `[0, 1]`): checks the count and finiteness, then normalises.
    pub fn prepare_values(&self, mut values: Vec<f32>) -> Result<Vec<f32>> {
        let n = self.sample_len();
        if values.len() != n {
            return Err(invalid(format!(
                "{} values given; the model takes {n} (shape {:?})",
                values.len(),
                self.model.input()
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!("value {i} is {}; expected a finite number", values[i])));
        }
        if let Some(norm) = &self.input.normalize {
            norm.apply(&mut values);
        }
        Ok(values)
    }

    /// Model-ready values from an encoded PNG or JPEG: decoded, converted and resized to
    /// the manifest's image layout, scaled and normalised. `what` names the source in errors.
    /// Images over [`DecodeLimits::default`] are [`Error::InputTooLarge`].
    pub fn prepare_image(&self, bytes: &[u8], what: &str) -> Result<Vec<f32>> {
        self.prepare_image_within(bytes, DecodeLimits::default().max_pixels, what)
    }

    /// [`Manifest::prepare_image`] refusing images of more than `max_pixels` pixels (or
    /// of the model's own input size, if that is larger) before decoding them.
    pub fn prepare_image_within(&self, bytes: &[u8], max_pixels: u64, what: &str) -> Result<Vec<f32>> {
        let layout = self.input.image.ok_or_else(|| {
            invalid(format!(
                "model {:?} does not take images (its input is {:?})",
                self.name,
                self.model.input()
            ))
        })?;
        let mut out = vec![0f32; self.sample_len()];
        let limits = DecodeLimits {
            max_pixels: max_pixels.max((layout.height * layout.width) as u64),
        };
        decode_image_within(bytes, layout, limits, what, &mut out).map_err(|e| match e {
            kiln_data::Error::TooLarge(m) => Error::InputTooLarge(m),
            other => invalid(other.to_string()),
        })?;
        if let Some(norm) = &self.input.normalize {
            norm.apply(&mut out);
        }
        Ok(out)
    }
}

/// Softmax of one row of logits, computed stably (the maximum is subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes of `probabilities`, most probable first.
pub fn top_k(probabilities: &[f32], k: usize, labels: &[String]) -> Vec<ClassScore> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|c| ClassScore {
            class: c,
            label: labels.get(c).cloned().unwrap_or_default(),
            probability: probabilities[c],
        })
        .collect()
}

impl Package {
    /// Class probabilities `[B][classes]` for model-ready samples (see
    /// [`Manifest::prepare_values`] and [`Manifest::prepare_image`]), run as one batch.
    pub fn probabilities(&self, samples: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        Ok(self.logits(samples)?.iter().map(|l| softmax(l)).collect())
    }

    /// Logits `[B][classes]` for model-ready samples, run as one batch.
    pub fn logits(&self, samples: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        self.require_classifier()?;
        let n = self.manifest.sample_len();
        if let Some(bad) = samples.iter().position(|s| s.len() != n) {
            return Err(invalid(format!(
                "sample {bad} has {} values; the model takes {n}",
                samples[bad].len()
            )));
        }
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let mut shape = vec![samples.len() as i64];
        shape.extend_from_slice(self.model_input());
        // One copy into the batch tensor: a single sample is read where it is.
        let x = match samples {
            [one] => convert::tensor_from_f32(one, &shape)?,
            many => convert::tensor_from_f32(&many.concat(), &shape)?,
        }
        .f_to_device(self.network.device())?;
        let logits = self.network.infer(&x)?.f_to_kind(Kind::Float)?;
        let values = convert::tensor_to_f32(&logits)?;
        let classes = self.manifest.model.classes() as usize;
        Ok(values.chunks(classes.max(1)).map(<[f32]>::to_vec).collect())
    }

    fn model_input(&self) -> &[i64] {
        self.manifest.model.input()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability_and_names_classes() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let top = top_k(&[0.2, 0.5, 0.3], 2, &labels);
        assert_eq!(top.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(top_k(&[0.2, 0.5, 0.3], 10, &labels).len(), 3);
    }
}
