//! Running a package of named tensors (a TorchScript module of several inputs or
//! outputs): host tensors in, host tensors out, each checked against the manifest.

use crate::{Error, Package, Result};
use kiln_model::TensorSpec;
use kiln_tensor::HostTensor;

impl Package {
    /// The named inputs and outputs of a package of task `tensors` (empty for others).
    pub fn tensor_specs(&self) -> (&[TensorSpec], &[TensorSpec]) {
        match &self.manifest.model {
            kiln_model::ModelSpec::Torchscript(s) => (&s.inputs, &s.outputs),
            _ => (&[], &[]),
        }
    }

    /// An error unless the package is a classifier (its model takes one input to classify):
    /// a module of named tensors says what it takes and where to send it.
    pub fn require_classifier(&self) -> Result<()> {
        let (inputs, _) = self.tensor_specs();
        if inputs.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
        Err(Error::Input(format!(
            "model {:?} is a module of named tensors (inputs {}), not a classifier of samples: \
             serve it with kiln-serve and send its tensors to /v2/models/{}/infer",
            self.manifest.name,
            names.join(", "),
            self.manifest.name
        )))
    }

    /// Runs a package of named tensors on `inputs`, in the order of its inputs, as one
    /// batch: its outputs in order. An input of the wrong dtype or shape, or a module
    /// that fails on the input, is [`Error::Input`].
    pub fn run_tensors(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let device = self.network.device();
        let tensors = inputs
            .iter()
            .map(|t| Ok(t.to_tensor()?.f_to_device(device)?))
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.network.run_tensors(&tensors).map_err(|e| match e {
            kiln_model::Error::Input(m) => Error::Input(m),
            other => Error::Model(other),
        })?;
        outputs.iter().map(|t| Ok(HostTensor::from_tensor(t)?)).collect()
    }
}
