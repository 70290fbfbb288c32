//! The endpoints, answered as the protocols say, with the model's real predictions.

use crate::util::{metric, test_images, trained_package, v2_request, Server};
use serde_json::json;

#[test]
fn health_and_metadata() {
    let s = Server::start(&["--version-policy", "all"]);
    assert_eq!(s.get("/v2").1["name"], "kiln");
    assert_eq!(s.get("/v2/health/live"), (200, json!({"live": true})));
    assert_eq!(s.get("/v2/health/ready"), (200, json!({"ready": true})));
    let (status, meta) = s.get("/v2/models/fashion");
    assert_eq!(status, 200);
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]})
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(meta["parameters"]["labels"][9], "Ankle boot");
    assert_eq!(s.get("/v2/models/fashion/versions/1").0, 200);
    assert_eq!(s.get("/v2/models/fashion/versions/2/ready").1["ready"], true);
}

#[test]
fn v2_infer_and_predict_give_the_package_answers() {
    let s = Server::start(&["--version-policy", "all"]);
    let images = test_images(8);
    let pixels: Vec<Vec<f32>> = images.iter().map(|(v, _)| v.clone()).collect();
    // The reference: the same package run in this process.
    let pkg = kiln_package::Package::load(trained_package(), kiln_tensor::Device::Cpu).unwrap();
    let prepared: Vec<Vec<f32>> = pixels
        .iter()
        .map(|p| pkg.manifest.prepare_values(p.clone()).unwrap())
        .collect();
    let want = pkg.probabilities(&prepared).unwrap();

    let (status, r) = s.post("/v2/models/fashion/infer", &v2_request(&pixels));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["id"], "req-1");
    assert_eq!(r["model_name"], "fashion");
    assert_eq!(r["model_version"], "2", "the latest version by default");
    let probs = &r["outputs"][0];
    assert_eq!(probs["name"], "probabilities");
    assert_eq!(probs["shape"], json!([8, 10]));
    let got: Vec<f64> = probs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (g, w) in got.iter().zip(want.iter().flatten()) {
        assert!((g - *w as f64).abs() < 1e-5, "{g} vs {w}");
    }
    let classes = r["outputs"][1]["data"].as_array().unwrap().clone();
    let correct = classes
        .iter()
        .zip(&images)
        .filter(|(c, (_, l))| c.as_i64() == Some(*l))
        .count();
    assert!(correct >= 5, "only {correct} of 8 right");

    // Only the requested output, nested data, an explicit version.
    let nested: Vec<Vec<f32>> = pixels[0].chunks(28).map(<[f32]>::to_vec).collect();
    let req = json!({
        "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [[nested]]}],
        "outputs": [{"name": "class"}, {"name": "logits"}]
    });
    let (status, r) = s.post("/v2/models/fashion/versions/1/infer", &req);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["outputs"].as_array().unwrap().len(), 2);
    assert_eq!(r["outputs"][0]["data"][0], classes[0]);
    let logits: Vec<f32> = r["outputs"][1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(r["outputs"][1]["shape"], json!([1, 10]));
    let from_logits = kiln_package::softmax(&logits);
    assert!(
        from_logits.iter().zip(&want[0]).all(|(a, b)| (a - b).abs() < 1e-5),
        "logits are the softmax's input"
    );
    assert_eq!(r["model_version"], "1");
    assert!(r.get("id").is_none());

    // The classic recipe's endpoint, flat and 28x28.
    let (status, r) = s.post("/predict", &json!({"image": pixels[0]}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["class"], classes[0]);
    assert!(r["label"].is_string());
    assert_eq!(r["probabilities"].as_array().unwrap().len(), 10);
    let (status, r2) = s.post("/predict?model=fashion", &json!({"image": nested}));
    assert_eq!(status, 200, "{r2}");
    assert_eq!(r2["class"], r["class"]);
}

/// Sum of a metric's samples whose labels contain `filter`.
#[test]
fn concurrent_clients_each_get_their_own_answer_and_are_batched() {
    let s = Server::start(&["--version-policy", "all", "--max-delay-ms", "20"]);
    let images = test_images(32);
    let single: Vec<serde_json::Value> = images
        .iter()
        .map(|(v, _)| {
            s.post("/v2/models/fashion/infer", &v2_request(std::slice::from_ref(v)))
                .1["outputs"][0]["data"]
                .clone()
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = images
            .iter()
            .map(|(v, _)| {
                let s = &s;
                scope.spawn(move || s.post("/v2/models/fashion/infer", &v2_request(std::slice::from_ref(v))))
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&single) {
            let (status, r) = h.join().unwrap();
            assert_eq!(status, 200, "{r}");
            let got = &r["outputs"][0]["data"];
            let diff = got
                .as_array()
                .unwrap()
                .iter()
                .zip(want.as_array().unwrap())
                .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-5, "a client got another client's answer (max diff {diff})");
        }
    });
    let (status, text) = s.get("/metrics");
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    // 32 single requests, then 32 concurrent ones: fewer batches than requests means
    // requests were run together.
    let batches = metric(&text, "kiln_batch_size_count", "model=\"fashion\",version=\"2\"");
    let samples = metric(&text, "kiln_batch_size_sum", "model=\"fashion\",version=\"2\"");
    assert_eq!(samples, 64.0, "{text}");
    assert!(
        batches < 64.0,
        "no batch held more than one request: {batches} batches for 64 requests"
    );
    let ok = metric(&text, "kiln_requests_total", "endpoint=\"infer\",status=\"200\"");
    assert_eq!(ok, 64.0, "{text}");
    assert!(metric(&text, "kiln_request_duration_seconds_count", "endpoint=\"infer\"") >= 64.0);
    assert_eq!(metric(&text, "kiln_models_loaded", ""), 2.0);
    assert!(text.contains("kiln_queue_depth{model=\"fashion\",version=\"1\"} 0"));
    assert!(metric(&text, "kiln_compute_duration_seconds_count", "version=\"2\"") >= 1.0);
}

#[test]
fn tf_serving_rest_predict_and_status() {
    let s = Server::start(&["--version-policy", "all"]);
    let images = test_images(3);
    let rows: Vec<Vec<f32>> = images.iter().map(|(v, _)| v.clone()).collect();
    let (status, v2) = s.post("/v2/models/fashion/infer", &v2_request(&rows));
    assert_eq!(status, 200);
    let want: Vec<f64> = v2["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let (status, r) = s.post("/v1/models/fashion:predict", &json!({"instances": rows}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(flat(&r["predictions"]), want);
    let (status, r) = s.post(
        "/v1/models/fashion/versions/1:predict",
        &json!({"inputs": {"input": rows}}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(flat(&r["outputs"]), want);
    let (status, r) = s.post("/v1/models/fashion:classify", &json!({"instances": rows}));
    assert_eq!(status, 404, "{r}");
    let (status, r) = s.get("/v1/models/fashion");
    assert_eq!(status, 200);
    assert_eq!(r["model_version_status"].as_array().unwrap().len(), 2);
    assert_eq!(r["model_version_status"][0]["state"], "AVAILABLE");
    assert_eq!(s.get("/v1/models/nope").0, 404);
}
