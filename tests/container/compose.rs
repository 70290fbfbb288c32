//! Three replicas behind HAProxy (docker/compose.yaml) under load at concurrency 32: one
//! replica killed with SIGKILL and restarted, then every replica replaced one by one;
//! no client sees a failed request, and the restarted replica gets traffic again.

use crate::util::{test_images, v2_request};
use crate::{agent, docker, docker_answers, get, images, repository, root, run, wait_for};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A compose project, taken down when dropped.
struct Project {
    name: String,
    _repo: tempfile::TempDir,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &self.name, "-f"])
            .arg(root().join("docker/compose.yaml"))
            .args(args)
            .env("KILN_MODELS", self._repo.path())
            // Ports Docker picks (`127.0.0.1::8080`), read back with `port`.
            .env("KILN_PORT", "127.0.0.1:")
            .env("KILN_STATS_PORT", "127.0.0.1:");
        c
    }

    /// `http://ADDRESS` where the balancer's `port` is published.
    fn url(&self, port: &str) -> String {
        let out = run(&mut self.compose(&["port", "lb", port]));
        format!("http://{}", String::from_utf8_lossy(&out.stdout).trim())
    }

    fn container(&self, service: &str) -> String {
        let out = run(&mut self.compose(&["ps", "-q", service]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Requests kiln-serve on `service` has answered on the infer endpoint.
    fn answered(&self, service: &str) -> f64 {
        let text = docker(&[
            "exec",
            &self.container(service),
            "curl",
            "-fsS",
            "http://127.0.0.1:8080/metrics",
        ]);
        crate::util::metric(&text, "kiln_requests_total", "endpoint=\"infer\",status=\"200\"")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "5"]).output();
    }
}

/// Sends requests from 32 clients until `stop`; counts answers and failures.
///
/// Each client keeps its connection open across requests, as HTTP clients and load
/// balancers do: it reads every answer to its end, which is what lets ureq put the
/// connection back in its pool. (An answer dropped unread closes the connection, and every
/// request then opens a new one through Docker's port proxy: hundreds per second, each
/// leaving a socket in TIME_WAIT, until the proxy runs out of local ports and resets new
/// connections. That was the cause of the resets this test saw; see tests/container/main.rs.)
fn load(url: &str, stop: &AtomicBool, ok: &AtomicU64, failed: &Mutex<Vec<String>>, t0: Instant) {
    let body = v2_request(&[test_images(1).remove(0).0]);
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                let agent = agent();
                while !stop.load(Ordering::Relaxed) {
                    let at = t0.elapsed().as_secs_f64();
                    match agent.post(&format!("{url}/v2/models/fashion/infer")).send_json(&body) {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            match r.body_mut().read_to_string() {
                                Ok(text) if status == 200 && text.contains("\"outputs\"") => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(text) => failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{at:.1}s: status {status}: {text}")),
                                Err(e) => failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{at:.1}s: status {status}, body cut short: {e}")),
                            }
                        }
                        Err(e) => failed.lock().unwrap().push(format!("{at:.1}s: {e}")),
                    }
                }
            });
        }
    });
}

#[test]
fn replicas_survive_a_killed_replica_and_a_rolling_replacement_under_load() {
    if !docker_answers() {
        return;
    }
    images();
    let project = Project {
        name: format!("kilntest{}", std::process::id()),
        _repo: repository(),
    };
    run(&mut project.compose(&["up", "-d"]));
    let url = project.url("8080");
    let stats = format!("{}/stats;csv", project.url("8404"));
    let all_up = || {
        get(&stats).is_some_and(|(_, csv)| {
            csv.lines()
                .filter(|l| l.starts_with("replicas,kiln") && l.contains(",UP,"))
                .count()
                == 3
        })
    };
    wait_for("three replicas up behind the balancer", 120, all_up);

    let stop = AtomicBool::new(false);
    let ok = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    /// Stops the load when dropped, also when a step below fails: otherwise the scope
    /// would wait for the load threads forever instead of reporting the failure.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let started = Instant::now();
        let (url, stop, ok, failed) = (&url, &stop, &ok, &failed);
        s.spawn(move || load(url, stop, ok, failed, started));
        let _stop_load = StopOnDrop(stop);
        let phase = |what: &str| eprintln!("{:.1}s: {what}", started.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_secs(4));

        // SIGKILL one replica, restart it, and see it answer again.
        let victim = project.container("kiln2");
        phase("SIGKILL kiln2");
        docker(&["kill", "-s", "KILL", &victim]);
        std::thread::sleep(Duration::from_secs(6));
        phase("start kiln2");
        docker(&["start", &victim]);
        wait_for("the killed replica to be back up", 90, all_up);
        let before = project.answered("kiln2");
        wait_for("the restarted replica to receive traffic", 30, || {
            project.answered("kiln2") > before + 50.0
        });
        while started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let after_kill = ok.load(Ordering::Relaxed);

        // Replace every replica, one by one.
        for service in ["kiln1", "kiln2", "kiln3"] {
            let old = project.container(service);
            phase(&format!("replace {service}"));
            run(&mut project.compose(&["up", "-d", "--no-deps", "--force-recreate", service]));
            assert_ne!(project.container(service), old, "{service} was not replaced");
            wait_for(&format!("the new {service} to be up"), 90, all_up);
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "answered {} requests ({} during the kill phase of {:?})",
            ok.load(Ordering::Relaxed),
            after_kill,
            started.elapsed()
        );
    });
    let failed = failed.into_inner().unwrap();
    if !failed.is_empty() {
        let logs = run(&mut project.compose(&["logs", "--no-color", "lb"]));
        for line in String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter(|l| !l.contains(" 200 "))
        {
            eprintln!("{line}");
        }
    }
    assert!(
        failed.is_empty(),
        "{} requests failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 1000,
        "too few requests were sent to prove anything"
    );
}
