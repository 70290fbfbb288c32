//! TorchScript modules (from `torch.jit.script` or `torch.jit.trace` in PyTorch) as kiln
//! classifiers, and kiln's own networks written out as TorchScript.
//!
//! A TorchScript archive holds the module's code (TorchScript, not Python) and its
//! tensors; libtorch runs it without Python. A plain `torch.save` file (a pickled
//! `state_dict` or a whole pickled module) is not TorchScript: loading one would mean
//! unpickling arbitrary Python objects, which kiln never does, so [`check_archive`] refuses
//! it before libtorch sees it and says what to do instead.

use crate::{Error, Result};
use kiln_tensor::{
    tch::{CModule, IValue},
    DType, Device, Kind, Tensor,
};
use serde::{Deserialize, Serialize};

/// The most bytes one sample of a declared tensor may take (1 GiB, sizes of -1 counted
/// as 1): a larger declaration is refused rather than allocated when the module is checked.
pub const MAX_SAMPLE_BYTES: u64 = 1 << 30;

/// What kiln needs to know of a TorchScript module. Either a classifier, whose `forward`
/// takes one float tensor `[B, ...input]` and returns the logits `[B, classes]`; or a
/// module of named tensors (several inputs or outputs, any dtypes), whose `forward` takes
/// the `inputs` in order and returns the `outputs`: one tensor, a tuple or list of them
/// in order, or a dict keyed by their names. Every tensor of such a module is batched
/// along its first dimension.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptSpec {
    /// A classifier's shape of one sample, without the batch dimension (empty for a
    /// module of named tensors).
    #[serde(default)]
    pub input: Vec<i64>,
    /// A classifier's number of classes, the width of the logits (0 for a module of
    /// named tensors).
    #[serde(default)]
    pub classes: i64,
    /// A module of named tensors: its inputs, in the order `forward` takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSpec>,
    /// A module of named tensors: its outputs, in the order `forward` returns them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSpec>,
}

