//! Triton's binary tensor data extension of the v2 protocol over HTTP: a body is a JSON
//! header of `Inference-Header-Content-Length` bytes followed by the tensors' raw
//! little-endian bytes, each input saying how many with its `binary_data_size` parameter;
//! outputs asked for with `binary_data` are answered the same way. The same raw layout is
//! what gRPC's `raw_input_contents` and `raw_output_contents` carry.

use crate::{Error, Result};

/// The header naming the JSON part's length in a body with binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Bytes per element of a v2 datatype kiln reads as raw bytes (BYTES is not read).
pub fn element_size(datatype: &str) -> Result<usize> {
    Ok(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        other => {
            return Err(Error::BadRequest(format!(
                "datatype {other:?} is not supported as raw bytes; expected BOOL, UINT8, INT8, INT16, UINT16, INT32, \
                 UINT32, INT64, UINT64, FP16, BF16, FP32 or FP64"
            )))
        }
    })
}

/// Checks that `bytes` are `count` raw little-endian elements of `datatype` (BOOL
/// elements 0 or 1). `what` names the tensor in errors.
pub fn check_raw(bytes: &[u8], datatype: &str, count: usize, what: &str) -> Result<()> {
    let size = element_size(datatype)?;
    let want = count.checked_mul(size);
    if want != Some(bytes.len()) {
        let total = want.map_or_else(|| "more bytes than memory holds".to_string(), |w| format!("{w} bytes"));
        return Err(Error::BadRequest(format!(
            "{what}: {} bytes of {datatype} data given; its shape needs {count} elements of {size} bytes ({total})",
            bytes.len(),
        )));
    }
    if datatype == "BOOL" {
        if let Some(i) = bytes.iter().position(|&b| b > 1) {
            return Err(Error::BadRequest(format!(
                "{what}: element {i} is byte {}; BOOL elements are 0 or 1",
                bytes[i]
            )));
        }
    }
    Ok(())
}

/// The `count` elements of `datatype` in `bytes` (raw little-endian) as f32, the
/// classifier's element type. `what` names the tensor in errors.
pub fn decode_raw(bytes: &[u8], datatype: &str, count: usize, what: &str) -> Result<Vec<f32>> {
    check_raw(bytes, datatype, count, what)?;
    let size = element_size(datatype)?;
    let chunks = bytes.chunks_exact(size);
    let values: Vec<f32> = match datatype {
        "FP32" => chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        "FP64" => chunks
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        "BOOL" | "UINT8" => bytes.iter().map(|&b| b as f32).collect(),
        "INT8" => bytes.iter().map(|&b| b as i8 as f32).collect(),
        "INT16" => chunks.map(|c| i16::from_le_bytes([c[0], c[1]]) as f32).collect(),
        "UINT16" => chunks.map(|c| u16::from_le_bytes([c[0], c[1]]) as f32).collect(),
        "INT32" => chunks
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        "UINT32" => chunks
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        "INT64" => chunks
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        "UINT64" => chunks
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(Error::BadRequest(format!(
            "{what}: datatype {other:?} is not read by a classifier, whose input is FP32; send FP32, FP64 or integers"
        )))
        }
    };
    Ok(values)
}

/// Splits a body into its JSON header and, when `header_length` (the value of
/// `Inference-Header-Content-Length`) is given, the binary part after it.
pub fn split<'a>(body: &'a [u8], header_length: Option<&str>) -> Result<(&'a [u8], Option<&'a [u8]>)> {
    let Some(h) = header_length else {
        return Ok((body, None));
    };
    let n: usize = h.trim().parse().map_err(|_| {
        Error::BadRequest(format!(
            "Inference-Header-Content-Length is {h:?}; expected the JSON header's length in bytes"
        ))
    })?;
    if n > body.len() {
        return Err(Error::BadRequest(format!(
            "Inference-Header-Content-Length is {n} but the body has {} bytes",
            body.len()
        )));
    }
    let (json, rest) = body.split_at(n);
    Ok((json, Some(rest)))
}

/// Takes the inputs' binary data from the part after the JSON header, in order.
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Reads from `binary`, the body after its JSON header.
    pub fn new(binary: &'a [u8]) -> Cursor<'a> {
        Cursor { rest: binary }
    }

    /// The next `size` bytes, for the tensor `what`.
    pub fn take(&mut self, size: usize, what: &str) -> Result<&'a [u8]> {
        if size > self.rest.len() {
            return Err(Error::BadRequest(format!(
                "{what}: binary_data_size is {size} but only {} bytes of binary data are left",
                self.rest.len()
            )));
        }
        let (mine, rest) = self.rest.split_at(size);
        self.rest = rest;
        Ok(mine)
    }

    /// Refuses bytes that no input claimed.
    pub fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "{} bytes of binary data follow the inputs' binary_data_size; the sizes must add up to the binary part",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_decode_by_datatype_and_wrong_sizes_are_named() {
        let fp32: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_raw(&fp32, "FP32", 2, "x").unwrap(), [1.5, -2.0]);
        let i64s: Vec<u8> = [-3i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_raw(&i64s, "INT64", 2, "x").unwrap(), [-3.0, 7.0]);
        assert_eq!(decode_raw(&[0, 255], "UINT8", 2, "x").unwrap(), [0.0, 255.0]);
        let e = decode_raw(&fp32, "FP32", 3, "input \"x\"").unwrap_err().to_string();
        assert!(e.contains("8 bytes") && e.contains("12 bytes"), "{e}");
        assert!(decode_raw(&[2], "BOOL", 1, "x").is_err());
        // A count whose bytes overflow is refused, not wrapped round to a size that fits.
        let e = check_raw(&[], "INT64", usize::MAX / 4 + 1, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more bytes than memory holds"), "{e}");
        assert!(decode_raw(&[0, 0], "FP16", 1, "x").is_err());
    }

    #[test]
    fn the_header_length_splits_the_body_and_sizes_must_add_up() {
        let body = b"{\"a\":1}abcdef";
        let (json, bin) = split(body, Some("7")).unwrap();
        assert_eq!(json, b"{\"a\":1}");
        let mut c = Cursor::new(bin.unwrap());
        assert_eq!(c.take(4, "x").unwrap(), b"abcd");
        assert!(c.take(3, "y").is_err());
        assert!(Cursor::new(b"ab").finish().is_err());
        assert!(split(body, Some("99")).is_err());
        assert!(split(body, Some("x")).is_err());
    }
}
