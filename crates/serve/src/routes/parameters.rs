//! The v2 protocol's `parameters` objects: a map of names to a string, a number or a
//! boolean (nothing nested, no null), checked as such wherever a request may carry one.

use crate::{Error, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// Refuses a parameter `key` that asks for a protocol extension kiln does not implement
/// (shared memory, Triton's classification), on any transport; `where_` names what
/// carried it.
pub(crate) fn refuse_extension(key: &str, where_: &str) -> Result<()> {
    if key.starts_with("shared_memory_") {
        return Err(Error::BadRequest(format!(
            "{where_}: parameter {key:?} asks for the shared-memory extension, which kiln does not support; \
             send the tensors in the request"
        )));
    }
    if key == "classification" {
        return Err(Error::BadRequest(format!(
            "{where_}: parameter \"classification\" asks for Triton's classification extension, which kiln does \
             not support; a classifier's \"probabilities\" and \"class\" outputs give the same"
        )));
    }
    Ok(())
}

/// One parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

/// A `parameters` object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters(pub BTreeMap<String, Param>);

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter value: a string, a number or a boolean")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Param, E> {
        Ok(Param::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Param, E> {
        Ok(Param::Num(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Param, E> {
        Ok(Param::Num(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Param, E> {
        Ok(Param::Num(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Param, E> {
        Ok(Param::Str(v.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Param, D::Error> {
        d.deserialize_any(ParamVisitor)
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Parameters;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameters object mapping names to strings, numbers or booleans")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Parameters, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v: Param = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format!("parameter {k:?} is given twice")));
            }
        }
        Ok(Parameters(out))
    }
}

impl<'de> serde::Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Parameters, D::Error> {
        d.deserialize_map(ParamsVisitor)
    }
}

impl Parameters {
    /// Refuses the parameters of protocol extensions kiln does not implement, which would
    /// otherwise be silently half-honoured (shared memory), and binary-data parameters of
    /// the wrong type. `where_` names the object in the message.
    pub fn refuse_unsupported(&self, where_: &str) -> Result<()> {
        for (k, v) in &self.0 {
            let wrong_type = match (k.as_str(), v) {
                ("binary_data" | "binary_data_output", Param::Bool(_)) => None,
                ("binary_data" | "binary_data_output", _) => Some("a boolean"),
                ("binary_data_size", Param::Num(n)) if *n >= 0.0 && n.fract() == 0.0 => None,
                ("binary_data_size", _) => Some("a byte count"),
                _ => None,
            };
            if let Some(want) = wrong_type {
                return Err(Error::BadRequest(format!("{where_}: parameter {k:?} must be {want}")));
            }
            refuse_extension(k, where_)?;
        }
        Ok(())
    }

    /// The boolean parameter `name`, if given.
    pub fn flag(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(Param::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// The numeric parameter `name`, if given.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.0.get(name) {
            Some(Param::Num(n)) => Some(*n),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flat_scalar_maps_are_parameters() {
        let p: Parameters = serde_json::from_str(r#"{"a": 1, "b": "x", "c": true}"#).unwrap();
        assert_eq!(p.0.len(), 3);
        for bad in [
            r#"{"a": null}"#,
            r#"{"a": [1]}"#,
            r#"{"a": {"b": 1}}"#,
            "[1]",
            "3",
            r#"{"a": 1, "a": 2}"#,
        ] {
            assert!(serde_json::from_str::<Parameters>(bad).is_err(), "{bad} was accepted");
        }
        let ok: Parameters = serde_json::from_str(r#"{"binary_data": false, "priority": 1}"#).unwrap();
        ok.refuse_unsupported("x").unwrap();
        let binary: Parameters = serde_json::from_str(r#"{"binary_data": true, "binary_data_size": 12}"#).unwrap();
        binary.refuse_unsupported("x").unwrap();
        assert_eq!(binary.flag("binary_data"), Some(true));
        assert_eq!(binary.number("binary_data_size"), Some(12.0));
        for bad in [
            r#"{"binary_data": 1}"#,
            r#"{"binary_data_size": -1}"#,
            r#"{"binary_data_size": 1.5}"#,
            r#"{"shared_memory_region": "r"}"#,
        ] {
            let p: Parameters = serde_json::from_str(bad).unwrap();
            assert!(p.refuse_unsupported("x").is_err(), "{bad}");
        }
    }
}
