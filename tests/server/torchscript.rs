//! Bringing a model trained in PyTorch: tests/parity/torchscript_models.py trains the
//! classic recipe's MLP (its own code) and a ResNet-style model with batch norm in
//! PyTorch and saves them with `torch.jit.script` / `torch.jit.trace`; kiln packages the
//! `.pt` files and kiln-serve answers as PyTorch does, within 1e-5, over KServe v2, TF
//! Serving's v1 and `/predict`.

use crate::python::torchscript_models;
use crate::util::{floats, v2_request, Server};
use serde_json::{json, Value};

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "different lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Checks kiln-serve's answers for the expected file's inputs against PyTorch's: logits
/// over v2, probabilities over v1 and `/predict`.
fn served_as_pytorch_answers(s: &Server, model: &str, expected: &Value) {
    let inputs: Vec<Vec<f32>> = expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| floats(r).into_iter().map(|v| v as f32).collect())
        .collect();
    let logits = floats(&expected["logits"]);
    let probabilities = floats(&expected["probabilities"]);
    // The answers are not all alike (a model that answers a constant would match anything).
    assert!(
        logits.iter().any(|&v| (v - logits[0]).abs() > 0.1),
        "{model}: {logits:?}"
    );

    let mut req = v2_request(&inputs);
    req["outputs"] = json!([{"name": "logits"}]);
    let (status, body) = s.post(&format!("/v2/models/{model}/infer"), &req);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([16, 10]));
    let diff = max_abs_diff(&floats(&body["outputs"][0]["data"]), &logits);
    assert!(diff <= 1e-5, "{model} over v2: kiln-serve and PyTorch differ by {diff}");

    let instances: Vec<Value> = inputs.iter().map(|i| json!(i)).collect();
    let (status, body) = s.post(
        &format!("/v1/models/{model}:predict"),
        &json!({ "instances": instances }),
    );
    assert_eq!(status, 200, "{body}");
    let diff = max_abs_diff(&floats(&body["predictions"]), &probabilities);
    assert!(diff <= 1e-5, "{model} over v1: kiln-serve and PyTorch differ by {diff}");

    for (i, input) in inputs.iter().enumerate().take(4) {
        let (status, body) = s.post(&format!("/predict?model={model}"), &json!({ "image": input }));
        assert_eq!(status, 200, "{body}");
        let diff = max_abs_diff(&floats(&body["probabilities"]), &probabilities[i * 10..(i + 1) * 10]);
        assert!(
            diff <= 1e-5,
            "{model} over /predict, image {i}: kiln-serve and PyTorch differ by {diff}"
        );
    }
}

#[test]
fn the_classic_recipe_and_a_batch_norm_resnet_scripted_in_pytorch_are_served_as_pytorch_answers_them() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = kiln_data::KnownDataset::FashionMnist.default_dir();
    let (data, out) = (data_dir.to_str().unwrap(), work.path().to_str().unwrap());
    torchscript_models(&["classic", data, out]);
    torchscript_models(&["resnet", data, out]);
    let labels: Vec<String> = (0..10).map(|i| format!("class-{i}")).collect();
    let repo = tempfile::tempdir().unwrap();
    let classic = kiln_train::TorchScriptFacts {
        name: "classic".into(),
        version: 1,
        input: vec![1, 28, 28],
        labels: labels.clone(),
        image: true,
        // The recipe's transforms.Normalize((0.1307,), (0.3081,)), applied by kiln.
        normalize: Some(kiln_data::Normalize {
            mean: vec![0.1307],
            std: vec![0.3081],
        }),
        ..Default::default()
    };
    let m = kiln_train::import_torchscript(
        &work.path().join("classic.pt"),
        &classic,
        &repo.path().join("classic/1"),
    )
    .unwrap();
    assert_eq!(m.model.arch(), "torchscript");
    assert_eq!(m.weights.file, "model.pt");
    let resnet = kiln_train::TorchScriptFacts {
        name: "resnet".into(),
        normalize: None,
        ..classic.clone()
    };
    kiln_train::import_torchscript(&work.path().join("resnet.pt"), &resnet, &repo.path().join("resnet/1")).unwrap();

    let s = Server::start_on(repo, &["--max-delay-ms", "5"]);
    let (status, meta) = s.get("/v2/models/classic");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "pytorch_libtorch");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 28, 28]));
    for model in ["classic", "resnet"] {
        let expected: Value =
            serde_json::from_slice(&std::fs::read(work.path().join(format!("{model}.json"))).unwrap()).unwrap();
        served_as_pytorch_answers(&s, model, &expected);
    }
    // The same batching and metrics as kiln's own models.
    let metrics = s.get_text("/metrics");
    let resnet = |name: &str| crate::util::metric(&metrics, name, "model=\"resnet\"");
    assert_eq!(resnet("kiln_queue_duration_seconds_count"), 6.0, "{metrics}");
    assert_eq!(resnet("kiln_batch_size_sum"), 36.0, "{metrics}");
}

#[test]
fn a_pickled_state_dict_is_refused_with_what_to_do_instead() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = kiln_data::KnownDataset::FashionMnist.default_dir();
    torchscript_models(&["classic", data_dir.to_str().unwrap(), work.path().to_str().unwrap()]);
    let facts = kiln_train::TorchScriptFacts {
        name: "classic".into(),
        version: 1,
        input: vec![1, 28, 28],
        labels: (0..10).map(|i| i.to_string()).collect(),
        ..Default::default()
    };
    let out = work.path().join("pkg");
    let err = kiln_train::import_torchscript(&work.path().join("state_dict.pt"), &facts, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("state_dict") && err.contains("torch.jit.script"), "{err}");
    assert!(!out.exists(), "nothing is written for a refused module");
    // A module whose output does not fit the declared classes is refused by running it.
    let five = kiln_train::TorchScriptFacts {
        labels: (0..5).map(|i| i.to_string()).collect(),
        ..facts.clone()
    };
    let err = kiln_train::import_torchscript(&work.path().join("classic.pt"), &five, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 10]") && err.contains("[1, 5]"), "{err}");
    // So is one that cannot run on the declared input.
    let wrong = kiln_train::TorchScriptFacts {
        input: vec![3, 32, 32],
        ..facts
    };
    let err = kiln_train::import_torchscript(&work.path().join("classic.pt"), &wrong, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 3, 32, 32]"), "{err}");
    assert!(!out.exists());
}
