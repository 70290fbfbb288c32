//! An independent KServe v2 client, Triton's `tritonclient` from PyPI (installed into
//! `.venv` by scripts/setup.sh), accepts the server's answers.

use crate::util::{floats, test_images, trained_package, Server};
use kiln_package::Package;
use kiln_tensor::Device;
use serde_json::Value;

#[test]
fn tritonclient_accepts_the_v2_answers() {
    let s = Server::start(&["--version-policy", "all", "--admin-token", "t0k"]);
    let images: Vec<Vec<f32>> = test_images(5).into_iter().map(|(v, _)| v).collect();
    let out = crate::python::run(
        "tests/server/tritonclient_check.py",
        &[s.url.trim_start_matches("http://"), "fashion", "t0k"],
        &serde_json::to_vec(&images).unwrap(),
    )
    .unwrap_or_else(|e| panic!("tritonclient: {e}"));
    let r: Value = serde_json::from_slice(&out).unwrap();

    assert_eq!(r["live"], true);
    assert_eq!(r["ready"], true);
    assert_eq!(r["model_ready"], true);
    assert_eq!(r["server"]["name"], "kiln");
    assert_eq!(r["model"]["versions"], serde_json::json!(["1", "2"]));
    assert_eq!(r["model"]["inputs"][0]["shape"], serde_json::json!([-1, 1, 28, 28]));

    // The answers equal the package's own, run in this process.
    let package = Package::load(trained_package(), Device::Cpu).unwrap();
    let ready: Vec<Vec<f32>> = images
        .iter()
        .map(|i| package.manifest.prepare_values(i.clone()).unwrap())
        .collect();
    let want_probs = package.probabilities(&ready).unwrap();
    let want_logits = package.logits(&ready).unwrap();
    let want_class: Vec<f64> = want_probs
        .iter()
        .map(|p| p.iter().enumerate().fold(0, |b, (i, v)| if *v > p[b] { i } else { b }) as f64)
        .collect();
    assert_eq!(r["fp32"]["id"], "tc-1");
    assert_eq!(r["fp32"]["model_version"], "2");
    // Lengths first: zip stops at the shorter list, so a short answer would pass unseen.
    assert_eq!(floats(&r["fp32"]["probabilities"]).len(), want_probs.concat().len());
    assert_eq!(floats(&r["fp64"]["logits"]).len(), want_logits.concat().len());
    assert_eq!(floats(&r["fp32"]["class"]).len(), images.len());
    for (got, want) in floats(&r["fp32"]["probabilities"]).iter().zip(want_probs.concat()) {
        assert!((got - want as f64).abs() < 1e-5, "{got} vs {want}");
    }
    assert_eq!(floats(&r["fp32"]["class"]), want_class);
    assert_eq!(r["fp64"]["model_version"], "1");
    for (got, want) in floats(&r["fp64"]["logits"]).iter().zip(want_logits.concat()) {
        assert!((got - want as f64).abs() < 1e-4, "{got} vs {want}");
    }
    // Pixel bytes, rounded from the same images: the same classes.
    assert_eq!(floats(&r["uint8"]["class"]), want_class);
    // Binary tensor data, in, out, or both: the very numbers JSON carries.
    for key in ["binary", "binary_in"] {
        assert_eq!(r[key]["probabilities"], r["fp32"]["probabilities"], "{key}");
    }
    for key in ["binary", "binary_out", "binary_uint8"] {
        assert_eq!(floats(&r[key]["class"]), want_class, "{key}");
    }
    assert_eq!(floats(&r["binary"]["logits"]).len(), want_logits.concat().len());
    for (got, want) in floats(&r["binary"]["logits"]).iter().zip(want_logits.concat()) {
        assert!((got - want as f64).abs() < 1e-5, "{got} vs {want}");
    }

    assert_eq!(r["unknown_model"]["status"], "404");
    assert!(
        r["unknown_model"]["message"]
            .as_str()
            .unwrap()
            .contains("no model named"),
        "{r}"
    );
    assert_eq!(r["bad_shape"]["status"], "400");
    assert!(
        r["bad_shape"]["message"].as_str().unwrap().contains("does not match"),
        "{r}"
    );

    let index = r["index"].as_array().unwrap();
    assert_eq!(index.len(), 2, "{r}");
    assert!(index.iter().all(|v| v["state"] == "READY"), "{r}");
    assert_eq!(r["ready_after_unload"], false);
    assert_eq!(r["ready_after_load"], true);
}
