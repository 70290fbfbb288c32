//! kiln-serve: the model server binary, thin glue over kiln-serve.

use clap::Parser;
use kiln_serve::{routes, AppState, ServeConfig, VersionPolicy, MAX_INSTANCES};
use kiln_tensor::DeviceChoice;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Serve a repository of kiln model packages over HTTP (KServe v2 and POST /predict).
#[derive(Parser)]
#[command(name = "kiln-serve", version, about, long_about = None)]
struct Args {
    /// The model repository: <repo>/<model>/<version>/ with a kiln package in each.
    #[arg(long, env = "KILN_MODEL_REPOSITORY", default_value = "models")]
    model_repository: PathBuf,
    /// Address and port to listen on (0.0.0.0:8080 to accept other machines).
    #[arg(long, env = "KILN_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Address and port for KServe v2 over gRPC (e.g. 127.0.0.1:8081); off when not given.
    #[arg(long, env = "KILN_GRPC_BIND")]
    grpc_bind: Option<std::net::SocketAddr>,
    /// Where models run: cpu, cuda, cuda:N, or auto (CUDA when usable).
    #[arg(long, env = "KILN_DEVICE", default_value = "cpu")]
    device: DeviceChoice,
    /// Versions served of each model without its own model.toml: latest:N, all, or specific:V1,V2.
    #[arg(long, env = "KILN_VERSION_POLICY", default_value = "latest:1")]
    version_policy: VersionPolicy,
    /// Model instances (threads, each holding the model) per version, unless its model.toml says.
    #[arg(long, env = "KILN_INSTANCES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_INSTANCES as i64))]
    instances: u16,
    /// How often the repository is scanned for new and removed versions, e.g. 5s or 500ms; off to disable.
    #[arg(long, env = "KILN_POLL_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    poll_interval: Interval,
    /// Most samples run as one batch.
    #[arg(long, env = "KILN_MAX_BATCH", default_value_t = 64)]
    max_batch: usize,
    /// Milliseconds a batch waits for more requests (0: only what is already queued).
    #[arg(long, env = "KILN_MAX_DELAY_MS", default_value_t = 0)]
    max_delay_ms: u64,
    /// Requests a model's queue holds before the server answers 429.
    #[arg(long, env = "KILN_QUEUE_CAPACITY", default_value_t = 256)]
    queue_capacity: usize,
    /// libtorch threads per model instance.
    #[arg(long, env = "KILN_THREADS_PER_INSTANCE", default_value_t = 1)]
    threads_per_instance: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "KILN_BODY_LIMIT", default_value_t = 4 << 20)]
    body_limit: usize,
    /// Most pixels (width x height) an image sent to /predict may have; larger ones are
    /// refused (413) from their header, before decoding. The model's own input size is always accepted.
    #[arg(long, env = "KILN_MAX_IMAGE_PIXELS", default_value_t = kiln_serve::DEFAULT_MAX_IMAGE_PIXELS)]
    max_image_pixels: u64,
    /// Threads that decode images, off the HTTP workers (0: one per CPU).
    #[arg(long, env = "KILN_DECODE_THREADS", default_value_t = 0)]
    decode_threads: usize,
    /// Seconds a request may wait for its answer (504 beyond).
    #[arg(long, env = "KILN_REQUEST_TIMEOUT_S", default_value_t = 30)]
    request_timeout_s: u64,
    /// HTTP worker threads.
    #[arg(long, env = "KILN_HTTP_WORKERS", default_value_t = 2)]
    http_workers: usize,
    /// Most client connections open at once (over all workers); further ones wait in the
    /// listen backlog. With --body-limit it bounds the memory request bodies can hold.
    #[arg(long, env = "KILN_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before the server exits.
    #[arg(long, env = "KILN_SHUTDOWN_TIMEOUT_S", default_value_t = 30)]
    shutdown_timeout_s: u64,
    /// Turns the management API (/v2/repository/...) on, requiring `Authorization: Bearer <this>`.
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How log lines are written to stderr: human or json (one object per line). RUST_LOG filters.
    #[arg(long, env = "KILN_LOG_FORMAT", default_value = "human")]
    log_format: kiln_log::LogFormat,
    /// Logs one line per request (peer, method, path, status, microseconds).
    #[arg(long, env = "KILN_ACCESS_LOG")]
    access_log: bool,
    /// Makes inference and model metadata endpoints require `Authorization: Bearer <this>`
    /// (health, /metrics and /openapi.json stay open).
    #[arg(long, env = "KILN_INFERENCE_TOKEN", hide_env_values = true)]
    inference_token: Option<String>,
    /// Sequences a language-model instance generates at once (continuous batching: they
    /// join and leave between decoding steps).
    #[arg(long, env = "KILN_MAX_SEQUENCES", default_value_t = 16)]
    max_sequences: usize,
    /// Bytes of keys and values (the KV cache) each language-model instance keeps; with
    /// --max-sequences it sets the tokens a sequence may hold (at most the model's context).
    #[arg(long, env = "KILN_KV_CACHE_BYTES", default_value_t = 1 << 30)]
    kv_cache_bytes: u64,
    /// Prompt tokens a language-model instance prefills between two decoding steps of the
    /// running sequences (a longer prompt is prefilled alone).
    #[arg(long, env = "KILN_MAX_PREFILL_TOKENS", default_value_t = 512)]
    max_prefill_tokens: usize,
    /// Language-model prompts that start with tokens the KV cache holds (a running or a
    /// finished sequence's, 16 tokens or more) copy their keys and values instead of
    /// computing them: a shared system prompt is prefilled once.
    #[arg(long, env = "KILN_PREFIX_CACHE")]
    prefix_cache: bool,
    /// Language models run with weights quantized: int4 (4-bit groups of 32, CPU), or
    /// int4-bf16 (the same, with a bf16 copy for prompts and wide steps; faster prompts).
    #[arg(long, env = "KILN_QUANTIZE")]
    quantize: Option<Quantize>,
}

