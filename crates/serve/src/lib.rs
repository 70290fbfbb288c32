//! kiln's model server.
//!
//! A model repository (`<repo>/<model>/<version>/` holding kiln packages) is loaded into
//! model instances, each on its own OS thread (libtorch tensors are not `Sync`, and grad
//! mode is per thread), fed by a bounded queue. Requests queued together run as one batch
//! ([`worker`]); a full queue answers 429 at once. The HTTP layer ([`routes`]) speaks the
//! KServe v2 / Open Inference Protocol and the classic recipe's `POST /predict`; [`grpc`]
//! speaks KServe v2 over gRPC.

mod completion;
mod config;
mod decode;
mod dispatch;
pub mod engine;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod generator;
pub mod grpc;
pub mod metrics;
mod policy;
mod pool;
mod registry;
mod repository;
pub mod routes;
mod state;
pub mod tensors;
mod watch;
pub mod worker;

pub use completion::{Piece, Prompt, TextRequest, TextStream, TokenInfo};
pub use config::{Quantize, ServeConfig, DEFAULT_MAX_IMAGE_PIXELS};
pub use decode::DecodePool;
pub use error::{Error, Result};
pub use policy::{ModelSettings, VersionPolicy, MAX_INSTANCES};
pub use registry::{Model, Registry, VersionState, UNKNOWN_LABEL};
pub use repository::{scan, ModelVersionDir};
pub use state::AppState;
pub use watch::log_lines;
