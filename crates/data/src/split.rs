//! Seeded train/validation splits and dataset limits.

use crate::{permutation, Dataset, Error, Result, SplitMix64, Subset};
use std::sync::Arc;

/// Splits `data` into (train, validation) with `validation` the fraction held out,
/// chosen by a seeded shuffle so that the same seed gives the same split.
pub fn split(data: Arc<dyn Dataset>, validation: f64, seed: u64) -> Result<(Subset, Subset)> {
    if !(0.0..1.0).contains(&validation) {
        return Err(Error::Invalid(format!(
            "validation fraction {validation} is out of range; expected at least 0 and below 1"
        )));
    }
    let n = data.len();
    let held = ((n as f64) * validation).round() as usize;
    let order = permutation(n, &mut SplitMix64::for_stream(seed, &[0x5911_7000]));
    let (val, train) = order.split_at(held);
    let (mut train, mut val) = (train.to_vec(), val.to_vec());
    // Sorted indices read the underlying data in file order, which is kinder to caches.
    train.sort_unstable();
    val.sort_unstable();
    Ok((Subset::new(data.clone(), train)?, Subset::new(data, val)?))
}

/// The first `limit` samples of `data` (all of them when it has fewer).
pub fn take_first(data: Arc<dyn Dataset>, limit: usize) -> Result<Subset> {
    let n = data.len().min(limit);
    Subset::new(data, (0..n).collect())
}
