//! Opening the datasets a config names: train, validation and test.

use crate::{DataConfig, DatasetKind, Error, Result};
use kiln_data::{
    relabel, split, take_first, CsvDataset, Dataset, ImageFolder, ImageLayout, KnownDataset, Normalize, Split,
};
use std::sync::Arc;

/// The datasets of a run.
pub struct Sources {
    /// Training samples (after the validation hold-out and `limit_train`).
    pub train: Arc<dyn Dataset>,
    /// Validation samples, when `validation` > 0.
    pub val: Option<Arc<dyn Dataset>>,
    /// Test samples, when the dataset has a test part.
    pub test: Option<Arc<dyn Dataset>>,
    /// Class names.
    pub classes: Vec<String>,
    /// The image layout, for image data.
    pub image: Option<ImageLayout>,
    /// A short description of the data for the package manifest.
    pub description: String,
}

impl Sources {
    /// The per-channel normalisation fitted on the training data (one channel per image
    /// channel, or per feature), or `None` when `enabled` is off.
    pub fn normalization(&self, enabled: bool) -> Result<Option<Normalize>> {
        if !enabled {
            return Ok(None);
        }
        let channels = self
            .image
            .map(|l| l.channels)
            .unwrap_or_else(|| self.train.sample_len());
        Ok(Some(Normalize::fit(&*self.train, channels, 20_000)?))
    }

    /// Opens the data `cfg` names, splitting off validation samples with `seed`.
    pub fn open(cfg: &DataConfig, seed: u64) -> Result<Sources> {
        let full = open_split(cfg, Split::Train)?
            .ok_or_else(|| Error::Config("the data config names no training data".into()))?;
        let full: Arc<dyn Dataset> = if cfg.limit_train > 0 {
            Arc::new(take_first(full, cfg.limit_train)?)
        } else {
            full
        };
        let classes = full.classes().to_vec();
        let (train, val): (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>) = if cfg.validation > 0.0 {
            let (t, v) = split(full, cfg.validation, seed)?;
            (Arc::new(t), Some(Arc::new(v)))
        } else {
            (full, None)
        };
        if train.is_empty() {
            return Err(Error::Config(
                "no training samples are left after the validation split".into(),
            ));
        }
        let test = open_split(cfg, Split::Test)?;
        let test: Option<Arc<dyn Dataset>> = match test {
            Some(t) if cfg.limit_test > 0 => Some(Arc::new(take_first(t, cfg.limit_test)?)),
            other => other,
        };
        // Test labels mean the training set's classes, matched by name.
        let test = test.map(|t| relabel(t, &classes, "the test data")).transpose()?;
        let image = match cfg.dataset {
            DatasetKind::FashionMnist | DatasetKind::Mnist => Some(ImageLayout {
                channels: 1,
                height: 28,
                width: 28,
            }),
            DatasetKind::ImageFolder => cfg.image,
            DatasetKind::Csv => None,
        };
        let description = match cfg.dataset {
            DatasetKind::FashionMnist => "fashion-mnist".to_string(),
            DatasetKind::Mnist => "mnist".to_string(),
            DatasetKind::Csv | DatasetKind::ImageFolder => {
                cfg.train.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            }
        };
        Ok(Sources {
            train,
            val,
            test,
            classes,
            image,
            description,
        })
    }
}

/// Opens one split of the data `cfg` names; `Ok(None)` when it has no such split.
pub fn open_split(cfg: &DataConfig, which: Split) -> Result<Option<Arc<dyn Dataset>>> {
    let known = |k: KnownDataset| -> Result<Option<Arc<dyn Dataset>>> {
        Ok(Some(Arc::new(k.load(cfg.dir.as_deref(), which)?)))
    };
    let path = match which {
        Split::Train => cfg.train.as_deref(),
        Split::Test => cfg.test.as_deref(),
    };
    match cfg.dataset {
        DatasetKind::FashionMnist => known(KnownDataset::FashionMnist),
        DatasetKind::Mnist => known(KnownDataset::Mnist),
        DatasetKind::Csv => match path {
            Some(p) => Ok(Some(Arc::new(CsvDataset::load(p, &cfg.label_column)?))),
            None => Ok(None),
        },
        DatasetKind::ImageFolder => match (path, cfg.image) {
            (Some(p), Some(layout)) => Ok(Some(Arc::new(ImageFolder::load(p, layout)?))),
            (None, _) => Ok(None),
            (Some(_), None) => Err(Error::Config(
                "data.image = { channels, height, width } is needed for image-folder data".into(),
            )),
        },
    }
}
