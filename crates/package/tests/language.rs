//! Language-model packages (format 2): round trip, the tokenizer verified by hash, the
//! two kinds of package kept apart, and format 1 packages still loading.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_model::{Decoder, DecoderSpec, ModelSpec, Network};
use kiln_package::{LanguagePackage, Manifest, Package, Task, FORMAT_VERSION, TOKENIZER_FILE};
use kiln_tensor::{tch, Device, Tensor};
use kiln_text::Tokenizer;
use std::path::Path;

const TEXT: &str = include_str!("../../../README.md");

fn saved(dir: &Path) -> (Decoder, Tokenizer) {
    let tok = Tokenizer::train([TEXT].into_iter(), 400).unwrap();
    tch::manual_seed(3);
    let model = Decoder::new(
        DecoderSpec {
            vocab: 400,
            width: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ffn_width: 64,
            context: 64,
            ..DecoderSpec::default()
        },
        Device::Cpu,
    )
    .unwrap();
    let manifest = Manifest::language_model("kjv-tiny", 1, &model, tok.special());
    LanguagePackage::save(dir, manifest, &model, &tok).unwrap();
    (model, tok)
}

#[test]
fn a_language_model_package_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pkg");
    let (model, tok) = saved(&dir);
    let loaded = LanguagePackage::load(&dir, Device::Cpu).unwrap();
    assert_eq!(loaded.manifest.format_version, FORMAT_VERSION);
    assert_eq!(loaded.manifest.task, Task::LanguageModel);
    assert_eq!(loaded.tokenizer.sha256(), tok.sha256());
    assert_eq!(loaded.manifest.tokenizer.as_ref().unwrap().sha256, tok.sha256());
    assert_eq!(loaded.tokenizer.special(), tok.special());
    let ids: Vec<i64> = tok
        .encode("The crates", true)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let x = Tensor::from_slice(&ids).view([1, -1]);
    let (a, b) = tch::no_grad(|| {
        (
            model.forward(&x, false).unwrap(),
            loaded.model.forward(&x, false).unwrap(),
        )
    });
    assert!(a.equal(&b));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["task"], "language-model");
    assert_eq!(manifest["model"]["arch"], "decoder");
    assert_eq!(manifest["input"]["dtype"], "INT64");
}

#[test]
fn a_tokenizer_whose_hash_does_not_match_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pkg");
    saved(&dir);
    // A different but valid tokenizer put in place of the packaged one.
    let other = Tokenizer::train([TEXT].into_iter(), 300).unwrap();
    std::fs::write(dir.join(TOKENIZER_FILE), other.json()).unwrap();
    let err = LanguagePackage::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("sha256 is"), "{err}");
    assert!(err.contains("corrupt or was changed"), "{err}");
    std::fs::remove_file(dir.join(TOKENIZER_FILE)).unwrap();
    let err = LanguagePackage::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("is missing; manifest.json names it as the tokenizer file"),
        "{err}"
    );
}

#[test]
fn classifier_and_language_model_loaders_refuse_each_other_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = tmp.path().join("lm");
    saved(&lm);
    let err = Package::load(&lm, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("holds a language model"), "{err}");
    let cls = tmp.path().join("cls");
    let net = Network::new(ModelSpec::classic_mlp(), Device::Cpu).unwrap();
    let labels = (0..10).map(|i| i.to_string()).collect();
    Package::save(&cls, Manifest::new("digits", 1, &net, labels, None, None), &net).unwrap();
    let err = LanguagePackage::load(&cls, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("holds a mlp classifier, not a language model"), "{err}");
    // A manifest whose task does not fit its architecture is refused.
    let path = lm.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["task"] = "classification".into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = LanguagePackage::load(&lm, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("does not fit model arch \"decoder\""), "{err}");
}

#[test]
fn format_1_packages_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v1");
    let net = Network::new(ModelSpec::classic_mlp(), Device::Cpu).unwrap();
    let labels = (0..10).map(|i| i.to_string()).collect();
    Package::save(&dir, Manifest::new("digits", 1, &net, labels, None, None), &net).unwrap();
    // Rewrite the manifest as format 1 wrote it: version 1, no task field.
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["format_version"] = 1.into();
    m.as_object_mut().unwrap().remove("task");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let loaded = Package::load(&dir, Device::Cpu).unwrap();
    assert_eq!(loaded.manifest.format_version, 1);
    assert_eq!(loaded.manifest.task, Task::Classification);
    m["format_version"] = 3.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let err = Package::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("format version 3 is not supported; this kiln reads versions [1, 2]"),
        "{err}"
    );
}
