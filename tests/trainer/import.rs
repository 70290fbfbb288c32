//! `kiln-train import`: weights trained elsewhere, as safetensors, become a package; weights
//! that do not fit the architecture are refused with every mismatch named (exit 4).

use crate::util::{kiln_train, quick_train, stderr, stdout};

#[test]
fn imported_weights_make_a_package_that_predicts_as_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(quick_train(&run, &[]).status.success());
    let weights = run.join("package/weights.safetensors");
    let config = run.join("config.json");
    let out = dir.path().join("imported");
    let o = kiln_train(&[
        "import",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("package:"), "{}", stdout(&o));
    // The same weights and normalisation: the same predictions on real inputs.
    let img = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images/ankle-boot.png");
    let predict = |pkg: &std::path::Path| {
        let o = kiln_train(&["predict", "--package", pkg.to_str().unwrap(), img.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(predict(&run.join("package")), predict(&out));
    let original = kiln_package::Package::read_manifest(run.join("package")).unwrap();
    let imported = kiln_package::Package::read_manifest(&out).unwrap();
    assert_eq!(imported.weights.sha256, original.weights.sha256);
    assert_eq!(imported.input.normalize, original.input.normalize);
    assert_eq!(imported.output.labels, original.output.labels);

    // Another architecture: refused, naming the tensors that do not fit.
    let o = kiln_train(&[
        "import",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        dir.path().join("bad").to_str().unwrap(),
        "--set",
        "model={arch=\"mlp\", hidden=[48]}",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fc0.weight") && stderr(&o).contains("[48, 784]"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("bad").exists(), "no package is written");
}
