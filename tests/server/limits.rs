//! What a hostile or careless client controls is bounded: metric labels, batch sizes,
//! image sizes, and every field of every protocol's request.

use crate::util::{test_images, v2_request, Server};
use serde_json::json;

fn error_of(body: &serde_json::Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

#[test]
fn metric_labels_come_only_from_models_and_versions_the_server_knows() {
    let s = Server::start(&[]);
    let img = test_images(1).remove(0).0;
    for i in 0..150 {
        let (st, _) = s.post(
            &format!("/v2/models/random-{i}/infer"),
            &v2_request(std::slice::from_ref(&img)),
        );
        assert_eq!(st, 404);
        let (st, _) = s.get(&format!("/v2/models/fashion/versions/{}/ready", 1000 + i));
        assert_eq!(st, 404);
    }
    // A version spelled another way is not a second series either.
    assert_eq!(s.get("/v2/models/fashion/versions/02/ready").0, 200);
    assert_eq!(
        s.post("/v2/models/fashion/versions/2/infer", &v2_request(&[img])).0,
        200
    );
    let text = s.get("/metrics").1.as_str().unwrap().to_string();
    assert!(!text.contains("random-"), "a client-chosen name became a label");
    assert!(!text.contains("version=\"10"), "a client-chosen version became a label");
    assert!(!text.contains("version=\"02\""));
    let unknown = |filter: &str| crate::util::metric(&text, "kiln_requests_total", filter);
    assert_eq!(
        unknown("model=\"_unknown\",version=\"\",endpoint=\"infer\",status=\"404\""),
        150.0
    );
    assert_eq!(
        unknown("model=\"fashion\",version=\"_unknown\",endpoint=\"model_ready\",status=\"404\""),
        150.0
    );
    assert_eq!(
        unknown("model=\"fashion\",version=\"_unknown\",endpoint=\"model_ready\",status=\"200\""),
        1.0
    );
    assert_eq!(
        unknown("model=\"fashion\",version=\"2\",endpoint=\"infer\",status=\"200\""),
        1.0
    );
    // The series stay few: one per (known label set, status), not one per request.
    let series = text.lines().filter(|l| l.starts_with("kiln_requests_total{")).count();
    assert!(series < 10, "{series} series:\n{text}");
}

#[test]
fn requests_that_name_their_model_outside_the_v2_path_are_labelled_with_it() {
    let s = Server::start(&[]);
    let img = test_images(1).remove(0).0;
    // /predict: the model in the query, in the body, or the only one served.
    assert_eq!(s.post("/predict?model=fashion", &json!({ "image": img })).0, 200);
    assert_eq!(s.post("/predict", &json!({ "image": img, "model": "fashion" })).0, 200);
    assert_eq!(s.post("/predict", &json!({ "image": img })).0, 200);
    assert_eq!(s.post("/predict?model=nope", &json!({ "image": img })).0, 404);
    assert_eq!(s.post("/predict", &json!({ "image": img, "model": "nope2" })).0, 404);
    assert_eq!(
        s.post("/v1/models/nope3:predict", &json!({ "instances": [img] })).0,
        404
    );
    // A version without a model name.
    assert_eq!(
        s.post("/v1/models//versions/77:predict", &json!({ "instances": [img] }))
            .0,
        404
    );
    // TF Serving's REST paths name the model and version before the verb.
    assert_eq!(
        s.post("/v1/models/fashion:predict", &json!({ "instances": [img] })).0,
        200
    );
    assert_eq!(
        s.post("/v1/models/fashion/versions/2:predict", &json!({ "instances": [img] }))
            .0,
        200
    );
    assert_eq!(s.get("/v1/models/fashion").0, 200);
    let text = s.get_text("/metrics");
    let count = |filter: &str| crate::util::metric(&text, "kiln_requests_total", filter);
    assert_eq!(
        count("model=\"fashion\",version=\"\",endpoint=\"predict\",status=\"200\""),
        3.0,
        "{text}"
    );
    // A name the server does not know is no series of its own, wherever it was given.
    assert_eq!(
        count("model=\"_unknown\",version=\"\",endpoint=\"predict\",status=\"404\""),
        2.0,
        "{text}"
    );
    assert_eq!(
        count("model=\"_unknown\",version=\"\",endpoint=\"tfserving_predict\",status=\"404\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("model=\"\",version=\"_unknown\",endpoint=\"tfserving_predict\",status=\"404\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("model=\"fashion\",version=\"\",endpoint=\"tfserving_predict\",status=\"200\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("model=\"fashion\",version=\"2\",endpoint=\"tfserving_predict\",status=\"200\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("model=\"fashion\",version=\"\",endpoint=\"tfserving_status\",status=\"200\""),
        1.0,
        "{text}"
    );
}

#[test]
fn requests_over_max_batch_are_refused_naming_the_limit() {
    let s = Server::start(&["--max-batch", "8"]);
    let imgs: Vec<Vec<f32>> = test_images(9).into_iter().map(|(v, _)| v).collect();
    let (st, body) = s.post("/v2/models/fashion/infer", &v2_request(&imgs));
    assert_eq!(st, 413, "{body}");
    assert!(
        error_of(&body).contains("9 samples") && error_of(&body).contains("at most 8"),
        "{body}"
    );
    let (st, body) = s.post("/v1/models/fashion:predict", &json!({ "instances": imgs }));
    assert_eq!(st, 413, "{body}");
    assert!(error_of(&body).contains("at most 8"), "{body}");
    let (st, body) = s.post("/v2/models/fashion/infer", &v2_request(&imgs[..8]));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([8, 10]));
}

