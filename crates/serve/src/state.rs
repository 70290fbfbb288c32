//! `AppState`: the served models, shared by every request handler, and how they follow
//! the repository on disk ([`AppState::sync`]).

use crate::engine::Engine;
use crate::metrics::{lock, GenerationMetrics, InstanceMetrics, Metrics};
use crate::policy::{check_instances, ModelSettings};
use crate::worker::Job;
use crate::{scan, DecodePool, Error, Result, ServeConfig, VersionPolicy};
use kiln_package::{Manifest, Package, Task};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::oneshot;

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

/// What a version folder looked like when it failed to load: a changed folder is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

fn fingerprint(dir: &Path) -> Fingerprint {
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

#[derive(Clone, Debug)]
struct Failure {
    error: String,
    fingerprint: Fingerprint,
}

/// One model: its serving versions and what failed.
#[derive(Default)]
struct Entry {
    versions: BTreeMap<u64, Arc<Model>>,
    failed: BTreeMap<u64, Failure>,
    /// Unloaded through the management API: left alone by polling until loaded again.
    unloaded: bool,
    /// Instances set through the management API, over the model's settings.
    instances: Option<usize>,
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

/// The server's shared state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    models: Arc<RwLock<BTreeMap<String, Entry>>>,
    /// Serialises repository syncs; remembers the warnings already given.
    syncing: Arc<Mutex<BTreeSet<String>>>,
    /// The configuration.
    pub config: Arc<ServeConfig>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Where images are decoded.
    pub decoder: Arc<DecodePool>,
}

impl AppState {
    /// Loads what the repository holds under each model's version policy; versions that
    /// fail are reported in the returned log lines and the others are served. Fails only
    /// when the repository cannot be read.
    pub fn load(config: ServeConfig) -> Result<(AppState, Vec<String>)> {
        let state = AppState {
            models: Arc::default(),
            syncing: Arc::default(),
            metrics: Arc::new(Metrics::default()),
            decoder: Arc::new(DecodePool::new(match config.decode_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            })),
            config: Arc::new(config),
        };
        let log = state.sync(None)?;
        Ok((state, log))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

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
            .read()
            .keys()
            .filter(|n| !on_disk.contains_key(*n) && only.is_none_or(|o| o == n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = self.write().remove(&name) {
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
        let (mut serving, mut failed, override_instances) = match self.read().get(name) {
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
        let mut models = self.write();
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
        if let Some(e) = self.write().get_mut(name) {
            e.unloaded = false;
        }
        let log = self.sync(Some(name))?;
        let models = self.read();
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
        let mut models = self.write();
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
            let mut models = self.write();
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

    /// The Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        let served: Vec<Arc<Model>> = self
            .read()
            .values()
            .flat_map(|e| e.versions.values().cloned())
            .collect();
        let instances: Vec<(String, u64, &InstanceMetrics)> = served
            .iter()
            .map(|m| (m.name.clone(), m.version, &**m.engine.metrics()))
            .collect();
        let mut out = self.metrics.render(&instances);
        let generation: Vec<(String, u64, &GenerationMetrics)> = served
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.version, m.engine.generation_metrics()?)))
            .collect();
        GenerationMetrics::render(&mut out, &generation);
        out
    }

    /// The `model` and `version` labels of a request's metrics: the names from its URL
    /// where the server knows them (a model in the repository, a version served or failed),
    /// else [`UNKNOWN_LABEL`], so that a client cannot create series at will.
    pub fn metric_labels<'a>(&self, model: &'a str, version: &'a str) -> (&'a str, &'a str) {
        if model.is_empty() {
            return (model, version);
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
        let models = self.read();
        let e = models.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "no model named {name:?}; served models: {:?}",
                names_of(&models)
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

    /// The default classifier for endpoints that name no model (`/predict`): the only
    /// one, else an error. Language models served beside it do not count.
    pub fn only(&self) -> Result<Arc<Model>> {
        let names: Vec<String> = {
            let models = self.read();
            models
                .iter()
                .filter(|(_, e)| e.versions.values().any(|m| m.manifest.task == Task::Classification))
                .map(|(n, _)| n.clone())
                .collect()
        };
        match names.as_slice() {
            [one] => self.get(one, None),
            [] => Err(Error::Unavailable("no model is loaded".into())),
            _ => Err(Error::BadRequest(format!(
                "several models are served; name one of {names:?}"
            ))),
        }
    }

    /// Refuses a request of more samples than one batch may hold, before any work on it.
    pub fn check_batch(&self, samples: usize) -> Result<()> {
        if samples > self.config.max_batch {
            return Err(Error::BatchTooLarge {
                samples,
                max: self.config.max_batch,
            });
        }
        Ok(())
    }

    /// Logits of model-ready samples from `model`, batched with other requests.
    pub async fn infer(&self, model: &Model, samples: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let (tx, rx) = oneshot::channel();
        model.engine.classifier(&model.name)?.submit(
            Job {
                queued: std::time::Instant::now(),
                samples,
                reply: tx,
            },
            &model.name,
        )?;
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(e))) if e.caused_by_input => Err(Error::BadRequest(e.message)),
            Ok(Ok(Err(e))) => Err(Error::Internal(e.message)),
            Ok(Err(_)) => Err(Error::Unavailable(format!(
                "model {} stopped while answering; retry",
                model.name
            ))),
            Err(_) => Err(Error::Timeout(self.config.request_timeout.as_millis())),
        }
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

/// Names of the models in `models` with at least one version served.
fn names_of(models: &BTreeMap<String, Entry>) -> Vec<String> {
    models
        .iter()
        .filter(|(_, e)| !e.versions.is_empty())
        .map(|(n, _)| n.clone())
        .collect()
}

fn describe_failures(failed: &BTreeMap<u64, Failure>) -> String {
    if failed.is_empty() {
        return "no version folder holds a package".into();
    }
    failed
        .iter()
        .map(|(v, f)| format!("version {v} failed to load: {}", f.error))
        .collect::<Vec<_>>()
        .join("; ")
}
