//! KServe v2 over gRPC, driven by independent clients: `tritonclient[grpc]` from PyPI and
//! the protocol's generated stubs it ships (installed into `.venv` by scripts/setup.sh).
//! Same models, answers, errors (as status codes), limits and metrics as HTTP.

use crate::util::{floats, test_images, trained_package, Server};
use kiln_package::Package;
use kiln_tensor::Device;
use serde_json::{json, Value};

#[test]
fn tritonclient_grpc_accepts_the_answers_and_errors_are_status_codes() {
    let grpc = format!("127.0.0.1:{}", crate::util::free_port());
    let limit = 200_000;
    let s = Server::start(&[
        "--version-policy",
        "all",
        "--admin-token",
        "t0k",
        "--grpc-bind",
        &grpc,
        "--body-limit",
        &limit.to_string(),
    ]);
    let images: Vec<Vec<f32>> = test_images(5).into_iter().map(|(v, _)| v).collect();
    let out = crate::python::run(
        "tests/server/tritonclient_grpc_check.py",
        &[grpc.as_str(), "fashion", "t0k", &limit.to_string()],
        &serde_json::to_vec(&images).unwrap(),
    )
    .unwrap_or_else(|e| panic!("tritonclient[grpc]: {e}\n{}", s.log()));
    let r: Value = serde_json::from_slice(&out).unwrap();

    assert_eq!(r["live"], true);
    assert_eq!(r["ready"], true);
    assert_eq!(r["model_ready"], true);
    assert_eq!(r["server"]["name"], "kiln");
    assert_eq!(r["model"]["versions"], json!(["1", "2"]));
    assert_eq!(r["model"]["inputs"][0]["shape"], json!(["-1", "1", "28", "28"]));
    assert_eq!(r["model"]["outputs"][0]["name"], "probabilities");

    // The answers equal the package's own, run in this process, and HTTP's.
    let package = Package::load(trained_package(), Device::Cpu).unwrap();
    let ready: Vec<Vec<f32>> = images
        .iter()
        .map(|i| package.manifest.prepare_values(i.clone()).unwrap())
        .collect();
    let want_probs: Vec<f64> = package
        .probabilities(&ready)
        .unwrap()
        .concat()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let want_logits: Vec<f64> = package
        .logits(&ready)
        .unwrap()
        .concat()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let want_class: Vec<f64> = want_probs
        .chunks(10)
        .map(|p| p.iter().enumerate().fold(0, |b, (i, v)| if *v > p[b] { i } else { b }) as f64)
        .collect();
    let close = |got: &Value, want: &[f64], tol: f64| {
        let got = floats(got);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < tol, "{g} vs {w}");
        }
    };
    assert_eq!(r["fp32"]["id"], "g-1");
    assert_eq!(r["fp32"]["model_version"], "2");
    close(&r["fp32"]["probabilities"], &want_probs, 1e-6);
    close(&r["fp32"]["logits"], &want_logits, 1e-5);
    assert_eq!(floats(&r["fp32"]["class"]), want_class);
    assert_eq!(r["fp64"]["model_version"], "1");
    assert_eq!(floats(&r["uint8"]["class"]), want_class);
    // Typed contents give exactly what raw bytes give.
    assert_eq!(r["typed"]["id"], "typed");
    assert_eq!(r["typed"]["shape"], json!([5, 10]));
    assert_eq!(
        floats(&r["typed"]["probabilities"]),
        floats(&r["fp32"]["probabilities"])
    );
    let (status, http) = s.post("/v2/models/fashion/infer", &crate::util::v2_request(&images));
    assert_eq!(status, 200);
    assert_eq!(floats(&http["outputs"][0]["data"]), floats(&r["fp32"]["probabilities"]));

    // Errors as gRPC status codes, with kiln's messages.
    assert_eq!(r["wrong_field"]["code"], "INVALID_ARGUMENT", "{r}");
    assert!(
        r["wrong_field"]["message"].as_str().unwrap().contains("fp32_contents"),
        "{r}"
    );
    for (case, needle) in [
        ("output_twice", "asked for twice"),
        ("classification", "classification extension"),
        ("no_rows", "0 samples"),
    ] {
        assert_eq!(r[case]["code"], "INVALID_ARGUMENT", "{case}: {r}");
        assert!(r[case]["message"].as_str().unwrap().contains(needle), "{case}: {r}");
    }
    assert_eq!(r["unknown_model"]["status"], "StatusCode.NOT_FOUND", "{r}");
    assert!(
        r["unknown_model"]["message"]
            .as_str()
            .unwrap()
            .contains("no model named"),
        "{r}"
    );
    assert_eq!(r["bad_shape"]["status"], "StatusCode.INVALID_ARGUMENT", "{r}");
    assert!(
        r["bad_shape"]["message"].as_str().unwrap().contains("does not match"),
        "{r}"
    );
    // A message over --body-limit: tonic's code for it, naming the limit.
    assert_eq!(r["too_large"]["status"], "StatusCode.OUT_OF_RANGE", "{r}");
    assert!(
        r["too_large"]["message"].as_str().unwrap().contains(&limit.to_string()),
        "{r}"
    );
    assert_eq!(r["index_without_token"]["status"], "StatusCode.UNAUTHENTICATED", "{r}");

    let index = r["index"]["models"].as_array().unwrap();
    assert_eq!(index.len(), 2, "{r}");
    assert!(index.iter().all(|v| v["state"] == "READY"), "{r}");
    assert_eq!(r["ready_after_unload"], false);
    assert_eq!(r["ready_after_load"], true);

    // Counted in the same metrics as HTTP.
    let metrics = s.get_text("/metrics");
    let infer = crate::util::metric(
        &metrics,
        "kiln_requests_total",
        "endpoint=\"grpc_infer\",status=\"200\"",
    );
    assert!(infer >= 4.0, "{metrics}");
    let refused = crate::util::metric(
        &metrics,
        "kiln_requests_total",
        "endpoint=\"grpc_infer\",status=\"400\"",
    );
    assert!(refused >= 2.0, "{metrics}");
}
