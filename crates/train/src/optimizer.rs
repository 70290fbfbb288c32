//! Building the configured optimizer over a network's trainable parameters.

use crate::{OptimizerConfig, OptimizerKind, Result};
use kiln_tensor::nn::{self, OptimizerConfig as _};

/// The optimizer `cfg` describes, over the trainable variables of `vs`.
pub fn build_optimizer(cfg: &OptimizerConfig, vs: &nn::VarStore) -> Result<nn::Optimizer> {
    let opt = match cfg.kind {
        OptimizerKind::Sgd => nn::Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            wd: cfg.weight_decay,
            nesterov: cfg.nesterov,
        }
        .build(vs, cfg.lr)?,
        OptimizerKind::Adam => nn::Adam {
            beta1: cfg.betas.0,
            beta2: cfg.betas.1,
            wd: cfg.weight_decay,
            eps: 1e-8,
            amsgrad: false,
        }
        .build(vs, cfg.lr)?,
        OptimizerKind::Adamw => nn::AdamW {
            beta1: cfg.betas.0,
            beta2: cfg.betas.1,
            wd: cfg.weight_decay,
            eps: 1e-8,
            amsgrad: false,
        }
        .build(vs, cfg.lr)?,
    };
    Ok(opt)
}
