//! The model repository on disk: `<repo>/<model>/<version>/`, versions positive integers.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One version folder of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelVersionDir {
    /// The model's name (the folder name).
    pub name: String,
    /// The version (the sub-folder name).
    pub version: u64,
    /// The package folder.
    pub dir: PathBuf,
}

/// Whether a model name is safe to use as a folder name and in URLs.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && !name.contains("..")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Lists the model versions in `repo`, sorted by name and version. Entries that are not
/// model folders (bad names, non-numeric versions) are skipped with a warning each.
pub fn scan(repo: &Path) -> Result<(Vec<ModelVersionDir>, Vec<String>)> {
    let entries =
        std::fs::read_dir(repo).map_err(|e| Error::Internal(format!("model repository {}: {e}", repo.display())))?;
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    for model in entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
        let name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_name(&name) {
            warnings.push(format!(
                "{}: not a valid model name (letters, digits, -, _, .)",
                model.display()
            ));
            continue;
        }
        let Ok(versions) = std::fs::read_dir(&model) else {
            continue;
        };
        for v in versions.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
            let vname = v
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match vname.parse::<u64>() {
                Ok(version) if version > 0 => found.push(ModelVersionDir {
                    name: name.clone(),
                    version,
                    dir: v,
                }),
                _ => warnings.push(format!("{}: version folders are positive integers", v.display())),
            }
        }
    }
    found.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok((found, warnings))
}
