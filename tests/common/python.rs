//! The project's Python (`.venv`, made by scripts/setup.sh) running a test script: a
//! PyTorch reference or an independent client. Shared by the test binaries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `script` (a path from the repository's root) with `args`, `stdin` written to it,
/// under the project's Python: its standard output, or, when it fails, what it printed.
/// `LD_LIBRARY_PATH` is removed so that PyTorch loads the libraries of its own wheel.
pub fn run(script: &str, args: &[&str], stdin: &[u8]) -> Result<Vec<u8>, String> {
    let py = root().join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh", py.display());
    let mut child = Command::new(py)
        .arg(root().join(script))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A script that fails early closes its input: what it printed says why.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{script} {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs tests/parity/torchscript_models.py (a model trained or built in PyTorch, saved as
/// TorchScript beside the outputs PyTorch gives) with `args`.
pub fn torchscript_models(args: &[&str]) {
    run("tests/parity/torchscript_models.py", args, b"").unwrap_or_else(|e| panic!("{e}"));
}
