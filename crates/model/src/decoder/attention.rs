//! Grouped-query causal self-attention through libtorch's fused
//! `scaled_dot_product_attention`.

use super::projection::Projection;
use super::rope::RopeAt;
use super::DecoderSpec;
use crate::Result;
use kiln_tensor::{nn, Tensor};

/// Which positions a query may attend to.
pub(crate) enum Mask<'a> {
    /// Its own and earlier positions of the same call (no cache, no padding).
    Causal,
    /// Every key (one new token per sequence, nothing padded).
    All,
    /// `[B, 1, T, S]` bool, true where attention is allowed.
    Explicit(&'a Tensor),
}

/// Where one layer's keys and values are kept between calls.
pub(crate) enum CacheSlot<'a> {
    /// Shared slots: this call's keys and values are appended with `cat`.
    Grow(&'a mut Option<(Tensor, Tensor)>),
    /// Rows `start..start + n` of preallocated `[rows, kv_heads, capacity, head_dim]`
    /// keys and values: this call's are written at `positions` `[n, T]` of rows `rows`
    /// `[n, 1]` (int64), and attention reads each row's first `visible` slots (the longest
    /// row's length after this call, so that a single row's new slots end there).
    Rows {
        keys: &'a Tensor,
        values: &'a Tensor,
        rows: &'a Tensor,
        positions: &'a Tensor,
        start: i64,
        visible: i64,
    },
}

/// `self_attn.{q,k,v,o}_proj`.
#[derive(Debug)]
pub(crate) struct Attention {
    qkv: Projection,
    o: Projection,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl Attention {
    pub(crate) fn new(p: &nn::Path, spec: &DecoderSpec, init: nn::Init, out_init: nn::Init) -> Attention {
        let d = spec.head_dim();
        Attention {
            qkv: Projection::new(
                p,
                &["q_proj", "k_proj", "v_proj"],
                spec.width,
                &[spec.heads * d, spec.kv_heads * d, spec.kv_heads * d],
                init,
            ),
            o: Projection::new(p, &["o_proj"], spec.heads * d, &[spec.width], out_init),
            heads: spec.heads,
            kv_heads: spec.kv_heads,
            head_dim: d,
            dropout: spec.dropout,
        }
    }

    /// `x` `[B, T, width]` → `[B, T, width]`. With `cache`, this call's keys and values are
    /// appended to it and attention covers the cached ones too.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: Option<&RopeAt>,
        mask: Mask<'_>,
        cache: Option<CacheSlot<'_>>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let heads =
            |y: Tensor, n: i64| -> Result<Tensor> { Ok(y.f_view([b, t, n, self.head_dim])?.f_transpose(1, 2)?) };
        let [q, k, v]: [Tensor; 3] = self
            .qkv
            .forward(x)?
            .try_into()
            .map_err(|_| crate::Error::Input("attention needs three projections".into()))?;
        let mut q = heads(q, self.heads)?;
        let mut k = heads(k, self.kv_heads)?;
        let v = heads(v, self.kv_heads)?;
        if let Some(rope) = rope {
            q = rope.apply(&q)?;
            k = rope.apply(&k)?;
        }
        let (k, v) = match cache {
            Some(CacheSlot::Grow(slot)) => {
                let kv = match slot.take() {
                    Some((ck, cv)) => (Tensor::f_cat(&[ck, k], 2)?, Tensor::f_cat(&[cv, v], 2)?),
                    None => (k, v),
                };
                *slot = Some((kv.0.shallow_clone(), kv.1.shallow_clone()));
                kv
            }
            Some(CacheSlot::Rows {
                keys,
                values,
                rows,
                positions,
                start,
                visible,
            }) => {
                // Advanced indices around a full slice put their broadcast shape [n, T]
                // first: the new keys go in as [n, T, kv_heads, head_dim].
                for (store, new) in [(keys, &k), (values, &v)] {
                    if b == 1 {
                        // One row: its new slots are one contiguous range, a plain copy.
                        let first = visible - t;
                        store
                            .f_select(0, start)?
                            .f_narrow(1, first, t)?
                            .f_copy_(&new.f_select(0, 0)?)?;
                    } else {
                        let mut store = store.shallow_clone();
                        let index = [Some(rows.shallow_clone()), None, Some(positions.shallow_clone())];
                        let _ = store.f_index_put_(&index, &new.f_permute([0, 2, 1, 3])?, false)?;
                    }
                }
                (
                    keys.f_narrow(0, start, b)?.f_narrow(2, 0, visible)?,
                    values.f_narrow(0, start, b)?.f_narrow(2, 0, visible)?,
                )
            }
            None => (k, v),
        };
        let dropout = if train { self.dropout } else { 0.0 };
        let gqa = self.heads != self.kv_heads;
        let y = match mask {
            Mask::Causal => {
                Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, dropout, true, None, gqa)?
            }
            Mask::All => Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, dropout, false, None, gqa)?,
            Mask::Explicit(m) => {
                Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(m), dropout, false, None, gqa)?
            }
        };
        let y = y.f_transpose(1, 2)?.f_reshape([b, t, self.heads * self.head_dim])?;
        self.o.forward_one(&y)
    }
}

impl Attention {
    /// Quantizes the four projections to 4 bits in groups of `group`, or back to f32 with `None`.
    pub(crate) fn quantize(&mut self, group: Option<i64>, keep_bf16: bool) -> Result<()> {
        self.qkv.quantize(group, keep_bf16)?;
        self.o.quantize(group, keep_bf16)
    }

    /// Bytes of the bf16 copies kept besides the 4-bit weights.
    pub(crate) fn bf16_bytes(&self) -> usize {
        self.qkv.bf16_bytes() + self.o.bf16_bytes()
    }

    /// Bytes a forward pass reads from the projections' weights.
    pub(crate) fn weight_bytes(&self) -> usize {
        self.qkv.bytes() + self.o.bytes()
    }
}
