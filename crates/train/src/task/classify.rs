//! The classification task: labelled samples (IDX, CSV, image folders) through an mlp,
//! cnn or resnet, evaluated with accuracy, top-k, per-class metrics and a confusion
//! matrix, packaged with its labels and preprocessing.

use super::{Evaluation, Forward, Task};
use crate::checkpoint::RunState;
use crate::{evaluate, plot, EpochReport, Error, EvalResult, Result, Sources, TrainConfig};
use kiln_data::{Augment, Batch, DataLoader, Dataset, LoaderConfig, Normalize, Shard};
use kiln_model::Network;
use kiln_package::{atomic, Manifest, Package, TrainingSummary};
use kiln_tensor::{nn, tch, Device, Kind};
use std::path::Path;
use std::sync::Arc;

pub(crate) struct Classify {
    config: TrainConfig,
    sources: Sources,
    normalize: Option<Normalize>,
    net: Network,
    train: DataLoader,
}

impl Classify {
    /// Opens the data and builds the network (fitting the spec's input and classes to
    /// the data); `config.model` is updated to the fitted spec. Training batches come
    /// from `shard` of each epoch.
    pub(crate) fn new(config: &mut TrainConfig, device: Device, shard: Shard) -> Result<Classify> {
        let sources = Sources::open(&config.data, config.seed)?;
        let shape: Vec<i64> = sources.train.sample_shape().iter().map(|&d| d as i64).collect();
        let normalize = sources.normalization(config.data.normalize)?;
        config.model.fit_to(&shape, sources.classes.len() as i64)?;
        let net = Network::new(config.model.clone(), device)?;
        if let Some(init) = &config.init_from {
            let pkg = Package::load(init, device)?;
            if pkg.manifest.model != config.model {
                return Err(Error::Config(format!(
                    "init_from {}: the package's model {:?} differs from the config's {:?}",
                    init.display(),
                    pkg.manifest.model,
                    config.model
                )));
            }
            super::copy_weights(pkg.network.var_store(), net.var_store(), init)?;
        }
        let train = DataLoader::new(
            sources.train.clone(),
            LoaderConfig {
                batch_size: config.batch_size,
                shuffle: true,
                seed: config.seed,
                drop_last: false,
                prefetch: config.data.prefetch,
                augment: config.data.augment.clone(),
                normalize: normalize.clone(),
                shard,
            },
        );
        Ok(Classify {
            config: config.clone(),
            sources,
            normalize,
            net,
            train,
        })
    }

    fn eval_loader(&self, data: &Arc<dyn Dataset>) -> DataLoader {
        DataLoader::new(
            data.clone(),
            LoaderConfig {
                batch_size: self.config.eval_batch_size,
                shuffle: false,
                prefetch: self.config.data.prefetch,
                augment: Augment::default(),
                normalize: self.normalize.clone(),
                ..LoaderConfig::default()
            },
        )
    }

    fn manifest(&self, net: &Network, state: &RunState, test: Option<&EvalResult>) -> Manifest {
        let mut manifest = Manifest::new(
            &self.config.name,
            self.config.version,
            net,
            self.sources.classes.clone(),
            self.normalize.clone(),
            self.sources.image,
        );
        let mut metrics = best_metrics(state);
        if let Some(t) = test {
            metrics.extend(Evaluation::Classification(t.clone()).metrics("test_"));
        }
        manifest.training = Some(TrainingSummary {
            dataset: self.sources.description.clone(),
            epochs: state.epochs.len(),
            train_samples: self.sources.train.len(),
            seconds: state.seconds,
            metrics,
        });
        manifest
    }
}

/// The metrics of the best epoch (the packaged one), with `best_epoch`.
pub(crate) fn best_metrics(state: &RunState) -> std::collections::BTreeMap<String, f64> {
    let best_epoch = state.best.map_or(state.epochs.len(), |b| b.1);
    let mut metrics = state
        .epochs
        .get(best_epoch.saturating_sub(1))
        .map(EpochReport::metrics)
        .unwrap_or_default();
    metrics.insert("best_epoch".into(), best_epoch as f64);
    metrics
}

