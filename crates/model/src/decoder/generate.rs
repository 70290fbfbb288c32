//! `generate`: continuing a batch of prompts token by token, with the KV cache (prefill
//! once, then one token per step) or without it (every step recomputes every token).

use super::{Decoder, KvCache, Sampler, Sampling};
use crate::{Error, Result};
use kiln_tensor::{Device, Kind, Tensor};
use serde::{Deserialize, Serialize};

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    /// Tokens to add at most per sequence (fewer when the context fills up).
    pub max_tokens: usize,
    /// How tokens are chosen; sequence `i` of a batch draws with seed `seed + i`.
    pub sampling: Sampling,
    /// Tokens that end a sequence (kept as its last token).
    pub stop_tokens: Vec<u32>,
    /// Keep keys and values between steps; `false` recomputes the whole sequence each step
    /// (slower, the same tokens; for comparison).
    pub use_cache: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_tokens: 64,
            sampling: Sampling::default(),
            stop_tokens: Vec::new(),
            use_cache: true,
        }
    }
}

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// It produced a stop token, or the caller stopped it (a stop string).
    Stop,
    /// It reached `max_tokens` or the model's context.
    Length,
}

/// One sequence's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The tokens added (not the prompt).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish: Finish,
}

/// Continues each prompt. `on_token(i, token)` sees each new token of sequence `i` as it
/// is made and returns `false` to stop that sequence there (as a stop string does).
/// The tokens depend on neither the batch nor the cache: each sequence gets what it would
/// alone.
pub fn generate(
    model: &Decoder,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    config.sampling.validate()?;
    let context = model.spec().context as usize;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::Input(format!(
                "prompt {i} is empty; give it at least one token (a BOS)"
            )));
        }
        if p.len() >= context {
            return Err(Error::Input(format!(
                "prompt {i} of {} tokens leaves no room in the model's context of {context}",
                p.len()
            )));
        }
    }
    let n = prompts.len();
    let mut samplers: Vec<Sampler> = (0..n)
        .map(|i| {
            Sampler::new(Sampling {
                seed: config.sampling.seed.wrapping_add(i as u64),
                ..config.sampling.clone()
            })
        })
        .collect();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut out: Vec<Generation> = (0..n)
        .map(|_| Generation {
            tokens: Vec::new(),
            finish: Finish::Length,
        })
        .collect();
    let mut active: Vec<bool> = vec![config.max_tokens > 0; n];
    // With the cache each sequence has a row of a row cache, room for its prompt and
    // what it may add; `rows[r]` is the sequence in row `r`, and the running ones stay in
    // rows 0..rows.len() so that one call feeds them all.
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = (longest + config.max_tokens).min(context) as i64;
    let mut rows: Vec<usize> = (0..n).collect();
    let mut cache = if config.use_cache {
        Some(model.new_row_cache(n.max(1), capacity)?)
    } else {
        None
    };
    let mut logits = match cache.as_mut() {
        Some(cache) => prompts
            .iter()
            .enumerate()
            .map(|(i, p)| model.prefill_row(p, i, cache))
            .collect::<Result<Vec<_>>>()?,
        None => last_logits(model, &seqs, &mut model.new_cache(n))?,
    };
    while active.iter().any(|&a| a) {
        for i in 0..n {
            if !active[i] {
                continue;
            }
            let token = samplers[i].next(&logits[i], &seqs[i]);
            seqs[i].push(token);
            out[i].tokens.push(token);
            let keep_going = on_token(i, token);
            if !keep_going || config.stop_tokens.contains(&token) {
                out[i].finish = Finish::Stop;
                active[i] = false;
            } else if out[i].tokens.len() >= config.max_tokens || seqs[i].len() >= context {
                active[i] = false;
            }
        }
        if !active.iter().any(|&a| a) {
            break;
        }
        match cache.as_mut() {
            Some(cache) => {
                // Finished sequences leave; the last running row fills each gap.
                let mut r = 0;
                while r < rows.len() {
                    if active[rows[r]] {
                        r += 1;
                    } else {
                        cache.move_row(rows.len() - 1, r)?;
                        rows.swap_remove(r);
                    }
                }
                let last: Vec<u32> = rows.iter().map(|&i| seqs[i][seqs[i].len() - 1]).collect();
                for (&i, row) in rows.iter().zip(model.decode_rows(&last, cache)?) {
                    logits[i] = row;
                }
            }
            None => {
                let mut fresh = model.new_cache(n);
                logits = last_logits(model, &seqs, &mut fresh)?;
            }
        }
    }
    Ok(out)
}

/// The last position's logits per sequence, from whole sequences left-padded into one
/// batch.
fn last_logits(model: &Decoder, seqs: &[Vec<u32>], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let b = seqs.len();
    let mut ids = Vec::with_capacity(b * t);
    let mut valid = Vec::with_capacity(b * t);
    for s in seqs {
        ids.extend(std::iter::repeat_n(0i64, t - s.len()));
        valid.extend(std::iter::repeat_n(false, t - s.len()));
        ids.extend(s.iter().map(|&x| x as i64));
        valid.extend(std::iter::repeat_n(true, s.len()));
    }
    let shape = [b as i64, t as i64];
    let ids = Tensor::f_from_slice(&ids)?.f_view(shape)?;
    let all_valid = valid.iter().all(|&v| v);
    let valid = Tensor::f_from_slice(&valid)?.f_view(shape)?;
    host_rows(&model.next_logits(&ids, (!all_valid).then_some(&valid), cache)?)
}

/// Logits `[n, vocab]` as one f32 vector per row on the host, for the samplers.
pub(crate) fn host_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let host = logits.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
    (0..host.size()[0])
        .map(|i| Ok(Vec::<f32>::try_from(host.f_get(i)?)?))
        .collect()
}
