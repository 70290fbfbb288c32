//! kiln-serve: the model server binary, thin glue over kiln-serve.

use clap::Parser;
use kiln_serve::{routes, AppState, ServeConfig};
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
    /// Address and port to listen on.
    #[arg(long, env = "KILN_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Most samples run as one batch.
    #[arg(long, env = "KILN_MAX_BATCH", default_value_t = 64)]
    max_batch: usize,
    /// Milliseconds a batch waits for more requests (0: only what is already queued).
    #[arg(long, env = "KILN_MAX_DELAY_MS", default_value_t = 2)]
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
    /// Seconds a request may wait for its answer (504 beyond).
    #[arg(long, env = "KILN_REQUEST_TIMEOUT_S", default_value_t = 30)]
    request_timeout_s: u64,
    /// HTTP worker threads.
    #[arg(long, env = "KILN_HTTP_WORKERS", default_value_t = 2)]
    http_workers: usize,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let a = Args::parse();
    let config = ServeConfig {
        repository: a.model_repository,
        bind: a.bind,
        max_batch: a.max_batch.max(1),
        max_delay: Duration::from_millis(a.max_delay_ms),
        queue_capacity: a.queue_capacity.max(1),
        threads_per_instance: a.threads_per_instance,
        body_limit: a.body_limit,
        request_timeout: Duration::from_secs(a.request_timeout_s),
    };
    let bind = config.bind.clone();
    let (state, warnings) = match AppState::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln-serve: error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in warnings {
        eprintln!("kiln-serve: warning: {w}");
    }
    for name in state.names() {
        eprintln!("kiln-serve: serving {name} versions {:?}", state.versions(&name));
    }
    let app_state = state.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(actix_web::middleware::from_fn(routes::record))
            .configure(routes::configure(app_state.clone()))
    })
    .workers(a.http_workers.max(1))
    .shutdown_timeout(10)
    .bind(&bind);
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln-serve: error: cannot listen on {bind}: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("kiln-serve: listening on http://{bind}");
    match server.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-serve: error: {e}");
            ExitCode::from(1)
        }
    }
}
