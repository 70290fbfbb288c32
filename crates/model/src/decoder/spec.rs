//! `DecoderSpec`: the sizes and choices of a decoder-only transformer language model.

use crate::spec::check_dropout;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The feed-forward block of each layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedForward {
    /// `down(silu(gate(x)) * up(x))`, as Llama.
    #[default]
    Swiglu,
    /// `down(gelu(up(x)))`, as GPT-2.
    Gelu,
}

/// The normalisation before attention, before the feed-forward block and at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// Root-mean-square norm with a learnt scale, as Llama.
    #[default]
    Rms,
    /// Layer norm with a learnt scale and shift, as GPT-2.
    Layer,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// Rotary embeddings of queries and keys (`rope_theta`), as Llama.
    #[default]
    Rotary,
    /// A learnt embedding per position added to the token embedding, as GPT-2.
    Learned,
}

/// A decoder-only transformer. Parameters follow the Llama layout of published
/// safetensors checkpoints (`model.embed_tokens.weight`,
/// `model.layers.{i}.self_attn.q_proj.weight`, `model.layers.{i}.mlp.gate_proj.weight`,
/// `model.layers.{i}.input_layernorm.weight`, `model.norm.weight`, `lm_head.weight`...),
/// so such weights load by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderSpec {
    /// Token ids the model reads and predicts.
    pub vocab: i64,
    /// The width of the residual stream.
    pub width: i64,
    /// Transformer blocks.
    pub layers: i64,
    /// Query heads; `width` must be a multiple.
    pub heads: i64,
    /// Key/value heads (grouped-query attention); `heads` must be a multiple. Equal to
    /// `heads` for classic multi-head attention.
    pub kv_heads: i64,
    /// The feed-forward block.
    pub feed_forward: FeedForward,
    /// The feed-forward block's inner width.
    pub ffn_width: i64,
    /// The normalisation.
    pub norm: Norm,
    /// The normalisation's epsilon.
    pub norm_eps: f64,
    /// How positions enter.
    pub positions: Positions,
    /// The base of the rotary embeddings' frequencies.
    pub rope_theta: f64,
    /// Use the token embedding as the output projection (no `lm_head.weight`).
    pub tie_embeddings: bool,
    /// Dropout on attention weights and on each block's output while training.
    pub dropout: f64,
    /// The longest sequence, prompt and generated tokens together.
    pub context: i64,
}

impl Default for DecoderSpec {
    fn default() -> Self {
        DecoderSpec {
            vocab: 0,
            width: 256,
            layers: 4,
            heads: 4,
            kv_heads: 4,
            feed_forward: FeedForward::Swiglu,
            ffn_width: 768,
            norm: Norm::Rms,
            norm_eps: 1e-5,
            positions: Positions::Rotary,
            rope_theta: 10_000.0,
            tie_embeddings: true,
            dropout: 0.0,
            context: 256,
        }
    }
}

impl DecoderSpec {
    /// The width of one attention head.
    pub fn head_dim(&self) -> i64 {
        if self.heads > 0 {
            self.width / self.heads
        } else {
            0
        }
    }

    /// Checks that the spec describes a model that can be built.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab", self.vocab),
            ("width", self.width),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("ffn_width", self.ffn_width),
            ("context", self.context),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(Error::Spec(format!("decoder {name} is {v}; it must be positive")));
        }
        if self.width % self.heads != 0 {
            return Err(Error::Spec(format!(
                "decoder width {} is not a multiple of heads {}",
                self.width, self.heads
            )));
        }
        if self.heads % self.kv_heads != 0 {
            return Err(Error::Spec(format!(
                "decoder heads {} is not a multiple of kv_heads {} (each key/value head serves a whole group of query heads)",
                self.heads, self.kv_heads
            )));
        }
        if self.positions == Positions::Rotary && self.head_dim() % 2 != 0 {
            return Err(Error::Spec(format!(
                "rotary positions need an even head width; width {} / heads {} is {}",
                self.width,
                self.heads,
                self.head_dim()
            )));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(Error::Spec(format!(
                "decoder norm_eps {} must be positive",
                self.norm_eps
            )));
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return Err(Error::Spec(format!(
                "decoder rope_theta {} must be above 1",
                self.rope_theta
            )));
        }
        check_dropout(self.dropout)
    }
}
