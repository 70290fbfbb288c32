//! Shape- and dtype-checked conversion between tensors and plain Rust data.
//!
//! libtorch's own constructors abort or panic on a size mismatch; these check first
//! and return an [`Error`] that says what was expected.

use crate::{DType, Error, Result};
use tch::{Kind, Tensor};

/// The number of elements a shape holds, or an error for a negative dimension.
pub fn numel(shape: &[i64]) -> Result<usize> {
    nbytes(shape, 1)
}

/// Bytes of a row-major tensor of `shape` whose elements take `size` bytes each; an
/// error for a negative dimension or a count that does not fit in memory's addresses.
pub fn nbytes(shape: &[i64], size: usize) -> Result<usize> {
    shape.iter().try_fold(size, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| Error::InvalidShape {
            shape: shape.to_vec(),
            reason: format!("dimension {d} is negative"),
        })?;
        acc.checked_mul(d).ok_or_else(|| Error::InvalidShape {
            shape: shape.to_vec(),
            reason: "its size overflows".into(),
        })
    })
}

fn check_count(shape: &[i64], got: usize) -> Result<()> {
    let expected = numel(shape)?;
    if expected != got {
        return Err(Error::ElementCount {
            shape: shape.to_vec(),
            expected,
            got,
        });
    }
    Ok(())
}

/// A CPU `f32` tensor of `shape` holding `data` in row-major order.
pub fn tensor_from_f32(data: &[f32], shape: &[i64]) -> Result<Tensor> {
    check_count(shape, data.len())?;
    Ok(Tensor::f_from_slice(data)?.f_reshape(shape)?)
}

/// A CPU `i64` tensor of `shape` holding `data` in row-major order.
pub fn tensor_from_i64(data: &[i64], shape: &[i64]) -> Result<Tensor> {
    check_count(shape, data.len())?;
    Ok(Tensor::f_from_slice(data)?.f_reshape(shape)?)
}

/// A CPU tensor of `dtype` and `shape` from little-endian bytes (as safetensors stores them).
pub fn tensor_from_bytes(bytes: &[u8], shape: &[i64], dtype: DType) -> Result<Tensor> {
    let expected = nbytes(shape, dtype.size_in_bytes())?;
    if bytes.len() != expected {
        return Err(Error::InvalidShape {
            shape: shape.to_vec(),
            reason: format!("{dtype} data of this shape takes {expected} bytes, got {}", bytes.len()),
        });
    }
    Ok(Tensor::f_from_data_size(bytes, shape, dtype.kind())?)
}

/// The elements of an `f32` tensor (any device, any layout) in row-major order.
pub fn tensor_to_f32(t: &Tensor) -> Result<Vec<f32>> {
    require_kind(t, Kind::Float)?;
    let flat = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?;
    Ok(Vec::<f32>::try_from(&flat)?)
}

/// The elements of an `i64` tensor in row-major order.
pub fn tensor_to_i64(t: &Tensor) -> Result<Vec<i64>> {
    require_kind(t, Kind::Int64)?;
    let flat = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?;
    Ok(Vec::<i64>::try_from(&flat)?)
}

/// The bytes of a tensor in row-major order, little-endian (as safetensors stores them).
pub fn tensor_to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let dtype = DType::of(t)?;
    let flat = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
    let size = flat.size();
    let n = numel(&size)?;
    let mut out = vec![0u8; nbytes(&size, dtype.size_in_bytes())?];
    flat.f_copy_data_u8(&mut out, n)?;
    Ok(out)
}

/// An error unless `t` has the given kind.
pub fn require_kind(t: &Tensor, kind: Kind) -> Result<()> {
    let got = t.f_kind()?;
    if got != kind {
        return Err(Error::DType {
            expected: DType::from_kind(kind).map(|d| d.to_string()).unwrap_or_default(),
            got: DType::from_kind(got)
                .map(|d| d.to_string())
                .unwrap_or(format!("{got:?}")),
        });
    }
    Ok(())
}

/// An error unless `t`'s shape matches `expected`, where `-1` matches any size.
pub fn require_shape(t: &Tensor, expected: &[i64]) -> Result<()> {
    let got = t.size();
    let fits = got.len() == expected.len() && got.iter().zip(expected).all(|(&g, &e)| e == -1 || g == e);
    if !fits {
        return Err(Error::InvalidShape {
            shape: got,
            reason: format!("expected a shape like {expected:?} (-1 means any size)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_f32_and_keeps_the_shape() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let t = tensor_from_f32(&data, &[2, 3, 4]).unwrap();
        assert_eq!(t.size(), vec![2, 3, 4]);
        assert_eq!(tensor_to_f32(&t).unwrap(), data);
        // A transposed (non-contiguous) view comes back in its own row-major order.
        let tt = t.f_transpose(0, 2).unwrap();
        let back = tensor_to_f32(&tt).unwrap();
        assert_eq!(back[1], data[12]);
    }

    #[test]
    fn wrong_counts_and_negative_dims_are_errors() {
        let err = tensor_from_f32(&[1.0; 5], &[2, 3]).unwrap_err().to_string();
        assert_eq!(err, "shape [2, 3] needs 6 elements, got 5");
        let err = tensor_from_i64(&[1; 6], &[-2, -3]).unwrap_err().to_string();
        assert!(err.contains("negative"), "{err}");
        let err = tensor_from_bytes(&[0; 7], &[2], DType::Fp32).unwrap_err().to_string();
        assert!(err.contains("takes 8 bytes, got 7"), "{err}");
    }

    #[test]
    fn dtype_mismatch_is_reported_by_name() {
        let t = tensor_from_i64(&[1, 2], &[2]).unwrap();
        let err = tensor_to_f32(&t).unwrap_err().to_string();
        assert_eq!(err, "expected a tensor of dtype FP32, got INT64");
    }

    #[test]
    fn bytes_round_trip_is_little_endian() {
        let t = tensor_from_f32(&[1.0, -2.5], &[2]).unwrap();
        let bytes = tensor_to_bytes(&t).unwrap();
        assert_eq!(&bytes[..4], &1.0f32.to_le_bytes());
        let back = tensor_from_bytes(&bytes, &[2], DType::Fp32).unwrap();
        assert_eq!(tensor_to_f32(&back).unwrap(), vec![1.0, -2.5]);
    }

    #[test]
    fn shape_check_treats_minus_one_as_any() {
        let t = Tensor::f_zeros([5, 1, 28, 28], (Kind::Float, tch::Device::Cpu)).unwrap();
        require_shape(&t, &[-1, 1, 28, 28]).unwrap();
        let err = require_shape(&t, &[-1, 3, 28, 28]).unwrap_err().to_string();
        assert!(
            err.contains("[5, 1, 28, 28]") && err.contains("[-1, 3, 28, 28]"),
            "{err}"
        );
    }
}
