//! The feed-forward block: `mlp.{gate,up,down}_proj` (SwiGLU) or `mlp.{up,down}_proj` (GELU).

use super::projection::Projection;
use super::{DecoderSpec, FeedForward};
use crate::Result;
use kiln_tensor::{nn, Tensor};

#[derive(Debug)]
pub(crate) struct FeedForwardLayer {
    gate: Option<Projection>,
    up: Projection,
    down: Projection,
}

impl FeedForwardLayer {
    pub(crate) fn new(p: &nn::Path, spec: &DecoderSpec, init: nn::Init, out_init: nn::Init) -> FeedForwardLayer {
        FeedForwardLayer {
            gate: (spec.feed_forward == FeedForward::Swiglu)
                .then(|| Projection::new(p, "gate_proj", spec.width, spec.ffn_width, init)),
            up: Projection::new(p, "up_proj", spec.width, spec.ffn_width, init),
            down: Projection::new(p, "down_proj", spec.ffn_width, spec.width, out_init),
        }
    }

    /// `[B, T, width]` → `[B, T, width]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let up = self.up.forward(x)?;
        let inner = match &self.gate {
            Some(g) => g.forward(x)?.f_silu()?.f_mul(&up)?,
            None => up.f_gelu("none")?,
        };
        self.down.forward(&inner)
    }

    /// Quantizes the projections to 4 bits in groups of `group`, or back to f32 with `None`.
    pub(crate) fn quantize(&mut self, group: Option<i64>) -> Result<()> {
        if let Some(g) = &mut self.gate {
            g.quantize(group)?;
        }
        self.up.quantize(group)?;
        self.down.quantize(group)
    }

    /// Bytes a forward pass reads from the projections' weights.
    pub(crate) fn weight_bytes(&self) -> usize {
        self.gate.as_ref().map_or(0, |g| g.bytes()) + self.up.bytes() + self.down.bytes()
    }
}