/// One named tensor a module takes or gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Its name, as requests and answers name it.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// The shape of one sample, without the batch dimension; `-1` for a size that may
    /// differ from request to request (e.g. a sequence length).
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// The shape with `-1` for the batch, as protocols' metadata states it.
    pub fn batched_shape(&self) -> Vec<i64> {
        std::iter::once(-1).chain(self.shape.iter().copied()).collect()
    }

    /// Whether a tensor of `dtype` and `shape` (with its batch dimension) fits.
    pub fn fits(&self, dtype: DType, shape: &[i64]) -> bool {
        dtype == self.dtype
            && shape.len() == self.shape.len() + 1
            && shape[1..].iter().zip(&self.shape).all(|(&g, &w)| w == -1 || g == w)
    }

    /// `NAME:DTYPE:D1,D2,...` (e.g. `image:FP32:1,28,28`, `tokens:INT64:-1`; an empty
    /// shape for one value a sample), as the command line takes it.
    pub fn parse(text: &str) -> std::result::Result<TensorSpec, String> {
        let want = "expected NAME:DTYPE:SHAPE, e.g. image:FP32:1,28,28 or tokens:INT64:-1";
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(dtype), Some(shape)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{text:?}: {want}"));
        };
        let dtype = DType::from_name(&dtype.to_ascii_uppercase()).ok_or_else(|| {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            format!("{text:?}: dtype {dtype:?} is not one of {}", names.join(", "))
        })?;
        let shape = if shape.trim().is_empty() {
            Vec::new()
        } else {
            shape
                .split(',')
                .map(|d| d.trim().parse::<i64>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| format!("{text:?}: shape {shape:?} is not comma-separated integers; {want}"))?
        };
        let spec = TensorSpec {
            name: name.to_string(),
            dtype,
            shape,
        };
        spec.check().map_err(|e| format!("{text:?}: {e}"))?;
        Ok(spec)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(format!(
                "tensor name {:?} must be non-empty ASCII letters, digits, '_', '-' or '.'",
                self.name
            ));
        }
        if let Some(d) = self.shape.iter().find(|&&d| d == 0 || d < -1) {
            return Err(format!(
                "tensor {:?}: size {d} in shape {:?} must be positive, or -1 for any size",
                self.name, self.shape
            ));
        }
        // The import check runs the module on zeros of this shape: a sample of more than
        // MAX_SAMPLE_BYTES is a mistake in the spec, not something to allocate.
        let bytes = self
            .shape
            .iter()
            .try_fold(self.dtype.size_in_bytes() as u64, |acc, &d| {
                acc.checked_mul(d.max(1) as u64)
            })
            .filter(|&b| b <= MAX_SAMPLE_BYTES);
        if bytes.is_none() {
            return Err(format!(
                "tensor {:?}: shape {:?} of {} takes more than {} MiB a sample (sizes of -1 counted as 1)",
                self.name,
                self.shape,
                self.dtype,
                MAX_SAMPLE_BYTES >> 20
            ));
        }
        Ok(())
    }
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
    if spec.is_tensors() {
        return check_tensors_signature(module, spec, device);
    }
    let mut shape = vec![1];
    shape.extend_from_slice(&spec.input);
    let x = Tensor::f_zeros(&shape, (Kind::Float, device))?;
    let y = kiln_tensor::tch::no_grad(|| module.forward_ts(&[x])).map_err(|e| {
        Error::Spec(format!(
            "the TorchScript module's forward failed on a float input of shape {shape:?} (the declared input): {e}"
        ))
    })?;
    let size = y.size();
    if size != [1, spec.classes] || !y.is_floating_point() {
        return Err(Error::Spec(format!(
            "the TorchScript module gave a {:?} tensor of shape {size:?} for an input of shape {shape:?}; \
             kiln expects float logits of shape [1, {}] (one per class)",
            y.f_kind()?,
            spec.classes
        )));
    }
    let input = [(Kind::Float, shape)];
    check_rows_independent(&input, &["the logits"], device, |xs| {
        Ok(vec![kiln_tensor::tch::no_grad(|| module.forward_ts(xs))?])
    })
}

