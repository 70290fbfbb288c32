//! Parity with PyTorch, computed independently of kiln's code (tests/parity/torch_parity.py
//! reads the weights with the `safetensors` library and rebuilds the model in PyTorch):
//! - a kiln package (the MLP, and a CNN with batch norm in eval mode) gives in PyTorch the
//!   logits kiln-serve answers, within 1e-5;
//! - the classic recipe trained in PyTorch, saved as safetensors and imported as a kiln
//!   package, is answered by kiln-serve as PyTorch answers it, within 1e-5.

use crate::util::{copy_dir, floats, test_images, train_package, trained_package, v2_request, Server};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Runs tests/parity/torch_parity.py with the project's Python (.venv).
fn python(args: &[&str]) {
    crate::python::run("tests/parity/torch_parity.py", args, b"").unwrap_or_else(|e| panic!("{e}"));
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "different lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// A CNN with batch norm (running statistics from real training), trained once.
fn trained_cnn() -> PathBuf {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        train_package(&[
            "model={arch=\"cnn\", channels=[8, 16], hidden=32, batch_norm=true}",
            "data.limit_train=2000",
            "data.limit_test=100",
            "epochs=1",
            "threads=1",
            "name=\"fashion-cnn\"",
        ])
    })
    .1
    .clone()
}

#[test]
fn pytorch_gives_the_logits_kiln_serve_answers_for_the_mlp_and_the_batch_norm_cnn() {
    let images: Vec<Vec<f32>> = test_images(16).into_iter().map(|(v, _)| v).collect();
    let work = tempfile::tempdir().unwrap();
    let inputs = work.path().join("inputs.json");
    std::fs::write(&inputs, serde_json::to_vec(&images).unwrap()).unwrap();
    for (name, package) in [("fashion", trained_package().to_path_buf()), ("cnn", trained_cnn())] {
        let manifest: Value = serde_json::from_slice(&std::fs::read(package.join("manifest.json")).unwrap()).unwrap();
        if name == "cnn" {
            assert_eq!(manifest["model"]["batch_norm"], true);
        }
        let out = work.path().join(format!("{name}.json"));
        python(&[
            "forward",
            package.to_str().unwrap(),
            inputs.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        let torch: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let want: Vec<f64> = torch["logits"].as_array().unwrap().iter().flat_map(floats).collect();

        let repo = tempfile::tempdir().unwrap();
        copy_dir(&package, &repo.path().join(name).join("1"));
        let s = Server::start_on(repo, &[]);
        let mut req = v2_request(&images);
        req["outputs"] = json!([{"name": "logits"}]);
        let (status, body) = s.post(&format!("/v2/models/{name}/infer"), &req);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["shape"], json!([16, 10]));
        let got = floats(&body["outputs"][0]["data"]);
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "{name}: kiln-serve and PyTorch differ by {diff}");
        // The logits are not all alike (a model that answers a constant would match anything).
        assert!(want.iter().any(|&v| (v - want[0]).abs() > 0.1), "{name}: {want:?}");
    }
}

#[test]
fn a_model_trained_in_pytorch_is_imported_and_served_as_pytorch_answers_it() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = kiln_data::KnownDataset::FashionMnist.default_dir();
    python(&["classic", data_dir.to_str().unwrap(), work.path().to_str().unwrap()]);
    let expected: Value = serde_json::from_slice(&std::fs::read(work.path().join("expected.json")).unwrap()).unwrap();
    let inputs: Vec<Vec<f32>> = expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| floats(r).into_iter().map(|v| v as f32).collect())
        .collect();
    let want: Vec<f64> = expected["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();

    // The classic recipe's model and data, with inputs in 0..1 (ToTensor, no normalisation).
    let sets: Vec<String> = [
        "model={arch=\"mlp\", hidden=[128]}",
        "data.normalize=false",
        "name=\"classic\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = kiln_train::TrainConfig::load(None, &sets).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let manifest = kiln_train::import_weights(
        &config,
        &work.path().join("weights.safetensors"),
        &repo.path().join("classic/1"),
    )
    .unwrap();
    assert_eq!(manifest.output.labels.len(), 10);
    assert!(manifest.input.normalize.is_none());

    let s = Server::start_on(repo, &[]);
    let (status, body) = s.post("/v2/models/classic/infer", &v2_request(&inputs));
    assert_eq!(status, 200, "{body}");
    let got = floats(&body["outputs"][0]["data"]);
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-5, "kiln-serve and PyTorch differ by {diff}");
    // PyTorch's classes for the first test images are kiln's classes too, through /predict.
    let (status, one) = s.post("/predict", &json!({ "image": inputs[0] }));
    assert_eq!(status, 200, "{one}");
    let first = &want[..10];
    let torch_class = (0..10).fold(0, |b, i| if first[i] > first[b] { i } else { b });
    assert_eq!(one["class"], torch_class);

    // Weights of another architecture are refused, every mismatch named.
    let mut wrong = config.clone();
    wrong.model = serde_json::from_value(json!({"arch": "mlp", "hidden": [64]})).unwrap();
    let err = kiln_train::import_weights(&wrong, &work.path().join("weights.safetensors"), &work.path().join("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc0.weight") && err.contains("[64, 784]"), "{err}");
}