impl Task for Classify {
    type Batch = Batch;

    fn vars(&self) -> &nn::VarStore {
        self.net.var_store()
    }

    fn describe(&self) -> String {
        let val = self.sources.val.as_ref().map_or(0, |v| v.len());
        format!(
            "{} ({} parameters) on {} ({} train, {val} validation samples)",
            self.config.model.arch(),
            self.net.parameter_count(),
            self.sources.description,
            self.sources.train.len(),
        )
    }

    fn unit(&self) -> &'static str {
        "samples"
    }

    fn batches_per_epoch(&self) -> usize {
        self.train.batches_per_epoch()
    }

    fn batches(&self, epoch: u64, first: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new(self.train.epoch_from(epoch, first).map(|b| b.map_err(Error::from)))
    }

    fn forward(&self, batch: &Batch, autocast: bool) -> Result<Forward> {
        let labels = batch.labels.f_to_device(self.net.device())?;
        let logits = if autocast {
            tch::autocast(true, || self.net.forward(&batch.inputs, true))?
        } else {
            self.net.forward(&batch.inputs, true)?
        }
        .f_to_kind(Kind::Float)?;
        let objective = evaluate::cross_entropy(&logits, &labels, self.config.label_smoothing)?;
        let correct = tch::no_grad(|| logits.f_argmax(-1, false)?.f_eq_tensor(&labels)?.f_sum(Kind::Int64))?;
        Ok(Forward {
            loss: objective.f_double_value(&[])?,
            objective,
            predictions: batch.len(),
            correct: correct.f_int64_value(&[])?,
            samples: batch.len(),
        })
    }

    fn evaluate(&self) -> Result<Option<Evaluation>> {
        self.sources
            .val
            .as_ref()
            .map(|v| {
                evaluate(
                    &self.net,
                    &self.eval_loader(v),
                    self.config.top_k,
                    &self.sources.classes,
                )
                .map(Evaluation::Classification)
            })
            .transpose()
    }

    fn save_package(&self, out: &Path, state: &RunState) -> Result<()> {
        Package::save(out.join("package"), self.manifest(&self.net, state, None), &self.net)?;
        Ok(())
    }

    fn write_plots(&self, out: &Path, state: &RunState, last: Option<&Evaluation>) -> Result<()> {
        let name = &self.config.name;
        let curves = plot::curves_svg(&state.epochs, name);
        atomic::write_file(&out.join("curves.svg"), curves.as_bytes())
            .map_err(|e| Error::io(out.join("curves.svg"), e))?;
        if let Some(c) = last.and_then(Evaluation::confusion) {
            let svg = plot::confusion_svg(
                c,
                &self.sources.classes,
                &format!("{name}: validation confusion matrix, last epoch"),
            );
            atomic::write_file(&out.join("confusion.svg"), svg.as_bytes())
                .map_err(|e| Error::io(out.join("confusion.svg"), e))?;
        }
        Ok(())
    }

    fn finish(&self, out: &Path, state: &RunState) -> Result<(Option<EvalResult>, Manifest)> {
        // The package holds the best epoch's weights: evaluate those on the test data.
        let package_dir = out.join("package");
        let best = Package::load(&package_dir, self.net.device())?;
        let labels = &self.sources.classes;
        let test = self
            .sources
            .test
            .as_ref()
            .map(|t| evaluate(&best.network, &self.eval_loader(t), self.config.top_k, labels))
            .transpose()?;
        let manifest = self.manifest(&best.network, state, test.as_ref());
        let manifest = Package::save(&package_dir, manifest, &best.network)?;
        if let Some(t) = &test {
            let svg = plot::confusion_svg(
                &t.confusion,
                labels,
                &format!("{}: test confusion matrix", self.config.name),
            );
            atomic::write_file(&out.join("confusion.svg"), svg.as_bytes())
                .map_err(|e| Error::io(out.join("confusion.svg"), e))?;
        }
        Ok((test, manifest))
    }
}
