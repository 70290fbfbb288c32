//! Between the gRPC messages and kiln's transport-independent tensors
//! ([`crate::routes::v2::InputTensor`], [`crate::routes::v2::OutputTensor`]).

use super::proto::{model_infer_request::InferInputTensor, InferTensorContents};
use crate::routes::binary::decode_raw;
use crate::routes::v2::{numel, InputTensor};
use crate::{Error, Result};

/// The request's inputs with their elements as f32: from `raw_input_contents` when the
/// request uses it (one entry per input), else from each input's typed `contents`.
pub fn inputs(tensors: &[InferInputTensor], raw: &[Vec<u8>]) -> Result<Vec<InputTensor>> {
    if !raw.is_empty() && raw.len() != tensors.len() {
        return Err(Error::BadRequest(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, or use contents",
            raw.len(),
            tensors.len()
        )));
    }
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let what = format!("input {:?}", t.name);
            if let Some(k) = t.parameters.keys().find(|k| k.starts_with("shared_memory_")) {
                return Err(Error::BadRequest(format!(
                    "{what}: parameter {k:?} asks for the shared-memory extension, which kiln does not support"
                )));
            }
            let count = numel(&t.shape)?;
            let values = match raw.get(i) {
                Some(bytes) => {
                    if t.contents.is_some() {
                        return Err(Error::BadRequest(format!(
                            "{what} has both contents and raw_input_contents; send its elements one way"
                        )));
                    }
                    decode_raw(bytes, &t.datatype, count, &what)?
                }
                None => typed(t.contents.as_ref(), &t.datatype, &what)?,
            };
            if values.len() != count {
                return Err(Error::BadRequest(format!(
                    "input data has {} elements, its shape {:?} needs {count}",
                    values.len(),
                    t.shape
                )));
            }
            Ok(InputTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                datatype: t.datatype.clone(),
                values,
            })
        })
        .collect()
}

/// The elements of typed contents, from the field the datatype uses.
fn typed(contents: Option<&InferTensorContents>, datatype: &str, what: &str) -> Result<Vec<f32>> {
    let empty = InferTensorContents::default();
    let c = contents.unwrap_or(&empty);
    let used: Vec<&str> = [
        ("bool_contents", !c.bool_contents.is_empty()),
        ("int_contents", !c.int_contents.is_empty()),
        ("int64_contents", !c.int64_contents.is_empty()),
        ("uint_contents", !c.uint_contents.is_empty()),
        ("uint64_contents", !c.uint64_contents.is_empty()),
        ("fp32_contents", !c.fp32_contents.is_empty()),
        ("fp64_contents", !c.fp64_contents.is_empty()),
        ("bytes_contents", !c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let (field, values): (&str, Vec<f32>) = match datatype {
        "FP32" => ("fp32_contents", c.fp32_contents.clone()),
        "FP64" => ("fp64_contents", c.fp64_contents.iter().map(|&v| v as f32).collect()),
        "INT8" | "INT16" | "INT32" => ("int_contents", c.int_contents.iter().map(|&v| v as f32).collect()),
        "INT64" => ("int64_contents", c.int64_contents.iter().map(|&v| v as f32).collect()),
        "UINT8" | "UINT16" | "UINT32" => ("uint_contents", c.uint_contents.iter().map(|&v| v as f32).collect()),
        "UINT64" => ("uint64_contents", c.uint64_contents.iter().map(|&v| v as f32).collect()),
        "BOOL" => ("bool_contents", c.bool_contents.iter().map(|&b| f32::from(u8::from(b))).collect()),
        other => {
            return Err(Error::BadRequest(format!(
                "{what}: datatype {other:?} is not supported; expected BOOL, UINT8, INT8, INT16, INT32, INT64, FP32 or FP64"
            )))
        }
    };
    if let Some(wrong) = used.iter().find(|&&u| u != field) {
        return Err(Error::BadRequest(format!(
            "{what} is {datatype} but its elements are in contents.{wrong}; {datatype} elements go in contents.{field}"
        )));
    }
    if datatype == "UINT8" {
        if let Some(v) = c.uint_contents.iter().find(|&&v| v > 255) {
            return Err(Error::BadRequest(format!("{what}: {v} is out of range for UINT8")));
        }
    }
    Ok(values)
}
