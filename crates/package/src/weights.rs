//! Encoding model weights as safetensors and checking them against an architecture.

use crate::{Error, Result};
use kiln_model::Parameters;
use kiln_tensor::{convert, tch, DType, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, View};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::Bool => Dtype::BOOL,
        DType::Uint8 => Dtype::U8,
        DType::Int8 => Dtype::I8,
        DType::Int16 => Dtype::I16,
        DType::Int32 => Dtype::I32,
        DType::Int64 => Dtype::I64,
        DType::Fp16 => Dtype::F16,
        DType::Bf16 => Dtype::BF16,
        DType::Fp32 => Dtype::F32,
        DType::Fp64 => Dtype::F64,
    }
}

/// Every tensor of `net` (parameters and buffers) as a safetensors file, names sorted.
pub fn encode_weights(net: &impl Parameters) -> Result<Vec<u8>> {
    encode_tensors(net.var_store().variables())
}

type Msg<T> = std::result::Result<T, String>;

/// Named tensors as a safetensors file, names sorted.
pub fn encode_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Result<Vec<u8>> {
    encode_tensors_msg(tensors).map_err(Error::Weights)
}

fn encode_tensors_msg(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Msg<Vec<u8>> {
    let mut raws = BTreeMap::new();
    for (name, t) in tensors {
        let dtype = DType::of(&t).map_err(|e| format!("{name}: {e}"))?;
        let data = convert::tensor_to_bytes(&t).map_err(|e| format!("{name}: {e}"))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        raws.insert(
            name,
            Raw {
                dtype: st_dtype(dtype),
                shape,
                data,
            },
        );
    }
    let meta = HashMap::from([("format".to_string(), "kiln".to_string())]);
    safetensors::tensor::serialize(raws.iter().map(|(k, v)| (k.as_str(), v)), Some(meta)).map_err(|e| e.to_string())
}

/// Every tensor of a safetensors file, on the CPU.
pub fn decode_tensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    decode_tensors_msg(bytes).map_err(Error::Weights)
}

fn decode_tensors_msg(bytes: &[u8]) -> Msg<Vec<(String, Tensor)>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a valid safetensors file: {e}"))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = from_st_dtype(view.dtype())
                .ok_or_else(|| format!("tensor {name:?} has unsupported dtype {}", view.dtype()))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let t = convert::tensor_from_bytes(view.data(), &shape, dtype).map_err(|e| format!("{name}: {e}"))?;
            Ok((name, t))
        })
        .collect()
}

fn from_st_dtype(d: Dtype) -> Option<DType> {
    [
        DType::Bool,
        DType::Uint8,
        DType::Int8,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::Fp16,
        DType::Bf16,
        DType::Fp32,
        DType::Fp64,
    ]
    .into_iter()
    .find(|&k| st_dtype(k) == d)
}

/// Checks a safetensors file against `net`'s tensors (names, shapes, dtypes) and copies
/// the values in. Every mismatch is listed in the error, not just the first.
pub fn decode_weights(bytes: &[u8], net: &mut impl Parameters) -> Result<()> {
    decode_weights_msg(bytes, net).map_err(Error::Weights)
}

fn decode_weights_msg(bytes: &[u8], net: &mut impl Parameters) -> Msg<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let expected = net.parameter_shapes().map_err(|e| e.to_string())?;
    let found: BTreeMap<String, _> = st.tensors().into_iter().collect();
    let mut problems = Vec::new();
    for (name, (shape, dtype)) in &expected {
        match found.get(name) {
            None => problems.push(format!("tensor {name:?} (shape {shape:?}) is missing")),
            Some(view) => {
                let got: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                if &got != shape {
                    problems.push(format!(
                        "tensor {name:?} has shape {got:?}, the model expects {shape:?}"
                    ));
                }
                if view.dtype() != st_dtype(*dtype) {
                    problems.push(format!(
                        "tensor {name:?} has dtype {}, the model expects {}",
                        view.dtype(),
                        dtype.safetensors_name()
                    ));
                }
            }
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("tensor {name:?} is not part of this architecture"));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let vars = net.var_store().variables();
    tch::no_grad(|| {
        for (name, (shape, dtype)) in &expected {
            let (Some(view), Some(var)) = (found.get(name), vars.get(name)) else {
                continue;
            };
            let src = convert::tensor_from_bytes(view.data(), shape, *dtype).map_err(|e| format!("{name}: {e}"))?;
            let mut var = var.shallow_clone();
            var.f_copy_(&src).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    })
}
