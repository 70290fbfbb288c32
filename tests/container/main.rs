//! Tests of the kiln-serve container image and of three replicas behind the load
//! balancer (docker/). They build the images with docker/build.sh when missing, and are
//! skipped, saying why, only where no Docker engine answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../server/util.rs"]
#[allow(dead_code)]
mod util;

mod compose;
mod image;
mod training;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a command, returning its output; panics with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `docker ARGS`, stdout trimmed.
pub fn docker(args: &[&str]) -> String {
    String::from_utf8_lossy(&run(Command::new("docker").args(args)).stdout)
        .trim()
        .to_string()
}

/// Whether a Docker engine answers. Where none does, the tests are skipped, saying so
/// loudly; under `CI=true` (CI's machines have an engine) that is a failure instead.
pub fn docker_answers() -> bool {
    static ANSWERS: OnceLock<Result<(), String>> = OnceLock::new();
    let answer = ANSWERS.get_or_init(|| {
        match Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "no Docker engine answers (`docker info`: {})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("the docker command cannot run: {e}")),
        }
    });
    match answer {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true, and the container tests need a Docker engine: {why}")
        }
        Err(why) => {
            eprintln!("\n********\nSKIPPED: {why}\n********\n");
            false
        }
    }
}

/// The images of this checkout, built once per test process with docker/build.sh: the
/// first time from nothing (bases, dependencies), afterwards from Docker's cache, where a
/// change to kiln's own code recompiles only kiln's crates. Always built, so the tests
/// never run an image of older code.
pub fn images() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let started = Instant::now();
    eprintln!("building the images with docker/build.sh (from Docker's cache when it can)");
    run(Command::new("bash").arg(root().join("docker/build.sh")));
    eprintln!("images built in {:.0} s", started.elapsed().as_secs_f64());
    *built = true;
}

/// A model repository in a folder Docker can mount, holding the trained test package as
/// `fashion` version 1, readable by the image's non-root user.
pub fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    util::copy_dir(util::trained_package(), &repo.path().join("fashion/1"));
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(repo.path()));
    repo
}

/// Polls `cond` every 100 ms for up to `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP client that reports statuses rather than failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET `url`: status and body, or None when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let mut r = agent().get(url).call().ok()?;
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}
