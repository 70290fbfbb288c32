//! Which versions of a model are served ([`VersionPolicy`]), and a model's own settings
//! file, `<repo>/<model>/model.toml` ([`ModelSettings`]).

use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Which of a model's versions are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions (`latest:N`; `latest` is `latest:1`).
    Latest(usize),
    /// Every version (`all`).
    All,
    /// These versions only (`specific:1,3`).
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl std::str::FromStr for VersionPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::BadRequest(format!(
                "version policy {s:?} is not understood; expected \"latest:N\" (N >= 1), \"all\" or \"specific:V1,V2,...\""
            ))
        };
        let s = s.trim();
        match s.split_once(':') {
            None if s == "all" => Ok(VersionPolicy::All),
            None if s == "latest" => Ok(VersionPolicy::Latest(1)),
            Some(("latest", n)) => match n.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(VersionPolicy::Latest(n)),
                _ => Err(bad()),
            },
            Some(("specific", list)) => {
                let versions = list
                    .split(',')
                    .map(|v| v.trim().parse::<u64>().ok().filter(|v| *v > 0))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(bad)?;
                Ok(VersionPolicy::Specific(versions))
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionPolicy::Latest(n) => write!(f, "latest:{n}"),
            VersionPolicy::All => write!(f, "all"),
            VersionPolicy::Specific(v) => {
                let list: Vec<String> = v.iter().map(u64::to_string).collect();
                write!(f, "specific:{}", list.join(","))
            }
        }
    }
}

impl VersionPolicy {
    /// The versions to serve out of `available` (ascending), ascending.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::All => available.to_vec(),
            VersionPolicy::Specific(wanted) => available.iter().copied().filter(|v| wanted.contains(v)).collect(),
        }
    }
}

/// A model's own settings, read from `<repo>/<model>/model.toml`; what it leaves out
/// comes from the server's flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSettings {
    /// Which versions to serve.
    pub version_policy: Option<VersionPolicy>,
    /// Model instances (threads, each holding the model) per version.
    pub instances: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    version_policy: Option<String>,
    instances: Option<usize>,
}

/// Most instances a model version may have.
pub const MAX_INSTANCES: usize = 64;

/// Checks an instance count.
pub fn check_instances(n: usize) -> Result<usize> {
    if (1..=MAX_INSTANCES).contains(&n) {
        Ok(n)
    } else {
        Err(Error::BadRequest(format!(
            "instances must be between 1 and {MAX_INSTANCES}, got {n}"
        )))
    }
}

impl ModelSettings {
    /// Reads `<model_dir>/model.toml`; no file means no settings.
    pub fn read(model_dir: &Path) -> Result<ModelSettings> {
        let path = model_dir.join("model.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelSettings::default()),
            Err(e) => return Err(Error::BadRequest(format!("{}: {e}", path.display()))),
        };
        let wrap = |msg: String| Error::BadRequest(format!("{}: {msg}", path.display()));
        let file: SettingsFile = toml::from_str(&text).map_err(|e| {
            wrap(format!(
                "{}; expected `version_policy = \"latest:N\" | \"all\" | \"specific:V1,V2\"` and `instances = N`",
                e.message()
            ))
        })?;
        Ok(ModelSettings {
            version_policy: file
                .version_policy
                .map(|p| p.parse())
                .transpose()
                .map_err(|e: Error| wrap(e.to_string()))?,
            instances: file
                .instances
                .map(check_instances)
                .transpose()
                .map_err(|e| wrap(e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_print_and_select() {
        let all = [1, 2, 5, 7];
        for (text, want) in [
            ("latest", vec![7]),
            ("latest:2", vec![5, 7]),
            ("latest:9", vec![1, 2, 5, 7]),
            ("all", vec![1, 2, 5, 7]),
            ("specific:2,7,8", vec![2, 7]),
        ] {
            let p: VersionPolicy = text.parse().unwrap();
            assert_eq!(p.select(&all), want, "{text}");
            assert_eq!(p.to_string().parse::<VersionPolicy>().unwrap(), p);
        }
        for bad in [
            "latest:0",
            "latest:x",
            "newest",
            "specific:",
            "specific:1,-2",
            "specific:0",
        ] {
            let e = bad.parse::<VersionPolicy>().unwrap_err().to_string();
            assert!(e.contains("expected \"latest:N\""), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ModelSettings::read(dir.path()).unwrap(), ModelSettings::default());
        std::fs::write(
            dir.path().join("model.toml"),
            "version_policy = \"all\"\ninstances = 3\n",
        )
        .unwrap();
        let s = ModelSettings::read(dir.path()).unwrap();
        assert_eq!(s.version_policy, Some(VersionPolicy::All));
        assert_eq!(s.instances, Some(3));
        for (text, needle) in [
            ("instances = 0", "between 1 and 64"),
            ("version_policy = \"newest\"", "not understood"),
            ("replicas = 2", "unknown field"),
        ] {
            std::fs::write(dir.path().join("model.toml"), text).unwrap();
            let e = ModelSettings::read(dir.path()).unwrap_err().to_string();
            assert!(e.contains("model.toml") && e.contains(needle), "{text}: {e}");
        }
    }
}
