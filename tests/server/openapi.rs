//! The served OpenAPI document is the one in the repository, and every operation in it
//! answers as documented: the status is listed, the body fits the response schema.

use crate::util::Server;
use serde_json::Value;

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(doc, doc.pointer(r.trim_start_matches('#')).unwrap()),
        None => schema,
    }
}

/// Checks `v` against the subset of JSON Schema the document uses.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let schema = resolve(doc, schema);
    let ok = match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    assert!(ok, "{at}: {v} is not of type {}", schema["type"]);
    if let Some(e) = schema["enum"].as_array() {
        assert!(e.contains(v), "{at}: {v} is not one of {e:?}");
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        assert!(v.get(r.as_str().unwrap()).is_some(), "{at}: {r} is missing from {v}");
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
        for (k, s) in props {
            if let Some(x) = obj.get(k) {
                check(doc, s, x, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"));
        }
    }
}

#[test]
fn every_documented_operation_answers_as_documented() {
    let s = Server::start(&["--admin-token", "adm", "--inference-token", "inf"]);
    let (status, served) = s.get("/openapi.json");
    assert_eq!(status, 200);
    let file: Value = serde_json::from_str(include_str!("../../crates/serve/openapi.json")).unwrap();
    assert_eq!(served, file, "the served document is the repository's");
    let doc = &file;

    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    // Unload before load, both last, so the model is served for the others.
    let rank = |p: &str| (p.ends_with("/unload") as u8) + 2 * (p.ends_with("/load") as u8);
    ops.sort_by_key(|(_, p, _)| rank(p));
    assert!(ops.len() >= 20);
    for (method, path, op) in ops {
        let url = path.replace("{name}", "fashion").replace("{version}", "2");
        let token = if op["security"].to_string().contains("adminToken") {
            "Bearer adm"
        } else {
            "Bearer inf"
        };
        let body = op.pointer("/requestBody/content/application~1json/example");
        let (status, answer, _) = s.request(&method.to_uppercase(), &url, &[("authorization", token)], body);
        let what = format!("{} {path}", method.to_uppercase());
        assert_eq!(status, 200, "{what}: {answer}");
        let response = &op["responses"]["200"];
        match response.pointer("/content/application~1json/schema") {
            Some(schema) => check(doc, schema, &answer, &what),
            None => assert!(answer.is_string(), "{what}: expected text"),
        }
        // Every documented error status has a body schema or is the standard error.
        for (code, r) in op["responses"].as_object().unwrap() {
            assert!(code.parse::<u16>().is_ok(), "{what}: response {code}");
            assert!(r["description"].is_string(), "{what} {code} has no description");
        }
    }
}
