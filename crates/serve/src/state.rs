//! `AppState`: the loaded models, shared by every request handler.

use crate::metrics::Metrics;
use crate::worker::{Job, Worker};
use crate::{scan, Error, Result, ServeConfig};
use kiln_package::Manifest;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A served model version.
pub struct Model {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its instance.
    pub worker: Worker,
}

/// The server's shared state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    models: Arc<BTreeMap<String, BTreeMap<u64, Arc<Model>>>>,
    /// The configuration.
    pub config: Arc<ServeConfig>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Loads every model version in the repository; versions that fail are reported in
    /// the returned warnings and the others are served.
    pub fn load(config: ServeConfig) -> Result<(AppState, Vec<String>)> {
        let (dirs, mut warnings) = scan(&config.repository)?;
        let mut models: BTreeMap<String, BTreeMap<u64, Arc<Model>>> = BTreeMap::new();
        let metrics = Arc::new(Metrics::default());
        for d in dirs {
            match Worker::spawn(&d.dir, &config, format!("{}-{}", d.name, d.version)) {
                Ok((worker, manifest)) => {
                    let m = Model {
                        name: d.name.clone(),
                        version: d.version,
                        manifest,
                        worker,
                    };
                    models.entry(d.name).or_default().insert(d.version, Arc::new(m));
                }
                Err(e) => {
                    metrics.failed_loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warnings.push(format!("model {} version {} failed to load: {e}", d.name, d.version))
                }
            }
        }
        Ok((
            AppState {
                models: Arc::new(models),
                config: Arc::new(config),
                metrics,
            },
            warnings,
        ))
    }

    /// The Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        let instances: Vec<(String, u64, &crate::metrics::InstanceMetrics)> = self
            .models
            .values()
            .flat_map(|vs| vs.values())
            .map(|m| (m.name.clone(), m.version, &*m.worker.metrics))
            .collect();
        self.metrics.render(&instances)
    }

    /// Names of the served models.
    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// The served versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.models
            .get(name)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A model version, the latest when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<Model>> {
        let versions = self
            .models
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no model named {name:?}; served models: {:?}", self.names())))?;
        let found = match version {
            None => versions.values().next_back(),
            Some(v) => {
                let v: u64 = v
                    .parse()
                    .map_err(|_| Error::BadRequest(format!("version {v:?} is not a positive integer")))?;
                versions.get(&v)
            }
        };
        found.cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "model {name:?} has no version {}; served versions: {:?}",
                version.unwrap_or("?"),
                versions.keys().collect::<Vec<_>>()
            ))
        })
    }

    /// The default model for endpoints that name none: the only one, else an error.
    pub fn only(&self) -> Result<Arc<Model>> {
        match self.models.len() {
            1 => self.get(&self.names()[0], None),
            0 => Err(Error::Unavailable("no model is loaded".into())),
            _ => Err(Error::BadRequest(format!(
                "several models are served; name one of {:?}",
                self.names()
            ))),
        }
    }

    /// Logits of model-ready samples from `model`, batched with other requests.
    pub async fn infer(&self, model: &Model, samples: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let (tx, rx) = oneshot::channel();
        model.worker.submit(
            Job {
                queued: std::time::Instant::now(),
                samples,
                reply: tx,
            },
            &model.name,
        )?;
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(e))) => Err(Error::Internal(e)),
            Ok(Err(_)) => Err(Error::Unavailable(format!(
                "model {} stopped while answering",
                model.name
            ))),
            Err(_) => Err(Error::Timeout(self.config.request_timeout.as_millis())),
        }
    }
}
