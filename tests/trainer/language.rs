//! Language-model training end to end with the real binary on real text (eight short
//! books of the King James Bible that the set-up prepares in data/kjv): the loss goes
//! down, the package holds the tokenizer and reloads, and a run killed part-way and
//! resumed ends with the same weights, bit for bit, as a run left alone.

use crate::util::{kiln_train, kjv_books, records, stderr, stdout, with_sets};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn args(dir: &Path, out: &Path) -> Vec<String> {
    let books = kjv_books(dir);
    let sets = [
        "task=\"language-model\"".to_string(),
        "model={arch=\"decoder\", width=64, layers=2, heads=4, kv_heads=2, ffn_width=128, context=64, dropout=0.1}"
            .to_string(),
        format!("text.corpus={{format=\"folder\", path=\"{}\"}}", books.display()),
        "text.vocab_size=512".into(),
        "text.seq_len=64".into(),
        "text.validation=0.25".into(),
        format!("text.cache_dir=\"{}\"", dir.join("cache").display()),
        "monitor=\"val_loss\"".into(),
        "eval_batch_size=32".into(),
        "eval_every_steps=15".into(),
        "checkpoint.every_steps=10".into(),
        "optimizer={kind=\"adamw\", lr=0.003, weight_decay=0.1, clip_grad_norm=1.0, schedule={kind=\"cosine\", warmup_epochs=0.2}}".into(),
    ];
    with_sets(&["train", "--quiet", "--epochs", "3", "--batch-size", "16"], &sets, out)
}

fn weights_hash(run: &Path) -> String {
    kiln_package::sha256_hex(&std::fs::read(run.join("package/weights.safetensors")).unwrap())
}

#[test]
fn a_language_model_trains_on_real_text_and_packages_its_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let a = args(dir.path(), &run);
    let o = kiln_train(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let epochs = records(&run, "epoch");
    assert_eq!(epochs.len(), 3);
    let val = |e: &serde_json::Value, k: &str| e["val"][k].as_f64().unwrap();
    // Learning happened: validation loss falls each epoch, and bits per byte is far below
    // the 8 bits of a byte and the ~4.4 of English letters guessed by frequency alone.
    assert!(val(&epochs[1], "loss") < val(&epochs[0], "loss"), "{epochs:?}");
    assert!(val(&epochs[2], "loss") < val(&epochs[1], "loss"), "{epochs:?}");
    let bpb = val(&epochs[2], "bits_per_byte");
    assert!(bpb > 0.5 && bpb < 4.0, "bits per byte {bpb}");
    assert!((val(&epochs[2], "perplexity") - val(&epochs[2], "loss").exp()).abs() < 1e-6);
    // Evaluations in the middle of epochs are logged too, and step records count tokens.
    assert!(!records(&run, "eval").is_empty());
    assert!(records(&run, "step")[0]["tokens_per_sec"].as_f64().unwrap() > 0.0);
    // The package holds the run's tokenizer and reloads as a language model.
    let pkg = kiln_package::LanguagePackage::load(run.join("package"), kiln_tensor::Device::Cpu).unwrap();
    let tok = std::fs::read(run.join("tokenizer.json")).unwrap();
    assert_eq!(pkg.tokenizer.sha256(), kiln_package::sha256_hex(&tok));
    assert_eq!(pkg.model.spec().vocab, 512);
    assert!(pkg.manifest.training.unwrap().metrics["val_bits_per_byte"] > 0.0);
    generation_from_the_package(&run.join("package"));
    // The second run reads the token cache the first one wrote.
    let again = dir.path().join("again");
    let b = args(dir.path(), &again);
    let o = kiln_train(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("token cache:"), "{}", stderr(&o));
    assert_eq!(weights_hash(&again), weights_hash(&run), "same seed, same run");
}

#[test]
fn a_language_model_run_killed_and_resumed_matches_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let a = args(dir.path(), &whole);
    let o = kiln_train(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("killed");
    let a = args(dir.path(), &run);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_dir(run.join("checkpoints")).map_or(0, |d| d.count()) < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no checkpoint within 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, part-way
    child.wait().unwrap();
    let o = kiln_train(&["resume", "--quiet", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming from"), "{}", stderr(&o));
    assert_eq!(weights_hash(&run), weights_hash(&whole));
    let losses = |r: &Path| {
        records(r, "epoch")
            .iter()
            .map(|e| e["train_loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&run), losses(&whole), "the log reads as one run");
}

/// `kiln-train generate`: the KV cache changes nothing but speed, the seed makes sampling
/// repeatable, stop strings cut the text, and bad values are refused.
fn generation_from_the_package(package: &Path) {
    let pkg = package.display().to_string();
    let generate = |extra: &[&str]| {
        // An undertrained model's greedy text repeats its most frequent token: a
        // repetition penalty makes it vary, so that the comparisons below mean something.
        let mut a = vec![
            "generate",
            "--package",
            pkg.as_str(),
            "--prompt",
            "And the LORD",
            "--max-tokens",
            "40",
            "--repetition-penalty",
            "1.5",
        ];
        a.extend_from_slice(extra);
        kiln_train(&a)
    };
    let cached = generate(&[]);
    assert!(cached.status.success(), "{}", stderr(&cached));
    let text = stdout(&cached);
    assert!(text.trim().len() > 20, "{text:?}");
    assert!(stderr(&cached).contains("tokens/s"), "{}", stderr(&cached));
    let uncached = generate(&["--no-cache"]);
    assert!(uncached.status.success(), "{}", stderr(&uncached));
    assert_eq!(stdout(&uncached), text, "greedy text with and without the KV cache");
    let sampled = |seed: &str| stdout(&generate(&["--temperature", "0.9", "--top-p", "0.95", "--seed", seed]));
    assert_eq!(sampled("7"), sampled("7"));
    assert_ne!(sampled("7"), sampled("8"));
    // Stop at the first word of the greedy text after its first character: the output is
    // what came before it.
    let word = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{text:?}"))
        .to_string();
    let cut = generate(&["--stop", &word]);
    let at = text.find(&word).unwrap();
    assert_eq!(stdout(&cut), format!("{}\n", &text[..at]));
    assert!(stderr(&cut).contains("finish: Stop"), "{}", stderr(&cut));
    let bad = generate(&["--temperature", "-1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("temperature -1 must be 0 (greedy) or positive"),
        "{}",
        stderr(&bad)
    );
    let classifier = kiln_train(&["generate", "--package", "/nonexistent", "--prompt", "x"]);
    assert!(!classifier.status.success());
}
