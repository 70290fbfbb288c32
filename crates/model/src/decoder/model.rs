//! `Decoder`: a decoder-only transformer language model built from a [`DecoderSpec`].

use super::attention::{Attention, CacheSlot, Mask};
use super::feed_forward::FeedForwardLayer;
use super::norm::NormLayer;
use super::rope::Rope;
use super::{lm_loss, DecoderSpec, KvCache, LmLoss, Positions};
use crate::{Error, Parameters, Result};
use kiln_tensor::{nn, nn::Module, Device, Kind, Tensor};

#[derive(Debug)]
struct Block {
    attn_norm: NormLayer,
    attn: Attention,
    ffn_norm: NormLayer,
    ffn: FeedForwardLayer,
}

/// A decoder-only transformer language model, owning its parameters.
pub struct Decoder {
    spec: DecoderSpec,
    vs: nn::VarStore,
    embed: nn::Embedding,
    positions: Option<nn::Embedding>,
    blocks: Vec<Block>,
    norm: NormLayer,
    lm_head: Option<nn::Linear>,
    rope: Option<Rope>,
    /// The output projection's weights in bf16 once the others are quantized for
    /// inference (see [`Decoder::quantize_int4`]).
    output_bf16: Option<Tensor>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("spec", &self.spec)
            .field("parameters", &self.parameter_count())
            .finish()
    }
}

