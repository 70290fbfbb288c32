//! The next-token loss of a language model computed through the output projection chunk
//! by chunk ("fused linear cross-entropy"), so that the `[tokens, vocab]` logits never
//! exist whole.
//!
//! Plain cross-entropy over a 4,096-token batch and a 4,096-word vocabulary makes four
//! 64 MiB tensors (logits, log-probabilities, their gradient, the gradient of the
//! logits), each written and read again from memory, plus the page faults of allocating
//! them. Here each chunk of a few hundred rows has its logits computed, turned into
//! probabilities in place, and its gradient with respect to the hidden states and the
//! output weights taken at once while the chunk is still in cache. The gradients are
//! handed to autograd through a surrogate whose gradient is exactly them, so the
//! backward pass of the layers below runs as usual.

use crate::{Error, Result};
use kiln_tensor::{tch, Kind, Tensor};

/// Logits per chunk (elements): 8 MiB of f32, at least [`MIN_ROWS`] rows.
const CHUNK_ELEMENTS: i64 = 2 << 20;
const MIN_ROWS: i64 = 32;

/// The loss of a batch of next-token predictions.
#[derive(Debug)]
pub struct LmLoss {
    /// A scalar whose value is the mean loss and whose gradient with respect to the
    /// hidden states and output weights is the mean loss's: call `backward` on it.
    /// Without gradients (`grad = false`, or inputs that need none) it is the mean loss.
    pub objective: Tensor,
    /// The summed loss over the tokens, in nats.
    pub loss_sum: f64,
    /// Tokens whose target had the highest logit.
    pub correct: i64,
    /// Tokens predicted.
    pub tokens: i64,
}

impl LmLoss {
    /// The mean loss per token.
    pub fn mean(&self) -> f64 {
        self.loss_sum / self.tokens.max(1) as f64
    }
}

/// The mean cross-entropy of `hidden` `[N, width]` projected by `weight` `[vocab,
/// width]` against `targets` `[N]` (int64, each in `0..vocab`), with label smoothing
/// `smoothing` as `torch.nn.functional.cross_entropy` defines it. With `grad`, the
/// objective carries the gradient to `hidden` and `weight`.
pub fn lm_loss(hidden: &Tensor, weight: &Tensor, targets: &Tensor, smoothing: f64, grad: bool) -> Result<LmLoss> {
    let (hs, ws, ts) = (hidden.size(), weight.size(), targets.size());
    let (&[n, width], &[vocab, w_width], &[t]) = (&hs[..], &ws[..], &ts[..]) else {
        return Err(Error::Input(format!(
            "loss inputs must be hidden [N, width], weight [vocab, width], targets [N]; got {hs:?}, {ws:?}, {ts:?}"
        )));
    };
    if width != w_width || t != n || targets.kind() != Kind::Int64 {
        return Err(Error::Input(format!(
            "loss inputs disagree: hidden {hs:?}, weight {ws:?}, targets {ts:?} {:?} (int64 wanted)",
            targets.kind()
        )));
    }
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::Input(format!("label smoothing {smoothing} is outside [0, 1)")));
    }
    if n == 0 {
        return Err(Error::Input("the loss needs at least one token".into()));
    }
    let device = hidden.device();
    let grad = grad && (hidden.requires_grad() || weight.requires_grad());
    let rows = (CHUNK_ELEMENTS / vocab.max(1)).max(MIN_ROWS);
    let targets = targets.f_to_device(device)?;
    let (lo, hi) = (
        targets.f_min()?.f_int64_value(&[])?,
        targets.f_max()?.f_int64_value(&[])?,
    );
    if lo < 0 || hi >= vocab {
        return Err(Error::Input(format!(
            "target {} is outside the vocabulary of {vocab}",
            if lo < 0 { lo } else { hi }
        )));
    }
    let (sum, correct, grads) = tch::no_grad(|| -> Result<_> {
        let h = hidden.f_detach()?.f_to_kind(Kind::Float)?;
        let w = weight.f_detach()?.f_to_kind(Kind::Float)?;
        let wt = w.f_tr()?;
        let mut sum = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
        let mut grads = if grad {
            Some((h.f_empty_like()?, w.f_zeros_like()?))
        } else {
            None
        };
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            let hc = h.f_narrow(0, start, len)?;
            let yc = targets.f_narrow(0, start, len)?.f_unsqueeze(1)?;
            let mut z = hc.f_mm(&wt)?; // [len, vocab]
            let zy = z.f_gather(1, &yc, false)?.f_squeeze_dim(1)?;
            let max = z.f_amax([1], false)?;
            correct = correct.f_add(&zy.f_ge_tensor(&max)?.f_sum(Kind::Int64)?)?;
            let mean_z = if smoothing > 0.0 {
                Some(z.f_mean_dim([1].as_slice(), false, Kind::Float)?)
            } else {
                None
            };
            // z becomes the probabilities, in place: exp(z - max) / sum.
            let _ = z.f_sub_(&max.f_unsqueeze(1)?)?;
            let _ = z.f_exp_()?;
            let total = z.f_sum_dim_intlist([1].as_slice(), false, Kind::Float)?;
            let _ = z.f_div_(&total.f_unsqueeze(1)?)?;
            // loss = logsumexp - (1 - s) z_y - s mean(z)
            let lse = total.f_log()?.f_add(&max)?;
            let mut loss = lse.f_sub(&zy.f_mul_scalar(1.0 - smoothing)?)?;
            if let Some(m) = &mean_z {
                loss = loss.f_sub(&m.f_mul_scalar(smoothing)?)?;
            }
            sum = sum.f_add(&loss.f_sum(Kind::Double)?)?;
            if let Some((gh, gw)) = grads.as_mut() {
                // d(mean loss)/dz = (p - (1 - s) onehot(y) - s / vocab) / N
                let hit = Tensor::f_full([len, 1], -(1.0 - smoothing), (Kind::Float, device))?;
                let _ = z.f_scatter_add_(1, &yc, &hit)?;
                if smoothing > 0.0 {
                    let _ = z.f_sub_scalar_(smoothing / vocab as f64)?;
                }
                let _ = z.f_mul_scalar_(1.0 / n as f64)?;
                let _ = z.f_mm_out(&gh.f_narrow(0, start, len)?, &w)?;
                let _ = gw.f_addmm_(&z.f_tr()?, &hc)?;
            }
            start += len;
        }
        Ok((sum, correct, grads))
    })?;
    let loss_sum = sum.f_double_value(&[])?;
    let mean = Tensor::f_from_slice(&[(loss_sum / n as f64) as f32])?
        .f_to_device(device)?
        .f_view([])?;
    let objective = match grads {
        Some((gh, gw)) => {
            // Its gradient is (gh, gw); its value, once the surrogate cancels, the mean.
            let surrogate = hidden
                .f_mul(&gh.f_to_kind(hidden.kind())?)?
                .f_sum(Kind::Float)?
                .f_add(&weight.f_mul(&gw.f_to_kind(weight.kind())?)?.f_sum(Kind::Float)?)?;
            surrogate.f_sub(&surrogate.f_detach()?)?.f_add(&mean)?
        }
        None => mean,
    };
    Ok(LmLoss {
        objective,
        loss_sum,
        correct: correct.f_int64_value(&[])?,
        tokens: n,
    })
}
