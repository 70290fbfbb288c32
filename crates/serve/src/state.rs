//! `AppState`: what every request handler shares: the registry of served models
//! ([`crate::registry`]), kept in line with the repository ([`crate::watch`]), requests
//! handed to their engines ([`crate::dispatch`], [`crate::completion`]), the
//! configuration and the metrics.

use crate::metrics::{GenerationMetrics, InstanceMetrics, Metrics};
use crate::registry::{Model, Registry, VersionState};
use crate::{DecodePool, Result, ServeConfig};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The server's shared state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The served models.
    pub registry: Arc<Registry>,
    /// Serialises repository syncs; remembers the warnings already given.
    pub(crate) syncing: Arc<Mutex<BTreeSet<String>>>,
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
            registry: Arc::default(),
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

    /// The Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        let served: Vec<Arc<Model>> = self.registry.served();
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

    /// Every model version the server knows, with its state.
    pub fn index(&self) -> Vec<VersionState> {
        self.registry.index()
    }

    /// See [`Registry::metric_labels`].
    pub fn metric_labels<'a>(&self, model: &'a str, version: &'a str) -> (&'a str, &'a str) {
        self.registry.metric_labels(model, version)
    }

    /// Names of the models with at least one version served.
    pub fn names(&self) -> Vec<String> {
        self.registry.names()
    }

    /// See [`Registry::ready`].
    pub fn ready(&self) -> bool {
        self.registry.ready()
    }

    /// The served versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.registry.versions(name)
    }

    /// Versions of `name` that failed to load, with the reason.
    pub fn failures(&self, name: &str) -> Vec<(u64, String)> {
        self.registry.failures(name)
    }

    /// A model version, the latest served when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<Model>> {
        self.registry.get(name, version)
    }

    /// See [`Registry::only`].
    pub fn only(&self) -> Result<Arc<Model>> {
        self.registry.only()
    }
}
