//! The feed-forward block: `mlp.{gate,up,down}_proj` (SwiGLU) or `mlp.{up,down}_proj` (GELU).

use super::projection::Projection;
use super::{DecoderSpec, FeedForward};
use crate::Result;
use kiln_tensor::{nn, Tensor};

#[derive(Debug)]
pub(crate) struct FeedForwardLayer {
    /// `gate_proj` and `up_proj` (SwiGLU) or `up_proj` alone (GELU).
    gate_up: Projection,
    down: Projection,
}

impl FeedForwardLayer {
    pub(crate) fn new(p: &nn::Path, spec: &DecoderSpec, init: nn::Init, out_init: nn::Init) -> FeedForwardLayer {
        let gate_up = match spec.feed_forward {
            FeedForward::Swiglu => Projection::new(
                p,
                &["gate_proj", "up_proj"],
                spec.width,
                &[spec.ffn_width, spec.ffn_width],
                init,
            ),
            FeedForward::Gelu => Projection::new(p, &["up_proj"], spec.width, &[spec.ffn_width], init),
        };
        FeedForwardLayer {
            gate_up,
            down: Projection::new(p, &["down_proj"], spec.ffn_width, &[spec.width], out_init),
        }
    }

    /// `[B, T, width]` → `[B, T, width]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inner = match &self.gate_up.forward(x)?[..] {
            [gate, up] => gate.f_silu()?.f_mul(up)?,
            [up] => up.f_gelu("none")?,
            _ => {
                return Err(crate::Error::Input(
                    "the feed-forward block needs one or two projections".into(),
                ))
            }
        };
        self.down.forward_one(&inner)
    }

    /// Quantizes the projections to 4 bits in groups of `group`, or back to f32 with `None`.
    pub(crate) fn quantize(&mut self, group: Option<i64>, keep_bf16: bool) -> Result<()> {
        self.gate_up.quantize(group, keep_bf16)?;
        self.down.quantize(group, keep_bf16)
    }

    /// Bytes of the bf16 copies kept besides the 4-bit weights.
    pub(crate) fn bf16_bytes(&self) -> usize {
        self.gate_up.bf16_bytes() + self.down.bf16_bytes()
    }

    /// Bytes a forward pass reads from the projections' weights.
    pub(crate) fn weight_bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes()
    }
}
