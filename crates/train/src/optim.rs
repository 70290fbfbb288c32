//! kiln's own optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW, with
//! parameter groups. kiln owns their state (momentum buffers, Adam moments, the step
//! count) so that a checkpoint can hold it and a resumed run continues exactly.
//!
//! The update rules are PyTorch's (`torch.optim`), so configs mean the same thing in both.

use crate::{Error, OptimizerConfig, OptimizerKind, Result};
use kiln_tensor::{nn, tch, Kind, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Settings for the parameters whose name contains `match` (the first group that
/// matches wins; unmatched parameters use the optimizer's own settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// A substring of the parameter name, e.g. `bias` or `bn`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Weight decay for this group (e.g. 0 for biases and norms).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// The group's learning rate as a multiple of the scheduled rate.
    #[serde(default)]
    pub lr_scale: Option<f64>,
}

struct Param {
    name: String,
    var: Tensor,
    weight_decay: f64,
    lr_scale: f64,
    /// SGD: `[momentum_buffer]` once the first step made it; Adam(W): `[exp_avg, exp_avg_sq]`.
    state: Vec<Tensor>,
    /// Work space the size of the parameter, so that a step allocates nothing: at these
    /// sizes an allocation is an mmap and page faults, which cost more than the arithmetic.
    scratch: Vec<Tensor>,
}

/// An optimizer over the trainable parameters of a var store.
pub struct Optimizer {
    cfg: OptimizerConfig,
    params: Vec<Param>,
    steps: u64,
}

impl Optimizer {
    /// The optimizer `cfg` describes, over the trainable variables of `vs`.
    pub fn new(cfg: &OptimizerConfig, vs: &nn::VarStore) -> Result<Optimizer> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let group = cfg.groups.iter().find(|g| name.contains(&g.pattern));
            let state = match cfg.kind {
                OptimizerKind::Sgd => Vec::new(),
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    vec![var.f_zeros_like()?.f_detach()?, var.f_zeros_like()?.f_detach()?]
                }
            };
            let scratch = vec![var.f_zeros_like()?.f_detach()?, var.f_zeros_like()?.f_detach()?];
            params.push(Param {
                scratch,
                weight_decay: group.and_then(|g| g.weight_decay).unwrap_or(cfg.weight_decay),
                lr_scale: group.and_then(|g| g.lr_scale).unwrap_or(1.0),
                name,
                var,
                state,
            });
        }
        Ok(Optimizer {
            cfg: cfg.clone(),
            params,
            steps: 0,
        })
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The weight decay and learning-rate scale each parameter got from the groups.
    pub fn param_settings(&self) -> Vec<(String, f64, f64)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.weight_decay, p.lr_scale))
            .collect()
    }

    /// Zeroes every gradient in place (a gradient that is a view, into a data-parallel
    /// gradient bucket say, stays that view).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.var.grad();
            if g.defined() {
                // Only a gradient with a graph of its own needs detaching (as torch.optim
                // does); views cannot be detached in place.
                if g.requires_grad() {
                    let _ = g.f_detach_();
                }
                let _ = tch::no_grad(|| g.f_zero_());
            }
        }
    }

    /// Scales all gradients together so that their global L2 norm is at most `max_norm`;
    /// returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(|g| g.defined())
            .collect();
        let mut total = 0f64;
        for g in &grads {
            let n = g.f_norm()?.f_double_value(&[])?;
            total += n * n;
        }
        let total = total.sqrt();
        if total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| -> Result<()> {
                for g in &grads {
                    let mut g = g.shallow_clone();
                    let _ = g.f_mul_scalar_(scale)?;
                }
                Ok(())
            })?;
        }
        Ok(total)
    }

    /// Applies one update with learning rate `lr` (times each group's scale).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let cfg = &self.cfg;
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                let grad = p.var.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * p.lr_scale;
                let mut var = p.var.shallow_clone();
                match cfg.kind {
                    OptimizerKind::Sgd => {
                        let mut g = if p.weight_decay != 0.0 {
                            grad.f_add(&var.f_mul_scalar(p.weight_decay)?)?
                        } else {
                            grad
                        };
                        if cfg.momentum != 0.0 {
                            if p.state.is_empty() {
                                p.state.push(g.f_detach()?.f_clone(&g)?);
                            } else {
                                let buf = &mut p.state[0];
                                let _ = buf.f_mul_scalar_(cfg.momentum)?;
                                let _ = buf.f_add_(&g)?;
                            }
                            let buf = &p.state[0];
                            g = if cfg.nesterov {
                                g.f_add(&buf.f_mul_scalar(cfg.momentum)?)?
                            } else {
                                buf.shallow_clone()
                            };
                        }
                        let _ = var.f_sub_(&g.f_mul_scalar(lr)?)?;
                    }
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        let (b1, b2) = cfg.betas;
                        let [s0, s1] = p.scratch.as_mut_slice() else { continue };
                        let g = if cfg.kind == OptimizerKind::Adam && p.weight_decay != 0.0 {
                            s0.f_copy_(&var)?;
                            let _ = s0.f_mul_scalar_(p.weight_decay)?;
                            let _ = s0.f_add_(&grad)?;
                            s0.shallow_clone()
                        } else {
                            grad
                        };
                        if cfg.kind == OptimizerKind::Adamw && p.weight_decay != 0.0 {
                            let _ = var.f_mul_scalar_(1.0 - lr * p.weight_decay)?;
                        }
                        let [m, v] = p.state.as_mut_slice() else {
                            return Err(Error::Checkpoint(format!("optimizer state of {} is missing", p.name)));
                        };
                        let _ = m.f_lerp_(&g, 1.0 - b1)?;
                        // v = b2 * v + (1 - b2) * g^2, with g^2 in scratch[1]
                        let _ = v.f_mul_scalar_(b2)?;
                        let _ = g.f_mul_out(s1, &g)?;
                        let _ = s1.f_mul_scalar_(1.0 - b2)?;
                        let _ = v.f_add_(s1)?;
                        let bc1 = 1.0 - b1.powi(t);
                        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
                        // denom = sqrt(v) / sqrt(bc2) + eps, in scratch[1]
                        let _ = v.f_sqrt_out(s1)?;
                        let _ = s1.f_div_scalar_(bc2_sqrt)?;
                        let _ = s1.f_add_scalar_(cfg.eps)?;
                        // w -= lr / bc1 * m / denom, through scratch[0] (g is no longer needed)
                        let _ = m.f_div_out(s0, s1)?;
                        let _ = s0.f_mul_scalar_(lr / bc1)?;
                        let _ = var.f_sub_(s0)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The state to checkpoint: named tensors (`optim/<param>/<slot>`) and the step count.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            for (i, s) in p.state.iter().enumerate() {
                out.push((format!("optim/{}/{i}", p.name), s.shallow_clone()));
            }
        }
        out
    }

    /// Restores state saved by [`state_tensors`](Self::state_tensors); every tensor must
    /// match its parameter's shape.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let device = self
            .params
            .first()
            .map(|p| p.var.device())
            .unwrap_or(kiln_tensor::Device::Cpu);
        for p in &mut self.params {
            let slots = match self.cfg.kind {
                OptimizerKind::Sgd if self.cfg.momentum != 0.0 && steps > 0 => 1,
                OptimizerKind::Sgd => 0,
                _ => 2,
            };
            let mut state = Vec::with_capacity(slots);
            for i in 0..slots {
                let key = format!("optim/{}/{i}", p.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| Error::Checkpoint(format!("it lacks optimizer state {key}")))?;
                if t.size() != p.var.size() || t.kind() != Kind::Float {
                    return Err(Error::Checkpoint(format!(
                        "optimizer state {key} has shape {:?}, the parameter has {:?}",
                        t.size(),
                        p.var.size()
                    )));
                }
                state.push(t.f_to_device(device)?.f_detach()?);
            }
            p.state = state;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tensor::{convert, Device};

    /// A var store with one parameter `w` (initialised to `init`) whose gradient is `grad`.
    fn setup(cfg: &OptimizerConfig, init: &[f32], grad: &[f32]) -> (nn::VarStore, Optimizer) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &convert::tensor_from_f32(init, &[init.len() as i64]).unwrap());
        let opt = Optimizer::new(cfg, &vs).unwrap();
        backward(&w, grad);
        (vs, opt)
    }

    fn backward(w: &Tensor, grad: &[f32]) {
        let c = convert::tensor_from_f32(grad, &[grad.len() as i64]).unwrap();
        (w * c).sum(Kind::Float).backward();
    }

    fn values(vs: &nn::VarStore) -> Vec<f32> {
        convert::tensor_to_f32(&vs.variables()["w"]).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn sgd_with_momentum_and_weight_decay_follows_pytorch() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 0.1,
            ..Default::default()
        };
        let (vs, mut opt) = setup(&cfg, &[1.0, -2.0], &[0.5, 0.5]);
        opt.step(0.1).unwrap();
        // g = 0.5 + 0.1 * w = [0.6, 0.3]; buf = g; w -= 0.1 * buf
        assert!(close(&values(&vs), &[0.94, -2.03]), "{:?}", values(&vs));
        opt.zero_grad();
        backward(&vs.variables()["w"], &[0.5, 0.5]);
        opt.step(0.1).unwrap();
        // g = 0.5 + 0.1 * [0.94, -2.03] = [0.594, 0.297]; buf = 0.9 * [0.6, 0.3] + g = [1.134, 0.567]
        assert!(
            close(&values(&vs), &[0.94 - 0.1134, -2.03 - 0.0567]),
            "{:?}",
            values(&vs)
        );
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_the_learning_rate() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Adam,
            ..Default::default()
        };
        let (vs, mut opt) = setup(&cfg, &[1.0, 1.0], &[3.0, -0.01]);
        opt.step(0.01).unwrap();
        // Bias-corrected m / sqrt(v) is sign(g) on the first step.
        assert!(close(&values(&vs), &[0.99, 1.01]), "{:?}", values(&vs));
    }

    #[test]
    fn adamw_decays_weights_separately_and_groups_override_it() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Adamw,
            weight_decay: 0.5,
            groups: vec![ParamGroup {
                pattern: "bias".into(),
                weight_decay: Some(0.0),
                lr_scale: Some(2.0),
            }],
            ..Default::default()
        };
        let (vs, mut opt) = setup(&cfg, &[2.0], &[0.0]);
        opt.step(0.1).unwrap();
        // No gradient: only the decoupled decay acts, w *= 1 - lr * wd.
        assert!(close(&values(&vs), &[2.0 * 0.95]), "{:?}", values(&vs));
        let vs2 = nn::VarStore::new(Device::Cpu);
        let _ = vs2.root().sub("fc").zeros("bias", &[1]);
        let _ = vs2.root().sub("fc").zeros("weight", &[1]);
        let settings = Optimizer::new(&cfg, &vs2).unwrap().param_settings();
        assert_eq!(
            settings,
            vec![("fc.bias".into(), 0.0, 2.0), ("fc.weight".into(), 0.5, 1.0)]
        );
    }

    #[test]
    fn clipping_scales_the_global_norm_down_and_leaves_small_gradients() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            ..Default::default()
        };
        let (vs, mut opt) = setup(&cfg, &[0.0, 0.0], &[3.0, 4.0]);
        let norm = opt.clip_grad_norm(1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let g = convert::tensor_to_f32(&vs.variables()["w"].grad()).unwrap();
        assert!(close(&g, &[0.6, 0.8]), "{g:?}");
        let norm = opt.clip_grad_norm(10.0).unwrap();
        assert!((norm - 1.0).abs() < 1e-5);
        let g2 = convert::tensor_to_f32(&vs.variables()["w"].grad()).unwrap();
        assert_eq!(g, g2, "a norm under the limit is left alone");
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Adam,
            ..Default::default()
        };
        let (_vs, mut opt) = setup(&cfg, &[1.0, 2.0], &[0.3, -0.7]);
        opt.step(0.01).unwrap();
        let saved: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
        let (_vs2, mut other) = setup(&cfg, &[1.0, 2.0], &[0.0, 0.0]);
        other.load_state(&saved, opt.steps()).unwrap();
        assert_eq!(other.steps(), 1);
        for (k, t) in other.state_tensors() {
            assert_eq!(
                convert::tensor_to_f32(&t).unwrap(),
                convert::tensor_to_f32(&saved[&k]).unwrap()
            );
        }
        let mut wrong: HashMap<String, Tensor> = saved.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        wrong.insert("optim/w/0".into(), Tensor::zeros([3], (Kind::Float, Device::Cpu)));
        assert!(other
            .load_state(&wrong, 1)
            .unwrap_err()
            .to_string()
            .contains("shape [3]"));
    }
}
