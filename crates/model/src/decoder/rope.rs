//! Rotary position embeddings in the Hugging Face Llama layout: the first and second
//! halves of each head are the two coordinates of each rotated pair.

use kiln_tensor::tch::TchError;
use kiln_tensor::{Device, Kind, Tensor};

/// Cosines and sines for every position up to the context.
#[derive(Debug)]
pub(crate) struct Rope {
    /// `[context, head_dim]`: the cosines twice, `[cos, cos]`.
    cos: Tensor,
    /// `[context, head_dim]`: the sines with the first half negated, `[-sin, sin]`.
    sin: Tensor,
}

/// The rotation for one forward pass's positions, shared by every layer.
#[derive(Debug)]
pub(crate) struct RopeAt {
    /// `[B or 1, 1, T, head_dim]`.
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
        let (cos, sin) = (
            angles.f_cos()?.f_to_kind(Kind::Float)?,
            angles.f_sin()?.f_to_kind(Kind::Float)?,
        );
        Ok(Rope {
            cos: Tensor::f_cat(&[&cos, &cos], 1)?,
            sin: Tensor::f_cat(&[&sin.f_neg()?, &sin], 1)?,
        })
    }

    /// The rotation at `positions` `[B, T]` (int64); `[1, T]` when every sequence has
    /// the same positions, which then broadcast.
    pub(crate) fn at(&self, positions: &Tensor) -> Result<RopeAt, TchError> {
        let (b, t) = (positions.size()[0], positions.size()[1]);
        let flat = positions.f_reshape([-1])?;
        Ok(RopeAt {
            cos: self.cos.f_index_select(0, &flat)?.f_view([b, 1, t, -1])?,
            sin: self.sin.f_index_select(0, &flat)?.f_view([b, 1, t, -1])?,
        })
    }
}

impl RopeAt {
    /// Rotates `x` `[B, heads, T, head_dim]`: with halves `x1`, `x2`, the result is
    /// `[x1 cos - x2 sin, x2 cos + x1 sin]`, computed as `x [cos, cos] + [x2, x1] [-sin, sin]`
    /// (two contiguous products instead of four strided ones).
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let halves = x.f_chunk(2, -1)?;
        let swapped = Tensor::f_cat(&[&halves[1], &halves[0]], -1)?;
        let (cos, sin) = if x.kind() == self.cos.kind() {
            (self.cos.shallow_clone(), self.sin.shallow_clone())
        } else {
            (self.cos.f_to_kind(x.kind())?, self.sin.f_to_kind(x.kind())?)
        };
        x.f_mul(&cos)?.f_add(&swapped.f_mul(&sin)?)
    }
}
