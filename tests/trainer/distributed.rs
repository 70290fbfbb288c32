//! Data-parallel training with the real binary: ranks are real processes meeting over
//! loopback through libtorch's TCPStore, averaging gradients with ProcessGroupGloo.
//! Equivalence with one process over the same global data order, faults (a killed rank
//! is named, a hung one is named after the timeout), exact resume, and launch.

use crate::util::{kiln_train, kjv_books, records, stderr, with_sets};
use kiln_tensor::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn args(base: &[&str], sets: &[String], out: &Path) -> Vec<String> {
    with_sets(base, sets, out)
}

/// `kiln-train launch --nproc N --master-port P -- ARGS`.
fn launch_command(nproc: usize, port: u16, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln-train"));
    c.args([
        "launch",
        "--nproc",
        &nproc.to_string(),
        "--master-port",
        &port.to_string(),
        "--",
    ])
    .args(args)
    .env_remove("LD_LIBRARY_PATH")
    .env_remove("KILN_CONFIG");
    c
}

fn launch(nproc: usize, args: &[String]) -> Output {
    launch_command(nproc, free_port(), args).output().unwrap()
}

/// One rank started by hand with torchrun's variables, as a scheduler would.
fn rank(rank: usize, world: usize, port: u16, timeout: &str, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("KILN_DIST_TIMEOUT", timeout)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The model tensors of the run's newest checkpoint (the weights after its last step).
fn final_weights(run: &Path) -> HashMap<String, Tensor> {
    let ckpt = newest_checkpoint(run).unwrap();
    Tensor::read_safetensors(ckpt.join("tensors.safetensors"))
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n.starts_with("model/"))
        .collect()
}

