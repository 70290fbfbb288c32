//! Turning the JSON tensors of a request into `f32` values, checked against their
//! declared datatype and shape.

use crate::{Error, Result};
use serde_json::Value;

/// Deepest nesting accepted in `data`.
const MAX_DEPTH: usize = 32;

/// Flattens `data` (flat or nested arrays) into `f32`s, checking each element against
/// `datatype` (BOOL, UINT8, INT8-INT64, FP32, FP64).
pub fn flatten(data: &Value, datatype: &str) -> Result<Vec<f32>> {
    let kind = match datatype {
        "BOOL" => Kind::Bool,
        "UINT8" => Kind::Int(0.0, 255.0),
        "INT8" => Kind::Int(-128.0, 127.0),
        "INT16" => Kind::Int(-32768.0, 32767.0),
        "INT32" => Kind::Int(-2147483648.0, 2147483647.0),
        "INT64" => Kind::Int(-9.3e18, 9.3e18),
        "FP32" | "FP64" => Kind::Float,
        other => {
            return Err(Error::BadRequest(format!(
                "datatype {other:?} is not supported; expected BOOL, UINT8, INT8, INT16, INT32, INT64, FP32 or FP64"
            )))
        }
    };
    let mut out = Vec::new();
    walk(data, kind, datatype, 0, &mut out)?;
    Ok(out)
}

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int(f64, f64),
    Float,
}

fn walk(v: &Value, kind: Kind, dt: &str, depth: usize, out: &mut Vec<f32>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::BadRequest(format!(
            "data is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    match (v, kind) {
        (Value::Array(items), _) => items.iter().try_for_each(|i| walk(i, kind, dt, depth + 1, out)),
        (Value::Bool(b), Kind::Bool) => {
            out.push(if *b { 1.0 } else { 0.0 });
            Ok(())
        }
        (Value::Number(n), Kind::Int(lo, hi)) => {
            match n.as_i64().map(|i| i as f64).or_else(|| n.as_u64().map(|u| u as f64)) {
                Some(i) if (lo..=hi).contains(&i) => {
                    out.push(i as f32);
                    Ok(())
                }
                _ => Err(Error::BadRequest(format!(
                    "{n} is not a {dt} value (an integer in [{lo}, {hi}])"
                ))),
            }
        }
        (Value::Number(n), Kind::Float) => match n.as_f64() {
            Some(f) if (f as f32).is_finite() => {
                out.push(f as f32);
                Ok(())
            }
            _ => Err(Error::BadRequest(format!("{n} is not a finite {dt} value"))),
        },
        (other, _) => Err(Error::BadRequest(format!("{other} is not a {dt} value"))),
    }
}

/// The element count of `shape`, or an error for a negative or overflowing one.
pub fn numel(shape: &[i64]) -> Result<usize> {
    kiln_tensor::convert::numel(shape).map_err(|e| Error::BadRequest(e.to_string()))
}
