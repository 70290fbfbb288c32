//! `Projection`: linear maps (no bias) of one input, such as attention's query, key and
//! value. Each keeps its own f32 weights as a trainable parameter under its own name and
//! is its own product while training; once quantized for inference, their 4-bit weights
//! are stacked into one matrix, one product for all (a decoding step is many small
//! products, each with a fixed cost, and their input is converted to bf16 once).

use crate::Result;
use kiln_tensor::{nn, nn::Module, Int4Weight, Tensor};

#[derive(Debug)]
pub(crate) struct Projection {
    parts: Vec<nn::Linear>,
    outputs: Vec<i64>,
    int4: Option<Int4Weight>,
}

impl Projection {
    /// Projections `inputs` → `outputs[i]` named `names[i]` under `p`, weights drawn by
    /// `init`.
    pub(crate) fn new(p: &nn::Path, names: &[&str], inputs: i64, outputs: &[i64], init: nn::Init) -> Projection {
        let config = nn::LinearConfig {
            ws_init: init,
            bs_init: None,
            bias: false,
        };
        Projection {
            parts: names
                .iter()
                .zip(outputs)
                .map(|(name, &n)| nn::linear(p / *name, inputs, n, config))
                .collect(),
            outputs: outputs.to_vec(),
            int4: None,
        }
    }

    /// `x` `[..., inputs]` → one `[..., outputs[i]]` per projection.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match &self.int4 {
            Some(q) if self.parts.len() == 1 => Ok(vec![q.matmul(x)?]),
            Some(q) => Ok(q.matmul(x)?.f_split_with_sizes(&self.outputs, -1)?),
            None => Ok(self.parts.iter().map(|l| l.forward(x)).collect()),
        }
    }

    /// The only projection's output, for a projection of one part.
    pub(crate) fn forward_one(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = self.forward(x)?;
        Ok(out.swap_remove(0))
    }

    /// From now on the forward pass multiplies by the weights quantized to 4 bits in
    /// groups of `group` (see [`Int4Weight`]), with a bf16 copy for products of many rows
    /// when `keep_bf16`, or by the f32 weights again with `None`; the f32 weights stay the
    /// parameters.
    pub(crate) fn quantize(&mut self, group: Option<i64>, keep_bf16: bool) -> Result<()> {
        self.int4 = match group {
            Some(g) => {
                let stacked = Tensor::f_cat(&self.parts.iter().map(|l| &l.ws).collect::<Vec<_>>(), 0)?;
                let mut q = Int4Weight::quantize(&stacked, g)?;
                if keep_bf16 {
                    q.keep_bf16()?;
                }
                Some(q)
            }
            None => None,
        };
        Ok(())
    }

    /// Bytes of the bf16 copies kept besides the 4-bit weights.
    pub(crate) fn bf16_bytes(&self) -> usize {
        self.int4.as_ref().map_or(0, Int4Weight::bf16_bytes)
    }

    /// Bytes a forward pass of few rows reads from these projections' weights.
    pub(crate) fn bytes(&self) -> usize {
        match &self.int4 {
            Some(q) => q.bytes(),
            None => self
                .parts
                .iter()
                .map(|l| l.ws.numel() * l.ws.kind().elt_size_in_bytes())
                .sum(),
        }
    }
}
