//! Data-parallel training across machines: two containers of the kiln-train image on a
//! private Docker network this test creates, nothing shared between them but the network
//! (rank 0 alone mounts a volume, for its output), train one model together through
//! libtorch's TCPStore and Gloo.

use crate::{docker, docker_answers, root, run};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// The kiln-train image of this checkout plus the Fashion-MNIST files (baked into a
/// derived image, so that the ranks share no folder).
fn trainer_image_with_data(tag: &str) {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    // The kiln-serve image's build compiles kiln-train too (one build stage for both):
    // built after it, the kiln-train image comes from Docker's cache, where building both
    // at once would compile everything twice on the same cores.
    crate::images();
    run(Command::new("bash")
        .arg(root().join("docker/build.sh"))
        .arg("--trainer"));
    let data = std::env::var("KILN_FASHION_MNIST_DIR").unwrap_or_else(|_| "/usr/share/datasets/fashion-mnist".into());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir(ctx.path().join("fashion-mnist")).unwrap();
    for f in std::fs::read_dir(&data).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap().to_string_lossy().contains("-ubyte") {
            std::fs::copy(&f, ctx.path().join("fashion-mnist").join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM kiln-train:latest\nCOPY fashion-mnist/ /data/fashion-mnist/\n",
    )
    .unwrap();
    run(Command::new("docker").args(["build", "-q", "-t", tag]).arg(ctx.path()));
    *built = true;
}

/// Removes what the test created, even when it fails.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in self.0.iter().rev() {
            let _ = Command::new("docker").args(args).output();
        }
    }
}

fn rank_args(rank: usize, net: &str, name: &str, master: &str, volume: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = ["run", "-d", "--name", name, "--network", net, "--hostname", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (k, v) in [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", "2".into()),
        ("MASTER_ADDR", master.into()),
        ("MASTER_PORT", "29500".into()),
        ("KILN_DIST_TIMEOUT", "120".into()),
    ] {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    if let Some(v) = volume {
        a.push("-v".into());
        a.push(format!("{}:/runs", v.display()));
    }
    a.push("kiln-train-data:test".into());
    for s in [
        "train",
        "--out",
        "/runs/fashion",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--batch-size",
        "32",
        "--set",
        "model={arch=\"mlp\", hidden=[64]}",
        "--set",
        "data.dir=\"/data/fashion-mnist\"",
        "--set",
        "data.limit_train=12000",
        "--set",
        "data.limit_test=2000",
    ] {
        a.push(s.into());
    }
    a
}

#[test]
fn two_containers_on_a_private_network_train_one_model_together() {
    if !docker_answers() {
        return;
    }
    trainer_image_with_data("kiln-train-data:test");
    let id = std::process::id();
    let net = format!("kiln-ddp-{id}");
    let (r0, r1) = (format!("kiln-ddp-{id}-rank0"), format!("kiln-ddp-{id}-rank1"));
    let out = tempfile::tempdir().unwrap();
    // The image's non-root user writes rank 0's output.
    run(Command::new("chmod").arg("a+rwx").arg(out.path()));
    docker(&["network", "create", "--internal", &net]);
    let mut cleanup = Cleanup(vec![vec!["network".into(), "rm".into(), net.clone()]]);
    cleanup.0.push(vec!["rm".into(), "-f".into(), r0.clone()]);
    docker(
        &rank_args(0, &net, &r0, &r0, Some(out.path()))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    cleanup.0.push(vec!["rm".into(), "-f".into(), r1.clone()]);
    docker(
        &rank_args(1, &net, &r1, &r0, None)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let code = |c: &str| docker(&["wait", c]);
    let (c0, c1) = (code(&r0), code(&r1));
    let logs = |c: &str| {
        let o = Command::new("docker").args(["logs", c]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert_eq!(c0, "0", "rank 0: {}", logs(&r0));
    assert_eq!(c1, "0", "rank 1: {}", logs(&r1));
    assert!(logs(&r1).contains("rank 1 of 2: done"), "{}", logs(&r1));
    // Rank 0's output: the package, evaluated on the test set, and the metrics, where
    // each epoch records the batches each rank trained on.
    let run_dir = out.path().join("fashion");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("package/manifest.json")).unwrap()).unwrap();
    let test_accuracy = manifest["training"]["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(test_accuracy > 0.75, "{test_accuracy}");
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        let ranks = e["ranks"].as_array().unwrap();
        assert_eq!(ranks.len(), 2, "{e}");
        for (r, rec) in ranks.iter().enumerate() {
            assert_eq!(rec["rank"], r);
            // 10,800 training samples (12,000 less 10% for validation): 5,400 per rank.
            assert_eq!(rec["samples"], 5400.0, "{e}");
            assert_eq!(rec["batches"], 169.0, "{e}");
        }
    }
}
