//! The feed-forward block: `mlp.{gate,up,down}_proj` (SwiGLU) or `mlp.{up,down}_proj` (GELU).

use super::{linear, DecoderSpec, FeedForward};
use kiln_tensor::tch::TchError;
use kiln_tensor::{nn, nn::Module, Tensor};

#[derive(Debug)]
pub(crate) struct FeedForwardLayer {
    gate: Option<nn::Linear>,
    up: nn::Linear,
    down: nn::Linear,
}

impl FeedForwardLayer {
    pub(crate) fn new(p: &nn::Path, spec: &DecoderSpec, init: nn::Init, out_init: nn::Init) -> FeedForwardLayer {
        FeedForwardLayer {
            gate: (spec.feed_forward == FeedForward::Swiglu)
                .then(|| linear(p, "gate_proj", spec.width, spec.ffn_width, init)),
            up: linear(p, "up_proj", spec.width, spec.ffn_width, init),
            down: linear(p, "down_proj", spec.ffn_width, spec.width, out_init),
        }
    }

    /// `[B, T, width]` → `[B, T, width]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let up = self.up.forward(x);
        let inner = match &self.gate {
            Some(g) => g.forward(x).f_silu()?.f_mul(&up)?,
            None => up.f_gelu("none")?,
        };
        Ok(self.down.forward(&inner))
    }
}
