//! The small convolutional network.

use crate::spec::{check_dropout, image_input};
use crate::{Error, Result};
use kiln_tensor::nn;
use serde::{Deserialize, Serialize};

/// A CNN of conv blocks (3x3 convolution, optional batch norm, ReLU, 2x2 max pooling),
/// then dropout, a hidden linear layer with ReLU, dropout again and the output layer.
/// Parameters: `conv{i}.*`, `bn{i}.*`, `fc.*`, `out.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnSpec {
    /// Shape of one sample, `[channels, height, width]`.
    pub input: Vec<i64>,
    /// Output channels of each conv block (each block halves height and width).
    pub channels: Vec<i64>,
    /// Width of the hidden linear layer.
    pub hidden: i64,
    /// Number of classes.
    pub classes: i64,
    /// Dropout before each linear layer.
    pub dropout: f64,
    /// Batch normalisation after each convolution.
    pub batch_norm: bool,
}

impl Default for CnnSpec {
    fn default() -> Self {
        CnnSpec {
            input: Vec::new(),
            channels: vec![32, 64],
            hidden: 128,
            classes: 0,
            dropout: 0.25,
            batch_norm: true,
        }
    }
}

impl CnnSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        let (_, h, w) = image_input(&self.input, "cnn")?;
        if self.channels.is_empty() || self.channels.iter().any(|&c| c <= 0) {
            return Err(Error::Spec(format!(
                "cnn channels {:?} must be non-empty and positive",
                self.channels
            )));
        }
        let shrink = 1i64 << self.channels.len().min(30);
        if h < shrink || w < shrink {
            return Err(Error::Spec(format!(
                "a {h}x{w} input is too small for {} pooling blocks (needs at least {shrink}x{shrink})",
                self.channels.len()
            )));
        }
        if self.hidden <= 0 {
            return Err(Error::Spec(format!(
                "cnn hidden width {} must be positive",
                self.hidden
            )));
        }
        check_dropout(self.dropout)
    }

    pub(crate) fn build(&self, p: &nn::Path) -> nn::SequentialT {
        let (mut cin, mut h, mut w) = (self.input[0], self.input[1], self.input[2]);
        let mut seq = nn::seq_t();
        for (i, &cout) in self.channels.iter().enumerate() {
            let cfg = nn::ConvConfig {
                padding: 1,
                bias: !self.batch_norm,
                ..Default::default()
            };
            seq = seq.add(nn::conv2d(p / format!("conv{i}"), cin, cout, 3, cfg));
            if self.batch_norm {
                seq = seq.add(nn::batch_norm2d(p / format!("bn{i}"), cout, Default::default()));
            }
            seq = seq.add_fn(|x| x.relu().max_pool2d_default(2));
            cin = cout;
            h /= 2;
            w /= 2;
        }
        let d = self.dropout;
        seq.add_fn_t(move |x, train| x.flatten(1, -1).dropout(d, train))
            .add(nn::linear(p / "fc", cin * h * w, self.hidden, Default::default()))
            .add_fn_t(move |x, train| x.relu().dropout(d, train))
            .add(nn::linear(p / "out", self.hidden, self.classes, Default::default()))
    }
}
