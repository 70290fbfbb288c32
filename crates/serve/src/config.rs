//! `ServeConfig`: everything the server is started with.

use crate::VersionPolicy;
use kiln_tensor::Device;
use std::path::PathBuf;
use std::time::Duration;

/// The default of [`ServeConfig::max_image_pixels`]: 16 Mpx (4096 x 4096), above a 12 Mpx
/// phone photo, far below what a hostile header can declare.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 1 << 24;

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
    /// Most pixels an image in a request may declare (or the model's own input size, if
    /// larger); a bigger one is refused (413) from its header, before it is decoded.
    pub max_image_pixels: u64,
    /// Threads that decode images, off the HTTP workers (0: one per CPU).
    pub decode_threads: usize,
    /// Longest a request may wait for its answer (504 beyond).
    pub request_timeout: Duration,
    /// Logs one line per request (target `kiln_serve::access`).
    pub access_log: bool,
    /// Bearer token of the management API; `None` leaves the API off.
    pub admin_token: Option<String>,
    /// Bearer token the inference and metadata endpoints require; `None`: open.
    pub inference_token: Option<String>,
    /// Sequences a language-model instance generates at once (rows of its KV cache).
    pub max_sequences: usize,
    /// Bytes of keys and values a language-model instance may keep: with
    /// `max_sequences`, it sets how many tokens each sequence may hold (at most the
    /// model's context).
    pub kv_cache_bytes: u64,
    /// Prompt tokens a language-model instance prefills per step before decoding the
    /// running sequences again (a longer prompt is prefilled alone).
    pub max_prefill_tokens: usize,
    /// How language models keep their weights; `None` as their package has them.
    pub quantize: Option<Quantize>,
    /// Prompts reuse the keys and values of a prefix the cache holds (a running or a
    /// finished sequence's) instead of computing them again.
    pub prefix_cache: bool,
}

/// Weights quantized for inference ([`kiln_model::Decoder::quantize_int4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// 4-bit weights in groups of 32 (CPU).
    Int4,
    /// 4-bit weights in groups of 32 and their bf16 copy for prompts and steps of 8
    /// sequences or more (CPU).
    Int4Bf16,
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
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            decode_threads: 0,
            request_timeout: Duration::from_secs(30),
            access_log: false,
            admin_token: None,
            inference_token: None,
            max_sequences: 16,
            kv_cache_bytes: 1 << 30,
            max_prefill_tokens: 512,
            quantize: None,
            prefix_cache: false,
        }
    }
}
