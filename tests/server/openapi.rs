//! The served OpenAPI document is the one in the repository, and every operation in it
//! answers as documented: the status is listed, the body fits the response schema.

use crate::util::{lm_repository, Server};
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

/// The model an operation is exercised on: the language model `tiny` for generation,
/// the classifier `fashion` for the rest.
fn model_of(path: &str) -> &'static str {
    if path.ends_with("/generate") || path.ends_with("/generate_stream") {
        "tiny"
    } else {
        "fashion"
    }
}

/// The version an operation is exercised on (`tiny` has one, `fashion` two).
fn version_of(path: &str) -> &'static str {
    if model_of(path) == "tiny" {
        "1"
    } else {
        "2"
    }
}

#[test]
fn every_documented_operation_answers_as_documented() {
    let s = Server::start_on(lm_repository(), &["--admin-token", "adm", "--inference-token", "inf"]);
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
    let mut checked = 0;
    for (method, path, op) in ops {
        let url = path
            .replace("{name}", model_of(&path))
            .replace("{version}", version_of(&path));
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
        for (code, r) in op["responses"].as_object().unwrap() {
            assert!(code.parse::<u16>().is_ok(), "{what}: response {code}");
            assert!(r["description"].is_string(), "{what} {code} has no description");
        }
        checked += 1;
    }
    assert!(checked >= 20);
}

/// A request to make and the status it must get: URL, headers, body, status.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, Option<Value>, u16);

/// The errors every operation can be made to give, each answered with a documented status
/// and a body that fits that status's documented schema.
#[test]
fn errors_are_answered_as_documented() {
    let s = Server::start_on(lm_repository(), &["--admin-token", "adm", "--inference-token", "inf"]);
    let doc: Value = serde_json::from_str(include_str!("../../crates/serve/openapi.json")).unwrap();
    let mut provoked = std::collections::BTreeMap::<u16, usize>::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let method = method.to_uppercase();
            let secured = op["security"].to_string();
            let token = if secured.contains("adminToken") {
                "Bearer adm"
            } else {
                "Bearer inf"
            };
            let auth = [("authorization", token)];
            let example = op.pointer("/requestBody/content/application~1json/example");
            let url = path
                .replace("{name}", model_of(path))
                .replace("{version}", version_of(path));
            let mut cases: Vec<Case> = Vec::new();
            if secured.contains("Token") {
                cases.push((url.clone(), vec![], example.cloned(), 401));
                cases.push((
                    url.clone(),
                    vec![("authorization", "Bearer wrong")],
                    example.cloned(),
                    403,
                ));
            }
            if path.contains("{name}") {
                let unknown = path.replace("{name}", "no-such-model").replace("{version}", "2");
                cases.push((unknown, auth.to_vec(), example.cloned(), 404));
            }
            if path.contains("{version}") && !path.starts_with("/v1/") {
                let bad = path.replace("{name}", model_of(path)).replace("{version}", "x");
                cases.push((bad, auth.to_vec(), example.cloned(), 400));
            }
            if example.is_some() && method != "GET" {
                cases.push((url.clone(), auth.to_vec(), Some(serde_json::json!({"bogus": 1})), 400));
            }
            for (url, headers, body, want) in cases {
                let what = format!("{method} {url} (expecting {want})");
                let (status, answer, _) = s.request(&method, &url, &headers, body.as_ref());
                assert_eq!(status, want, "{what}: {answer}");
                let documented = op["responses"]
                    .get(status.to_string())
                    .unwrap_or_else(|| panic!("{what}: status {status} is not documented"));
                let schema = documented
                    .pointer("/content/application~1json/schema")
                    .unwrap_or_else(|| panic!("{what}: no body schema for {status}"));
                check(&doc, schema, &answer, &what);
                // kiln's shape, or OpenAI's on its routes.
                let message = answer["error"].as_str().or(answer["error"]["message"].as_str());
                assert!(!message.unwrap_or("").is_empty(), "{what}: {answer}");
                *provoked.entry(status).or_default() += 1;
            }
        }
    }
    // Each kind was provoked on many operations.
    for code in [400, 401, 403, 404] {
        assert!(provoked.get(&code).copied().unwrap_or(0) >= 3, "{provoked:?}");
    }
}