/// Runs the module (`run`, on inputs of `(kind, shape)`, each with a batch of 1) on two
/// different rows, zeros and ones, in one batch and each alone. kiln runs the requests
/// that are queued together as one batch, so a module whose answer for a row depends on
/// the other rows of its batch (batch norm or dropout in training mode, a mean over the
/// first dimension) would give each request an answer mixed with others': refused. When
/// the module cannot run on ones (inputs it does not take), nothing is concluded.
fn check_rows_independent(
    inputs: &[(Kind, Vec<i64>)],
    outputs: &[&str],
    device: Device,
    run: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<()> {
    let rows = |ones: bool| {
        inputs
            .iter()
            .map(|(kind, shape)| {
                let options = (*kind, device);
                Ok(if ones {
                    Tensor::f_ones(shape.as_slice(), options)?
                } else {
                    Tensor::f_zeros(shape.as_slice(), options)?
                })
            })
            .collect::<Result<Vec<_>>>()
    };
    let (zeros, ones) = (rows(false)?, rows(true)?);
    let both = zeros
        .iter()
        .zip(&ones)
        .map(|(z, o)| Ok(Tensor::f_cat(&[z, o], 0)?))
        .collect::<Result<Vec<_>>>()?;
    let (Ok(alone_zeros), Ok(alone_ones), Ok(batched)) = (run(&zeros), run(&ones), run(&both)) else {
        return Ok(());
    };
    for (name, ((z, o), b)) in outputs.iter().zip(alone_zeros.iter().zip(&alone_ones).zip(&batched)) {
        for (row, alone) in [(0, z), (1, o)] {
            let together = b.f_narrow(0, row, 1)?;
            if let Some(gap) = difference(alone, &together)? {
                return Err(Error::Spec(format!(
                    "the module's answer for a row depends on the other rows of its batch ({name}: row {row} of a \
                     batch of zeros and ones differs from the same row run alone, {gap}); kiln runs concurrent requests as one \
                     batch, so their answers would mix. Put the model in evaluation mode (model.eval()) before \
                     torch.jit.script or torch.jit.trace, and compute each row of forward's outputs from that row alone"
                )));
            }
        }
    }
    Ok(())
}

/// How `a` and `b` differ, if they do: sizes, or values beyond float rounding (a
/// batched kernel may sum in another order than a single row's).
fn difference(a: &Tensor, b: &Tensor) -> Result<Option<String>> {
    let (sa, sb) = (a.size(), b.size());
    if sa != sb {
        return Ok(Some(format!("shapes {sb:?} and {sa:?}")));
    }
    if a.is_floating_point() {
        let (a, b) = (a.f_to_kind(Kind::Double)?, b.f_to_kind(Kind::Double)?);
        let gap = a.f_sub(&b)?.f_abs()?.f_max()?.f_double_value(&[])?;
        let scale = 1.0 + b.f_abs()?.f_max()?.f_double_value(&[])?;
        return Ok((gap.is_nan() || gap > 1e-4 * scale).then(|| format!("largest difference {gap:.3e}")));
    }
    Ok((!a.f_equal(b)?).then(|| "different values".to_string()))
}

/// Runs a module of named tensors on `inputs` (in `spec.inputs`' order, each batched
/// along its first dimension) and returns its outputs in `spec.outputs`' order, each
/// checked against its spec. An input that does not fit is [`Error::Input`]; outputs
/// that do not fit are [`Error::Spec`] naming what the module gave.
pub(crate) fn run_tensors(module: &CModule, spec: &TorchScriptSpec, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    if inputs.len() != spec.inputs.len() {
        return Err(Error::Input(format!(
            "{} tensors given; the module takes {} ({})",
            inputs.len(),
            spec.inputs.len(),
            names(&spec.inputs)
        )));
    }
    let mut batch = None;
    for (t, want) in inputs.iter().zip(&spec.inputs) {
        let dtype = DType::of(t)?;
        let size = t.size();
        let rows = match size.first() {
            Some(&rows) if want.fits(dtype, &size) => rows,
            _ => {
                return Err(Error::Input(format!(
                    "{:?} is {dtype} {size:?}; the module takes {} {:?} (-1: any size)",
                    want.name,
                    want.dtype,
                    want.batched_shape()
                )))
            }
        };
        match batch {
            None => batch = Some(rows),
            Some(b) if b != rows => {
                return Err(Error::Input(format!(
                    "{:?} has {rows} rows, the inputs before it {b}: every input holds the same batch",
                    want.name,
                )))
            }
            Some(_) => {}
        }
    }
    let args: Vec<IValue> = inputs.iter().map(|t| IValue::Tensor(t.shallow_clone())).collect();
    let out = kiln_tensor::tch::no_grad(|| module.forward_is(&args))
        .map_err(|e| Error::Input(format!("the module's forward failed: {e}")))?;
    let outputs = output_tensors(out, spec)?;
    let rows = batch.unwrap_or(0);
    for (t, want) in outputs.iter().zip(&spec.outputs) {
        let dtype = DType::of(t)?;
        let size = t.size();
        if !want.fits(dtype, &size) || size.first() != Some(&rows) {
            return Err(Error::Spec(format!(
                "the module gave {:?} as {dtype} {size:?} for a batch of {rows}; its spec says {} {:?} (the batch first, -1: any size)",
                want.name,
                want.dtype,
                want.batched_shape()
            )));
        }
    }
    Ok(outputs)
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tensors of what `forward` returned, in the order of `spec.outputs`.
fn output_tensors(out: IValue, spec: &TorchScriptSpec) -> Result<Vec<Tensor>> {
    let want = spec.outputs.len();
    let gave = |what: String| {
        Error::Spec(format!(
            "the module returned {what}; its spec names {want} outputs ({}): return one tensor, a tuple or list of them in that order, or a dict keyed by those names",
            names(&spec.outputs)
        ))
    };
    let tensors = match out {
        IValue::Tensor(t) => vec![t],
        IValue::TensorList(ts) => ts,
        IValue::Tuple(items) | IValue::GenericList(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                IValue::Tensor(t) => Ok(t),
                other => Err(gave(format!(
                    "a sequence whose item {i} is not a tensor ({})",
                    kind(&other)
                ))),
            })
            .collect::<Result<_>>()?,
        IValue::GenericDict(entries) => {
            let mut by_name = std::collections::BTreeMap::new();
            for (k, v) in entries {
                if let (IValue::String(k), IValue::Tensor(t)) = (k, v) {
                    by_name.insert(k, t);
                }
            }
            let keys: Vec<String> = by_name.keys().cloned().collect();
            spec.outputs
                .iter()
                .map(|o| {
                    by_name
                        .remove(&o.name)
                        .ok_or_else(|| gave(format!("a dict of tensors without {:?} (its keys: {keys:?})", o.name)))
                })
                .collect::<Result<_>>()?
        }
        other => return Err(gave(kind(&other).to_string())),
    };
    if tensors.len() != want {
        return Err(gave(format!("{} tensors", tensors.len())));
    }
    Ok(tensors)
}

fn kind(v: &IValue) -> &'static str {
    match v {
        IValue::None => "None",
        IValue::Tensor(_) => "a tensor",
        IValue::Double(_) | IValue::Int(_) | IValue::Bool(_) => "a number",
        IValue::String(_) => "a string",
        IValue::GenericDict(_) => "a dict",
        _ => "something other than tensors",
    }
}

