//! KServe v2 over gRPC (`proto/kserve_v2.proto`, compiled at build time): the same models,
//! semantics, limits and metrics as the HTTP endpoints, errors as gRPC status codes, on a
//! port of its own. [`serve`] runs it until a shutdown signal.

mod convert;
mod service;

/// The messages and service of `proto/kserve_v2.proto` (package `inference`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod proto {
    tonic::include_proto!("inference");
}

use crate::{AppState, Error, Result};
use proto::grpc_inference_service_server::GrpcInferenceServiceServer;
pub use service::InferenceService;
use std::net::SocketAddr;

/// A gRPC server running on its own threads (a Tokio runtime beside actix's).
pub struct GrpcServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl GrpcServer {
    /// Listens on `addr` and serves the gRPC API on `threads` threads; returns once it
    /// listens, or the error binding gave (an address in use, say).
    pub fn start(state: AppState, addr: SocketAddr, threads: usize) -> Result<GrpcServer> {
        // Bound here, so that an address in use is this call's error, before any thread.
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::BadRequest(format!("cannot listen on {addr} for gRPC: {e}")))?;
        let bound = listener.local_addr().unwrap_or(addr);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("kiln-grpc")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the gRPC runtime: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kiln-grpc".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| Error::Internal(format!("cannot listen on {bound} for gRPC: {e}")))?;
                    serve(state, listener, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })
            .map_err(|e| Error::Internal(format!("cannot start the gRPC thread: {e}")))?;
        Ok(GrpcServer {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops taking calls, lets running ones finish, and waits for the threads to end.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Internal("the gRPC thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Serves the gRPC API on `listener` until `shutdown` completes, then lets running calls
/// finish. Messages are limited to the server's body limit, as HTTP bodies are.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let limit = state.config.body_limit;
    let addr = listener.local_addr().ok();
    let service = GrpcInferenceServiceServer::new(InferenceService::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("the gRPC server on {addr:?} failed: {e}")))
}
