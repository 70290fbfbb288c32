//! The multi-layer perceptron.

use crate::spec::check_dropout;
use crate::{Error, Result};
use kiln_tensor::{nn, Tensor};
use serde::{Deserialize, Serialize};

/// The non-linearity between layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// max(0, x).
    #[default]
    Relu,
    /// Gaussian error linear unit.
    Gelu,
    /// tanh(x).
    Tanh,
}

impl Activation {
    pub(crate) fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu("none"),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// An MLP: the input is flattened, then each hidden layer is linear, activation,
/// dropout; a last linear layer gives the logits. Parameters: `fc{i}.weight`,
/// `fc{i}.bias`, `out.weight`, `out.bias`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpSpec {
    /// Shape of one sample (flattened by the first layer).
    pub input: Vec<i64>,
    /// Widths of the hidden layers.
    pub hidden: Vec<i64>,
    /// Number of classes.
    pub classes: i64,
    /// Dropout after each hidden layer.
    pub dropout: f64,
    /// The non-linearity.
    pub activation: Activation,
}

impl Default for MlpSpec {
    fn default() -> Self {
        MlpSpec {
            input: Vec::new(),
            hidden: vec![128],
            classes: 0,
            dropout: 0.0,
            activation: Activation::Relu,
        }
    }
}

impl MlpSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(h) = self.hidden.iter().find(|&&h| h <= 0) {
            return Err(Error::Spec(format!("mlp hidden width {h} must be positive")));
        }
        check_dropout(self.dropout)
    }

    pub(crate) fn build(&self, p: &nn::Path) -> nn::SequentialT {
        let mut seq = nn::seq_t().add_fn(|x| x.flatten(1, -1));
        let mut width: i64 = self.input.iter().product();
        for (i, &h) in self.hidden.iter().enumerate() {
            seq = seq.add(nn::linear(p / format!("fc{i}"), width, h, Default::default()));
            let act = self.activation;
            seq = seq.add_fn(move |x| act.apply(x));
            if self.dropout > 0.0 {
                let d = self.dropout;
                seq = seq.add_fn_t(move |x, train| x.dropout(d, train));
            }
            width = h;
        }
        seq.add(nn::linear(p / "out", width, self.classes, Default::default()))
    }
}