/// Runs a module of named tensors once on zeros of its declared inputs (a batch of 2,
/// sizes of -1 taken as 1) and checks that it gives the declared outputs.
fn check_tensors_signature(module: &CModule, spec: &TorchScriptSpec, device: Device) -> Result<()> {
    let shapes: Vec<(Kind, Vec<i64>)> = spec
        .inputs
        .iter()
        .map(|i| {
            (
                i.dtype.kind(),
                std::iter::once(1).chain(i.shape.iter().map(|&d| d.max(1))).collect(),
            )
        })
        .collect();
    let inputs = shapes
        .iter()
        .map(|(kind, shape)| {
            let batch: Vec<i64> = std::iter::once(2).chain(shape.iter().skip(1).copied()).collect();
            Ok(Tensor::f_zeros(batch.as_slice(), (*kind, device))?)
        })
        .collect::<Result<Vec<_>>>()?;
    run_tensors(module, spec, &inputs).map_err(|e| match e {
        Error::Input(m) => Error::Spec(format!(
            "run on zeros of the declared inputs (a batch of 2, -1 sizes as 1): {m}"
        )),
        other => other,
    })?;
    let outputs: Vec<String> = spec.outputs.iter().map(|o| format!("output {:?}", o.name)).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    check_rows_independent(&shapes, &outputs, device, |xs| run_tensors(module, spec, xs))
}

impl TorchScriptSpec {
    /// Whether this is a module of named tensors rather than a classifier.
    pub fn is_tensors(&self) -> bool {
        !self.inputs.is_empty() || !self.outputs.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.is_tensors() {
            if self.input.is_empty() {
                return Err(Error::Spec(
                    "a torchscript model needs its input shape (one sample, without the batch), or its named \
                     inputs and outputs"
                        .into(),
                ));
            }
            return Ok(());
        }
        if !self.input.is_empty() || self.classes != 0 {
            return Err(Error::Spec(
                "a torchscript model is either a classifier (input and classes) or a module of named tensors \
                 (inputs and outputs), not both"
                    .into(),
            ));
        }
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err(Error::Spec(
                "a torchscript module of named tensors needs at least one input and one output".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in self.inputs.iter().chain(&self.outputs) {
            t.check().map_err(Error::Spec)?;
            if !seen.insert(t.name.as_str()) {
                return Err(Error::Spec(format!(
                    "tensor name {:?} is used twice; inputs and outputs need distinct names",
                    t.name
                )));
            }
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
