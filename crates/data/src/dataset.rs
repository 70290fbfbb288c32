//! The `Dataset` trait every reader implements, and `Subset`, a view on some of its samples.

use crate::{Error, Result};
use std::sync::Arc;

/// A labelled dataset: samples by index, each `f32` values in one fixed shape.
///
/// Image datasets give pixel values scaled to `[0, 1]` in channel-first layout
/// (`[C, H, W]`); tabular datasets give their features as read. Implementations must be
/// cheap to read from several threads at once: the loader decodes in parallel.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample, for example `[1, 28, 28]` or `[13]`.
    fn sample_shape(&self) -> &[usize];

    /// The class names, indexed by label.
    fn classes(&self) -> &[String];

    /// The label of sample `index`, in `0..classes().len()`.
    fn label(&self, index: usize) -> Result<i64>;

    /// Writes sample `index` into `out`, whose length is the product of `sample_shape()`.
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()>;

    /// The number of values in one sample.
    fn sample_len(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// Whether reading a sample is a memory copy (true) or real work such as decoding a
    /// file (false, the default). The loader decodes in parallel only when it pays.
    fn is_in_memory(&self) -> bool {
        false
    }
}

/// Checks the arguments of `read_into` so that every reader reports misuse the same way.
pub(crate) fn check_read(len: usize, sample_len: usize, index: usize, out: &[f32]) -> Result<()> {
    if index >= len {
        return Err(Error::Invalid(format!(
            "sample index {index} is out of range: the dataset has {len} samples"
        )));
    }
    if out.len() != sample_len {
        return Err(Error::Invalid(format!(
            "output buffer holds {} values, a sample has {sample_len}",
            out.len()
        )));
    }
    Ok(())
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn sample_shape(&self) -> &[usize] {
        (**self).sample_shape()
    }
    fn classes(&self) -> &[String] {
        (**self).classes()
    }
    fn label(&self, index: usize) -> Result<i64> {
        (**self).label(index)
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        (**self).read_into(index, out)
    }
    fn is_in_memory(&self) -> bool {
        (**self).is_in_memory()
    }
}

/// The samples of another dataset at the given indices, in that order.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset").field("len", &self.indices.len()).finish()
    }
}

impl Subset {
    /// A view on `indices` of `inner`; an error if an index is out of range.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::Invalid(format!(
                "subset index {bad} is out of range: the dataset has {} samples",
                inner.len()
            )));
        }
        Ok(Subset { inner, indices })
    }

    /// The indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn label(&self, index: usize) -> Result<i64> {
        check_read(self.len(), 0, index, &[])?;
        self.inner.label(self.indices[index])
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        check_read(self.len(), self.sample_len(), index, out)?;
        self.inner.read_into(self.indices[index], out)
    }
    fn is_in_memory(&self) -> bool {
        self.inner.is_in_memory()
    }
}
