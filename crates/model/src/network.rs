//! `Network`: a built model, its parameters, and checked forward passes.

use crate::{Error, ModelSpec, Parameters, Result};
use kiln_tensor::{convert, nn, nn::ModuleT, DType, Device, Kind, Tensor};
use std::collections::BTreeMap;

/// A model built from a [`ModelSpec`], owning its parameters.
pub struct Network {
    spec: ModelSpec,
    vs: nn::VarStore,
    module: nn::SequentialT,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("spec", &self.spec)
            .field("parameters", &self.parameter_count())
            .finish()
    }
}

impl Network {
    /// Builds the model on `device` with freshly initialised parameters (drawn from
    /// libtorch's generator: seed it first for a reproducible start).
    pub fn new(spec: ModelSpec, device: Device) -> Result<Network> {
        spec.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let module = match &spec {
            ModelSpec::Mlp(s) => s.build(&root),
            ModelSpec::Cnn(s) => s.build(&root),
            ModelSpec::Resnet(s) => s.build(&root),
            ModelSpec::Decoder(_) => {
                return Err(Error::Spec(
                    "arch \"decoder\" is a language model: build it with Decoder::new, not as a classifier".into(),
                ))
            }
        };
        Ok(Network { spec, vs, module })
    }

    /// The spec this network was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The parameters and buffers.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The parameters and buffers, mutably (for loading weights or moving devices).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The input shape with `-1` for the batch, e.g. `[-1, 1, 28, 28]`.
    pub fn input_shape(&self) -> Vec<i64> {
        std::iter::once(-1).chain(self.spec.input().iter().copied()).collect()
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        Parameters::parameter_count(self)
    }

    /// Name, shape and dtype of every tensor the model saves (parameters and buffers such
    /// as batch-norm running statistics), sorted by name.
    pub fn parameter_shapes(&self) -> Result<BTreeMap<String, (Vec<i64>, DType)>> {
        Parameters::parameter_shapes(self)
    }

    /// Checks that `x` is a float batch shaped `[B, ...input]`.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let want = self.input_shape();
        convert::require_kind(x, Kind::Float).map_err(|e| Error::Input(e.to_string()))?;
        if x.dim() != want.len() || x.size()[1..] != want[1..] {
            return Err(Error::Input(format!(
                "shape {:?} does not match the model's {want:?}",
                x.size()
            )));
        }
        Ok(())
    }

    /// Logits `[B, classes]` for inputs `[B, ...input]`, in training mode (dropout on,
    /// batch norm using and updating batch statistics) when `train` is true.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let x = if x.device() == self.device() {
            x.shallow_clone()
        } else {
            x.f_to_device(self.device())?
        };
        Ok(self.module.forward_t(&x, train))
    }

    /// Logits `[B, classes]` in evaluation mode without recording gradients.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        kiln_tensor::tch::no_grad(|| self.forward(x, false))
    }
}

impl Parameters for Network {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}
