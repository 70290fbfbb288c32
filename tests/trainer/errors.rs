//! Bad input gets a clear message and a non-zero exit code, never a panic.

use crate::util::{kiln_train, quick_train, stderr};

fn assert_fails(o: &std::process::Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_missing_dataset_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = quick_train(&dir.path().join("run"), &["--data-dir", dir.path().to_str().unwrap()]);
    assert_fails(&o, 3, &["fashion-mnist", "not found", "scripts/setup.sh"]);
}

#[test]
fn bad_config_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_fails(
        &quick_train(&out, &["--lr", "-0.5"]),
        2,
        &["optimizer.lr is -0.5", "positive"],
    );
    assert_fails(
        &quick_train(&out, &["--set", "epochs=\"ten\""]),
        2,
        &["epochs: invalid type", "\"ten\""],
    );
    assert_fails(
        &quick_train(&out, &["--set", "model.arch=\"transformer\""]),
        2,
        &["transformer", "mlp"],
    );
    assert_fails(&quick_train(&out, &["--device", "tpu"]), 2, &["\"tpu\"", "cuda:N"]);

    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "epochs = 3\n[optimizer]\nlearning_rate = 0.1\n").unwrap();
    let o = kiln_train(&["train", "--config", bad_toml.to_str().unwrap()]);
    assert_fails(&o, 2, &["bad.toml", "unknown field `learning_rate`"]);

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"epochs\": ").unwrap();
    assert_fails(
        &kiln_train(&["train", "--config", broken.to_str().unwrap()]),
        2,
        &["broken.json"],
    );

    let o = kiln_train(&["train", "--config", dir.path().join("nope.toml").to_str().unwrap()]);
    assert_fails(&o, 1, &["nope.toml", "No such file"]);
}

#[test]
fn an_unwritable_output_folder_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = quick_train(&file.join("run"), &[]);
    assert_fails(&o, 1, &["a-file"]);
}

#[test]
fn a_corrupt_package_is_refused_by_eval_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(quick_train(&out, &[]).status.success());
    let weights = out.join("package/weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    let pkg = out.join("package");
    let o = kiln_train(&["eval", "--package", pkg.to_str().unwrap()]);
    assert_fails(&o, 4, &["weights.safetensors", "sha256"]);
    let o = kiln_train(&["predict", "--package", pkg.to_str().unwrap(), "x.png"]);
    assert_fails(&o, 4, &["sha256"]);
}
