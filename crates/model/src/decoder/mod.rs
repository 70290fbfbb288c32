//! The decoder-only transformer language model: its spec, layers, KV cache and model.

mod attention;
mod cache;
mod feed_forward;
mod generate;
mod loss;
mod model;
mod norm;
mod rope;
mod sample;
mod spec;

pub use cache::KvCache;
pub use generate::{generate, Finish, GenerateConfig, Generation};
pub use loss::{lm_loss, LmLoss};
pub use model::Decoder;
pub use sample::{argmax, Sampler, Sampling};
pub use spec::{DecoderSpec, FeedForward, Norm, Positions};

/// A linear layer without bias, weights drawn by `init`: every projection of the decoder.
pub(crate) fn linear(
    p: &kiln_tensor::nn::Path,
    name: &str,
    inputs: i64,
    outputs: i64,
    init: kiln_tensor::nn::Init,
) -> kiln_tensor::nn::Linear {
    kiln_tensor::nn::linear(
        p / name,
        inputs,
        outputs,
        kiln_tensor::nn::LinearConfig {
            ws_init: init,
            bs_init: None,
            bias: false,
        },
    )
}
