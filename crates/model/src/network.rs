//! `Network`: a built model, its parameters, and checked forward passes.

use crate::{Error, ModelSpec, Parameters, Result, TorchScriptSpec};
use kiln_tensor::{convert, nn, nn::ModuleT, tch::CModule, DType, Device, Kind, Tensor};
use std::collections::BTreeMap;

/// What runs on a batch before the layers in a traced module (the package's
/// normalisation, say).
pub type Prepare<'a> = dyn Fn(&Tensor) -> std::result::Result<Tensor, kiln_tensor::tch::TchError> + 'a;

/// A model built from a [`ModelSpec`], owning its parameters.
pub struct Network {
    spec: ModelSpec,
    vs: nn::VarStore,
    module: Module,
}

/// How the forward pass runs: kiln's layers over the var store, or a TorchScript module
/// holding its own tensors.
enum Module {
    Layers(nn::SequentialT),
    Script(CModule),
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
            ModelSpec::Torchscript(_) => {
                return Err(Error::Spec(
                    "arch \"torchscript\" is a module trained elsewhere: load it with Network::from_torchscript".into(),
                ))
            }
        };
        Ok(Network {
            spec,
            vs,
            module: Module::Layers(module),
        })
    }

    /// Loads the TorchScript module whose archive is `bytes` onto `device` and checks it
    /// against `spec` by running it once on zeros of the declared input shape: a
    /// classifier must give float logits `[1, classes]`, a module of named tensors its
    /// declared outputs. A file that is not TorchScript (a pickled `state_dict`, say) is
    /// refused without being unpickled.
    pub fn from_torchscript(spec: TorchScriptSpec, bytes: &[u8], device: Device) -> Result<Network> {
        spec.validate()?;
        let module = crate::torchscript::load(bytes, device)?;
        crate::torchscript::check_signature(&module, &spec, device)?;
        Ok(Network {
            spec: ModelSpec::Torchscript(spec),
            vs: nn::VarStore::new(device),
            module: Module::Script(module),
        })
    }

    /// Writes the network to `path` as a TorchScript module (traced in evaluation mode on
    /// one sample of its input shape) that `torch.jit.load` runs in PyTorch: `forward`
    /// takes a float batch `[B, ...input]`, applies `prepare` (e.g. a package's
    /// normalisation; the identity for none), and gives the logits. The module holds its
    /// parameters and buffers as they are now, as constants.
    pub fn save_torchscript(&mut self, prepare: &Prepare<'_>, path: &std::path::Path) -> Result<()> {
        // The traced constants are the var store's own tensors and must not require
        // gradients when traced and saved; they are trainable again afterwards.
        self.vs.freeze();
        let saved = self.trace(prepare).and_then(|m| Ok(m.save(path)?));
        self.vs.unfreeze();
        saved
    }

    fn trace(&self, prepare: &Prepare<'_>) -> Result<CModule> {
        match &self.module {
            Module::Script(_) => Err(Error::Spec(
                "this network already is a TorchScript module: copy its model.pt".into(),
            )),
            Module::Layers(layers) => {
                let mut shape = vec![1];
                shape.extend_from_slice(self.spec.input());
                let example = Tensor::f_zeros(&shape, (Kind::Float, self.device()))?;
                // The tracing callback cannot fail, so a failure of `prepare` is kept
                // here and returned once tracing is over.
                let mut failed = None;
                let module = kiln_tensor::tch::no_grad(|| {
                    CModule::create_by_tracing("KilnNetwork", "forward", &[example], &mut |xs| match prepare(&xs[0]) {
                        Ok(x) => vec![layers.forward_t(&x, false)],
                        Err(e) => {
                            failed = Some(e);
                            vec![xs[0].shallow_clone()]
                        }
                    })
                })?;
                match failed {
                    Some(e) => Err(e.into()),
                    None => Ok(module),
                }
            }
        }
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
        match &self.module {
            Module::Layers(_) => Parameters::parameter_count(self),
            Module::Script(m) => m
                .named_parameters()
                .map(|ps| ps.iter().map(|(_, t)| t.numel()).sum())
                .unwrap_or(0),
        }
    }

    /// Whether this is a TorchScript module (whose tensors are its own, not in the var store).
    pub fn is_torchscript(&self) -> bool {
        matches!(self.module, Module::Script(_))
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
        if self.spec.is_tensors() {
            return Err(Error::Spec(
                "this TorchScript module takes named tensors: run it with Network::run_tensors".into(),
            ));
        }
        self.check_input(x)?;
        let x = if x.device() == self.device() {
            x.shallow_clone()
        } else {
            x.f_to_device(self.device())?
        };
        match &self.module {
            Module::Layers(layers) => Ok(layers.forward_t(&x, train)),
            Module::Script(_) if train => Err(Error::Spec(
                "a TorchScript model is run for inference only; kiln does not train it".into(),
            )),
            Module::Script(module) => Ok(module.forward_ts(&[x])?),
        }
    }

    /// A module of named tensors run on `inputs` (in the order of its spec's `inputs`, each
    /// `[B, ...]` on any device), in evaluation mode without recording gradients: its
    /// outputs in the order of the spec's `outputs`, each checked against its spec.
    pub fn run_tensors(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let (ModelSpec::Torchscript(spec), Module::Script(module)) = (&self.spec, &self.module) else {
            return Err(Error::Spec(format!(
                "a {} network takes one input batch: run it with Network::infer",
                self.spec.arch()
            )));
        };
        if !spec.is_tensors() {
            return Err(Error::Spec(
                "this TorchScript module is a classifier: run it with Network::infer".into(),
            ));
        }
        let device = self.device();
        let inputs = inputs
            .iter()
            .map(|t| {
                Ok(if t.device() == device {
                    t.shallow_clone()
                } else {
                    t.f_to_device(device)?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        crate::torchscript::run_tensors(module, spec, &inputs)
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
