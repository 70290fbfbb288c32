//! Running the built `kiln-train` the way a user does.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `kiln-train` with `args`. `LD_LIBRARY_PATH` is removed so that the test also
/// proves the binary finds libtorch by itself (through its rpath).
pub fn kiln_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln-train"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("KILN_CONFIG")
        .output()
        .expect("kiln-train runs")
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Trains a quick MLP (a few thousand samples, one epoch) into `out`.
pub fn quick_train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--set",
        "model={arch=\"mlp\", hidden=[32]}",
        "--set",
        "data.limit_train=3000",
        "--set",
        "data.limit_test=500",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    kiln_train(&args)
}

/// `base` arguments, then `--set S` for each of `sets`, then `--out OUT`.
pub fn with_sets(base: &[&str], sets: &[String], out: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for s in sets {
        a.push("--set".into());
        a.push(s.clone());
    }
    a.push("--out".into());
    a.push(out.display().to_string());
    a
}

/// `dir/books`: eight short books of the King James Bible (from data/kjv, which
/// scripts/setup.sh prepares), the corpus of the language-model tests.
pub fn kjv_books(dir: &std::path::Path) -> std::path::PathBuf {
    let kjv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/kjv");
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    for b in [
        "08-Ruth.txt",
        "29-Joel.txt",
        "31-Obad.txt",
        "32-Jonah.txt",
        "57-Phmn.txt",
        "63-2Jn.txt",
        "64-3Jn.txt",
        "65-Jude.txt",
    ] {
        std::fs::copy(kjv.join(b), books.join(b))
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh prepares the corpus)", kjv.join(b).display()));
    }
    books
}

/// The records of `kind` (`step`, `epoch`, `eval`, `test`) in a run's metrics.jsonl.
pub fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}
