//! Saving and loading packages, and every way a damaged package must fail to load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_model::{CnnSpec, ModelSpec, Network};
use kiln_package::{sha256_hex, Manifest, Package, MANIFEST_FILE, WEIGHTS_FILE};
use kiln_tensor::{convert, tch, Device, Kind, Tensor};
use std::path::{Path, PathBuf};

fn cnn_spec() -> ModelSpec {
    ModelSpec::Cnn(CnnSpec {
        input: vec![1, 28, 28],
        channels: vec![4, 8],
        hidden: 16,
        classes: 10,
        ..Default::default()
    })
}

fn labels() -> Vec<String> {
    (0..10).map(|i| format!("class {i}")).collect()
}

fn saved(spec: ModelSpec) -> (tempfile::TempDir, PathBuf, Network) {
    tch::manual_seed(1);
    let net = Network::new(spec, Device::Cpu).unwrap();
    // One training-mode pass moves the batch-norm running statistics off their initial
    // values, so the test also proves that buffers are saved, not only parameters.
    let x = Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu));
    let _ = net.forward(&x, true).unwrap();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("model");
    let manifest = Manifest::new("fashion", 3, &net, labels(), None, None);
    Package::save(&dir, manifest, &net).unwrap();
    (d, dir, net)
}

fn load_err(dir: &Path) -> String {
    Package::load(dir, Device::Cpu).unwrap_err().to_string()
}

fn rewrite_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_saved_package_reloads_into_an_identical_model() {
    for spec in [ModelSpec::classic_mlp(), cnn_spec()] {
        let (_d, dir, net) = saved(spec);
        let loaded = Package::load(&dir, Device::Cpu).unwrap();
        let x = Tensor::randn([5, 1, 28, 28], (Kind::Float, Device::Cpu));
        let a = convert::tensor_to_f32(&net.infer(&x).unwrap()).unwrap();
        let b = convert::tensor_to_f32(&loaded.network.infer(&x).unwrap()).unwrap();
        assert_eq!(a, b, "bitwise equal outputs for {}", net.spec().arch());
        assert_eq!(loaded.manifest.name, "fashion");
        assert_eq!(loaded.manifest.version, 3);
        assert_eq!(loaded.manifest.input.shape, vec![-1, 1, 28, 28]);
        assert_eq!(loaded.manifest.output.labels, labels());
        let bytes = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        assert_eq!(loaded.manifest.weights.sha256, sha256_hex(&bytes));
        // A fresh model with other weights gives other outputs: the check above is not vacuous.
        let other = Network::new(net.spec().clone(), Device::Cpu).unwrap();
        assert_ne!(a, convert::tensor_to_f32(&other.infer(&x).unwrap()).unwrap());
    }
}

#[test]
fn one_flipped_byte_in_the_weights_fails_the_hash_check() {
    let (_d, dir, _) = saved(ModelSpec::classic_mlp());
    let path = dir.join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("weights.safetensors") && err.contains("sha256") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn missing_files_are_named() {
    let (_d, dir, _) = saved(ModelSpec::classic_mlp());
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("weights.safetensors: is missing"), "{err}");
    std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("manifest.json: is missing"), "{err}");
}

#[test]
fn a_wrong_format_version_is_refused() {
    let (_d, dir, _) = saved(ModelSpec::classic_mlp());
    rewrite_manifest(&dir, |v| v["format_version"] = 99.into());
    let err = load_err(&dir);
    assert!(
        err.contains("manifest.json") && err.contains("format version 99 is not supported"),
        "{err}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let (_d, dir, _) = saved(ModelSpec::classic_mlp());
    // Weights of a 784-64-10 MLP, correctly hashed, under a manifest that says 784-128-10.
    let small = ModelSpec::Mlp(kiln_model::MlpSpec {
        input: vec![1, 28, 28],
        hidden: vec![64],
        classes: 10,
        ..Default::default()
    });
    let net = Network::new(small, Device::Cpu).unwrap();
    let bytes = kiln_package::encode_weights(&net).unwrap();
    std::fs::write(dir.join(WEIGHTS_FILE), &bytes).unwrap();
    rewrite_manifest(&dir, |v| {
        v["weights"]["sha256"] = sha256_hex(&bytes).into();
        v["weights"]["bytes"] = bytes.len().into();
    });
    let err = load_err(&dir);
    assert!(
        err.contains("\"fc0.weight\" has shape [64, 784], the model expects [128, 784]"),
        "{err}"
    );
}

#[test]
fn manifest_inconsistencies_and_garbage_are_reported() {
    let (_d, dir, _) = saved(ModelSpec::classic_mlp());
    rewrite_manifest(&dir, |v| v["output"]["labels"] = serde_json::json!(["a", "b"]));
    assert!(load_err(&dir).contains("output.labels has 2 names for 10 classes"));
    std::fs::write(dir.join(MANIFEST_FILE), b"{not json").unwrap();
    assert!(load_err(&dir).contains("is not valid JSON"));
}

#[test]
fn saving_over_a_package_replaces_it_whole() {
    let (_d, dir, _) = saved(ModelSpec::classic_mlp());
    let net = Network::new(cnn_spec(), Device::Cpu).unwrap();
    Package::save(&dir, Manifest::new("fashion", 4, &net, labels(), None, None), &net).unwrap();
    let loaded = Package::load(&dir, Device::Cpu).unwrap();
    assert_eq!(loaded.manifest.version, 4);
    assert_eq!(loaded.manifest.model.arch(), "cnn");
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left behind: {leftovers:?}");
}
