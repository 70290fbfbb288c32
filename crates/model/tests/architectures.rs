//! Each architecture builds, runs, names its parameters stably and rejects bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_model::{CnnSpec, ModelSpec, Network, ResnetSpec};
use kiln_tensor::{Device, Kind, Tensor};

fn specs() -> Vec<ModelSpec> {
    vec![
        ModelSpec::classic_mlp(),
        ModelSpec::Cnn(CnnSpec {
            input: vec![1, 28, 28],
            classes: 10,
            ..Default::default()
        }),
        ModelSpec::Resnet(ResnetSpec {
            input: vec![3, 16, 16],
            classes: 5,
            width: 8,
            blocks: vec![1, 1],
        }),
    ]
}

#[test]
fn every_architecture_gives_logits_of_the_right_shape() {
    for spec in specs() {
        let net = Network::new(spec.clone(), Device::Cpu).unwrap();
        let mut shape = vec![3];
        shape.extend_from_slice(spec.input());
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        assert_eq!(
            net.forward(&x, true).unwrap().size(),
            vec![3, spec.classes()],
            "{}",
            spec.arch()
        );
        assert_eq!(net.infer(&x).unwrap().size(), vec![3, spec.classes()]);
    }
}

#[test]
fn the_same_spec_builds_the_same_parameter_names_and_shapes() {
    for spec in specs() {
        let a = Network::new(spec.clone(), Device::Cpu)
            .unwrap()
            .parameter_shapes()
            .unwrap();
        let b = Network::new(spec.clone(), Device::Cpu)
            .unwrap()
            .parameter_shapes()
            .unwrap();
        assert_eq!(a, b);
        assert!(!a.is_empty());
    }
    let cnn = Network::new(specs()[1].clone(), Device::Cpu)
        .unwrap()
        .parameter_shapes()
        .unwrap();
    let names: Vec<&str> = cnn.keys().map(String::as_str).collect();
    assert!(
        names.contains(&"conv0.weight") && names.contains(&"bn1.running_mean") && names.contains(&"out.bias"),
        "{names:?}"
    );
}

#[test]
fn specs_round_trip_through_json_and_defaults_fill_in() {
    for spec in specs() {
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), spec);
    }
    let mut s: ModelSpec = serde_json::from_str(r#"{"arch": "mlp"}"#).unwrap();
    s.fit_to(&[1, 28, 28], 10).unwrap();
    assert_eq!(s, ModelSpec::classic_mlp());
    let err = serde_json::from_str::<ModelSpec>(r#"{"arch": "cnn", "chanels": [8]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chanels"), "{err}");
    let err = serde_json::from_str::<ModelSpec>(r#"{"arch": "transformer"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("transformer"), "{err}");
}

#[test]
fn bad_specs_and_inputs_are_errors_not_panics() {
    let mut s: ModelSpec = serde_json::from_str(r#"{"arch": "cnn", "channels": [8, 8, 8, 8, 8, 8]}"#).unwrap();
    let err = s.fit_to(&[1, 28, 28], 10).unwrap_err().to_string();
    assert!(err.contains("too small for 6 pooling blocks"), "{err}");
    let mut s: ModelSpec = serde_json::from_str(r#"{"arch": "mlp", "dropout": 1.5}"#).unwrap();
    assert!(s.fit_to(&[4], 3).unwrap_err().to_string().contains("dropout 1.5"));
    let mut s = ModelSpec::classic_mlp();
    assert!(s
        .fit_to(&[1, 28, 28], 5)
        .unwrap_err()
        .to_string()
        .contains("10 classes, the data has 5"));

    let net = Network::new(ModelSpec::classic_mlp(), Device::Cpu).unwrap();
    let x = Tensor::zeros([2, 3, 27, 28], (Kind::Float, Device::Cpu));
    let err = net.infer(&x).unwrap_err().to_string();
    assert_eq!(
        err,
        "input shape [2, 3, 27, 28] does not match the model's [-1, 1, 28, 28]"
    );
    let x = Tensor::zeros([2, 1, 28, 28], (Kind::Int64, Device::Cpu));
    assert!(net.infer(&x).unwrap_err().to_string().contains("dtype FP32, got INT64"));
}
