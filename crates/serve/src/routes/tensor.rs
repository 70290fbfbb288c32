//! Turning the JSON tensors of a request into the elements of their declared datatype
//! (raw little-endian bytes, or `f32` for a classifier), checked against it.

use crate::{Error, Result};
use serde_json::Value;

/// Deepest nesting accepted in `data`.
const MAX_DEPTH: usize = 32;

/// One element of a JSON tensor, as it was written.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// Anything else (a string, null, an object), kept to be named in the error.
    Other(String),
}

/// A JSON tensor's elements, flat or nested arrays read straight into one list (no
/// intermediate JSON tree: this is the hot path of every request).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Data(pub Vec<Scalar>);

struct Collector<'a> {
    out: &'a mut Vec<Scalar>,
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Collector<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Collector<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers or booleans, flat or in nested arrays")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<(), E> {
        self.out.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<(), E> {
        self.out
            .push(if v >= 0 { Scalar::UInt(v as u64) } else { Scalar::Int(v) });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<(), E> {
        self.out.push(Scalar::UInt(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<(), E> {
        self.out.push(Scalar::Float(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<(), E> {
        self.out.push(Scalar::Other(format!("{v:?}")));
        Ok(())
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        self.out.push(Scalar::Other("null".into()));
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        self.out.push(Scalar::Other("an object".into()));
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom(format!(
                "data is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n);
        }
        while seq
            .next_element_seed(Collector {
                out: self.out,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Data {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Data, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Collector {
            out: &mut out,
            depth: 0,
        })?;
        Ok(Data(out))
    }
}

impl Data {
    /// Reads the elements of a JSON value (for bodies parsed as a tree first).
    pub fn from_value(v: &Value) -> Result<Data> {
        serde::Deserialize::deserialize(v).map_err(|e: serde_json::Error| Error::BadRequest(e.to_string()))
    }
}

/// The elements of `data` as `f32`s, the classifier's element type, each checked
/// against `datatype` (BOOL, UINT8-64, INT8-INT64, FP32, FP64).
pub fn flatten(data: &Data, datatype: &str) -> Result<Vec<f32>> {
    let bytes = encode(data, datatype)?;
    let values = super::binary::decode_raw(&bytes, datatype, data.0.len(), "data")?;
    match values.iter().position(|v| !v.is_finite()) {
        // An FP64 value past f32's range: finite as sent, not as the model reads it.
        Some(i) => Err(Error::BadRequest(format!(
            "{} is not a finite {datatype} value for a model whose input is FP32",
            number(&data.0[i])
        ))),
        None => Ok(values),
    }
}

/// The elements of `data` as raw little-endian bytes of `datatype` (the layout of the
/// binary extension and of gRPC's raw contents), each checked against it: integers
/// exactly in range, floats finite, booleans as `true` or `false`.
pub fn encode(data: &Data, datatype: &str) -> Result<Vec<u8>> {
    let kind = match datatype {
        "BOOL" => Kind::Bool,
        "UINT8" => Kind::Int(0, u8::MAX as i128, 1),
        "UINT16" => Kind::Int(0, u16::MAX as i128, 2),
        "UINT32" => Kind::Int(0, u32::MAX as i128, 4),
        "UINT64" => Kind::Int(0, u64::MAX as i128, 8),
        "INT8" => Kind::Int(i8::MIN as i128, i8::MAX as i128, 1),
        "INT16" => Kind::Int(i16::MIN as i128, i16::MAX as i128, 2),
        "INT32" => Kind::Int(i32::MIN as i128, i32::MAX as i128, 4),
        "INT64" => Kind::Int(i64::MIN as i128, i64::MAX as i128, 8),
        "FP32" => Kind::F32,
        "FP64" => Kind::F64,
        half @ ("FP16" | "BF16") => {
            return Err(Error::BadRequest(format!(
                "datatype {half:?} is not supported in JSON data; send {half} tensors as binary data \
                 (binary_data_size) or gRPC raw_input_contents"
            )))
        }
        other => {
            return Err(Error::BadRequest(format!(
                "datatype {other:?} is not supported; expected BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, \
                 INT32, INT64, FP32 or FP64"
            )))
        }
    };
    let mut out = Vec::with_capacity(data.0.len() * kind.size());
    for v in &data.0 {
        element(v, kind, datatype, &mut out)?;
    }
    Ok(out)
}

fn number(v: &Scalar) -> String {
    match v {
        Scalar::Int(i) => i.to_string(),
        Scalar::UInt(u) => u.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Other(o) => o.clone(),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    /// Lowest, highest, bytes.
    Int(i128, i128, usize),
    F32,
    F64,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::Bool => 1,
            Kind::Int(_, _, n) => n,
            Kind::F32 => 4,
            Kind::F64 => 8,
        }
    }
}

fn element(v: &Scalar, kind: Kind, dt: &str, out: &mut Vec<u8>) -> Result<()> {
    let float = |f: f64| -> Result<f64> {
        match kind {
            Kind::F32 if (f as f32).is_finite() => Ok(f),
            Kind::F64 if f.is_finite() => Ok(f),
            _ => Err(Error::BadRequest(format!("{f} is not a finite {dt} value"))),
        }
    };
    let value = match (v, kind) {
        (Scalar::Bool(b), Kind::Bool) => {
            out.push(u8::from(*b));
            return Ok(());
        }
        (Scalar::Int(_) | Scalar::UInt(_), Kind::Int(lo, hi, size)) => {
            let i = match v {
                Scalar::Int(i) => *i as i128,
                Scalar::UInt(u) => *u as i128,
                _ => 0,
            };
            if !(lo..=hi).contains(&i) {
                return Err(Error::BadRequest(format!(
                    "{i} is not a {dt} value (an integer in [{lo}, {hi}])"
                )));
            }
            out.extend_from_slice(&i.to_le_bytes()[..size]);
            return Ok(());
        }
        (Scalar::Int(i), Kind::F32 | Kind::F64) => *i as f64,
        (Scalar::UInt(u), Kind::F32 | Kind::F64) => *u as f64,
        (Scalar::Float(f), Kind::F32 | Kind::F64) => float(*f)?,
        (Scalar::Float(f), Kind::Int(lo, hi, _)) => {
            return Err(Error::BadRequest(format!(
                "{f} is not a {dt} value (an integer in [{lo}, {hi}])"
            )))
        }
        (Scalar::Bool(b), _) => return Err(Error::BadRequest(format!("{b} is not a {dt} value"))),
        (Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_), Kind::Bool) => {
            return Err(Error::BadRequest(format!(
                "{} is not a BOOL value (true or false)",
                number(v)
            )))
        }
        (Scalar::Other(o), _) => return Err(Error::BadRequest(format!("{o} is not a {dt} value"))),
    };
    match kind {
        Kind::F32 => out.extend_from_slice(&(value as f32).to_le_bytes()),
        _ => out.extend_from_slice(&value.to_le_bytes()),
    }
    Ok(())
}

/// A host tensor's elements as a flat JSON array (row-major, as the v2 protocol's `data`
/// carries them); FP16 and BF16 as the numbers they hold.
pub fn json_elements(t: &kiln_tensor::HostTensor) -> Value {
    use kiln_tensor::DType;
    fn each<const N: usize, T: Into<Value>>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Value {
        Value::Array(
            bytes
                .chunks_exact(N)
                .map(|c| {
                    let mut b = [0u8; N];
                    b.copy_from_slice(c);
                    f(b).into()
                })
                .collect(),
        )
    }
    let d = &t.data;
    match t.dtype {
        DType::Bool => each(d, |[b]| b != 0),
        DType::Uint8 => each(d, |[b]| b),
        DType::Int8 => each(d, |[b]| b as i8),
        DType::Int16 => each(d, i16::from_le_bytes),
        DType::Int32 => each(d, i32::from_le_bytes),
        DType::Int64 => each(d, i64::from_le_bytes),
        DType::Fp16 => each(d, |b| f16_to_f32(u16::from_le_bytes(b))),
        DType::Bf16 => each(d, |b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16)),
        DType::Fp32 => each(d, f32::from_le_bytes),
        DType::Fp64 => each(d, f64::from_le_bytes),
    }
}

/// An IEEE half-precision number's value.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        0x1f if frac == 0.0 => f32::INFINITY,
        0x1f => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// The element count of `shape`, or an error for a negative or overflowing one.
pub fn numel(shape: &[i64]) -> Result<usize> {
    kiln_tensor::convert::numel(shape).map_err(|e| Error::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> std::result::Result<Data, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_encode_exactly_and_outputs_read_back_as_json() {
        let d = parse("[-9223372036854775808, 9223372036854775807, 0]").unwrap();
        let bytes = encode(&d, "INT64").unwrap();
        let t = kiln_tensor::HostTensor::new(kiln_tensor::DType::Int64, vec![3], bytes).unwrap();
        assert_eq!(json_elements(&t), serde_json::json!([i64::MIN, i64::MAX, 0]));
        assert!(encode(&parse("[9223372036854775808]").unwrap(), "INT64").is_err());
        assert_eq!(encode(&parse("[-2]").unwrap(), "INT16").unwrap(), [0xfe, 0xff]);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        let half = kiln_tensor::HostTensor::new(kiln_tensor::DType::Bf16, vec![1], vec![0x80, 0x3f]).unwrap();
        assert_eq!(json_elements(&half), serde_json::json!([1.0]));
    }

    #[test]
    fn nested_data_reads_flat_and_is_checked_per_datatype() {
        let d = parse("[[1, 2.5], [[-3]], true]").unwrap();
        assert_eq!(
            d.0,
            [Scalar::UInt(1), Scalar::Float(2.5), Scalar::Int(-3), Scalar::Bool(true)]
        );
        assert_eq!(
            flatten(&parse("[[1, 2.5], [-3]]").unwrap(), "FP32").unwrap(),
            [1.0, 2.5, -3.0]
        );
        assert_eq!(flatten(&parse("[true, false]").unwrap(), "BOOL").unwrap(), [1.0, 0.0]);
        assert_eq!(flatten(&parse("[0, 255]").unwrap(), "UINT8").unwrap(), [0.0, 255.0]);
        for (json, dt, needle) in [
            ("[256]", "UINT8", "not a UINT8 value"),
            ("[-1]", "UINT8", "not a UINT8 value"),
            ("[1.5]", "INT32", "not a INT32 value"),
            ("[1]", "BOOL", "not a BOOL value"),
            ("[true]", "FP32", "true is not a FP32 value"),
            ("[\"zero\"]", "FP32", "\"zero\" is not a FP32 value"),
            ("[null]", "FP32", "null is not a FP32 value"),
            ("[{\"a\": 1}]", "FP32", "an object is not a FP32 value"),
            ("[1e300]", "FP32", "not a finite FP32 value"),
            ("[1]", "FP16", "not supported"),
        ] {
            let e = flatten(&parse(json).unwrap(), dt).unwrap_err().to_string();
            assert!(e.contains(needle), "{json} as {dt}: {e}");
        }
        let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
        assert!(parse(&deep).unwrap_err().contains("nested deeper than 32"));
        let ok = format!("{}1{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(parse(&ok).unwrap().0, [Scalar::UInt(1)]);
        assert_eq!(Data::from_value(&serde_json::json!([[1, 2]])).unwrap().0.len(), 2);
    }
}

/// Numbers, flat or in nested arrays, parsed straight into the model's element type (the
/// `/predict` body's pixels): no intermediate list of JSON scalars. Anything but a finite
/// number is refused, naming the element.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Floats(pub Vec<f32>);

struct FloatCollector<'a> {
    out: &'a mut Vec<f32>,
    depth: usize,
    /// Inside an array whose first element was a number: the rest are numbers too, read
    /// as numbers (serde_json's typed path: about a fifth faster per pixel than reading
    /// any JSON value and then finding a number).
    numbers: bool,
}

impl FloatCollector<'_> {
    /// Its element is a number (true) or an array of them (false).
    fn push<E: serde::de::Error>(&mut self, v: f64, shown: &dyn std::fmt::Display) -> std::result::Result<bool, E> {
        let f = v as f32;
        if !f.is_finite() {
            return Err(E::custom(format!(
                "element {} is {shown}, which is not a finite 32-bit float",
                self.out.len()
            )));
        }
        self.out.push(f);
        Ok(true)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FloatCollector<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        if self.numbers {
            d.deserialize_f64(self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> serde::de::Visitor<'de> for FloatCollector<'_> {
    type Value = bool;

    // Anything else (a string, a boolean, null, an object) is refused by serde as "invalid
    // type: ..., expected " this.
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "element {} to be a number (numbers, flat or in nested arrays)",
            self.out.len()
        )
    }
    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> std::result::Result<bool, E> {
        self.push(v as f64, &v)
    }
    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> std::result::Result<bool, E> {
        self.push(v as f64, &v)
    }
    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> std::result::Result<bool, E> {
        self.push(v, &v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<bool, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom(format!(
                "data is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        // The first element says whether this array holds numbers or arrays.
        let mut numbers = None;
        while let Some(number) = seq.next_element_seed(FloatCollector {
            out: self.out,
            depth: self.depth + 1,
            numbers: numbers == Some(true),
        })? {
            numbers.get_or_insert(number);
        }
        Ok(false)
    }
}

impl<'de> serde::Deserialize<'de> for Floats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Floats, D::Error> {
        // A 28x28 image is the common case: room for it without regrowing.
        let mut out = Vec::with_capacity(1024);
        d.deserialize_any(FloatCollector {
            out: &mut out,
            depth: 0,
            numbers: false,
        })?;
        Ok(Floats(out))
    }
}

#[cfg(test)]
mod floats_tests {
    use super::Floats;

    #[test]
    fn numbers_nested_or_flat_become_f32_and_anything_else_is_named() {
        let f: Floats = serde_json::from_str("[[0, 0.5], [1, 2e-3]]").unwrap();
        assert_eq!(f.0, [0.0, 0.5, 1.0, 0.002]);
        for (bad, needle) in [
            ("[1, true]", "boolean `true`, expected element 1 to be a number"),
            ("[1, \"x\"]", "string \"x\", expected element 1 to be a number"),
            ("[null]", "null, expected element 0 to be a number"),
            ("[[1], null]", "null, expected element 1 to be a number"),
            ("[1, {}]", "map, expected element 1"),
            ("[1, [2]]", "sequence, expected element 1"),
            ("[1e39]", "not a finite 32-bit float"),
            ("[0, 1e39]", "element 1 is "),
        ] {
            let e = serde_json::from_str::<Floats>(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(serde_json::from_str::<Floats>(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested deeper"));
    }
}
