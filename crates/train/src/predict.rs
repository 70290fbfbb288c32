//! Predicting the classes of input files (PNG/JPEG images or JSON arrays) with a package.

use crate::{Error, Result};
use kiln_package::{top_k, ClassScore, Package};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The prediction for one input file.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// The file.
    pub file: PathBuf,
    /// The most probable class.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// Its probability.
    pub probability: f32,
    /// The `k` most probable classes.
    pub top: Vec<ClassScore>,
}

/// Reads one input file as model-ready values: `.png`/`.jpg`/`.jpeg` are decoded as the
/// manifest says; `.json` holds numbers (flat or nested) as a dataset gives them.
fn read_input(package: &Package, path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let what = path.display().to_string();
    match ext.as_deref() {
        Some("png" | "jpg" | "jpeg") => package
            .manifest
            .prepare_image(&bytes, &what)
            .map_err(|e| Error::Input(format!("{what}: {e}"))),
        Some("json") => {
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::Input(format!("{what}: not valid JSON: {e}")))?;
            let mut values = Vec::new();
            flatten(&value, &mut values, 0).map_err(|e| Error::Input(format!("{what}: {e}")))?;
            package
                .manifest
                .prepare_values(values)
                .map_err(|e| Error::Input(format!("{what}: {e}")))
        }
        _ => Err(Error::Input(format!(
            "{what}: unsupported input; expected a .png, .jpg, .jpeg or .json file"
        ))),
    }
}

fn flatten(v: &serde_json::Value, out: &mut Vec<f32>, depth: usize) -> std::result::Result<(), String> {
    if depth > 8 {
        return Err("arrays are nested deeper than 8 levels".into());
    }
    match v {
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().ok_or("a number is out of range")? as f32);
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out, depth + 1)),
        other => Err(format!("expected numbers or arrays of numbers, found {other}")),
    }
}

/// Predicts each file's class with `package`, in one batch; `k` classes per file.
pub fn predict_files(package: &Package, files: &[PathBuf], k: usize) -> Result<Vec<Prediction>> {
    package.require_classifier()?;
    let samples = files
        .iter()
        .map(|f| read_input(package, f))
        .collect::<Result<Vec<_>>>()?;
    let probs = package.probabilities(&samples)?;
    let labels = &package.manifest.output.labels;
    Ok(files
        .iter()
        .zip(probs)
        .map(|(file, p)| {
            let top = top_k(&p, k.max(1), labels);
            let best = top[0].clone();
            Prediction {
                file: file.clone(),
                class: best.class,
                label: best.label,
                probability: best.probability,
                top,
            }
        })
        .collect())
}