fn max_abs_difference(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(n, t)| (t - &b[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ckpt-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn newest_checkpoint(run: &Path) -> Option<PathBuf> {
    checkpoints(run).pop()
}

/// Trains `sets` for `epochs` twice: on 1 rank with batch `batch` (folder `one`), and on
/// 2 ranks of `batch / 2` (folder `two`), over the same global data order.
fn one_rank_and_two(dir: &Path, sets: &[String], epochs: &str, batch: usize) -> (PathBuf, PathBuf) {
    let (one, two) = (dir.join("one"), dir.join("two"));
    let base = ["train", "--quiet", "--epochs", epochs, "--threads", "1", "--batch-size"];
    let a = args(&[&base[..], &[batch.to_string().as_str()]].concat(), sets, &one);
    let o = kiln_train(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let half = (batch / 2).to_string();
    let o = launch(2, &args(&[&base[..], &[half.as_str()]].concat(), sets, &two));
    assert!(o.status.success(), "{}", stderr(&o));
    (one, two)
}

/// The MLP with a smooth activation and no dropout. (With ReLU the runs agree to 1e-7
/// for hundreds of steps, until a pre-activation within rounding of zero falls on the
/// other side of the kink in one run: a discrete change that Adam amplifies to 1e-2.
/// That is float arithmetic, not data parallelism: the sums over 64 samples and over
/// 2 x 32 round differently.)
fn mlp_sets(optimizer: &str) -> Vec<String> {
    vec![
        "model={arch=\"mlp\", hidden=[128], activation=\"gelu\", dropout=0.0}".into(),
        format!("optimizer={optimizer}"),
        "data.limit_train=30000".into(),
        "data.limit_test=500".into(),
    ]
}

/// 1 rank x batch 64 against 2 ranks x batch 32 over the same global data order (one
/// epoch of 27,000 samples: 422 optimizer steps); returns the largest weight difference.
fn one_rank_against_two(optimizer: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let sets = mlp_sets(optimizer);
    let (one, two) = one_rank_and_two(dir.path(), &sets, "1", 64);
    assert_eq!(
        newest_checkpoint(&one).unwrap().file_name(),
        Some("ckpt-000000000422".as_ref())
    );
    assert_eq!(
        newest_checkpoint(&two).unwrap().file_name(),
        Some("ckpt-000000000422".as_ref())
    );
    // Both ranks worked: each did the epoch's 422 batches over its half of the data.
    let epoch = &records(&two, "epoch")[0];
    for (r, rec) in epoch["ranks"].as_array().unwrap().iter().enumerate() {
        assert_eq!(rec["rank"], r);
        assert_eq!(rec["batches"], 422.0);
        assert_eq!(rec["samples"], 13500.0);
    }
    // Rank 0 alone wrote: one metrics log, one package.
    assert!(two.join("package/weights.safetensors").exists());
    max_abs_difference(&final_weights(&one), &final_weights(&two))
}

#[test]
fn two_ranks_of_32_reach_the_weights_of_one_rank_of_64_with_sgd() {
    let d = one_rank_against_two("{kind=\"sgd\", lr=0.05, momentum=0.9, schedule={kind=\"cosine\"}}");
    assert!(d <= 1e-5, "max abs difference {d}");
}

#[test]
fn two_ranks_of_32_reach_the_weights_of_one_rank_of_64_with_adam() {
    let d = one_rank_against_two("{kind=\"adam\", lr=0.001}");
    assert!(d <= 1e-5, "max abs difference {d}");
}

#[test]
fn a_language_model_trains_on_two_ranks_as_on_one_with_clipping_on_the_global_norm() {
    let dir = tempfile::tempdir().unwrap();
    let books = kjv_books(dir.path());
    let sets = vec![
        "task=\"language-model\"".to_string(),
        "model={arch=\"decoder\", width=64, layers=2, heads=4, kv_heads=2, ffn_width=128, context=64, dropout=0.0}"
            .into(),
        format!("text.corpus={{format=\"folder\", path=\"{}\"}}", books.display()),
        "text.vocab_size=512".into(),
        "text.seq_len=64".into(),
        "text.validation=0.25".into(),
        format!("text.cache_dir=\"{}\"", dir.path().join("cache").display()),
        "monitor=\"val_loss\"".into(),
        // A low clipping threshold, so that every step is clipped: by the global norm
        // on both sides, or the weights would part.
        "optimizer={kind=\"adamw\", lr=0.003, weight_decay=0.1, clip_grad_norm=0.05}".into(),
    ];
    let (one, two) = one_rank_and_two(dir.path(), &sets, "1", 16);
    let d = max_abs_difference(&final_weights(&one), &final_weights(&two));
    assert!(d <= 1e-5, "max abs difference {d}");
    // The package is a language model with rank 0's tokenizer.
    let pkg = kiln_package::LanguagePackage::load(two.join("package"), kiln_tensor::Device::Cpu).unwrap();
    assert_eq!(pkg.model.spec().vocab, 512);
    let loss = |r: &Path| records(r, "epoch")[0]["train_loss"].as_f64().unwrap();
    assert!((loss(&one) - loss(&two)).abs() < 1e-4, "{} {}", loss(&one), loss(&two));
}

/// A 2-rank run of kiln's CNN (batch norm: batch statistics local to each rank, running
/// statistics from rank 0) tests within half a point of a 1-rank run.
#[test]
fn a_two_rank_cnn_package_evaluates_within_half_a_point_of_a_one_rank_run() {
    let dir = tempfile::tempdir().unwrap();
    let sets = vec![
        "model={arch=\"cnn\", channels=[16, 32], hidden=64, dropout=0.1, batch_norm=true}".to_string(),
        "optimizer={kind=\"adamw\", lr=0.002, weight_decay=0.05, schedule={kind=\"cosine\"}}".into(),
        "data.limit_train=20000".into(),
    ];
    let (one, two) = one_rank_and_two(dir.path(), &sets, "2", 64);
    // Evaluated here, from the packages, on the whole test set.
    let eval = |run: &Path| {
        let o = kiln_train(&["eval", "--package", run.join("package").to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["samples"], 10000);
        v["accuracy"].as_f64().unwrap()
    };
    let (a1, a2) = (eval(&one), eval(&two));
    assert!(a1 > 0.85 && a2 > 0.85, "{a1} {a2}");
    assert!((a1 - a2).abs() <= 0.005, "1 rank {a1}, 2 ranks {a2}");
}

/// A run long enough to be interrupted (3 epochs of 282 steps of 2 x 32), with dropout,
/// and a checkpoint every 20 steps.
fn long_run(out: &Path) -> Vec<String> {
    let sets = vec![
        "model={arch=\"mlp\", hidden=[64], dropout=0.2}".to_string(),
        "data.limit_train=20000".into(),
        "data.limit_test=500".into(),
        "checkpoint.every_steps=20".into(),
        "optimizer.schedule={kind=\"cosine\", warmup_epochs=0.5}".into(),
    ];
    args(
        &[
            "train",
            "--quiet",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--threads",
            "1",
        ],
        &sets,
        out,
    )
}

fn wait_for_checkpoint(children: &mut [&mut Child], run: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while newest_checkpoint(run).is_none() {
        for c in children.iter_mut() {
            assert!(
                c.try_wait().unwrap().is_none(),
                "a rank ended before it could be killed"
            );
        }
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn hash(p: PathBuf) -> String {
    kiln_package::sha256_hex(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// The package weights and the last checkpoint's tensors (model and optimizer), hashed.
fn fingerprint(run: &Path) -> (String, String) {
    (
        hash(run.join("package/weights.safetensors")),
        hash(newest_checkpoint(run).unwrap().join("tensors.safetensors")),
    )
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, started.elapsed());
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}: a hang");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_stderr(child: &mut Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
    s
}

#[test]
fn a_rank_killed_mid_epoch_is_named_by_the_other_and_the_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let o = launch(2, &long_run(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    // The same run, its ranks started as a scheduler would, with a 10-minute timeout:
    // rank 1 is killed after the first checkpoint.
    let run = dir.path().join("killed");
    let (port, a) = (free_port(), long_run(&run));
    let mut r0 = rank(0, 2, port, "600", &a);
    let mut r1 = rank(1, 2, port, "600", &a);
    wait_for_checkpoint(&mut [&mut r0, &mut r1], &run);
    r1.kill().unwrap(); // SIGKILL
    r1.wait().unwrap();
    // Rank 0 fails at its next collective, long before the timeout, naming rank 1.
    let (status, took) = wait_with_deadline(&mut r0, Duration::from_secs(60));
    let err = read_stderr(&mut r0);
    assert!(!status.success(), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(err.contains("lost rank 1"), "{err}");
    // Resumed on 2 ranks: the weights of the uninterrupted run, bit for bit.
    let o = launch(2, &["resume".into(), "--quiet".into(), run.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming from"), "{}", stderr(&o));
    assert_eq!(fingerprint(&run), fingerprint(&whole));
    let losses = |r: &Path| -> Vec<f64> {
        records(r, "epoch")
            .iter()
            .map(|e| e["train_loss"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(losses(&run), losses(&whole), "the log reads as one run");
}

#[test]
fn a_hung_rank_is_named_after_the_timeout_instead_of_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (port, a) = (free_port(), long_run(&run));
    let mut r0 = rank(0, 2, port, "5", &a);
    let mut r1 = rank(1, 2, port, "5", &a);
    wait_for_checkpoint(&mut [&mut r0, &mut r1], &run);
    let stop = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &r1.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    stop("-STOP"); // alive, holding its connections, answering nothing
    let (status, took) = wait_with_deadline(&mut r0, Duration::from_secs(60));
    stop("-KILL");
    r1.wait().unwrap();
    let err = read_stderr(&mut r0);
    assert!(!status.success(), "{err}");
    assert!(took >= Duration::from_secs(5), "before the timeout: {took:?} {err}");
    assert!(err.contains("lost rank 1"), "{err}");
}

/// Process `pid`'s environment variable `key` (from /proc).
fn env_of(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The children of `pid` (from /proc), with their RANK.
fn ranks_of(pid: u32) -> Vec<(u32, String)> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .filter_map(|c| {
            let env = std::fs::read(format!("/proc/{c}/environ")).ok()?;
            let rank = env
                .split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(b"RANK="))
                .map(|r| String::from_utf8_lossy(r).into_owned())?;
            Some((c, rank))
        })
        .collect()
}

#[test]
fn launch_stops_the_other_ranks_when_one_dies_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut l = launch_command(2, free_port(), &long_run(&run))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&mut [&mut l], &run);
    let ranks = ranks_of(l.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    // As torchrun: one OpenMP thread per rank unless the environment says otherwise.
    for (pid, _) in &ranks {
        assert_eq!(env_of(*pid, "OMP_NUM_THREADS").as_deref(), Some("1"));
    }
    let (pid, _) = ranks.iter().find(|(_, r)| r == "1").unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let (status, _) = wait_with_deadline(&mut l, Duration::from_secs(60));
    let err = read_stderr(&mut l);
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank 1 was killed by SIGKILL"), "{err}");
    assert!(err.contains("lost rank 1"), "rank 0's own report: {err}");
}

#[test]
fn sigterm_to_launch_stops_every_rank_at_one_step_and_the_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let o = launch(2, &long_run(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("stopped");
    let mut l = launch_command(2, free_port(), &long_run(&run))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&mut [&mut l], &run);
    assert!(Command::new("kill")
        .args(["-TERM", &l.id().to_string()])
        .status()
        .unwrap()
        .success());
    let (status, _) = wait_with_deadline(&mut l, Duration::from_secs(60));
    let err = read_stderr(&mut l);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted; checkpoint saved"), "{err}");
    let o = launch(2, &["resume".into(), "--quiet".into(), run.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fingerprint(&run), fingerprint(&whole));
}

#[test]
fn bad_launch_variables_are_refused_with_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let a = long_run(&dir.path().join("run"));
    let o = Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(&a)
        .env("WORLD_SIZE", "2")
        .env("RANK", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "29500")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("RANK=2 is not below WORLD_SIZE=2"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(&a)
        .env("WORLD_SIZE", "2")
        .env_remove("RANK")
        .output()
        .unwrap();
    assert!(stderr(&o).contains("RANK"), "{}", stderr(&o));
    let o = kiln_train(&["launch", "--nproc", "2", "--", "eval", "--package", "x"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("launch runs `train ...` or `resume RUN`"),
        "{}",
        stderr(&o)
    );
}

fn quick_run(out: &Path) -> Vec<String> {
    let sets = vec![
        "model={arch=\"mlp\", hidden=[32]}".to_string(),
        "data.limit_train=3000".into(),
        "data.limit_test=500".into(),
    ];
    args(&["train", "--quiet", "--epochs", "1", "--threads", "1"], &sets, out)
}

#[test]
fn train_with_resume_continues_a_run_and_refuses_ranks_at_different_steps() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = launch(2, &quick_run(&run));
    assert!(o.status.success(), "{}", stderr(&o));
    let before = fingerprint(&run);
    // Started again with --resume (as a restarted PyTorchJob does): it continues the run
    // (here already finished) instead of refusing the folder.
    let mut again = quick_run(&run);
    again.insert(1, "--resume".into());
    let o = launch(2, &again);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming from"), "{}", stderr(&o));
    assert_eq!(fingerprint(&run), before);
    // Rank 1 cannot see rank 0's folder: it would start from scratch, so both refuse.
    let elsewhere = dir.path().join("elsewhere");
    let mut other = quick_run(&elsewhere);
    other.insert(1, "--resume".into());
    let port = free_port();
    let mut r0 = rank(0, 2, port, "60", &again);
    let mut r1 = rank(1, 2, port, "60", &other);
    let (s0, _) = wait_with_deadline(&mut r0, Duration::from_secs(60));
    let (s1, _) = wait_with_deadline(&mut r1, Duration::from_secs(60));
    let (e0, e1) = (read_stderr(&mut r0), read_stderr(&mut r1));
    assert!(!s0.success() && !s1.success(), "{e0}\n{e1}");
    assert!(
        e0.contains("the ranks do not start at the same step: rank 0 at step 11, rank 1 at step 0"),
        "{e0}"
    );
    assert!(!elsewhere.join("checkpoints").exists(), "rank 1 wrote nothing");
}
