//! Between the gRPC messages and kiln's transport-independent tensors
//! ([`crate::routes::v2::InputTensor`], [`crate::routes::v2::OutputTensor`]).

use super::proto::{model_infer_request::InferInputTensor, InferTensorContents};
use crate::routes::binary::check_raw;
use crate::routes::parameters::refuse_extension;
use crate::routes::v2::{numel, InputTensor};
use crate::{Error, Result};

/// The request's inputs with their elements as raw little-endian bytes: from
/// `raw_input_contents` when the request uses it (one entry per input), else from each
/// input's typed `contents`.
pub fn inputs(tensors: &[InferInputTensor], raw: Vec<Vec<u8>>) -> Result<Vec<InputTensor>> {
    if !raw.is_empty() && raw.len() != tensors.len() {
        return Err(Error::BadRequest(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, or use contents",
            raw.len(),
            tensors.len()
        )));
    }
    let mut raw = raw.into_iter();
    tensors
        .iter()
        .map(|t| {
            let what = format!("input {:?}", t.name);
            for k in t.parameters.keys() {
                refuse_extension(k, &what)?;
            }
            let count = numel(&t.shape)?;
            let bytes = match raw.next() {
                Some(bytes) => {
                    if t.contents.is_some() {
                        return Err(Error::BadRequest(format!(
                            "{what} has both contents and raw_input_contents; send its elements one way"
                        )));
                    }
                    check_raw(&bytes, &t.datatype, count, &what)?;
                    bytes
                }
                None => {
                    let (bytes, elements) = typed(t.contents.as_ref(), &t.datatype, &what)?;
                    if elements != count {
                        return Err(Error::BadRequest(format!(
                            "input data has {elements} elements, its shape {:?} needs {count}",
                            t.shape
                        )));
                    }
                    bytes
                }
            };
            Ok(InputTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                datatype: t.datatype.clone(),
                bytes,
            })
        })
        .collect()
}

/// Little-endian bytes of `values`, each in range for `datatype` (from `lo` to `hi`).
fn ints<T: Copy + Into<i128>>(values: &[T], size: usize, lo: i128, hi: i128, dt: &str, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * size);
    for &v in values {
        let v: i128 = v.into();
        if !(lo..=hi).contains(&v) {
            return Err(Error::BadRequest(format!("{what}: {v} is out of range for {dt}")));
        }
        out.extend_from_slice(&v.to_le_bytes()[..size]);
    }
    Ok(out)
}

/// The elements of typed contents, from the field the datatype uses, as raw
/// little-endian bytes of the datatype, and how many there are.
fn typed(contents: Option<&InferTensorContents>, datatype: &str, what: &str) -> Result<(Vec<u8>, usize)> {
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
    let (field, bytes, n): (&str, Vec<u8>, usize) = match datatype {
        "FP32" => (
            "fp32_contents",
            c.fp32_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
            c.fp32_contents.len(),
        ),
        "FP64" => (
            "fp64_contents",
            c.fp64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
            c.fp64_contents.len(),
        ),
        "INT8" | "INT16" | "INT32" => {
            let size = if datatype == "INT8" {
                1
            } else if datatype == "INT16" {
                2
            } else {
                4
            };
            let bits = 8 * size as u32 - 1;
            let (lo, hi) = (-(1i128 << bits), (1i128 << bits) - 1);
            (
                "int_contents",
                ints(&c.int_contents, size, lo, hi, datatype, what)?,
                c.int_contents.len(),
            )
        }
        "INT64" => (
            "int64_contents",
            c.int64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
            c.int64_contents.len(),
        ),
        "UINT8" | "UINT16" | "UINT32" => {
            let size = if datatype == "UINT8" {
                1
            } else if datatype == "UINT16" {
                2
            } else {
                4
            };
            let hi = (1i128 << (8 * size)) - 1;
            (
                "uint_contents",
                ints(&c.uint_contents, size, 0, hi, datatype, what)?,
                c.uint_contents.len(),
            )
        }
        "UINT64" => (
            "uint64_contents",
            c.uint64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
            c.uint64_contents.len(),
        ),
        "BOOL" => (
            "bool_contents",
            c.bool_contents.iter().map(|&b| u8::from(b)).collect(),
            c.bool_contents.len(),
        ),
        other => {
            return Err(Error::BadRequest(format!(
                "{what}: datatype {other:?} is not supported in typed contents; expected BOOL, UINT8-64, INT8-64, \
                 FP32 or FP64 (send FP16 and BF16 as raw_input_contents)"
            )))
        }
    };
    if let Some(wrong) = used.iter().find(|&&u| u != field) {
        return Err(Error::BadRequest(format!(
            "{what} is {datatype} but its elements are in contents.{wrong}; {datatype} elements go in contents.{field}"
        )));
    }
    Ok((bytes, n))
}
