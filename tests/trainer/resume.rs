//! Exact resume: a run killed part-way (SIGKILL, SIGINT) and resumed ends with the same
//! weights, bit for bit, as the same run left alone; damaged checkpoints are skipped.

use crate::util::{kiln_train, stderr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A run long enough to be interrupted (about 3 x 280 batches), with dropout so that the
/// random draws matter, and a checkpoint every 20 steps. libtorch's default thread count
/// (one per core), as a user runs it: resume is bitwise for the same thread count.
fn args(out: &Path) -> Vec<String> {
    [
        "train",
        "--quiet",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--set",
        "model={arch=\"mlp\", hidden=[64], dropout=0.2}",
        "--set",
        "data.limit_train=20000",
        "--set",
        "data.limit_test=500",
        "--set",
        "checkpoint.every_steps=20",
        "--set",
        "checkpoint.keep=3",
        "--set",
        "optimizer.schedule={kind=\"cosine\", warmup_epochs=0.5}",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until the run has written a checkpoint newer than `after`, then returns.
fn wait_for_checkpoint(child: &mut Child, run: &Path, after: Option<&PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if checkpoints(run).last().is_some_and(|c| Some(c) != after) {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn resume(run: &Path) -> Child {
    spawn(&["resume".to_string(), "--quiet".to_string(), run.display().to_string()])
}

/// The sha256 of the package's weights file and of the last checkpoint's tensors (model
/// and optimizer state), hashed here from the files, not read from what kiln recorded.
fn fingerprint(run: &Path) -> (String, String) {
    let hash =
        |p: PathBuf| kiln_package::sha256_hex(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    let last = checkpoints(run).pop().unwrap();
    (
        hash(run.join("package/weights.safetensors")),
        hash(last.join("tensors.safetensors")),
    )
}

fn epoch_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "epoch")
        .map(|r| r["train_loss"].as_f64().unwrap())
        .collect()
}

fn uninterrupted(dir: &Path) -> PathBuf {
    let run = dir.join("whole");
    let o = kiln_train(&args(&run).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

/// Runs `args` with the process aborted (as by SIGKILL) the `nth` time a folder write
/// reaches `step` (see kiln_package::atomic): a crash in the middle of writing a checkpoint.
fn crash_in_write(args: &[String], step: &str, nth: usize) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("KILN_ATOMIC_ABORT_AT", format!("{step}:{nth}"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "the run was meant to crash at {step}:{nth}");
}

#[test]
fn killed_while_writing_a_checkpoint_and_resumed_matches_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = uninterrupted(dir.path());
    let run = dir.path().join("crashed");
    // Killed with the 3rd checkpoint half written (tensors on disk, state not yet)...
    crash_in_write(&args(&run), "partial", 3);
    let leftovers = |run: &Path| {
        std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    assert_eq!(checkpoints(&run).len(), 2, "the half-written checkpoint is not one");
    assert_eq!(leftovers(&run), 1);
    // ...then, resumed, with a later checkpoint whole but not yet in place.
    crash_in_write(
        &["resume".into(), "--quiet".into(), run.display().to_string()],
        "built",
        4,
    );
    let o = resume(&run).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fingerprint(&run), fingerprint(&whole));
    assert_eq!(epoch_losses(&run), epoch_losses(&whole), "the log reads as one run");
    assert_eq!(leftovers(&run), 0, "what the crashes left is cleaned up");
}

#[test]
fn killed_twice_and_resumed_matches_the_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let whole = uninterrupted(dir.path());
    let run = dir.path().join("killed");
    let mut child = spawn(&args(&run));
    wait_for_checkpoint(&mut child, &run, None);
    child.kill().unwrap(); // SIGKILL, part-way through the first epoch
    child.wait().unwrap();
    let first = checkpoints(&run).pop().unwrap();
    let mut child = resume(&run);
    wait_for_checkpoint(&mut child, &run, Some(&first));
    std::thread::sleep(Duration::from_millis(30));
    child.kill().unwrap();
    child.wait().unwrap();
    let o = resume(&run).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming from"));
    assert_eq!(fingerprint(&run), fingerprint(&whole));
    assert_eq!(epoch_losses(&run), epoch_losses(&whole), "the log reads as one run");
}

#[test]
fn sigint_writes_a_checkpoint_exits_cleanly_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let whole = uninterrupted(dir.path());
    let run = dir.path().join("interrupted");
    let mut child = spawn(&args(&run));
    wait_for_checkpoint(&mut child, &run, None);
    signal(&child, "-INT");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; checkpoint saved in") && err.contains("kiln-train resume"),
        "{err}"
    );
    let o = resume(&run).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fingerprint(&run), fingerprint(&whole));
}

#[test]
fn a_damaged_latest_checkpoint_is_skipped_for_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let whole = uninterrupted(dir.path());
    let expected = fingerprint(&whole);
    // Truncate the newest checkpoint's tensors: resuming must say so, fall back to the
    // one before, redo the last steps, and end exactly where the run ended.
    let all = checkpoints(&whole);
    let newest = all.last().unwrap().join("tensors.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let o = resume(&whole).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("is damaged") && err.contains("falling back to the previous one"),
        "{err}"
    );
    assert_eq!(fingerprint(&whole), expected);

    // With every checkpoint damaged, resume refuses rather than train from a broken state.
    for c in checkpoints(&whole) {
        std::fs::write(c.join("state.json"), b"{").unwrap();
    }
    let o = kiln_train(&["resume", whole.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("none of the 3 checkpoints"), "{}", stderr(&o));
}

#[test]
fn train_refuses_a_folder_that_holds_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let o = crate::util::quick_train(&run, &[]);
    assert!(o.status.success());
    let o = crate::util::quick_train(&run, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("kiln-train resume"), "{}", stderr(&o));
}