/// How language models keep their weights.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Quantize {
    /// 4-bit integers in groups of 32 inputs with bf16 scales; the output projection in bf16.
    Int4,
    /// The same 4-bit weights, and a bf16 copy of them that products of 8 rows or more
    /// (prompts, steps of 8 sequences or more) run through: prompts about twice as fast,
    /// for 3.2x more memory than the 4-bit weights.
    #[value(name = "int4-bf16")]
    Int4Bf16,
}

/// A poll interval; `None` is off.
#[derive(Clone, Copy, Debug)]
struct Interval(Option<Duration>);

fn parse_interval(s: &str) -> Result<Interval, String> {
    if s == "off" || s == "0" {
        return Ok(Interval(None));
    }
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(Interval(Some(d))),
        Ok(_) => Ok(Interval(None)),
        Err(e) => Err(format!("{e}; expected a duration such as 5s or 500ms, or off")),
    }
}

fn token(t: Option<String>) -> Option<String> {
    t.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Logs a start-up failure and gives its exit code.
fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{e}");
    ExitCode::from(code)
}

#[actix_web::main]
async fn main() -> ExitCode {
    let a = Args::parse();
    if let Err(e) = kiln_log::init("kiln-serve", a.log_format, "info") {
        eprintln!("kiln-serve: error: {e}");
        return ExitCode::from(2);
    }
    let device = match a.device.resolve() {
        Ok(d) => d,
        Err(e) => return fail(2, e),
    };
    let config = ServeConfig {
        repository: a.model_repository,
        bind: a.bind,
        device,
        version_policy: a.version_policy,
        instances: usize::from(a.instances),
        poll_interval: a.poll_interval.0,
        admin_token: token(a.admin_token),
        inference_token: token(a.inference_token),
        max_batch: a.max_batch.max(1),
        max_delay: Duration::from_millis(a.max_delay_ms),
        queue_capacity: a.queue_capacity.max(1),
        threads_per_instance: a.threads_per_instance,
        body_limit: a.body_limit,
        access_log: a.access_log,
        max_image_pixels: a.max_image_pixels,
        decode_threads: a.decode_threads,
        request_timeout: Duration::from_secs(a.request_timeout_s),
        max_sequences: a.max_sequences.max(1),
        kv_cache_bytes: a.kv_cache_bytes,
        max_prefill_tokens: a.max_prefill_tokens.max(1),
        prefix_cache: a.prefix_cache,
        quantize: a.quantize.map(|q| match q {
            Quantize::Int4 => kiln_serve::Quantize::Int4,
            Quantize::Int4Bf16 => kiln_serve::Quantize::Int4Bf16,
        }),
    };
    let bind = config.bind.clone();
    let (state, warnings) = match AppState::load(config) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    kiln_serve::log_lines(&warnings);
    if state.names().is_empty() {
        tracing::warn!(
            "no model is served yet; put packages in {}/<model>/<version>/",
            state.config.repository.display()
        );
    }
    if let Err(e) = state.start_polling() {
        return fail(1, e);
    }
    let app_state = state.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(actix_web::middleware::from_fn(routes::record))
            .configure(routes::configure(app_state.clone()))
    })
    .workers(a.http_workers.max(1))
    .max_connections((a.max_connections / a.http_workers.max(1)).max(1))
    // A client that closes its connection has gone: its request is dropped (unrun if still
    // queued) rather than answered to nobody. HTTP clients do not half-close to wait for an answer.
    .h1_allow_half_closed(false)
    .shutdown_timeout(a.shutdown_timeout_s)
    .bind(&bind);
    let server = match server {
        Ok(s) => s,
        Err(e) => return fail(2, format!("cannot listen on {bind}: {e}")),
    };
    let grpc = match a.grpc_bind {
        Some(addr) => match kiln_serve::grpc::GrpcServer::start(state.clone(), addr, a.http_workers) {
            Ok(g) => {
                tracing::info!(address = %g.addr, "listening for gRPC (KServe v2) on {}", g.addr);
                Some(g)
            }
            Err(e) => return fail(2, e),
        },
        None => None,
    };
    tracing::info!(address = %bind, "listening on http://{bind}");
    let served = server.run().await;
    // HTTP has drained (SIGTERM, SIGINT): gRPC stops too, letting running calls finish.
    if let Some(Err(e)) = grpc.map(kiln_serve::grpc::GrpcServer::stop) {
        tracing::warn!("{e}");
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}
