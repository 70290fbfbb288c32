//! The decoder's normalisation layers: RMSNorm (`weight`) or LayerNorm (`weight`, `bias`).

use super::Norm;
use kiln_tensor::{nn, Tensor};

/// A normalisation layer over the last dimension.
#[derive(Debug)]
pub(crate) struct NormLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    width: i64,
    eps: f64,
}

impl NormLayer {
    pub(crate) fn new(p: &nn::Path, kind: Norm, width: i64, eps: f64) -> NormLayer {
        let weight = p.var("weight", &[width], nn::Init::Const(1.0));
        let bias = (kind == Norm::Layer).then(|| p.var("bias", &[width], nn::Init::Const(0.0)));
        NormLayer {
            weight,
            bias,
            width,
            eps,
        }
    }

    /// `x` `[..., width]` normalised, same shape.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, kiln_tensor::tch::TchError> {
        match &self.bias {
            None => x.f_rms_norm([self.width], Some(&self.weight), self.eps),
            Some(b) => x.f_layer_norm([self.width], Some(&self.weight), Some(b), self.eps, false),
        }
    }

    /// Bytes of its weights.
    pub(crate) fn bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        bytes(&self.weight) + self.bias.as_ref().map_or(0, bytes)
    }
}
