//! The registry: which model versions are served, which failed and why, and the queries
//! every route asks of it (a model by name and version, the index, readiness, metric
//! labels). It holds and answers; [`crate::watch`] changes it to follow the repository.

use crate::engine::Engine;
use crate::watch::Fingerprint;
use crate::{Error, Result};
use kiln_package::{Manifest, Task};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The metric label of a model or version the server does not know.
pub const UNKNOWN_LABEL: &str = "_unknown";

/// A served model version.
pub struct Model {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its manifest.
    pub manifest: Manifest,
    /// What serves it: its instances.
    pub engine: Engine,
}

#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) error: String,
    pub(crate) fingerprint: Fingerprint,
}

/// One model: its serving versions and what failed.
#[derive(Default)]
pub(crate) struct Entry {
    pub(crate) versions: BTreeMap<u64, Arc<Model>>,
    pub(crate) failed: BTreeMap<u64, Failure>,
    /// Unloaded through the management API: left alone by polling until loaded again.
    pub(crate) unloaded: bool,
    /// Instances set through the management API, over the model's settings.
    pub(crate) instances: Option<usize>,
}

/// A model version's state, as the management API lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VersionState {
    /// The model.
    pub name: String,
    /// The version (empty for a model with no version to list).
    pub version: String,
    /// `READY`, `UNHEALTHY` (no instance running now), `FAILED` or `UNLOADED`.
    pub state: &'static str,
    /// Why it is not ready.
    pub reason: String,
    /// Instances running.
    pub instances: usize,
}

/// The served models and what failed, by name.
#[derive(Default)]
pub struct Registry {
    models: RwLock<BTreeMap<String, Entry>>,
}

impl Registry {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every served version.
    pub fn served(&self) -> Vec<Arc<Model>> {
        self.read()
            .values()
            .flat_map(|e| e.versions.values().cloned())
            .collect()
    }

    /// Every model version the server knows, with its state.
    pub fn index(&self) -> Vec<VersionState> {
        let mut out = Vec::new();
        for (name, e) in self.read().iter() {
            if e.unloaded {
                out.push(VersionState {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNLOADED",
                    reason: "unloaded through the management API".into(),
                    instances: 0,
                });
            }
            for (v, m) in &e.versions {
                let healthy = m.engine.healthy();
                out.push(VersionState {
                    name: name.clone(),
                    version: v.to_string(),
                    state: if healthy { "READY" } else { "UNHEALTHY" },
                    reason: if healthy {
                        String::new()
                    } else {
                        "no instance is running; restarting".into()
                    },
                    instances: m.engine.instances(),
                });
            }
            for (v, f) in &e.failed {
                out.push(VersionState {
                    name: name.clone(),
                    version: v.to_string(),
                    state: "FAILED",
                    reason: f.error.clone(),
                    instances: 0,
                });
            }
        }
        out
    }

    /// The `model` and `version` labels of a request's metrics: the names from its URL
    /// where the server knows them (a model in the repository, a version served or failed),
    /// else [`UNKNOWN_LABEL`], so that a client cannot create series at will.
    pub fn metric_labels<'a>(&self, model: &'a str, version: &'a str) -> (&'a str, &'a str) {
        if model.is_empty() {
            // No model, no version: a version in a URL without a model name
            // (`/v2/models//versions/7/infer`) is not a series of its own.
            return (model, if version.is_empty() { "" } else { UNKNOWN_LABEL });
        }
        let models = self.read();
        let Some(e) = models.get(model) else {
            return (UNKNOWN_LABEL, if version.is_empty() { "" } else { UNKNOWN_LABEL });
        };
        let known_version = version.is_empty()
            || version.parse::<u64>().is_ok_and(|v| {
                // Canonical spelling only ("01" is not a second series for version 1).
                v.to_string() == version && (e.versions.contains_key(&v) || e.failed.contains_key(&v))
            });
        (model, if known_version { version } else { UNKNOWN_LABEL })
    }

    /// Names of the models with at least one version served.
    pub fn names(&self) -> Vec<String> {
        names_of(&self.read())
    }

    /// Whether the server can answer: some version is served and each served version has
    /// a running instance.
    pub fn ready(&self) -> bool {
        let models = self.read();
        let mut served = models.values().flat_map(|e| e.versions.values()).peekable();
        served.peek().is_some() && served.all(|m| m.engine.healthy())
    }

    /// The served versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.read()
            .get(name)
            .map(|e| e.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Versions of `name` that failed to load, with the reason.
    pub fn failures(&self, name: &str) -> Vec<(u64, String)> {
        self.read()
            .get(name)
            .map(|e| e.failed.iter().map(|(v, f)| (*v, f.error.clone())).collect())
            .unwrap_or_default()
    }

    /// A model version, the latest served when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<Model>> {
        let version = version
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::BadRequest(format!("version {v:?} is not a positive integer")))
            })
            .transpose()?;
        find(&self.read(), name, version)
    }

    /// The default classifier for endpoints that name no model (`/predict`): the only
    /// one, else an error. Language models served beside it do not count.
    pub fn only(&self) -> Result<Arc<Model>> {
        let models = self.read();
        let mut classifiers = models
            .iter()
            .filter(|(_, e)| e.versions.values().any(|m| m.manifest.task == Task::Classification))
            .map(|(n, _)| n);
        match (classifiers.next(), classifiers.next()) {
            (Some(one), None) => find(&models, one, None),
            (None, _) => Err(Error::Unavailable("no model is loaded".into())),
            (Some(a), Some(b)) => {
                let names: Vec<&String> = [a, b].into_iter().chain(classifiers).collect();
                Err(Error::BadRequest(format!(
                    "several models are served; name one of {names:?}"
                )))
            }
        }
    }
}

/// Model `name` at `version` (the latest served for `None`) in `models`.
fn find(models: &BTreeMap<String, Entry>, name: &str, version: Option<u64>) -> Result<Arc<Model>> {
    let e = models.get(name).ok_or_else(|| {
        Error::NotFound(format!(
            "no model named {name:?}; served models: {:?}",
            names_of(models)
        ))
    })?;
    if e.versions.is_empty() {
        return Err(Error::Unavailable(if e.unloaded {
            format!("model {name} is unloaded")
        } else {
            format!("model {name} has no version ready: {}", describe_failures(&e.failed))
        }));
    }
    let found = match version {
        None => e.versions.values().next_back(),
        Some(v) => e.versions.get(&v),
    };
    found.cloned().ok_or_else(|| {
        let v = version.map(|v| v.to_string()).unwrap_or_default();
        let why = match version.and_then(|v| e.failed.get(&v)) {
            Some(f) => format!(" (it failed to load: {})", f.error),
            None => String::new(),
        };
        Error::NotFound(format!(
            "model {name:?} has no version {v} served{why}; served versions: {:?}",
            e.versions.keys().collect::<Vec<_>>()
        ))
    })
}

/// Names of the models in `models` with at least one version served.
fn names_of(models: &BTreeMap<String, Entry>) -> Vec<String> {
    models
        .iter()
        .filter(|(_, e)| !e.versions.is_empty())
        .map(|(n, _)| n.clone())
        .collect()
}

pub(crate) fn describe_failures(failed: &BTreeMap<u64, Failure>) -> String {
    if failed.is_empty() {
        return "no version folder holds a package".into();
    }
    failed
        .iter()
        .map(|(v, f)| format!("version {v} failed to load: {}", f.error))
        .collect::<Vec<_>>()
        .join("; ")
}
