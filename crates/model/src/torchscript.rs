//! TorchScript modules (from `torch.jit.script` or `torch.jit.trace` in PyTorch) as kiln
//! classifiers, and kiln's own networks written out as TorchScript.
//!
//! A TorchScript archive holds the module's code (TorchScript, not Python) and its
//! tensors; libtorch runs it without Python. A plain `torch.save` file (a pickled
//! `state_dict` or a whole pickled module) is not TorchScript: loading one would mean
//! unpickling arbitrary Python objects, which kiln never does, so [`check_archive`] refuses
//! it before libtorch sees it and says what to do instead.

use crate::{Error, Result};
use kiln_tensor::{tch::CModule, Device, Kind, Tensor};
use serde::{Deserialize, Serialize};

/// What kiln needs to know of a TorchScript classifier: its `forward` takes one float
/// tensor `[B, ...input]` and returns the logits `[B, classes]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptSpec {
    /// Shape of one sample, without the batch dimension.
    pub input: Vec<i64>,
    /// Number of classes (the width of the logits).
    pub classes: i64,
}

/// What kind of file `bytes` is, for the error a non-TorchScript file gets.
fn describe_non_torchscript(bytes: &[u8]) -> Option<&'static str> {
    let zip = bytes.starts_with(b"PK\x03\x04");
    // TorchScript archives have their code under `<name>/code/` and `constants.pkl`; the
    // zip archive of `torch.save` has only `data.pkl` and the tensors' storages.
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if zip && !contains(b"constants.pkl") && contains(b"data.pkl") {
        return Some("a pickled PyTorch object saved with torch.save (a state_dict or a whole nn.Module)");
    }
    if !zip && bytes.first() == Some(&0x80) {
        return Some("a pickled PyTorch object in torch.save's legacy format (a state_dict or a whole nn.Module)");
    }
    if !zip {
        return Some("not a TorchScript archive (TorchScript files are zip archives)");
    }
    None
}

/// Refuses a file that is not a TorchScript archive, naming what it is and what to do.
pub fn check_archive(bytes: &[u8]) -> Result<()> {
    match describe_non_torchscript(bytes) {
        None => Ok(()),
        Some(what) => Err(Error::Input(format!(
            "is {what}; kiln never unpickles Python objects. Save the model as TorchScript: \
             `torch.jit.script(model).save(\"model.pt\")` (or `torch.jit.trace(model, example).save(...)`) \
             and package that; or, for one of kiln's architectures, save the weights with \
             safetensors and use `kiln-train import`"
        ))),
    }
}

/// Loads a TorchScript module from the bytes of its archive onto `device`, in eval mode.
pub(crate) fn load(bytes: &[u8], device: Device) -> Result<CModule> {
    check_archive(bytes)?;
    let mut module = CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device)
        .map_err(|e| Error::Input(format!("is not a TorchScript module libtorch can load: {e}")))?;
    module.f_set_eval()?;
    Ok(module)
}

/// Runs `module` once on zeros of the declared input shape and checks that it gives float
/// logits `[1, classes]`; the message says what it gave instead.
pub(crate) fn check_signature(module: &CModule, spec: &TorchScriptSpec, device: Device) -> Result<()> {
    let mut shape = vec![1];
    shape.extend_from_slice(&spec.input);
    let x = Tensor::f_zeros(&shape, (Kind::Float, device))?;
    let y = kiln_tensor::tch::no_grad(|| module.forward_ts(&[x])).map_err(|e| {
        Error::Spec(format!(
            "the TorchScript module's forward failed on a float input of shape {shape:?} (the declared input): {e}"
        ))
    })?;
    if y.size() != [1, spec.classes] || !y.is_floating_point() {
        return Err(Error::Spec(format!(
            "the TorchScript module gave a {:?} tensor of shape {:?} for an input of shape {shape:?}; \
             kiln expects float logits of shape [1, {}] (one per class)",
            y.kind(),
            y.size(),
            spec.classes
        )));
    }
    Ok(())
}

impl TorchScriptSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.input.is_empty() {
            return Err(Error::Spec(
                "a torchscript model needs its input shape (one sample, without the batch)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickles_and_other_files_are_refused_with_what_to_do() {
        let state_dict_zip = b"PK\x03\x04....archive/data.pkl....archive/data/0....".to_vec();
        let e = check_archive(&state_dict_zip).unwrap_err().to_string();
        assert!(e.contains("state_dict") && e.contains("torch.jit.script"), "{e}");
        let legacy = vec![0x80, 0x02, 0x8a, 0x0a];
        assert!(check_archive(&legacy).unwrap_err().to_string().contains("legacy"));
        assert!(check_archive(b"hello").unwrap_err().to_string().contains("zip"));
        let script = b"PK\x03\x04..m/data.pkl..m/constants.pkl..m/code/__torch__.py".to_vec();
        assert!(check_archive(&script).is_ok());
    }
}
