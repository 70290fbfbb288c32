//! `train`: the training loop from a config to a package.

use crate::evaluate::Tally;
use crate::progress::Progress;
use crate::{
    build_optimizer, evaluate, Error, EvalResult, MetricsLog, Result, Sources, TrainConfig,
};
use kiln_data::{Augment, DataLoader, Dataset, LoaderConfig, Normalize};
use kiln_model::Network;
use kiln_package::{atomic, Manifest, Package, TrainingSummary};
use kiln_tensor::Runtime;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What one epoch did.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_accuracy: f64,
    /// Validation loss and accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<EvalResult>,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Training throughput.
    pub samples_per_sec: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// What a run produced.
#[derive(Debug)]
pub struct TrainReport {
    /// The run folder.
    pub out_dir: PathBuf,
    /// The package folder inside it.
    pub package_dir: PathBuf,
    /// One report per epoch.
    pub epochs: Vec<EpochReport>,
    /// The test result, when the data has a test part.
    pub test: Option<EvalResult>,
    /// The manifest written.
    pub manifest: Manifest,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// Creates `out` and proves it writable before any time is spent training.
fn prepare_out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let probe = out.join(".kiln-write-test");
    std::fs::write(&probe, b"").map_err(|e| {
        Error::io(
            out,
            std::io::Error::new(e.kind(), format!("output folder is not writable: {e}")),
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Runs `config`, writing `config.json`, `metrics.jsonl` and `package/` into `out`.
pub fn train(config: &TrainConfig, out: &Path) -> Result<TrainReport> {
    train_with(config, out, false)
}

/// [`train`], with the progress bar hidden when `quiet`.
pub fn train_with(config: &TrainConfig, out: &Path, quiet: bool) -> Result<TrainReport> {
    let started = Instant::now();
    config.validate()?;
    prepare_out_dir(out)?;
    let runtime = Runtime::init(config.device, config.threads, config.seed)?;
    let sources = Sources::open(&config.data, config.seed)?;
    let shape: Vec<i64> = sources
        .train
        .sample_shape()
        .iter()
        .map(|&d| d as i64)
        .collect();
    let normalize = if config.data.normalize {
        let channels = sources
            .image
            .map(|l| l.channels)
            .unwrap_or_else(|| sources.train.sample_len());
        Some(Normalize::fit(&*sources.train, channels, 20_000)?)
    } else {
        None
    };
    let mut resolved = config.clone();
    resolved
        .model
        .fit_to(&shape, sources.classes.len() as i64)?;
    let config_json =
        serde_json::to_vec_pretty(&resolved).map_err(|e| Error::Config(e.to_string()))?;
    atomic::write_file(&out.join("config.json"), &config_json)
        .map_err(|e| Error::io(out.join("config.json"), e))?;

    let net = Network::new(resolved.model.clone(), runtime.device)?;
    let mut opt = build_optimizer(&config.optimizer, net.var_store())?;
    let train_loader = DataLoader::new(
        sources.train.clone(),
        LoaderConfig {
            batch_size: config.batch_size,
            shuffle: true,
            seed: config.seed,
            drop_last: false,
            prefetch: config.data.prefetch,
            augment: config.data.augment.clone(),
            normalize: normalize.clone(),
        },
    );
    let eval_loader = |data: &Arc<dyn Dataset>| {
        DataLoader::new(
            data.clone(),
            LoaderConfig {
                batch_size: config.eval_batch_size,
                shuffle: false,
                prefetch: config.data.prefetch,
                augment: Augment::default(),
                normalize: normalize.clone(),
                ..LoaderConfig::default()
            },
        )
    };
    let mut log = MetricsLog::create(&out.join("metrics.jsonl"))?;
    let mut progress = Progress::new(
        (train_loader.batches_per_epoch() * config.epochs) as u64,
        quiet,
    );
    progress.println(&format!(
        "training {} ({} parameters) on {} ({} train, {} validation samples) on {:?} with {} threads",
        resolved.model.arch(),
        net.parameter_count(),
        sources.description,
        sources.train.len(),
        sources.val.as_ref().map_or(0, |v| v.len()),
        runtime.device,
        runtime.threads,
    ));

    let mut epochs = Vec::new();
    let per_epoch = train_loader.batches_per_epoch();
    let total_steps = per_epoch * config.epochs;
    let mut step = 0usize;
    let mut lr = config.optimizer.lr;
    for epoch in 0..config.epochs {
        let epoch_start = Instant::now();
        let mut tally = Tally::default();
        for batch in train_loader.epoch(epoch as u64) {
            let batch = batch?;
            lr = config
                .optimizer
                .schedule
                .rate(config.optimizer.lr, step, total_steps, per_epoch);
            opt.set_lr(lr);
            step += 1;
            let labels = batch.labels.f_to_device(runtime.device)?;
            let logits = net.forward(&batch.inputs, true)?;
            let loss = crate::evaluate::cross_entropy(&logits, &labels)?;
            opt.backward_step(&loss);
            tally.add(&loss, &logits, &labels)?;
            let r = tally.result();
            if !r.loss.is_finite() {
                return Err(Error::Diverged(format!(
                    "the loss became {} in epoch {}; try a lower optimizer.lr (now {})",
                    r.loss,
                    epoch + 1,
                    config.optimizer.lr
                )));
            }
            let rate = r.samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            progress.step(epoch, config.epochs, r.loss, r.accuracy, rate);
        }
        let train_time = epoch_start.elapsed().as_secs_f64();
        let t = tally.result();
        let val = match &sources.val {
            Some(v) => Some(evaluate(&net, &eval_loader(v))?),
            None => None,
        };
        let report = EpochReport {
            epoch: epoch + 1,
            train_loss: t.loss,
            train_accuracy: t.accuracy,
            val,
            lr,
            samples_per_sec: t.samples as f64 / train_time.max(1e-9),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        log.write(&serde_json::json!({"kind": "epoch", "report": &report}))?;
        let val_text = val
            .map(|v| format!(", val loss {:.4} acc {:.4}", v.loss, v.accuracy))
            .unwrap_or_default();
        progress.println(&format!(
            "epoch {:>3}/{}: train loss {:.4} acc {:.4}{val_text} ({:.0} samples/s, {:.1}s)",
            epoch + 1,
            config.epochs,
            report.train_loss,
            report.train_accuracy,
            report.samples_per_sec,
            report.seconds
        ));
        epochs.push(report);
    }
    progress.finish();

    let test = match &sources.test {
        Some(t) => Some(evaluate(&net, &eval_loader(t))?),
        None => None,
    };
    let last = epochs.last();
    let mut metrics = BTreeMap::new();
    if let Some(l) = last {
        metrics.insert("train_loss".to_string(), l.train_loss);
        metrics.insert("train_accuracy".to_string(), l.train_accuracy);
        if let Some(v) = l.val {
            metrics.insert("val_loss".to_string(), v.loss);
            metrics.insert("val_accuracy".to_string(), v.accuracy);
        }
    }
    if let Some(t) = test {
        metrics.insert("test_loss".to_string(), t.loss);
        metrics.insert("test_accuracy".to_string(), t.accuracy);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut manifest = Manifest::new(
        &config.name,
        config.version,
        &net,
        sources.classes.clone(),
        normalize,
        sources.image,
    );
    manifest.training = Some(TrainingSummary {
        dataset: sources.description.clone(),
        epochs: config.epochs,
        train_samples: sources.train.len(),
        seconds,
        metrics,
    });
    let package_dir = out.join("package");
    let manifest = Package::save(&package_dir, manifest, &net)?;
    log.write(&serde_json::json!({"kind": "test", "test": test, "seconds": seconds}))?;
    Ok(TrainReport {
        out_dir: out.to_path_buf(),
        package_dir,
        epochs,
        test,
        manifest,
        seconds,
    })
}
