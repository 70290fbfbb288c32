//! The happy path: train writes a run folder and a package; eval and predict use it.

use crate::util::{kiln_train, quick_train, stderr, stdout};
use kiln_data::{Dataset, KnownDataset, Split};
use kiln_package::Package;

#[test]
fn train_writes_config_metrics_and_a_loadable_package() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = quick_train(&out, &["--set", "name=quick"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("package: {}", out.join("package").display())),
        "{text}"
    );
    assert!(text.contains("test accuracy: 0."), "{text}");

    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["name"], "quick");
    assert_eq!(
        config["model"]["input"],
        serde_json::json!([1, 28, 28]),
        "the resolved config is written"
    );

    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds = |k: &str| lines.iter().filter(|l| l["kind"] == k).collect::<Vec<_>>();
    // 3000 samples, 10% held out, batch 128: 22 steps, each logged with its learning rate.
    let steps = kinds("step");
    assert_eq!(steps.len(), 22, "{log}");
    assert_eq!(steps[21]["step"], 22);
    assert!(steps
        .iter()
        .all(|s| s["lr"].as_f64().unwrap() > 0.0 && s["loss"].as_f64().unwrap() > 0.0));
    assert!(kinds("start")[0]["seconds_to_first_step"].as_f64().unwrap() > 0.0);
    let epoch = kinds("epoch")[0];
    assert_eq!(epoch["epoch"], 1);
    assert!(epoch["train_loss"].as_f64().unwrap() > 0.0);
    let val = &epoch["val"];
    assert!(
        val["accuracy"].as_f64().unwrap() > 0.5,
        "one epoch of an MLP beats chance by far"
    );
    assert!(val["top_k_accuracy"].as_f64().unwrap() >= val["accuracy"].as_f64().unwrap());
    assert_eq!(val["per_class"].as_array().unwrap().len(), 10);
    let counts = val["confusion"]["counts"].as_array().unwrap();
    let total: u64 = counts
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 300, "every validation sample is in the confusion matrix");
    assert_eq!(kinds("test").len(), 1);
    let curves = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(curves.starts_with("<svg") && curves.contains("polyline"));
    let confusion = std::fs::read_to_string(out.join("confusion.svg")).unwrap();
    assert!(confusion.starts_with("<svg") && confusion.contains("T-shirt/top"));

    let pkg = Package::load(out.join("package"), kiln_tensor::Device::Cpu).unwrap();
    let metrics = &pkg.manifest.training.as_ref().unwrap().metrics;
    let acc = metrics["test_accuracy"];
    assert!(acc > 0.6 && acc <= 1.0, "test accuracy {acc}");
    assert_eq!(pkg.manifest.output.labels[0], "T-shirt/top");
    assert!(pkg.manifest.input.normalize.is_some());
}

#[test]
fn eval_and_predict_agree_with_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(quick_train(&out, &[]).status.success());
    let pkg_dir = out.join("package");
    let pkg = pkg_dir.to_str().unwrap();

    let o = kiln_train(&["eval", "--package", pkg, "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let result: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(result["samples"], 10_000);
    assert!(result["accuracy"].as_f64().unwrap() > 0.6);

    // The first five test images, as PNG files and as JSON arrays of the same pixels:
    // both routes must predict the same class with the same probability.
    let test = KnownDataset::FashionMnist.load(None, Split::Test).unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let pixels = test.raw_pixels(i).unwrap().to_vec();
        let png = dir.path().join(format!("img{i}.png"));
        image::GrayImage::from_raw(28, 28, pixels).unwrap().save(&png).unwrap();
        let mut values = vec![0f32; 784];
        test.read_into(i, &mut values).unwrap();
        let json = dir.path().join(format!("img{i}.json"));
        std::fs::write(&json, serde_json::to_vec(&values).unwrap()).unwrap();
        files.push(png);
        files.push(json);
    }
    let mut args = vec!["predict", "--package", pkg, "--top-k", "3"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let o = kiln_train(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(preds.len(), 10);
    let labels = KnownDataset::FashionMnist.classes();
    let mut correct = 0;
    for (i, pair) in preds.chunks(2).enumerate() {
        assert_eq!(pair[0]["class"], pair[1]["class"], "png and json disagree on image {i}");
        let (a, b) = (
            pair[0]["probability"].as_f64().unwrap(),
            pair[1]["probability"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        assert_eq!(pair[0]["top"].as_array().unwrap().len(), 3);
        let class = pair[0]["class"].as_u64().unwrap() as usize;
        assert_eq!(pair[0]["label"], labels[class].as_str());
        correct += (class as i64 == test.label(i).unwrap()) as usize;
    }
    assert!(correct >= 3, "only {correct} of 5 test images classified correctly");
}

#[test]
fn the_same_seed_gives_bitwise_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let sha = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let o = quick_train(&out, &["--seed", seed]);
        assert!(o.status.success(), "{}", stderr(&o));
        Package::read_manifest(out.join("package")).unwrap().weights.sha256
    };
    let a = sha("a", "7");
    assert_eq!(a, sha("b", "7"));
    assert_ne!(a, sha("c", "8"));
}
