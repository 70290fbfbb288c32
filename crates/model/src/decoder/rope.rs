//! Rotary position embeddings in the Hugging Face Llama layout: the first and second
//! halves of each head are the two coordinates of each rotated pair.

use kiln_tensor::tch::TchError;
use kiln_tensor::{Device, Kind, Tensor};

/// Cosines and sines for every position up to the context.
#[derive(Debug)]
pub(crate) struct Rope {
    /// `[context, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(crate) fn new(head_dim: i64, context: i64, theta: f64, device: Device) -> Result<Rope, TchError> {
        let half = head_dim / 2;
        // Frequencies in f64, as a reference implementation's, then f32.
        let exponents = Tensor::f_arange(half, (Kind::Double, device))?.f_mul_scalar(2.0 / head_dim as f64)?;
        let inv_freq = Tensor::f_full([half], theta, (Kind::Double, device))?
            .f_pow(&exponents)?
            .f_reciprocal()?;
        let pos = Tensor::f_arange(context, (Kind::Double, device))?;
        let angles = pos.f_outer(&inv_freq)?;
        Ok(Rope {
            cos: angles.f_cos()?.f_to_kind(Kind::Float)?,
            sin: angles.f_sin()?.f_to_kind(Kind::Float)?,
        })
    }

    /// Rotates `x` `[B, heads, T, head_dim]` by `positions` `[B, T]` (int64).
    pub(crate) fn apply(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor, TchError> {
        let (b, t) = (positions.size()[0], positions.size()[1]);
        let flat = positions.f_reshape([-1])?;
        let cos = self.cos.f_index_select(0, &flat)?.f_view([b, 1, t, -1])?;
        let sin = self.sin.f_index_select(0, &flat)?.f_view([b, 1, t, -1])?;
        let (cos, sin) = (cos.f_to_kind(x.kind())?, sin.f_to_kind(x.kind())?);
        let halves = x.f_chunk(2, -1)?;
        let (x1, x2) = (&halves[0], &halves[1]);
        let a = x1.f_mul(&cos)?.f_sub(&x2.f_mul(&sin)?)?;
        let b2 = x2.f_mul(&cos)?.f_add(&x1.f_mul(&sin)?)?;
        Tensor::f_cat(&[a, b2], -1)
    }
}
