//! The decoder-only transformer language model: its spec, layers, KV cache and model.

mod attention;
mod cache;
mod feed_forward;
mod generate;
mod loss;
mod model;
mod norm;
mod projection;
mod rope;
mod sample;
mod spec;

pub use cache::KvCache;
pub use generate::{generate, Finish, GenerateConfig, Generation};
pub use loss::{lm_loss, LmLoss};
pub use model::Decoder;
pub use sample::{argmax, Sampler, Sampling};
pub use spec::{DecoderSpec, FeedForward, Norm, Positions};
