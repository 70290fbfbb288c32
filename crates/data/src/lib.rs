//! kiln's data layer: datasets and the loader that feeds them to a model.
//!
//! A [`Dataset`] gives samples by index as `f32` values in a fixed shape, with integer
//! class labels. Readers: [`IdxDataset`] (MNIST, Fashion-MNIST, raw or `.gz`),
//! [`CsvDataset`] (numeric features and a label column) and [`ImageFolder`] (PNG/JPEG,
//! one sub-folder per class). [`split`] makes a seeded train/validation split,
//! [`Normalize`] and [`Augment`] transform samples, and [`DataLoader`] batches them in a
//! seeded order, decoding in parallel with rayon on a thread that stays ahead of training.
//!
//! ```no_run
//! use kiln_data::{DataLoader, KnownDataset, LoaderConfig, Split};
//! use std::sync::Arc;
//! let train = KnownDataset::FashionMnist.load(None, Split::Train)?;
//! let loader = DataLoader::new(Arc::new(train), LoaderConfig { batch_size: 64, ..Default::default() });
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.inputs.size()[1..], [1, 28, 28]);
//! }
//! # Ok::<(), kiln_data::Error>(())
//! ```

mod augment;
mod csv;
mod dataset;
mod error;
mod idx;
mod image_folder;
mod known;
mod loader;
mod normalize;
mod relabel;
mod shard;
mod split;

pub use crate::csv::{CsvDataset, LabelColumn, MAX_INTEGER_LABEL};
pub use augment::Augment;
pub use dataset::{Dataset, Subset};
pub use error::{Error, Result};
pub use idx::IdxDataset;
pub use image_folder::{decode_image, decode_image_within, DecodeLimits, ImageFolder, ImageLayout};
pub use kiln_tensor::rng::{permutation, SplitMix64};
pub use known::{KnownDataset, Split};
pub use loader::{Batch, DataLoader, LoaderConfig};
pub use normalize::Normalize;
pub use relabel::{relabel, Relabeled};
pub use shard::Shard;
pub use split::{split, take_first};
