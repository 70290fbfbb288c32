//! The datasets kiln knows by name, where they are installed, and how to get them.

use crate::idx::find_idx;
use crate::{Error, IdxDataset, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A dataset kiln knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownDataset {
    /// Zalando's Fashion-MNIST: 70,000 28x28 grey images of 10 kinds of garment.
    FashionMnist,
    /// LeCun's MNIST handwritten digits, in the same IDX format.
    Mnist,
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The training part.
    Train,
    /// The held-out test part.
    Test,
}

impl KnownDataset {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            KnownDataset::FashionMnist => "fashion-mnist",
            KnownDataset::Mnist => "mnist",
        }
    }

    /// Where the dataset is looked for when no folder is given: the environment variable
    /// `KILN_FASHION_MNIST_DIR` / `KILN_MNIST_DIR`, else Debian's install location.
    pub fn default_dir(self) -> PathBuf {
        let (var, dir) = match self {
            KnownDataset::FashionMnist => ("KILN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"),
            KnownDataset::Mnist => ("KILN_MNIST_DIR", "/usr/share/datasets/mnist"),
        };
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(dir))
    }

    /// How to install the dataset, for error messages.
    pub fn install_hint(self) -> &'static str {
        match self {
            KnownDataset::FashionMnist => {
                "Install it with `scripts/setup.sh` (or `apt-get install dataset-fashion-mnist`), \
                 or point KILN_FASHION_MNIST_DIR or the config's data.dir at a folder holding \
                 {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; see datasets/fashion-mnist/README.md."
            }
            KnownDataset::Mnist => {
                "Put {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in a folder and point \
                 KILN_MNIST_DIR or the config's data.dir at it; see datasets/mnist/README.md."
            }
        }
    }

    /// The class names, indexed by label.
    pub fn classes(self) -> Vec<String> {
        let names: &[&str] = match self {
            KnownDataset::FashionMnist => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            KnownDataset::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Loads one split from `dir` (or [`default_dir`](Self::default_dir)).
    pub fn load(self, dir: Option<&Path>, split: Split) -> Result<IdxDataset> {
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| self.default_dir());
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let find = |kind: &str| {
            let stem = format!("{prefix}-{kind}-ubyte");
            find_idx(&dir, &stem).ok_or_else(|| Error::NotFound {
                what: format!("{} ({stem}[.gz])", self.name()),
                path: dir.clone(),
                hint: self.install_hint().to_string(),
            })
        };
        IdxDataset::load(&find("images-idx3")?, &find("labels-idx1")?, self.classes())
    }
}

impl std::str::FromStr for KnownDataset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fashion-mnist" => Ok(KnownDataset::FashionMnist),
            "mnist" => Ok(KnownDataset::Mnist),
            other => Err(Error::Invalid(format!(
                "unknown dataset {other:?}; expected `fashion-mnist` or `mnist`"
            ))),
        }
    }
}
