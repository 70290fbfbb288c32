//! `kiln-train import-torchscript` and `kiln-train export --torchscript`: a model scripted
//! in PyTorch becomes a package that `eval` and `predict` run; a kiln package becomes a
//! TorchScript file that PyTorch runs with kiln's outputs; a pickled `state_dict` is refused.

use crate::python::{root, torchscript_models};
use crate::util::{kiln_train, stderr, stdout};
use std::path::Path;

fn floats(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

#[test]
fn a_scripted_pytorch_model_is_packaged_evaluated_and_predicted_and_a_state_dict_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = kiln_data::KnownDataset::FashionMnist.default_dir();
    torchscript_models(&["classic", data.to_str().unwrap(), dir.path().to_str().unwrap()]);
    let pkg = dir.path().join("pkg");
    let labels = dir.path().join("labels.txt");
    let names = "T-shirt/top\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\nAnkle boot\n";
    std::fs::write(&labels, names).unwrap();
    let import = |module: &str| {
        kiln_train(&[
            "import-torchscript",
            "--module",
            dir.path().join(module).to_str().unwrap(),
            "--out",
            pkg.to_str().unwrap(),
            "--name",
            "classic",
            "--input",
            "1,28,28",
            "--labels-file",
            labels.to_str().unwrap(),
            "--image",
            "--mean",
            "0.1307",
            "--std",
            "0.3081",
        ])
    };
    let o = import("state_dict.pt");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("state_dict") && stderr(&o).contains("torch.jit.script"),
        "{}",
        stderr(&o)
    );
    assert!(!pkg.exists());

    let o = import("classic.pt");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("TorchScript"), "{}", stdout(&o));
    // 300 steps of the classic recipe reach about 80% on the test set.
    let o = kiln_train(&["eval", "--package", pkg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let accuracy = eval["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7, "{eval}");
    // An image file goes through the manifest's decoding and normalisation to the module.
    let img = root().join("docs/images/ankle-boot.png");
    let o = kiln_train(&["predict", "--package", pkg.to_str().unwrap(), img.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Ankle boot"), "{}", stdout(&o));
    // Training such a package's architecture is refused with what it is for.
    let manifest = pkg.join("manifest.json");
    let o = kiln_train(&[
        "train",
        "--quiet",
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--set",
        "model={arch=\"torchscript\", input=[1, 28, 28], classes=10}",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not train it"), "{}", stderr(&o));
    assert!(manifest.exists());
    // model.pt is hashed like weights: a changed byte is refused before libtorch reads it.
    let module = pkg.join("model.pt");
    let mut bytes = std::fs::read(&module).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&module, bytes).unwrap();
    let o = kiln_train(&["eval", "--package", pkg.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("corrupt or was changed"), "{}", stderr(&o));
}

#[test]
fn an_exported_package_runs_in_pytorch_with_kilns_outputs_and_imports_back() {
    let dir = tempfile::tempdir().unwrap();
    // A CNN with batch norm and normalised inputs: the export carries both.
    let run = dir.path().join("run");
    let o = kiln_train(&[
        "train",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "1",
        "--set",
        "model={arch=\"cnn\", channels=[8, 16], hidden=32, batch_norm=true}",
        "--set",
        "data.limit_train=2000",
        "--set",
        "data.limit_test=100",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let package = run.join("package");
    let pt = dir.path().join("exported.pt");
    let o = kiln_train(&[
        "export",
        "--package",
        package.to_str().unwrap(),
        "--torchscript",
        pt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let test = kiln_data::KnownDataset::FashionMnist
        .load(None, kiln_data::Split::Test)
        .unwrap();
    let images: Vec<Vec<f32>> = (0..12)
        .map(|i| {
            let mut v = vec![0f32; 784];
            kiln_data::Dataset::read_into(&test, i, &mut v).unwrap();
            v
        })
        .collect();
    let inputs = dir.path().join("inputs.json");
    std::fs::write(&inputs, serde_json::to_vec(&images).unwrap()).unwrap();
    let out = dir.path().join("torch.json");
    torchscript_models(&[
        "run",
        pt.to_str().unwrap(),
        inputs.to_str().unwrap(),
        "1,28,28",
        out.to_str().unwrap(),
    ]);
    let torch: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let torch = floats(&torch["logits"]);

    let kiln_logits = |dir: &Path| -> Vec<f32> {
        let p = kiln_package::Package::load(dir, kiln_tensor::Device::Cpu).unwrap();
        let ready: Vec<Vec<f32>> = images
            .iter()
            .map(|i| p.manifest.prepare_values(i.clone()).unwrap())
            .collect();
        p.logits(&ready).unwrap().concat()
    };
    let kiln = kiln_logits(&package);
    assert_eq!(torch.len(), kiln.len());
    let diff = torch.iter().zip(&kiln).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-5, "PyTorch runs the export {diff} away from kiln");
    assert!(kiln.iter().any(|&v| (v - kiln[0]).abs() > 0.1), "{kiln:?}");

    // The export imports back as a TorchScript package (normalisation inside the module).
    let back = dir.path().join("back");
    let o = kiln_train(&[
        "import-torchscript",
        "--module",
        pt.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
        "--name",
        "back",
        "--input",
        "1,28,28",
        "--classes",
        "10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = kiln_logits(&back);
    let diff = again.iter().zip(&kiln).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-5, "the re-imported export is {diff} away from kiln");
}

#[test]
fn a_module_of_named_tensors_is_packaged_from_the_command_line_and_refused_where_it_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let data = kiln_data::KnownDataset::FashionMnist.default_dir();
    torchscript_models(&["tensors", data.to_str().unwrap(), dir.path().to_str().unwrap()]);
    let module = dir.path().join("tensors.pt");
    let pkg = dir.path().join("pkg");
    let import = |outputs: &[&str], extra: &[&str]| {
        let mut args = vec![
            "import-torchscript",
            "--module",
            module.to_str().unwrap(),
            "--out",
            pkg.to_str().unwrap(),
            "--name",
            "multi",
            "--input-tensor",
            "image:FP32:1,28,28",
            "--input-tensor",
            "tags:INT64:-1",
        ];
        for o in outputs {
            args.extend(["--output-tensor", o]);
        }
        args.extend(extra);
        kiln_train(&args)
    };
    // A declared output the module does not give, or gives with another dtype, is refused
    // by running the module, naming what it gave; nothing is written.
    let o = import(&["logits:FP32:10", "probs:FP32:10"], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("without \"probs\"") && stderr(&o).contains("embedding"),
        "{}",
        stderr(&o)
    );
    let o = import(&["top:FP32:"], &[]);
    assert!(
        stderr(&o).contains("\"top\" as INT64 [2]") && stderr(&o).contains("FP32 [-1]"),
        "{}",
        stderr(&o)
    );
    assert!(!pkg.exists());
    // A classifier's flags with a module's: refused by the command line (exit 2).
    let o = import(&["top:INT64:"], &["--classes", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = import(&["top:INTEGER:"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("INTEGER"), "{}", stderr(&o));

    let o = import(&["logits:FP32:10", "embedding:FP32:8", "top:INT64:"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("inputs image, tags, outputs logits, embedding, top"),
        "{}",
        stdout(&o)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pkg.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["task"], "tensors");
    assert_eq!(
        manifest["model"]["inputs"][1],
        serde_json::json!({"name": "tags", "dtype": "INT64", "shape": [-1]})
    );
    // eval classifies labelled samples: a module of named tensors says where to send them.
    let o = kiln_train(&["eval", "--package", pkg.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("/v2/models/multi/infer"), "{}", stderr(&o));

    // Modules whose answer for a row depends on the rest of the batch (inputs centred on
    // the batch's mean; batch norm traced in training mode) would mix the answers of
    // requests batched together: refused, saying what to do; nothing is written.
    let shape = ["--input", "1,28,28", "--classes", "10"];
    let tensors = [
        "--input-tensor",
        "image:FP32:1,28,28",
        "--output-tensor",
        "logits:FP32:10",
    ];
    for (module, named, facts) in [
        ("centered.pt", "the logits", shape),
        ("resnet_train.pt", "the logits", shape),
        ("centered_tensors.pt", "output \"logits\"", tensors),
    ] {
        let (module_path, out) = (dir.path().join(module), dir.path().join(format!("{module}.pkg")));
        let mut args = vec![
            "import-torchscript",
            "--module",
            module_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--name",
            "mixing",
        ];
        args.extend(facts);
        let o = kiln_train(&args);
        assert_ne!(o.status.code(), Some(0), "{module} was accepted");
        let e = stderr(&o);
        assert!(
            e.contains("depends on the other rows of its batch") && e.contains(named) && e.contains("model.eval()"),
            "{module}: {e}"
        );
        assert!(!out.exists(), "{module}");
    }
}
