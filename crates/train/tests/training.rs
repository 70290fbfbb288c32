//! The training loop's features through its public API, on a slice of the real data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_package::Package;
use kiln_tensor::{convert, Device};
use kiln_train::{train, TrainConfig, TrainOptions};
use std::path::Path;

fn config(overrides: &[&str]) -> TrainConfig {
    let mut all = vec![
        "model={arch=\"mlp\", hidden=[32]}",
        "data.limit_train=1024",
        "data.limit_test=200",
        "data.prefetch=0",
        "threads=1",
        "epochs=2",
    ];
    all.extend_from_slice(overrides);
    TrainConfig::load(None, &all.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

/// libtorch's random generator is global to the process: runs in parallel threads would
/// draw from each other's sequences, so the tests here take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let pkg = Package::load(dir.join("package"), Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = pkg
        .network
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, convert::tensor_to_f32(&t).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn accumulating_n_batches_of_b_equals_one_batch_of_n_times_b() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let common = ["data.validation=0", "optimizer={kind=\"sgd\", lr=0.1, momentum=0.9}"];
    let mut small = common.to_vec();
    small.extend(["batch_size=32", "optimizer.accumulate=4"]);
    let mut large = common.to_vec();
    large.push("batch_size=128");
    let a = train(&config(&small), &dir.path().join("a"), &quiet()).unwrap();
    let b = train(&config(&large), &dir.path().join("b"), &quiet()).unwrap();
    assert_eq!(a.epochs.len(), 2);
    let (wa, wb) = (weights(&dir.path().join("a")), weights(&dir.path().join("b")));
    let mut max_diff = 0f32;
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    assert!(
        max_diff < 1e-5,
        "accumulated and large-batch weights differ by {max_diff}"
    );
    // The same run without accumulation (batch 32, 4x the steps) differs: the check has teeth.
    let mut plain = common.to_vec();
    plain.push("batch_size=32");
    train(&config(&plain), &dir.path().join("c"), &quiet()).unwrap();
    assert_ne!(weights(&dir.path().join("c"))[0].1, wa[0].1);
    assert_eq!(a.test.as_ref().unwrap().samples, 200);
    assert_eq!(b.epochs[1].epoch, 2);
}

#[test]
fn early_stopping_ends_the_run_and_the_best_epoch_is_packaged() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    // No epoch can beat the first by 10 in loss: with patience 1, the run stops after epoch 3.
    let cfg = config(&[
        "epochs=10",
        "early_stopping={monitor=\"train_loss\", patience=1, min_delta=10.0}",
    ]);
    let report = train(&cfg, &dir.path().join("es"), &quiet()).unwrap();
    assert!(report.stopped_early);
    assert_eq!(report.epochs.len(), 3);

    let cfg = config(&["epochs=4", "monitor=\"val_accuracy\"", "optimizer.lr=0.05"]);
    let report = train(&cfg, &dir.path().join("best"), &quiet()).unwrap();
    let accs: Vec<f64> = report
        .epochs
        .iter()
        .map(|e| e.val.as_ref().unwrap().accuracy())
        .collect();
    let best = accs
        .iter()
        .enumerate()
        .fold(0, |b, (i, &a)| if a > accs[b] { i } else { b })
        + 1;
    assert_eq!(report.best_epoch, best, "{accs:?}");
    let manifest = Package::read_manifest(dir.path().join("best/package")).unwrap();
    let m = manifest.training.unwrap().metrics;
    assert_eq!(m["best_epoch"], best as f64);
    assert_eq!(m["val_accuracy"], accs[best - 1]);
}

#[test]
fn label_smoothing_changes_the_training_loss_but_not_the_reported_eval_loss_definition() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let plain = train(&config(&["epochs=1"]), &dir.path().join("p"), &quiet()).unwrap();
    let smooth = train(
        &config(&["epochs=1", "label_smoothing=0.2"]),
        &dir.path().join("s"),
        &quiet(),
    )
    .unwrap();
    // Smoothed targets put a floor under the training loss.
    assert!(smooth.epochs[0].train_loss > plain.epochs[0].train_loss);
    assert!(smooth.test.unwrap().loss.is_finite());
}
