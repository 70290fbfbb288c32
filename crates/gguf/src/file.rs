//! The file: header, metadata, tensor table and the tensor data.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dequant::{dequantize, GgmlType};
use crate::error::{format, Error, Result};
use crate::value::Value;

const MAGIC: &[u8; 4] = b"GGUF";
/// GGML tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused (real files nest at most once).
const MAX_NESTING: usize = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (llama.cpp's names, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF stores them: the contiguous one first.
    pub dims: Vec<u64>,
    /// The GGML type id of its storage.
    pub kind: u32,
    /// Where its data starts, from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in PyTorch's order (GGUF's dimensions reversed: the contiguous one last).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// The number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A GGUF file read into memory.
#[derive(Debug)]
pub struct GgufFile {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = self.bytes.len() - self.pos;
        if n > left as u64 {
            return Err(format(format!(
                "{what} at byte {} needs {n} bytes, the file has {left} left",
                self.pos
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let at = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| format(format!("{what} at byte {at} is not UTF-8")))
    }
    fn value(&mut self, kind: u32, depth: usize, key: &str) -> Result<Value> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format(format!("metadata {key:?}: boolean byte {b}, expected 0 or 1"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(format(format!(
                        "metadata {key:?}: arrays nested deeper than {MAX_NESTING}"
                    )));
                }
                let elem = self.u32(key)?;
                let count = self.u64(key)?;
                // Every element takes at least one byte: a count past what is left is a
                // damaged file, refused before anything is allocated for it.
                if count > self.left() {
                    return Err(format(format!(
                        "metadata {key:?}: an array of {count} elements, but only {} bytes are left",
                        self.left()
                    )));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1, key)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            k => return Err(format(format!("metadata {key:?}: value type {k}, expected 0 to 12"))),
        })
    }
}

impl GgufFile {
    /// Reads and checks a GGUF file.
    pub fn open(path: &Path) -> Result<GgufFile> {
        GgufFile::from_bytes(std::fs::read(path)?)
    }

    /// Reads and checks a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let mut c = Cursor { bytes: &bytes, pos: 0 };
        if c.take(4, "the magic number")? != MAGIC {
            return Err(format("the file does not start with \"GGUF\""));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(format(format!("version {version}; kiln reads versions 2 and 3")));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        // Each entry takes more than 8 bytes: counts past what is left are refused here.
        if n_tensors > c.left() / 8 || n_kv > c.left() / 8 {
            return Err(format(format!(
                "{n_tensors} tensors and {n_kv} metadata entries cannot fit in the {} bytes left",
                c.left()
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            let kind = c.u32(&key)?;
            let value = c.value(kind, 0, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(format(format!("metadata key {key:?} appears twice")));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("a tensor name")?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format(format!(
                    "tensor {name:?}: {n_dims} dimensions, expected 1 to {MAX_DIMS}"
                )));
            }
            let dims = (0..n_dims).map(|_| c.u64(&name)).collect::<Result<Vec<_>>>()?;
            dims.iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| format(format!("tensor {name:?}: dimensions {dims:?} overflow")))?;
            let kind = c.u32(&name)?;
            let offset = c.u64(&name)?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a % 8 == 0 && a <= 1 << 20 => a,
                _ => return Err(format(format!("general.alignment is {v:?}, expected a multiple of 8"))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        if !tensors.is_empty() && data_start > bytes.len() as u64 {
            return Err(format(format!(
                "the tensor data would start at byte {data_start} (the header padded to the alignment {alignment}), past the end of the file ({} bytes)",
                bytes.len()
            )));
        }
        let data_len = (bytes.len() as u64).saturating_sub(data_start);
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(format(format!("tensor {:?} appears twice", t.name)));
            }
            if t.offset % alignment != 0 {
                return Err(format(format!(
                    "tensor {:?}: offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                )));
            }
            if let Some(kind) = GgmlType::from_id(t.kind) {
                let size = kind.bytes_for(t.elements())?;
                if t.offset.checked_add(size).is_none_or(|end| end > data_len) {
                    return Err(format(format!(
                        "tensor {:?}: {size} bytes at offset {} run past the data section ({data_len} bytes)",
                        t.name, t.offset
                    )));
                }
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_start: data_start as usize,
            bytes,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata entry, by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// One metadata entry.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor table's entry for `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor `name` dequantised to `f32`, with its shape in PyTorch's order.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<u64>, Vec<f32>)> {
        let t = self
            .tensor(name)
            .ok_or_else(|| Error::Missing(format!("the GGUF file has no tensor {name:?}")))?;
        let kind = GgmlType::from_id(t.kind).ok_or_else(|| Error::Unsupported {
            name: name.to_string(),
            kind: t.kind,
        })?;
        // Sizes and offsets were checked against the file when it was read; the slice is
        // still taken with `get`, so that a gap in those checks is an error, not a panic.
        let size = kind.bytes_for(t.elements())?;
        let bytes = usize::try_from(t.offset)
            .ok()
            .and_then(|o| self.data_start.checked_add(o))
            .and_then(|start| Some(start..start.checked_add(usize::try_from(size).ok()?)?))
            .and_then(|range| self.bytes.get(range))
            .ok_or_else(|| format(format!("tensor {name:?} lies outside the file")))?;
        Ok((t.shape(), dequantize(kind, bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// The fixed start of a GGUF v3 file: magic, version and the two counts.
    fn header(tensors: u64, metadata: u64) -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(tensors.to_le_bytes());
        f.extend(metadata.to_le_bytes());
        f
    }

    /// A small GGUF v3 file: three metadata entries, an F32 tensor of GGUF dims [3, 2]
    /// and a Q4_1 tensor of dims [32, 2].
    fn sample() -> Vec<u8> {
        let mut f = header(2, 3);
        string(&mut f, "general.architecture");
        f.extend(8u32.to_le_bytes());
        string(&mut f, "llama");
        string(&mut f, "llama.rope.freq_base");
        f.extend(6u32.to_le_bytes());
        f.extend(100000f32.to_le_bytes());
        string(&mut f, "tokenizer.ggml.tokens");
        f.extend(9u32.to_le_bytes());
        f.extend(8u32.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        string(&mut f, "<s>");
        string(&mut f, "é");
        for (name, dims, kind, offset) in [("a", [3u64, 2], 0u32, 0u64), ("b", [32, 2], 3, 32)] {
            string(&mut f, name);
            f.extend(2u32.to_le_bytes());
            for d in dims {
                f.extend(d.to_le_bytes());
            }
            f.extend(kind.to_le_bytes());
            f.extend(offset.to_le_bytes());
        }
        while !f.len().is_multiple_of(32) {
            f.push(0);
        }
        for i in 0..6 {
            f.extend((i as f32).to_le_bytes());
        }
        f.extend([0u8; 8]); // pad tensor a (24 bytes) to the next 32
        for block in 0..2u8 {
            f.extend(half::f16::from_f32(1.0).to_le_bytes());
            f.extend(half::f16::from_f32(f32::from(block) * 100.0).to_le_bytes());
            f.extend((0..16u8).map(|j| j | (j << 4)));
        }
        f
    }

    #[test]
    fn reads_metadata_tensor_table_and_tensors() {
        let g = GgufFile::from_bytes(sample()).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("llama"));
        assert_eq!(g.get("llama.rope.freq_base").and_then(Value::as_f64), Some(100000.0));
        let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap();
        assert_eq!(tokens, &[Value::String("<s>".into()), Value::String("é".into())]);
        let (shape, a) = g.tensor_f32("a").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(a, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (shape, b) = g.tensor_f32("b").unwrap();
        assert_eq!(shape, vec![2, 32]);
        assert_eq!(b[..16], (0..16).map(|j| j as f32).collect::<Vec<_>>()[..]);
        assert_eq!(b[16..32], b[..16]);
        assert_eq!(b[32], 100.0);
        assert_eq!(b[63], 115.0);
        assert!(matches!(g.tensor_f32("c"), Err(Error::Missing(_))));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = sample();
        // Past the tensor table, a cut removes tensor data that the table points at.
        for len in 0..f.len() {
            assert!(GgufFile::from_bytes(f[..len].to_vec()).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn an_empty_tensor_past_the_end_of_the_file_is_refused() {
        // Found by the gguf fuzz target: a tensor with a zero dimension passed the size
        // check while the data section started past the end of the file, and reading it
        // sliced out of range.
        let mut f = header(1, 0);
        string(&mut f, "t");
        f.extend(1u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        assert!(
            !f.len().is_multiple_of(32),
            "the header must end unaligned for this test"
        );
        let err = GgufFile::from_bytes(f).unwrap_err().to_string();
        assert!(err.contains("past the end of the file"), "{err}");
    }

    #[test]
    fn counts_and_lengths_past_the_file_are_refused_before_allocating() {
        let mut f = sample();
        // The first key's length (bytes 24..32) claims 2^62 bytes.
        f[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let err = GgufFile::from_bytes(f).unwrap_err().to_string();
        assert!(err.contains("needs 4611686018427387904 bytes"), "{err}");
        let mut f = sample();
        f[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = GgufFile::from_bytes(f).unwrap_err().to_string();
        assert!(err.contains("cannot fit"), "{err}");
        let mut f = sample();
        f[0] = b'X';
        assert!(GgufFile::from_bytes(f).unwrap_err().to_string().contains("\"GGUF\""));
    }
}
