//! `ServeConfig`: everything the server is started with.

use crate::VersionPolicy;
use kiln_tensor::Device;
use std::path::PathBuf;
use std::time::Duration;

/// The server's settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The model repository: `<repo>/<model>/<version>/` with a kiln package in each.
    pub repository: PathBuf,
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub bind: String,
    /// Where models run.
    pub device: Device,
    /// Which versions of each model are served, unless its `model.toml` says otherwise.
    pub version_policy: VersionPolicy,
    /// Instances per model version, unless its `model.toml` says otherwise.
    pub instances: usize,
    /// How often the repository is scanned for new and removed versions (`None`: never).
    pub poll_interval: Option<Duration>,
    /// Most samples run as one batch.
    pub max_batch: usize,
    /// How long a batch waits for more requests once the first arrived (0: only what is queued).
    pub max_delay: Duration,
    /// Requests a model's queue holds before the server answers 429.
    pub queue_capacity: usize,
    /// libtorch threads per model instance.
    pub threads_per_instance: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    pub body_limit: usize,
    /// Longest a request may wait for its answer (504 beyond).
    pub request_timeout: Duration,
    /// Bearer token of the management API; `None` leaves the API off.
    pub admin_token: Option<String>,
    /// Bearer token the inference and metadata endpoints require; `None`: open.
    pub inference_token: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            repository: PathBuf::from("models"),
            bind: "127.0.0.1:8080".into(),
            device: Device::Cpu,
            version_policy: VersionPolicy::default(),
            instances: 1,
            poll_interval: Some(Duration::from_secs(5)),
            max_batch: 64,
            max_delay: Duration::ZERO,
            queue_capacity: 256,
            threads_per_instance: 1,
            body_limit: 4 << 20,
            request_timeout: Duration::from_secs(30),
            admin_token: None,
            inference_token: None,
        }
    }
}
