//! `Parameters`: what every kiln model has, so that weights are saved, loaded and
//! checkpointed the same way whatever the architecture.

use crate::Result;
use kiln_tensor::{nn, DType};
use std::collections::BTreeMap;

/// A model that owns its tensors in a `VarStore` under stable names.
pub trait Parameters {
    /// The parameters and buffers.
    fn var_store(&self) -> &nn::VarStore;

    /// Name, shape and dtype of every tensor the model saves, sorted by name.
    fn parameter_shapes(&self) -> Result<BTreeMap<String, (Vec<i64>, DType)>> {
        self.var_store()
            .variables()
            .into_iter()
            .map(|(name, t)| Ok((name, (t.size(), DType::of(&t)?))))
            .collect()
    }

    /// Number of trainable scalars.
    fn parameter_count(&self) -> usize {
        self.var_store().trainable_variables().iter().map(|t| t.numel()).sum()
    }
}
