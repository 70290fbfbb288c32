//! `Projection`: one of the decoder's linear maps (no bias), with its f32 weights as a
//! trainable parameter and, once quantized for inference, 4-bit weights that the forward
//! pass uses instead.

use crate::Result;
use kiln_tensor::{nn, nn::Module, Int4Weight, Tensor};

#[derive(Debug)]
pub(crate) struct Projection {
    linear: nn::Linear,
    int4: Option<Int4Weight>,
}

impl Projection {
    /// A projection `inputs` → `outputs` named `name` under `p`, weights drawn by `init`.
    pub(crate) fn new(p: &nn::Path, name: &str, inputs: i64, outputs: i64, init: nn::Init) -> Projection {
        let config = nn::LinearConfig {
            ws_init: init,
            bs_init: None,
            bias: false,
        };
        Projection {
            linear: nn::linear(p / name, inputs, outputs, config),
            int4: None,
        }
    }

    /// `x` `[..., inputs]` → `[..., outputs]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.int4 {
            Some(q) => Ok(q.matmul(x)?),
            None => Ok(self.linear.forward(x)),
        }
    }

    /// From now on the forward pass multiplies by the weights quantized to 4 bits in
    /// groups of `group` (see [`Int4Weight`]), or by the f32 weights again with `None`;
    /// the f32 weights stay the parameters.
    pub(crate) fn quantize(&mut self, group: Option<i64>) -> Result<()> {
        self.int4 = match group {
            Some(g) => Some(Int4Weight::quantize(&self.linear.ws, g)?),
            None => None,
        };
        Ok(())
    }

    /// Bytes a forward pass reads from this projection's weights.
    pub(crate) fn bytes(&self) -> usize {
        match &self.int4 {
            Some(q) => q.bytes(),
            None => self.linear.ws.numel() * self.linear.ws.kind().elt_size_in_bytes(),
        }
    }
}