/// CRC-32 (the PNG and zlib one), bit by bit: enough for one header chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// A real `w`x`h` PNG whose header is rewritten to declare `dw`x`dh`.
fn png(w: u32, h: u32, declared: Option<(u32, u32)>) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(w, h, image::Luma([128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    let mut png = out.into_inner();
    if let Some((dw, dh)) = declared {
        png[16..20].copy_from_slice(&dw.to_be_bytes());
        png[20..24].copy_from_slice(&dh.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
    }
    png
}

#[test]
fn images_declaring_too_many_pixels_are_refused_before_decoding() {
    let s = Server::start(&["--max-image-pixels", "1000"]);
    // 16,000 x 16,000 declared in a few hundred bytes: 413 from the header alone.
    let (st, _, body) = s.post_raw("/predict", "image/png", png(8, 8, Some((16_000, 16_000))));
    assert_eq!(st, 413, "{body}");
    assert!(error_of(&body).contains("16000x16000 (256000000 pixels)"), "{body}");
    assert!(error_of(&body).contains("--max-image-pixels"), "{body}");
    // A real image over the flag's limit, and one of the model's own size (always accepted).
    let (st, _, body) = s.post_raw("/predict", "image/png", png(40, 40, None));
    assert_eq!(st, 413, "{body}");
    assert!(error_of(&body).contains("40x40 (1600 pixels); at most 1000"), "{body}");
    let (st, _, body) = s.post_raw("/predict", "image/png", png(28, 28, None));
    assert_eq!(st, 200, "{body}");
    assert!(s.healthy());
}

#[test]
fn every_field_of_every_protocol_is_checked() {
    let s = Server::start(&["--admin-token", "t0k"]);
    let img = test_images(1).remove(0).0;
    let v2 = || v2_request(std::slice::from_ref(&img));
    let bad = |path: &str, body: serde_json::Value, needle: &str| {
        let (st, r) = s.post(path, &body);
        assert_eq!(st, 400, "{body} -> {r}");
        assert!(error_of(&r).contains(needle), "{needle:?} not in {r}");
    };
    let mut r = v2();
    r["inputs"][0]["shpae"] = json!([1, 784]);
    bad("/v2/models/fashion/infer", r, "unknown field `shpae`");
    let mut r = v2();
    r["inputs"][0]["parameters"] = json!({"nested": {"a": 1}});
    bad("/v2/models/fashion/infer", r, "a string, a number or a boolean");
    let mut r = v2();
    r["parameters"] = json!([1, 2]);
    bad("/v2/models/fashion/infer", r, "parameters object");
    let mut r = v2();
    r["outputs"] = json!([{"name": "class", "parameters": {"binary_data": "yes"}}]);
    bad("/v2/models/fashion/infer", r, "\"binary_data\" must be a boolean");
    let mut r = v2();
    r["inputs"][0].as_object_mut().unwrap().remove("data");
    r["inputs"][0]["parameters"] = json!({"binary_data_size": 3136});
    bad("/v2/models/fashion/infer", r, "no Inference-Header-Content-Length");
    let mut r = v2();
    r["inputs"][0]["parameters"] = json!({"shared_memory_region": "r"});
    bad("/v2/models/fashion/infer", r, "shared-memory extension");
    let mut r = v2();
    r["outputs"] = json!([{"name": "class", "extra": 1}]);
    bad("/v2/models/fashion/infer", r, "unknown field `extra`");
    let mut r = v2();
    r["outputs"] = json!([{"name": "probabilities"}, {"name": "probabilities"}]);
    bad("/v2/models/fashion/infer", r, "asked for twice");
    let mut r = v2();
    r["outputs"] = json!([{"name": "probabilities", "parameters": {"classification": 3}}]);
    bad("/v2/models/fashion/infer", r, "classification extension");
    let mut r = v2();
    r["inputs"][0]["shape"] = json!([0, 1, 28, 28]);
    r["inputs"][0]["data"] = json!([]);
    bad("/v2/models/fashion/infer", r, "0 samples");
    let mut r = v2();
    r["id"] = json!(7);
    bad("/v2/models/fashion/infer", r, "invalid type");
    // Parameters kiln does not use are accepted when well-formed (the protocol allows them).
    let mut r = v2();
    r["parameters"] = json!({"priority": 1, "tag": "x", "binary_data_output": false});
    r["outputs"] = json!([{"name": "class", "parameters": {"binary_data": false}}]);
    assert_eq!(s.post("/v2/models/fashion/infer", &r).0, 200);

    // TF Serving.
    bad(
        "/v1/models/fashion:predict",
        json!({"instances": [img.clone()], "signature_name": "other"}),
        "signature \"other\" is unknown",
    );
    bad(
        "/v1/models/fashion:predict",
        json!({"inputs": {"input": [img.clone()], "extra": [1]}}),
        "has one input",
    );
    bad(
        "/v1/models/fashion:predict",
        json!({"instances": [{"input": img.clone(), "mask": [1]}]}),
        "has one input",
    );
    let ok = json!({"instances": [{"input": img.clone()}], "signature_name": "serving_default"});
    assert_eq!(s.post("/v1/models/fashion:predict", &ok).0, 200);

    // /predict: the query string too.
    let (st, r) = s.post("/predict?topk=3", &json!({ "image": img.clone() }));
    assert_eq!(st, 400, "{r}");
    assert!(error_of(&r).contains("unknown field `topk`"), "{r}");
    let (st, r) = s.post("/predict", &json!({ "image": img.clone(), "top_k": -1 }));
    assert_eq!(st, 400, "{r}");

    // The repository extension's bodies.
    let admin = [("authorization", "Bearer t0k")];
    let (st, r, _) = s.request(
        "POST",
        "/v2/repository/models/fashion/load",
        &admin,
        Some(&json!({"parameters": {"config": "{}"}})),
    );
    assert_eq!(st, 400, "{r}");
    assert!(error_of(&r).contains("\"config\" is not supported"), "{r}");
    let (st, r, _) = s.request("POST", "/v2/repository/index", &admin, Some(&json!({"ready": "yes"})));
    assert_eq!(st, 400, "{r}");
    let (st, r, _) = s.request("POST", "/v2/repository/index", &admin, Some(&json!({"ready": true})));
    assert_eq!(st, 200, "{r}");
    assert!(r.as_array().unwrap().iter().all(|v| v["state"] == "READY"), "{r}");
    assert!(s.healthy());
}

#[test]
fn logs_are_json_lines_with_fields_and_the_access_log_can_be_turned_on() {
    let s = Server::start(&["--log-format", "json", "--access-log"]);
    assert_eq!(s.get("/v2/models/fashion").0, 200);
    assert_eq!(s.get("/v2/models/nope").0, 404);
    let log = s.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("serving fashion version 2")),
        "{log}"
    );
    let access: Vec<_> = lines.iter().filter(|l| l["target"] == "kiln_serve::access").collect();
    assert!(
        access
            .iter()
            .any(|l| l["path"] == "/v2/models/nope" && l["status"] == 404 && l["method"] == "GET"),
        "{log}"
    );
    // Without --access-log, no access lines.
    let quiet = Server::start(&[]);
    assert_eq!(quiet.get("/v2/models/fashion").0, 200);
    assert!(!quiet.log().contains("GET /v2/models/fashion"), "{}", quiet.log());
    assert!(quiet.log().contains("serving fashion version 2"), "{}", quiet.log());
}
