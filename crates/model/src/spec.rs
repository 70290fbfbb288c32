//! `ModelSpec`: which architecture, with which sizes.

use crate::{CnnSpec, DecoderSpec, Error, MlpSpec, ResnetSpec, Result, TorchScriptSpec};
use serde::{Deserialize, Serialize};

/// A model architecture and its sizes, as written in configs and package manifests.
///
/// `input` (the shape of one sample) and `classes` may be left out of a config: the
/// trainer fills them from the dataset with [`ModelSpec::fit_to`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum ModelSpec {
    /// A multi-layer perceptron; the default is the classic 784-128-10.
    Mlp(MlpSpec),
    /// A small convolutional network.
    Cnn(CnnSpec),
    /// A small residual network.
    Resnet(ResnetSpec),
    /// A decoder-only transformer language model, built by
    /// [`Decoder::new`](crate::Decoder::new) (not [`Network`](crate::Network), which
    /// builds classifiers).
    Decoder(DecoderSpec),
    /// A classifier trained elsewhere, as a TorchScript module (`model.pt` in its package):
    /// served, evaluated and exported by kiln, not trained by it.
    Torchscript(TorchScriptSpec),
}

impl ModelSpec {
    /// The MLP of the classic recipe: 784-128-10 with ReLU, on `[1, 28, 28]` inputs.
    pub fn classic_mlp() -> ModelSpec {
        ModelSpec::Mlp(MlpSpec {
            input: vec![1, 28, 28],
            classes: 10,
            ..MlpSpec::default()
        })
    }

    /// The architecture's name (`mlp`, `cnn`, `resnet`, `decoder`).
    pub fn arch(&self) -> &'static str {
        match self {
            ModelSpec::Mlp(_) => "mlp",
            ModelSpec::Cnn(_) => "cnn",
            ModelSpec::Resnet(_) => "resnet",
            ModelSpec::Decoder(_) => "decoder",
            ModelSpec::Torchscript(_) => "torchscript",
        }
    }

    /// The shape of one input sample (empty for a decoder, whose input is a token
    /// sequence of any length up to its context).
    pub fn input(&self) -> &[i64] {
        match self {
            ModelSpec::Mlp(s) => &s.input,
            ModelSpec::Cnn(s) => &s.input,
            ModelSpec::Resnet(s) => &s.input,
            ModelSpec::Decoder(_) => &[],
            ModelSpec::Torchscript(s) => &s.input,
        }
    }

    /// The number of classes (the width of the output; a decoder's vocabulary).
    pub fn classes(&self) -> i64 {
        match self {
            ModelSpec::Mlp(s) => s.classes,
            ModelSpec::Cnn(s) => s.classes,
            ModelSpec::Resnet(s) => s.classes,
            ModelSpec::Decoder(s) => s.vocab,
            ModelSpec::Torchscript(s) => s.classes,
        }
    }

    /// Whether this is a language model rather than a classifier.
    pub fn is_language_model(&self) -> bool {
        matches!(self, ModelSpec::Decoder(_))
    }

    /// Whether this is a module of named tensors (a TorchScript module of several inputs or
    /// outputs, or of other dtypes) rather than a classifier or a language model.
    pub fn is_tensors(&self) -> bool {
        matches!(self, ModelSpec::Torchscript(t) if t.is_tensors())
    }

    /// Fills `input` and `classes` when unset, or checks that they agree with the data.
    pub fn fit_to(&mut self, input: &[i64], classes: i64) -> Result<()> {
        let (i, c) = match self {
            ModelSpec::Mlp(s) => (&mut s.input, &mut s.classes),
            ModelSpec::Cnn(s) => (&mut s.input, &mut s.classes),
            ModelSpec::Resnet(s) => (&mut s.input, &mut s.classes),
            ModelSpec::Decoder(_) => {
                return Err(Error::Spec(
                    "a decoder is a language model; it trains with task = \"language-model\" on text, not on labelled samples".into(),
                ))
            }
            ModelSpec::Torchscript(_) => {
                return Err(Error::Spec(
                    "a torchscript model was trained elsewhere: kiln serves, evaluates and exports it but does not train it \
                     (package it with `kiln-train import-torchscript`)"
                        .into(),
                ))
            }
        };
        if i.is_empty() {
            *i = input.to_vec();
        } else if i.as_slice() != input {
            return Err(Error::Spec(format!(
                "model input {i:?} does not match the data's sample shape {input:?}"
            )));
        }
        if *c == 0 {
            *c = classes;
        } else if *c != classes {
            return Err(Error::Spec(format!("model has {c} classes, the data has {classes}")));
        }
        self.validate()
    }

    /// Checks that the spec describes a model that can be built.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelSpec::Decoder(d) => return d.validate(),
            ModelSpec::Torchscript(t) if t.is_tensors() => return t.validate(),
            _ => {}
        }
        let input = self.input();
        if input.is_empty() || input.iter().any(|&d| d <= 0) {
            return Err(Error::Spec(format!(
                "input shape {input:?} must be non-empty with positive sizes"
            )));
        }
        if self.classes() < 2 {
            return Err(Error::Spec(format!(
                "classes is {}; a classifier needs at least 2",
                self.classes()
            )));
        }
        match self {
            ModelSpec::Mlp(s) => s.validate(),
            ModelSpec::Cnn(s) => s.validate(),
            ModelSpec::Resnet(s) => s.validate(),
            ModelSpec::Decoder(s) => s.validate(),
            ModelSpec::Torchscript(s) => s.validate(),
        }
    }
}

pub(crate) fn check_dropout(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Spec(format!("dropout {p} must be at least 0 and below 1")))
    }
}

pub(crate) fn image_input(input: &[i64], arch: &str) -> Result<(i64, i64, i64)> {
    match *input {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(Error::Spec(format!(
            "{arch} needs an image input [channels, height, width], got {input:?}"
        ))),
    }
}
