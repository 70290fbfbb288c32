//! Following the repository on disk: loading the versions each model's policy wants,
//! unloading the others, remembering what failed until its folder changes, the management
//! API's load, unload and instance changes, and the thread that polls.

use crate::engine::Engine;
use crate::metrics::lock;
use crate::policy::{check_instances, ModelSettings};
use crate::registry::{describe_failures, Failure, Model};
use crate::{scan, AppState, Error, Result, VersionPolicy};
use kiln_package::Package;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// What a version folder looked like when it failed to load: a changed folder is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

pub(crate) fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Vec<(String, u64, Option<SystemTime>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        meta.len(),
                        meta.modified().ok(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    Fingerprint(files)
}

impl AppState {
    /// Brings the served versions in line with the repository (all models, or only
    /// `only`): loads versions the policy now wants, unloads the others (each finishes
    /// its in-flight requests first), and records versions that fail to load; those are
    /// retried once their folder changes. Returns what it did, one line each.
    pub fn sync(&self, only: Option<&str>) -> Result<Vec<String>> {
        let mut warned = lock(&self.syncing);
        let mut log = Vec::new();
        let (dirs, warnings) = scan(&self.config.repository)?;
        for w in warnings {
            if warned.insert(w.clone()) {
                log.push(format!("warning: {w}"));
            }
        }
        let mut on_disk: BTreeMap<String, BTreeMap<u64, PathBuf>> = BTreeMap::new();
        for d in dirs {
            on_disk.entry(d.name).or_default().insert(d.version, d.dir);
        }
        let gone: Vec<String> = self
            .registry
            .read()
            .keys()
            .filter(|n| !on_disk.contains_key(*n) && only.is_none_or(|o| o == n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = self.registry.write().remove(&name) {
                for v in entry.versions.keys() {
                    log.push(format!("unloaded {name} version {v}: its folder was removed"));
                }
            }
        }
        for (name, versions) in &on_disk {
            if only.is_none_or(|o| o == name) {
                self.sync_model(name, versions, &mut warned, &mut log);
            }
        }
        Ok(log)
    }

    fn sync_model(
        &self,
        name: &str,
        disk: &BTreeMap<u64, PathBuf>,
        warned: &mut BTreeSet<String>,
        log: &mut Vec<String>,
    ) {
        let (mut serving, mut failed, override_instances) = match self.registry.read().get(name) {
            Some(e) if e.unloaded => return,
            Some(e) => (e.versions.clone(), e.failed.clone(), e.instances),
            None => Default::default(),
        };
        let settings = match ModelSettings::read(&self.config.repository.join(name)) {
            Ok(s) => s,
            Err(e) => {
                // Keep serving what is served; say so once per distinct problem.
                let msg = format!("warning: model {name} is left as it is: {e}");
                if warned.insert(msg.clone()) {
                    log.push(msg);
                }
                return;
            }
        };
        let policy: VersionPolicy = settings
            .version_policy
            .unwrap_or_else(|| self.config.version_policy.clone());
        let instances = override_instances
            .or(settings.instances)
            .unwrap_or(self.config.instances);
        failed.retain(|v, f| disk.get(v).is_some_and(|d| fingerprint(d) == f.fingerprint));
        // Versions that changed while loading (still being copied) wait for the next sync.
        let mut unsettled = BTreeSet::new();
        let wanted = loop {
            let eligible: Vec<u64> = disk
                .keys()
                .filter(|v| !failed.contains_key(v) && !unsettled.contains(*v))
                .copied()
                .collect();
            let wanted = policy.select(&eligible);
            let missing: Vec<u64> = wanted.iter().filter(|v| !serving.contains_key(v)).copied().collect();
            if missing.is_empty() {
                break wanted;
            }
            for v in missing {
                let dir = &disk[&v];
                let before = fingerprint(dir);
                match self.load_version(name, v, dir, instances) {
                    Ok(m) => {
                        log.push(format!("serving {name} version {v} ({instances} instance(s))"));
                        serving.insert(v, Arc::new(m));
                    }
                    Err(e) if fingerprint(dir) != before => {
                        log.push(format!("{name} version {v} is still being written ({e}); will retry"));
                        unsettled.insert(v);
                    }
                    Err(e) => {
                        self.metrics
                            .failed_loads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        log.push(format!("warning: model {name} version {v} failed to load: {e}"));
                        failed.insert(
                            v,
                            Failure {
                                error: e.to_string(),
                                fingerprint: before,
                            },
                        );
                    }
                }
            }
        };
        serving.retain(|v, _| {
            let keep = wanted.contains(v);
            if !keep {
                log.push(format!("unloaded {name} version {v} (version policy {policy})"));
            }
            keep
        });
        for (v, m) in &serving {
            if m.engine.instances() != instances {
                match m.engine.set_instances(instances) {
                    Ok(()) => log.push(format!("{name} version {v} now runs {instances} instance(s)")),
                    Err(e) => log.push(format!("warning: {name} version {v}: cannot start instances: {e}")),
                }
            }
        }
        let mut models = self.registry.write();
        let entry = models.entry(name.to_string()).or_default();
        if !entry.unloaded {
            entry.versions = serving;
        }
        entry.failed = failed;
    }

    fn load_version(&self, name: &str, version: u64, dir: &Path, instances: usize) -> Result<Model> {
        let manifest = Package::read_manifest(dir)?;
        let engine = Engine::spawn(
            &manifest,
            dir,
            instances,
            self.config.clone(),
            format!("{name}-{version}"),
        )?;
        Ok(Model {
            name: name.to_string(),
            version,
            manifest,
            engine,
        })
    }

    /// Loads `name` from the repository again after an unload (or now, without waiting
    /// for the next poll). Fails when the repository has no such model or none of the
    /// versions its policy wants could be loaded.
    pub fn load_model(&self, name: &str) -> Result<Vec<String>> {
        if let Some(e) = self.registry.write().get_mut(name) {
            e.unloaded = false;
        }
        let log = self.sync(Some(name))?;
        let models = self.registry.read();
        match models.get(name) {
            None => Err(Error::NotFound(format!(
                "the repository {} has no model {name:?}",
                self.config.repository.display()
            ))),
            Some(e) if e.versions.is_empty() => Err(Error::BadRequest(format!(
                "model {name} could not be loaded: {}",
                describe_failures(&e.failed)
            ))),
            Some(_) => Ok(log),
        }
    }

    /// Stops serving `name` (in-flight requests finish) until [`AppState::load_model`].
    pub fn unload_model(&self, name: &str) -> Result<Vec<u64>> {
        let mut models = self.registry.write();
        let e = models
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(format!("no model named {name:?}")))?;
        e.unloaded = true;
        let versions = std::mem::take(&mut e.versions);
        Ok(versions.into_keys().collect())
    }

    /// Sets the instances of every served version of `name`; kept over its settings file.
    pub fn set_instances(&self, name: &str, n: usize) -> Result<()> {
        let n = check_instances(n)?;
        let served: Vec<Arc<Model>> = {
            let mut models = self.registry.write();
            let e = models
                .get_mut(name)
                .ok_or_else(|| Error::NotFound(format!("no model named {name:?}")))?;
            e.instances = Some(n);
            e.versions.values().cloned().collect()
        };
        for m in served {
            m.engine.set_instances(n)?;
        }
        Ok(())
    }

    /// Polls the repository every `config.poll_interval` on a thread of its own, logging
    /// what changed. Does nothing when polling is off.
    pub fn start_polling(&self) -> Result<()> {
        let Some(interval) = self.config.poll_interval else {
            return Ok(());
        };
        let state = self.clone();
        std::thread::Builder::new()
            .name("kiln-repository-poll".into())
            .spawn(move || {
                let mut last_error = String::new();
                loop {
                    std::thread::sleep(interval);
                    match state.sync(None) {
                        Ok(lines) => {
                            last_error.clear();
                            log_lines(&lines);
                        }
                        Err(e) => {
                            // The repository is unreadable (an unmounted volume?): keep
                            // serving what is loaded, and say so once.
                            let msg = e.to_string();
                            if msg != last_error {
                                tracing::warn!(
                                    repository = %state.config.repository.display(),
                                    error = %msg,
                                    "cannot scan the repository, serving what is loaded: {msg}"
                                );
                                last_error = msg;
                            }
                        }
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| Error::Internal(format!("cannot start the repository poller: {e}")))
    }
}

/// Logs what [`AppState::sync`] reports: lines starting `warning: ` as warnings, the
/// rest as information.
pub fn log_lines(lines: &[String]) {
    for l in lines {
        match l.strip_prefix("warning: ") {
            Some(w) => tracing::warn!(target: "kiln_serve::repository", "{w}"),
            None => tracing::info!(target: "kiln_serve::repository", "{l}"),
        }
    }
}
