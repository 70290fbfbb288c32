//! One container serves a real model like the host-run server does, as a non-root user on
//! a read-only root filesystem, and reports healthy.

use crate::util::{test_images, v2_request, Server};
use crate::{docker, docker_answers, get, images, repository, wait_for};
use serde_json::Value;

#[test]
fn the_container_serves_like_the_host_as_non_root_on_a_read_only_root() {
    if !docker_answers() {
        return;
    }
    images();
    let repo = repository();
    let name = format!("kiln-test-{}", std::process::id());
    let mount = format!("{}:/models:ro", repo.path().display());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "-p",
        "127.0.0.1::8080",
        "-v",
        &mount,
        "kiln-serve:latest",
    ]);
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &self.0])
                .output();
        }
    }
    let _guard = Remove(name.clone());
    let port = docker(&["port", &name, "8080/tcp"]);
    let url = format!("http://{}", port.lines().next().unwrap());
    wait_for("the container to be ready", 60, || {
        get(&format!("{url}/v2/health/ready")).is_some_and(|(s, _)| s == 200)
    });

    // Health and metadata.
    assert_eq!(get(&format!("{url}/v2/health/live")).unwrap().0, 200);
    let (status, meta) = get(&format!("{url}/v2/models/fashion")).unwrap();
    assert_eq!(status, 200);
    let meta: Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["versions"], serde_json::json!(["1"]));

    // The same answer as the host-run server over the same package.
    let host = Server::start_on(repository(), &[]);
    let images: Vec<Vec<f32>> = test_images(4).into_iter().map(|(v, _)| v).collect();
    let body = v2_request(&images);
    let mut r = crate::agent()
        .post(&format!("{url}/v2/models/fashion/infer"))
        .send_json(&body)
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let in_container: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let (status, on_host) = host.post("/v2/models/fashion/infer", &body);
    assert_eq!(status, 200);
    assert_eq!(
        in_container["outputs"], on_host["outputs"],
        "container and host answers differ"
    );

    // Non-root, read-only root filesystem, healthy by its own HEALTHCHECK.
    assert_eq!(docker(&["inspect", "-f", "{{.Config.User}}", &name]), "10001:10001");
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", &name]),
        "true"
    );
    let uid = docker(&["exec", &name, "id", "-u"]);
    assert_eq!(uid, "10001");
    let write = std::process::Command::new("docker")
        .args(["exec", &name, "sh", "-c", "echo x > /usr/local/bin/x"])
        .output()
        .unwrap();
    assert!(!write.status.success(), "the root filesystem is writable");
    wait_for("Docker to report the container healthy", 60, || {
        docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]) == "healthy"
    });
}
