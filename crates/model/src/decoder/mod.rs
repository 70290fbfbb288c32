//! The decoder-only transformer language model: its spec, layers, KV cache and model.

mod attention;
mod cache;
mod feed_forward;
mod model;
mod norm;
mod rope;
mod spec;

pub use cache::KvCache;
pub use model::Decoder;
pub use spec::{DecoderSpec, FeedForward, Norm, Positions};
