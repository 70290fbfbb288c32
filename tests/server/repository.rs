//! The repository is polled: new versions are served, removed ones unloaded, broken ones
//! reported while the others keep serving; all while clients keep sending requests.

use crate::util::{copy_dir, test_images, trained_package, v2_request, wait_for, Server};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

fn served_versions(s: &Server) -> Vec<String> {
    let (_, meta) = s.get("/v2/models/fashion");
    meta["versions"]
        .as_array()
        .map(|v| v.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn versions_come_and_go_while_clients_keep_getting_answers() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(trained_package(), &repo.path().join("fashion/1"));
    let s = Server::start_on(repo, &["--poll-interval", "200ms"]);
    let root = s.repo().join("fashion");
    let img = test_images(1).remove(0).0;
    let stop = AtomicBool::new(false);
    // (status, model_version) of every answer.
    let answers: Mutex<Vec<(u16, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = s.post("/v2/models/fashion/infer", &v2_request(std::slice::from_ref(&img)));
                    let version = body["model_version"].as_str().unwrap_or("").to_string();
                    answers.lock().unwrap().push((status, version));
                }
            });
        }
        let answered_by = |v: &str| answers.lock().unwrap().iter().any(|(_, got)| got == v);
        wait_for("answers from version 1", || answered_by("1"));

        // A new version, copied file by file while requests flow, is served.
        copy_dir(trained_package(), &root.join("2"));
        let took = wait_for("version 2 to answer", || answered_by("2"));
        eprintln!("version 2 answered {took:?} after its copy finished (poll interval 200 ms)");
        wait_for("version 1 to be unloaded (policy latest:1)", || {
            served_versions(&s) == ["2"]
        });

        // A broken version is reported and version 2 keeps serving.
        let bad = root.join("3");
        copy_dir(trained_package(), &bad);
        let weights = bad.join("weights.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&weights, bytes).unwrap();
        wait_for("version 3 to be reported as failed", || {
            let (_, meta) = s.get("/v2/models/fashion");
            meta["failed_versions"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["version"] == "3"))
        });
        let (_, meta) = s.get("/v2/models/fashion");
        let error = meta["failed_versions"][0]["error"].as_str().unwrap().to_string();
        assert!(error.contains("sha256"), "the reason is given: {error}");
        assert_eq!(served_versions(&s), ["2"]);
        assert!(s.metric("kiln_model_load_failures_total", "") >= 1.0);
        let (status, body) = s.post(
            "/v2/models/fashion/versions/3/infer",
            &v2_request(std::slice::from_ref(&img)),
        );
        assert_eq!(status, 404);
        assert!(body["error"].as_str().unwrap().contains("failed to load"), "{body}");
        let before = answers.lock().unwrap().len();
        wait_for("more answers from version 2", || {
            answers.lock().unwrap().len() > before + 20
        });
        assert!(answers.lock().unwrap()[before..].iter().all(|(_, v)| v == "2"));

        // Removing version 2 unloads it; the policy falls back to version 1.
        std::fs::remove_dir_all(root.join("2")).unwrap();
        wait_for("version 2 to be unloaded", || served_versions(&s) == ["1"]);
        let (status, _) = s.post(
            "/v2/models/fashion/versions/2/infer",
            &v2_request(std::slice::from_ref(&img)),
        );
        assert_eq!(status, 404);
        let before = answers.lock().unwrap().len();
        wait_for("more answers", || answers.lock().unwrap().len() > before + 20);
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.into_inner().unwrap();
    let failed: Vec<&(u16, String)> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(s.healthy());
}

#[test]
fn version_policies_choose_what_is_served() {
    let repo = tempfile::tempdir().unwrap();
    for v in ["1", "2", "3"] {
        copy_dir(trained_package(), &repo.path().join("fashion").join(v));
        copy_dir(trained_package(), &repo.path().join("pinned").join(v));
    }
    std::fs::write(
        repo.path().join("pinned/model.toml"),
        "version_policy = \"specific:1,3\"\n",
    )
    .unwrap();
    let s = Server::start_on(repo, &["--version-policy", "latest:2", "--poll-interval", "off"]);
    assert_eq!(served_versions(&s), ["2", "3"]);
    let (_, meta) = s.get("/v2/models/pinned");
    assert_eq!(meta["versions"], serde_json::json!(["1", "3"]));
    // Unversioned requests go to the latest served version.
    let img = test_images(1).remove(0).0;
    let (_, body) = s.post("/v2/models/pinned/infer", &v2_request(&[img]));
    assert_eq!(body["model_version"], Value::from("3"));
}

#[test]
fn a_bad_settings_file_or_policy_is_refused_with_a_reason() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(trained_package(), &repo.path().join("fashion/1"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .args([
            "--model-repository",
            repo.path().to_str().unwrap(),
            "--version-policy",
            "newest",
        ])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected \"latest:N\""), "{err}");
}
