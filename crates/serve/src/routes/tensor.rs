//! Turning the JSON tensors of a request into `f32` values, checked against their
//! declared datatype and shape.

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

/// The elements of `data` as `f32`s, each checked against `datatype` (BOOL, UINT8,
/// INT8-INT64, FP32, FP64).
pub fn flatten(data: &Data, datatype: &str) -> Result<Vec<f32>> {
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
    data.0.iter().map(|v| element(v, kind, datatype)).collect()
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
    Int(f64, f64),
    Float,
}

fn element(v: &Scalar, kind: Kind, dt: &str) -> Result<f32> {
    match (v, kind) {
        (Scalar::Bool(b), Kind::Bool) => Ok(if *b { 1.0 } else { 0.0 }),
        (Scalar::Int(_) | Scalar::UInt(_), Kind::Int(lo, hi)) => {
            let i = match v {
                Scalar::Int(i) => *i as f64,
                Scalar::UInt(u) => *u as f64,
                _ => f64::NAN,
            };
            if (lo..=hi).contains(&i) {
                Ok(i as f32)
            } else {
                Err(Error::BadRequest(format!(
                    "{i} is not a {dt} value (an integer in [{lo}, {hi}])"
                )))
            }
        }
        (Scalar::Int(i), Kind::Float) => Ok(*i as f32),
        (Scalar::UInt(u), Kind::Float) => Ok(*u as f32),
        (Scalar::Float(f), Kind::Float) if (*f as f32).is_finite() => Ok(*f as f32),
        (Scalar::Float(f), Kind::Float) => Err(Error::BadRequest(format!("{f} is not a finite {dt} value"))),
        (Scalar::Float(f), Kind::Int(lo, hi)) => Err(Error::BadRequest(format!(
            "{f} is not a {dt} value (an integer in [{lo}, {hi}])"
        ))),
        (Scalar::Bool(b), _) => Err(Error::BadRequest(format!("{b} is not a {dt} value"))),
        (Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_), Kind::Bool) => Err(Error::BadRequest(format!(
            "{} is not a BOOL value (true or false)",
            number(v)
        ))),
        (Scalar::Other(o), _) => Err(Error::BadRequest(format!("{o} is not a {dt} value"))),
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
}

impl FloatCollector<'_> {
    fn push<E: serde::de::Error>(&mut self, v: f64, shown: &dyn std::fmt::Display) -> std::result::Result<(), E> {
        let f = v as f32;
        if !f.is_finite() {
            return Err(E::custom(format!(
                "element {} is {shown}, which is not a finite 32-bit float",
                self.out.len()
            )));
        }
        self.out.push(f);
        Ok(())
    }

    fn refuse<E: serde::de::Error>(&self, what: &str) -> std::result::Result<(), E> {
        Err(E::custom(format!(
            "element {} is {what}; expected a number",
            self.out.len()
        )))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FloatCollector<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FloatCollector<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, flat or in nested arrays")
    }
    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> std::result::Result<(), E> {
        self.push(v as f64, &v)
    }
    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> std::result::Result<(), E> {
        self.push(v as f64, &v)
    }
    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> std::result::Result<(), E> {
        self.push(v, &v)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<(), E> {
        self.refuse(&v.to_string())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
        self.refuse(&format!("{v:?}"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.refuse("null")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> std::result::Result<(), A::Error> {
        self.refuse("an object")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom(format!(
                "data is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        while seq
            .next_element_seed(FloatCollector {
                out: self.out,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Floats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Floats, D::Error> {
        // A 28x28 image is the common case: room for it without regrowing.
        let mut out = Vec::with_capacity(1024);
        d.deserialize_any(FloatCollector {
            out: &mut out,
            depth: 0,
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
            ("[1, true]", "element 1 is true"),
            ("[1, \"x\"]", "element 1 is \"x\""),
            ("[null]", "element 0 is null"),
            ("[1, {}]", "an object"),
            ("[1e39]", "not a finite 32-bit float"),
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
