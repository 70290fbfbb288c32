//! Element types, named as the KServe v2 protocol names them (`FP32`, `INT64`, ...).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use tch::{Kind, Tensor};

/// The element type of a tensor as kiln's files and protocols name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DType {
    /// Boolean.
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE half precision.
    Fp16,
    /// bfloat16.
    Bf16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
}

impl DType {
    /// Alias for the common case, so call sites read `DType::F32`.
    pub const F32: DType = DType::Fp32;

    /// The libtorch kind of this dtype.
    pub fn kind(self) -> Kind {
        match self {
            DType::Bool => Kind::Bool,
            DType::Uint8 => Kind::Uint8,
            DType::Int8 => Kind::Int8,
            DType::Int16 => Kind::Int16,
            DType::Int32 => Kind::Int,
            DType::Int64 => Kind::Int64,
            DType::Fp16 => Kind::Half,
            DType::Bf16 => Kind::BFloat16,
            DType::Fp32 => Kind::Float,
            DType::Fp64 => Kind::Double,
        }
    }

    /// The dtype of a libtorch kind, or an error for kinds kiln does not handle.
    pub fn from_kind(kind: Kind) -> Result<DType> {
        Ok(match kind {
            Kind::Bool => DType::Bool,
            Kind::Uint8 => DType::Uint8,
            Kind::Int8 => DType::Int8,
            Kind::Int16 => DType::Int16,
            Kind::Int => DType::Int32,
            Kind::Int64 => DType::Int64,
            Kind::Half => DType::Fp16,
            Kind::BFloat16 => DType::Bf16,
            Kind::Float => DType::Fp32,
            Kind::Double => DType::Fp64,
            other => {
                return Err(Error::DType {
                    expected: "one of BOOL, UINT8, INT8-64, FP16, BF16, FP32, FP64".into(),
                    got: format!("{other:?}"),
                })
            }
        })
    }

    /// The dtype of a tensor.
    pub fn of(t: &Tensor) -> Result<DType> {
        DType::from_kind(t.f_kind()?)
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Bool | DType::Uint8 | DType::Int8 => 1,
            DType::Int16 | DType::Fp16 | DType::Bf16 => 2,
            DType::Int32 | DType::Fp32 => 4,
            DType::Int64 | DType::Fp64 => 8,
        }
    }

    /// The name used in safetensors headers (`F32`, `I64`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::Uint8 => "U8",
            DType::Int8 => "I8",
            DType::Int16 => "I16",
            DType::Int32 => "I32",
            DType::Int64 => "I64",
            DType::Fp16 => "F16",
            DType::Bf16 => "BF16",
            DType::Fp32 => "F32",
            DType::Fp64 => "F64",
        }
    }
}

impl DType {
    /// Every dtype kiln handles.
    pub const ALL: [DType; 10] = [
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
    ];

    /// The dtype the KServe v2 protocol names `name` (`FP32`, `INT64`, ...), if kiln has it.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The KServe v2 protocol's name: `BOOL`, `UINT8`, `INT8`, `INT16`, `INT32`, `INT64`,
    /// `FP16`, `BF16`, `FP32` or `FP64`.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::Uint8 => "UINT8",
            DType::Int8 => "INT8",
            DType::Int16 => "INT16",
            DType::Int32 => "INT32",
            DType::Int64 => "INT64",
            DType::Fp16 => "FP16",
            DType::Bf16 => "BF16",
            DType::Fp32 => "FP32",
            DType::Fp64 => "FP64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