impl Decoder {
    /// Builds the model on `device` with fresh parameters: normal with standard deviation
    /// 0.02, the projections back into the residual stream scaled down by
    /// `sqrt(2 × layers)` (GPT-2's initialisation). Seed libtorch first for a
    /// reproducible start.
    pub fn new(spec: DecoderSpec, device: Device) -> Result<Decoder> {
        spec.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let model = &root / "model";
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let out_init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02 / (2.0 * spec.layers as f64).sqrt(),
        };
        let embedding = nn::EmbeddingConfig {
            ws_init: init,
            ..Default::default()
        };
        let embed = nn::embedding(&model / "embed_tokens", spec.vocab, spec.width, embedding);
        let positions = (spec.positions == Positions::Learned)
            .then(|| nn::embedding(&model / "embed_positions", spec.context, spec.width, embedding));
        let blocks = (0..spec.layers)
            .map(|i| {
                let p = &model / "layers" / i;
                Block {
                    attn_norm: NormLayer::new(&(&p / "input_layernorm"), spec.norm, spec.width, spec.norm_eps),
                    attn: Attention::new(&(&p / "self_attn"), &spec, init, out_init),
                    ffn_norm: NormLayer::new(&(&p / "post_attention_layernorm"), spec.norm, spec.width, spec.norm_eps),
                    ffn: FeedForwardLayer::new(&(&p / "mlp"), &spec, init, out_init),
                }
            })
            .collect();
        let norm = NormLayer::new(&(&model / "norm"), spec.norm, spec.width, spec.norm_eps);
        let head = nn::LinearConfig {
            ws_init: init,
            bs_init: None,
            bias: false,
        };
        let lm_head = (!spec.tie_embeddings).then(|| nn::linear(&root / "lm_head", spec.width, spec.vocab, head));
        let rope = match spec.positions {
            Positions::Rotary => Some(Rope::new(spec.head_dim(), spec.context, spec.rope_theta, device)?),
            Positions::Learned => None,
        };
        Ok(Decoder {
            spec,
            vs,
            embed,
            positions,
            blocks,
            norm,
            lm_head,
            rope,
            output_bf16: None,
        })
    }

    /// The spec this model was built from.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// The parameters.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The parameters, mutably (for loading weights).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Number of trainable scalars (a tied output projection counted once).
    pub fn parameter_count(&self) -> usize {
        Parameters::parameter_count(self)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.blocks.len(), batch)
    }

    /// An empty row cache: `rows` sequences of up to `capacity` tokens each (at most the
    /// context), its keys and values allocated now, in the weights' dtype and device
    /// ([`bytes_per_token`](Self::bytes_per_token) each). See [`KvCache`].
    pub fn new_row_cache(&self, rows: usize, capacity: i64) -> Result<KvCache> {
        if rows == 0 || capacity < 1 || capacity > self.spec.context {
            return Err(Error::Input(format!(
                "a row cache needs at least one row and a capacity in 1..={} (the context), got {rows} rows of {capacity}",
                self.spec.context
            )));
        }
        let kind = self.output_weight().kind();
        let shape = [rows as i64, self.spec.kv_heads, capacity, self.spec.head_dim()];
        let layers = (0..self.blocks.len())
            .map(|_| {
                Ok((
                    Tensor::f_zeros(shape, (kind, self.device()))?,
                    Tensor::f_zeros(shape, (kind, self.device()))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache::rows(layers, rows, capacity))
    }

    /// Bytes of keys and values one token takes in a cache.
    pub fn bytes_per_token(&self) -> usize {
        let elt = self.output_weight().kind().elt_size_in_bytes();
        2 * self.blocks.len() * (self.spec.kv_heads * self.spec.head_dim()) as usize * elt
    }

    /// Feeds `tokens` `[n, T]` to rows `start..start + n` of a row cache, `T` new tokens
    /// each after the ones the row holds, and returns each row's last logits `[n, vocab]`.
    /// A prompt is one call for its row (`n = 1`); a decoding step, one call for all the
    /// running rows (`T = 1`). Each row computes exactly what its sequence would alone.
    /// Runs without recording gradients.
    pub fn next_logits_rows(&self, tokens: &Tensor, start: usize, cache: &mut KvCache) -> Result<Tensor> {
        let Some(capacity) = cache.capacity else {
            return Err(Error::Input(
                "next_logits_rows needs a row cache (new_row_cache)".into(),
            ));
        };
        let (n, t) = self.check_tokens(tokens)?;
        let end = start + n as usize;
        if end > cache.lengths.len() {
            return Err(Error::Input(format!(
                "rows {start}..{end} are outside the cache's {} rows",
                cache.lengths.len()
            )));
        }
        let lengths = cache.lengths[start..end].to_vec();
        if let Some((i, l)) = lengths.iter().enumerate().find(|(_, l)| **l + t > capacity) {
            return Err(Error::Input(format!(
                "row {} would hold {} tokens, past the cache's capacity of {capacity}",
                start + i,
                l + t
            )));
        }
        let device = self.device();
        kiln_tensor::tch::no_grad(|| {
            let positions = Tensor::f_from_slice(&lengths)?
                .f_to_device(device)?
                .f_view([n, 1])?
                .f_add(&Tensor::f_arange(t, (Kind::Int64, device))?.f_view([1, t])?)?;
            let rows = Tensor::f_arange_start(start as i64, end as i64, (Kind::Int64, device))?.f_view([n, 1])?;
            let longest = lengths.iter().copied().max().unwrap_or(0);
            let visible = longest + t;
            let mask_tensor;
            let mask = if t == 1 && lengths.iter().all(|&l| l == longest) {
                Mask::All
            } else {
                // Slot s is visible to the query at position p when s <= p: each row's
                // own earlier tokens and itself, never another row's or a stale slot.
                let slots = Tensor::f_arange(visible, (Kind::Int64, device))?.f_view([1, 1, 1, visible])?;
                mask_tensor = slots.f_le_tensor(&positions.f_view([n, 1, t, 1])?)?;
                Mask::Explicit(&mask_tensor)
            };
            let caches = Caches::Rows {
                layers: &cache.layers,
                rows: &rows,
                positions: &positions,
                start: start as i64,
                visible,
            };
            let hidden = self.hidden(tokens, &positions, mask, Some(caches), false)?;
            for l in &mut cache.lengths[start..end] {
                *l += t;
            }
            self.project(&hidden.f_select(1, t - 1)?)
        })
    }

    /// Prefills `prompt` into row `row` of a row cache (see
    /// [`next_logits_rows`](Self::next_logits_rows)): its last position's logits, on the
    /// host.
    pub fn prefill_row(&self, prompt: &[u32], row: usize, cache: &mut KvCache) -> Result<Vec<f32>> {
        let ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        let logits = self.next_logits_rows(&Tensor::f_from_slice(&ids)?.f_view([1, -1])?, row, cache)?;
        super::generate::host_rows(&logits)?
            .pop()
            .ok_or_else(|| Error::Input("an empty prompt has no logits".into()))
    }

    /// One decoding step of a row cache: `last[i]` fed to row `i` for every `i`; each
    /// row's next logits, on the host.
    pub fn decode_rows(&self, last: &[u32], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<i64> = last.iter().map(|&t| i64::from(t)).collect();
        let logits = self.next_logits_rows(&Tensor::f_from_slice(&ids)?.f_view([-1, 1])?, 0, cache)?;
        super::generate::host_rows(&logits)
    }

    /// Logits `[B, T, vocab]` (f32) for tokens `[B, T]` at positions `0..T`, each position
    /// seeing only itself and earlier ones; dropout is on when `train`.
    pub fn forward(&self, tokens: &Tensor, train: bool) -> Result<Tensor> {
        let positions = self.whole_positions(tokens)?;
        self.run(tokens, &positions, Mask::Causal, None, train)
    }

    /// Positions `[1, T]` (0..T, broadcast over the batch) for whole sequences `tokens`
    /// `[B, T]`, once they are checked and fit the context.
    fn whole_positions(&self, tokens: &Tensor) -> Result<Tensor> {
        let (_, t) = self.check_tokens(tokens)?;
        if t > self.spec.context {
            return Err(Error::Input(format!(
                "of {t} tokens is longer than the model's context of {}",
                self.spec.context
            )));
        }
        Ok(Tensor::f_arange(t, (Kind::Int64, self.device()))?.f_unsqueeze(0)?)
    }

    /// The next-token loss of `tokens` `[B, T]` against `targets` `[B, T]` (the tokens
    /// that follow each position), computed through the output projection chunk by chunk
    /// (see [`lm_loss`](super::lm_loss)): mean, sum, tokens whose target was the most
    /// likely, and an objective to call `backward` on when `grad`. Dropout is on when
    /// `train`.
    pub fn loss(&self, tokens: &Tensor, targets: &Tensor, train: bool, smoothing: f64, grad: bool) -> Result<LmLoss> {
        if targets.size() != tokens.size() {
            return Err(Error::Input(format!(
                "targets {:?} do not match tokens {:?}",
                targets.size(),
                tokens.size()
            )));
        }
        if grad && self.is_quantized() {
            return Err(Error::Input(
                "this model's weights were quantized to 4 bits for inference; train the f32 model".into(),
            ));
        }
        let positions = self.whole_positions(tokens)?;
        let hidden = self.hidden(tokens, &positions, Mask::Causal, None, train)?;
        // A quantized model's loss goes through the weights its forward pass uses.
        lm_loss(
            &hidden.f_view([-1, self.spec.width])?,
            self.output_bf16.as_ref().unwrap_or(self.output_weight()),
            &targets.f_reshape([-1])?,
            smoothing,
            grad,
        )
    }

    /// Quantizes the projections of every layer to 4 bits in groups of `group` inputs
    /// (32, 64, 128 or 256) for inference on the CPU, and keeps the output projection in
    /// bf16: the forward passes and generation use these from now on (see
    /// [`Int4Weight`]; activations are rounded to bf16 in the products). The f32 weights
    /// stay the parameters (what is saved), and the model can no longer be trained.
    /// Weights imported from a GGUF `Q4_1` file are carried over with their own groups
    /// of 32, up to the bf16 rounding of the scales. The output projection is not taken
    /// to 4 bits because that is where the model is most sensitive: SmolLM2-135M's most
    /// likely token moved at 14% of positions with it in 4 bits, at none in bf16 with the
    /// logits near the top computed again in f32 (`tests/trainer/smollm2.rs`).
    ///
    /// With `keep_bf16`, each projection also keeps its 4-bit weights as bf16 (16 more
    /// bits per weight, 3.2x the 4-bit bytes): products of at least
    /// [`Int4Weight::BF16_ROWS`] rows, a prompt's prefill or a decoding step of that many
    /// sequences, run through them, about twice as fast as the 4-bit kernel for a
    /// 128-token prompt; a step of fewer sequences still reads only the 4-bit weights.
    pub fn quantize_int4(&mut self, group: i64, keep_bf16: bool) -> Result<()> {
        if self.device() != Device::Cpu {
            return Err(Error::Input(format!(
                "4-bit weights run on the CPU; this model is on {:?}",
                self.device()
            )));
        }
        let mut quantize = || -> Result<()> {
            for block in &mut self.blocks {
                block.attn.quantize(Some(group), keep_bf16)?;
                block.ffn.quantize(Some(group), keep_bf16)?;
            }
            self.output_bf16 = Some(self.output_weight().f_to_kind(Kind::BFloat16)?);
            Ok(())
        };
        let done = quantize();
        if done.is_err() {
            // All or nothing: a shape the kernel cannot take leaves the f32 model as it was.
            for block in &mut self.blocks {
                block.attn.quantize(None, false)?;
                block.ffn.quantize(None, false)?;
            }
        }
        done
    }

    /// Whether the weights were quantized for inference ([`quantize_int4`](Self::quantize_int4)).
    pub fn is_quantized(&self) -> bool {
        self.output_bf16.is_some()
    }

    /// Bytes of weights one forward pass reads however few its tokens: every projection's,
    /// the output one's and the norms' (the embedding is only looked up). What bounds the
    /// speed of decoding one token at a time.
    pub fn weight_bytes_per_step(&self) -> usize {
        let f32_bytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| b.attn.weight_bytes() + b.ffn.weight_bytes() + b.attn_norm.bytes() + b.ffn_norm.bytes())
            .sum();
        let output = f32_bytes(self.output_bf16.as_ref().unwrap_or(self.output_weight()));
        blocks + output + self.norm.bytes()
    }

    /// Bytes of the bf16 copies of 4-bit weights (`quantize_int4(_, true)`), 0 without.
    pub fn bf16_copy_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.attn.bf16_bytes() + b.ffn.bf16_bytes())
            .sum()
    }

    /// The output projection's weights `[vocab, width]` (the embedding when tied).
    pub fn output_weight(&self) -> &Tensor {
        match &self.lm_head {
            Some(h) => &h.ws,
            None => &self.embed.ws,
        }
    }

    /// Logits `[B, T, vocab]` for the next tokens of the cached sequences. `valid`
    /// (`[B, T]` bool) marks the real tokens when sequences add different numbers (the
    /// others are padding: put them on the left); without it every token is real. The
    /// tokens' keys and values join the cache. Runs without recording gradients.
    pub fn forward_cached(&self, tokens: &Tensor, valid: Option<&Tensor>, cache: &mut KvCache) -> Result<Tensor> {
        kiln_tensor::tch::no_grad(|| self.project(&self.forward_cached_inner(tokens, valid, cache)?))
    }

    /// As [`forward_cached`](Self::forward_cached), but only the logits of each
    /// sequence's last position, `[B, vocab]`: what choosing the next token needs. A
    /// prompt's other positions skip the output projection, the largest matrix of a small
    /// model (a 128-token prompt to a 49,152-word vocabulary is 6.3 million logits).
    pub fn next_logits(&self, tokens: &Tensor, valid: Option<&Tensor>, cache: &mut KvCache) -> Result<Tensor> {
        kiln_tensor::tch::no_grad(|| {
            let hidden = self.forward_cached_inner(tokens, valid, cache)?;
            let t = hidden.size()[1];
            self.project(&hidden.f_select(1, t - 1)?)
        })
    }

    /// The final norm's output `[B, T, width]` for the new tokens.
    fn forward_cached_inner(&self, tokens: &Tensor, valid: Option<&Tensor>, cache: &mut KvCache) -> Result<Tensor> {
        if cache.capacity.is_some() {
            return Err(Error::Input(
                "a row cache is fed through next_logits_rows, not forward_cached".into(),
            ));
        }
        let (b, t) = self.check_tokens(tokens)?;
        if b as usize != cache.batch() {
            return Err(Error::Input(format!(
                "batch of {b} sequences does not match the cache's {}",
                cache.batch()
            )));
        }
        let device = self.device();
        let valid = match valid {
            Some(v) => {
                if v.size() != [b, t] || v.kind() != Kind::Bool {
                    return Err(Error::Input(format!(
                        "validity mask must be bool [{b}, {t}], got {:?} {:?}",
                        v.kind(),
                        v.size()
                    )));
                }
                v.f_to_device(device)?
            }
            None => Tensor::f_ones([b, t], (Kind::Bool, device))?,
        };
        let added: Vec<i64> = Vec::<i64>::try_from(valid.f_sum_dim_intlist(1, false, Kind::Int64)?)?;
        let padded = cache.padded || added.iter().any(|&n| n != t);
        if let Some((i, n)) = cache
            .lengths
            .iter()
            .zip(&added)
            .map(|(l, a)| l + a)
            .enumerate()
            .find(|(_, n)| *n > self.spec.context)
        {
            return Err(Error::Input(format!(
                "sequence {i} would hold {n} tokens, past the model's context of {}",
                self.spec.context
            )));
        }
        // Each real token's position counts only the real tokens before it.
        let lengths = Tensor::f_from_slice(&cache.lengths)?
            .f_to_device(device)?
            .f_unsqueeze(1)?;
        let positions = valid
            .f_to_kind(Kind::Int64)?
            .f_cumsum(1, Kind::Int64)?
            .f_sub_scalar(1)?
            .f_add(&lengths)?
            .f_clamp_min(0)?;
        let slots = cache.slots();
        let key_valid = match &cache.valid {
            Some(old) => Tensor::f_cat(&[old.shallow_clone(), valid.shallow_clone()], 1)?,
            None => valid.shallow_clone(),
        };
        let mask_tensor;
        let mask = if !padded && slots == 0 {
            Mask::Causal
        } else if !padded && t == 1 {
            Mask::All
        } else {
            // Slot j is visible to the query in slot i when j <= i and j is real; a query
            // always sees itself, so that no row is empty (a padded query's output is
            // unused, but must not be NaN).
            let total = slots + t;
            let key_slot = Tensor::f_arange(total, (Kind::Int64, device))?.f_view([1, total])?;
            let query_slot = Tensor::f_arange_start(slots, total, (Kind::Int64, device))?.f_view([t, 1])?;
            let causal = key_slot.f_le_tensor(&query_slot)?; // [T, S]
            let own = key_slot.f_eq_tensor(&query_slot)?;
            let real = key_valid.f_view([b, 1, 1, total])?;
            mask_tensor = causal
                .f_view([1, 1, t, total])?
                .f_logical_and(&real)?
                .f_logical_or(&own.f_view([1, 1, t, total])?)?;
            Mask::Explicit(&mask_tensor)
        };
        let out = self.hidden(tokens, &positions, mask, Some(Caches::Grow(&mut cache.layers)), false)?;
        cache.valid = Some(key_valid);
        cache.padded = padded;
        for (l, a) in cache.lengths.iter_mut().zip(added) {
            *l += a;
        }
        Ok(out)
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<(i64, i64)> {
        let size = tokens.size();
        let [b, t] = size[..] else {
            return Err(Error::Input(format!("tokens must be [batch, length], got {size:?}")));
        };
        if tokens.kind() != Kind::Int64 {
            return Err(Error::Input(format!("tokens must be int64, got {:?}", tokens.kind())));
        }
        if t == 0 || b == 0 {
            return Err(Error::Input(format!("tokens {size:?} hold no token")));
        }
        let (lo, hi) = (tokens.f_min()?.f_int64_value(&[])?, tokens.f_max()?.f_int64_value(&[])?);
        if lo < 0 || hi >= self.spec.vocab {
            let bad = if lo < 0 { lo } else { hi };
            return Err(Error::Input(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.spec.vocab
            )));
        }
        Ok((b, t))
    }

    fn run(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: Mask<'_>,
        cache: Option<Caches<'_>>,
        train: bool,
    ) -> Result<Tensor> {
        let x = self.hidden(tokens, positions, mask, cache, train)?;
        self.project(&x)
    }

    /// Hidden states `[..., width]` to f32 logits `[..., vocab]`.
    fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        let Some(coarse_weight) = &self.output_bf16 else {
            return Ok(hidden.f_matmul(&self.output_weight().f_tr()?)?.f_to_kind(Kind::Float)?);
        };
        // bf16 logits are coarse (steps of 0.125 at 16..32): near-ties between the most
        // likely tokens would be broken by rounding. Every token within reach of a row's
        // largest logit is computed again exactly, in f32, from the f32 weights: a few
        // rows of the output matrix, so greedy decoding and the top of the distribution
        // are those of the f32 projection.
        let width = self.spec.width;
        let mut shape = hidden.size();
        let rows = hidden.f_reshape([-1, width])?;
        let mut logits = rows
            .f_to_kind(Kind::BFloat16)?
            .f_matmul(&coarse_weight.f_tr()?)?
            .f_to_kind(Kind::Float)?;
        let top = logits.f_amax([-1].as_slice(), true)?;
        let reach = top.f_abs()?.f_mul_scalar(1.0 / 32.0)?.f_clamp_min(1.0)?;
        let near = logits.f_ge_tensor(&top.f_sub(&reach)?)?.f_nonzero()?; // [K, 2]: (row, token)
        let (row, token) = (near.f_select(1, 0)?, near.f_select(1, 1)?);
        let exact = rows
            .f_index_select(0, &row)?
            .f_mul(&self.output_weight().f_index_select(0, &token)?)?
            .f_sum_dim_intlist([-1].as_slice(), false, Kind::Float)?;
        let _ = logits.f_index_put_(&[Some(row), Some(token)], &exact, false)?;
        if let Some(last) = shape.last_mut() {
            *last = self.spec.vocab;
        }
        Ok(logits.f_reshape(shape.as_slice())?)
    }

    /// The final norm's output `[B, T, width]`: what the output projection reads.
    fn hidden(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: Mask<'_>,
        mut cache: Option<Caches<'_>>,
        train: bool,
    ) -> Result<Tensor> {
        let tokens = tokens.f_to_device(self.device())?;
        let mut x = self.embed.forward(&tokens);
        if let Some(p) = &self.positions {
            x = x.f_add(&p.forward(positions))?;
        }
        x = x.f_dropout(self.spec.dropout, train)?;
        let rope = self.rope.as_ref().map(|r| r.at(positions)).transpose()?;
        for (i, block) in self.blocks.iter().enumerate() {
            let mask = match &mask {
                Mask::Causal => Mask::Causal,
                Mask::All => Mask::All,
                Mask::Explicit(m) => Mask::Explicit(m),
            };
            let slot = match cache.as_mut() {
                None => None,
                Some(Caches::Grow(layers)) => layers.get_mut(i).map(CacheSlot::Grow),
                Some(Caches::Rows {
                    layers,
                    rows,
                    positions,
                    start,
                    visible,
                }) => match layers.get(i) {
                    Some(Some((keys, values))) => Some(CacheSlot::Rows {
                        keys,
                        values,
                        rows,
                        positions,
                        start: *start,
                        visible: *visible,
                    }),
                    _ => return Err(Error::Input(format!("the row cache has no layer {i}"))),
                },
            };
            let a = block
                .attn
                .forward(&block.attn_norm.forward(&x)?, rope.as_ref(), mask, slot, train)?;
            x = x.f_add(&a.f_dropout(self.spec.dropout, train)?)?;
            let f = block.ffn.forward(&block.ffn_norm.forward(&x)?)?;
            x = x.f_add(&f.f_dropout(self.spec.dropout, train)?)?;
        }
        Ok(self.norm.forward(&x)?)
    }
}

/// The caches a forward pass reads and fills, one per layer.
enum Caches<'a> {
    /// Shared slots, grown by each call.
    Grow(&'a mut Vec<Option<(Tensor, Tensor)>>),
    /// Rows `start..start + n` of a row cache; see [`CacheSlot::Rows`].
    Rows {
        layers: &'a [Option<(Tensor, Tensor)>],
        rows: &'a Tensor,
        positions: &'a Tensor,
        start: i64,
        visible: i64,
    },
}

impl Parameters for Decoder {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}
