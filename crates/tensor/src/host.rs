//! `HostTensor`: a tensor's elements in host memory, as little-endian bytes with their
//! dtype and shape: what a request carries to a model of named, typed tensors and what
//! comes back, batched and split along the first dimension.

use crate::{convert, DType, Error, Result};
use tch::Tensor;

/// A row-major tensor in host memory: `data` holds `numel(shape)` elements of `dtype`,
/// little-endian (the layout of safetensors, of the v2 protocol's binary data and of
/// gRPC's raw contents).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// The element type.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<i64>,
    /// The elements' bytes.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor of `dtype` and `shape` holding `data`; the byte count must fit the shape.
    pub fn new(dtype: DType, shape: Vec<i64>, data: Vec<u8>) -> Result<HostTensor> {
        let expected = convert::nbytes(&shape, dtype.size_in_bytes())?;
        if data.len() != expected {
            return Err(Error::InvalidShape {
                shape,
                reason: format!("{dtype} data of this shape takes {expected} bytes, got {}", data.len()),
            });
        }
        Ok(HostTensor { dtype, shape, data })
    }

    /// The elements of `t` (any device, any layout), copied to the host.
    pub fn from_tensor(t: &Tensor) -> Result<HostTensor> {
        Ok(HostTensor {
            dtype: DType::of(t)?,
            shape: t.size(),
            data: convert::tensor_to_bytes(t)?,
        })
    }

    /// A CPU libtorch tensor holding a copy of the elements.
    pub fn to_tensor(&self) -> Result<Tensor> {
        convert::tensor_from_bytes(&self.data, &self.shape, self.dtype)
    }

    /// The size of the first dimension (0 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(0, |&r| r.max(0) as usize)
    }

    /// Bytes in one row (the elements after the first dimension).
    fn row_bytes(&self) -> usize {
        let rest: i64 = self.shape.iter().skip(1).product();
        rest.max(0) as usize * self.dtype.size_in_bytes()
    }

    /// The tensors of `parts` joined along the first dimension; all must have the same
    /// dtype and the same sizes after the first.
    pub fn concat(parts: Vec<HostTensor>) -> Result<HostTensor> {
        let mut parts = parts.into_iter();
        let Some(mut out) = parts.next() else {
            return Err(Error::InvalidShape {
                shape: Vec::new(),
                reason: "no tensors to join".into(),
            });
        };
        if out.shape.is_empty() {
            return Err(Error::InvalidShape {
                shape: out.shape,
                reason: "a scalar has no first dimension to join along".into(),
            });
        }
        for p in parts {
            if p.dtype != out.dtype || p.shape.len() != out.shape.len() || p.shape[1..] != out.shape[1..] {
                return Err(Error::InvalidShape {
                    shape: p.shape,
                    reason: format!(
                        "cannot be joined to a {} tensor of shape {:?} along the first dimension",
                        out.dtype, out.shape
                    ),
                });
            }
            out.shape[0] += p.shape[0];
            out.data.extend_from_slice(&p.data);
        }
        Ok(out)
    }

    /// Splits the tensor along the first dimension into parts of `rows[i]` rows each;
    /// the counts must add up to the first dimension.
    pub fn split(self, rows: &[usize]) -> Result<Vec<HostTensor>> {
        let total: usize = rows.iter().sum();
        if self.shape.is_empty() || total != self.rows() {
            return Err(Error::InvalidShape {
                shape: self.shape,
                reason: format!("cannot be split into parts of {rows:?} rows along the first dimension"),
            });
        }
        if let [_] = rows {
            return Ok(vec![self]);
        }
        let per = self.row_bytes();
        let mut offset = 0;
        Ok(rows
            .iter()
            .map(|&n| {
                let mut shape = self.shape.clone();
                shape[0] = n as i64;
                let data = self.data[offset..offset + n * per].to_vec();
                offset += n * per;
                HostTensor {
                    dtype: self.dtype,
                    shape,
                    data,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64s(shape: &[i64], v: &[i64]) -> HostTensor {
        HostTensor::new(
            DType::Int64,
            shape.to_vec(),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn joins_and_splits_along_the_first_dimension_and_round_trips_through_libtorch() {
        let a = i64s(&[1, 2], &[1, 2]);
        let b = i64s(&[2, 2], &[3, 4, 5, 6]);
        let ab = HostTensor::concat(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(ab.shape, [3, 2]);
        let t = ab.to_tensor().unwrap();
        assert_eq!(convert::tensor_to_i64(&t).unwrap(), [1, 2, 3, 4, 5, 6]);
        let back = HostTensor::from_tensor(&t).unwrap();
        assert_eq!(back.split(&[1, 2]).unwrap(), [a, b]);
    }

    #[test]
    fn mismatched_parts_and_counts_are_errors() {
        assert!(HostTensor::new(DType::Fp32, vec![2], vec![0; 7]).is_err());
        // Elements that fit in a usize but whose bytes do not: an error, not a wrapped size.
        let e = HostTensor::new(DType::Int64, vec![1, 1 << 61], Vec::new()).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let a = i64s(&[1, 2], &[1, 2]);
        let c = i64s(&[1, 3], &[1, 2, 3]);
        let e = HostTensor::concat(vec![a.clone(), c]).unwrap_err().to_string();
        assert!(e.contains("cannot be joined"), "{e}");
        assert!(a.clone().split(&[2]).is_err());
        assert!(HostTensor::concat(Vec::new()).is_err());
    }
}
