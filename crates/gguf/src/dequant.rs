//! Storage types and their dequantisation to `f32`.

use crate::error::{format, Error, Result};

/// The GGML storage types kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit floats (id 0).
    F32,
    /// 16-bit floats (id 1).
    F16,
    /// Blocks of 32: an f16 scale `d`, an f16 minimum `m`, then 16 bytes whose low nibbles
    /// are elements 0-15 and high nibbles elements 16-31; `x = q * d + m` (id 3).
    Q4_1,
    /// Blocks of 32: an f16 scale `d`, then 32 signed bytes; `x = q * d` (id 8).
    Q8_0,
}

impl GgmlType {
    /// The type of a GGML type id, or `None` for the types kiln does not read.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes that `elements` values take, or an error when `elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn bytes_for(self, elements: u64) -> Result<u64> {
        let (per, bytes) = self.block();
        if !elements.is_multiple_of(per as u64) {
            return Err(format(format!(
                "{elements} elements are not whole blocks of {per} for {self:?}"
            )));
        }
        (elements / per as u64)
            .checked_mul(bytes as u64)
            .ok_or_else(|| format(format!("{elements} elements of {self:?} overflow a 64-bit size")))
    }
}

fn f16(lo: u8, hi: u8) -> f32 {
    half::f16::from_le_bytes([lo, hi]).to_f32()
}

/// Dequantises `bytes` of type `kind` to `f32`s; `bytes` must be whole blocks.
pub fn dequantize(kind: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, Error> {
    let (per, size) = kind.block();
    if !bytes.len().is_multiple_of(size) {
        return Err(format(format!(
            "{} bytes are not whole {size}-byte blocks of {kind:?}",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(bytes.len() / size * per);
    for b in bytes.chunks_exact(size) {
        match kind {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b[0], b[1])),
            GgmlType::Q8_0 => {
                let d = f16(b[0], b[1]);
                out.extend(b[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16(b[0], b[1]), f16(b[2], b[3]));
                let qs = &b[4..];
                out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
                out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_low_nibbles_are_the_first_half_of_the_block() {
        let mut block = Vec::new();
        block.extend(h(0.5));
        block.extend(h(-1.0));
        // Byte j holds element j in its low nibble and element j + 16 in its high one.
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let x = dequantize(GgmlType::Q4_1, &block).unwrap();
        assert_eq!(x.len(), 32);
        for j in 0..16 {
            assert_eq!(x[j], j as f32 * 0.5 - 1.0, "element {j}");
            assert_eq!(x[j + 16], (15 - j) as f32 * 0.5 - 1.0, "element {}", j + 16);
        }
    }

    #[test]
    fn q8_0_scales_signed_bytes() {
        let mut block = Vec::new();
        block.extend(h(0.25));
        block.extend((0..32).map(|j: i32| (j - 16) as i8 as u8));
        let x = dequantize(GgmlType::Q8_0, &block).unwrap();
        let want: Vec<f32> = (0..32).map(|j| (j - 16) as f32 * 0.25).collect();
        assert_eq!(x, want);
    }

    #[test]
    fn partial_blocks_are_refused() {
        assert!(dequantize(GgmlType::Q4_1, &[0; 19]).is_err());
        assert!(GgmlType::Q4_1.bytes_for(33).is_err());
        assert_eq!(GgmlType::Q4_1.bytes_for(64).unwrap(), 40);
        assert!(GgmlType::F32.bytes_for(u64::MAX).is_err());
    }
}
