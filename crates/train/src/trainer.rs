//! `train` and `resume`: the training loop from a config to a package, checkpointed so
//! that an interrupted run continues exactly where it stopped.

use crate::checkpoint::{self, RunState};
use crate::early_stop::{EarlyStopping, Monitor};
use crate::evaluate::{cross_entropy, Tally};
use crate::progress::Progress;
use crate::{evaluate, plot, Error, EvalResult, MetricsLog, MixedPrecision, Optimizer, Result, Sources, TrainConfig};
use kiln_data::{Augment, DataLoader, Dataset, LoaderConfig, Normalize, SplitMix64};
use kiln_model::Network;
use kiln_package::{atomic, Manifest, Package, TrainingSummary};
use kiln_tensor::{tch, Kind, Runtime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What one epoch did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochReport {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_accuracy: f64,
    /// The validation evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<EvalResult>,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Training throughput.
    pub samples_per_sec: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

impl EpochReport {
    /// The epoch's scalar metrics by name (`train_loss`, `val_accuracy`, ...).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("train_loss".to_string(), self.train_loss),
            ("train_accuracy".to_string(), self.train_accuracy),
        ]);
        if let Some(v) = &self.val {
            m.insert("val_loss".into(), v.loss);
            m.insert("val_accuracy".into(), v.accuracy);
            m.insert("val_top_k_accuracy".into(), v.top_k_accuracy);
            m.insert("val_macro_f1".into(), v.macro_f1);
        }
        m
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct TrainReport {
    /// The run folder.
    pub out_dir: PathBuf,
    /// The package folder inside it.
    pub package_dir: PathBuf,
    /// One report per epoch run.
    pub epochs: Vec<EpochReport>,
    /// The epoch (from 1) whose weights are in the package.
    pub best_epoch: usize,
    /// The test evaluation of the packaged weights, when the data has a test part.
    pub test: Option<EvalResult>,
    /// The manifest written.
    pub manifest: Manifest,
    /// Training wall time, summed over resumptions.
    pub seconds: f64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

/// How a run is driven.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Hide the progress bar.
    pub quiet: bool,
    /// When set (by a signal handler, say), the run writes a checkpoint and returns
    /// [`Error::Interrupted`] at the next optimizer step.
    pub stop: Arc<AtomicBool>,
    /// When the process started, for the time-to-first-step figure.
    pub started: Instant,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            quiet: false,
            stop: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        }
    }
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

/// Starts a new run of `config` in `out`, writing `config.json`, `metrics.jsonl`,
/// `checkpoints/`, `curves.svg`, `confusion.svg` and `package/`.
pub fn train(config: &TrainConfig, out: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    config.validate()?;
    prepare_out_dir(out)?;
    if !checkpoint::list(out).is_empty() {
        return Err(Error::Config(format!(
            "{} already holds checkpoints of a run; continue it with `kiln-train resume {}`, or choose another --out",
            out.display(),
            out.display()
        )));
    }
    run(config.clone(), out, opts, None)
}

/// Continues the run in `out` from its newest intact checkpoint, with the config it was
/// started with.
pub fn resume(out: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    let config_path = out.join("config.json");
    let config = TrainConfig::load(Some(&config_path), &[])?;
    let (ckpt, warnings) = checkpoint::load_latest(out)?.ok_or_else(|| {
        Error::Config(format!(
            "{} has no checkpoints to resume from; start a run with `kiln-train train`",
            out.display()
        ))
    })?;
    for w in warnings {
        tracing::warn!(run = %out.display(), "{w}");
    }
    tracing::info!(checkpoint = %ckpt.dir.display(), "resuming from {}", ckpt.dir.display());
    run(config, out, opts, Some(ckpt))
}

/// The dropout generator's seed for batch `n`: a function of the run's seed and the
/// position, so a resumed run draws the same masks without saving generator state.
fn batch_seed(seed: u64, n: u64) -> i64 {
    (SplitMix64::for_stream(seed, &[n, 0xD50]).next_u64() >> 1) as i64
}

fn run(
    mut config: TrainConfig,
    out: &Path,
    opts: &TrainOptions,
    ckpt: Option<checkpoint::Checkpoint>,
) -> Result<TrainReport> {
    let runtime = Runtime::init(config.device, config.threads, config.seed)?;
    let sources = Sources::open(&config.data, config.seed)?;
    let shape: Vec<i64> = sources.train.sample_shape().iter().map(|&d| d as i64).collect();
    let normalize = sources.normalization(config.data.normalize)?;
    config.model.fit_to(&shape, sources.classes.len() as i64)?;
    if ckpt.is_none() {
        let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        atomic::write_file(&out.join("config.json"), &json).map_err(|e| Error::io(out.join("config.json"), e))?;
    }
    let autocast = config.mixed_precision == MixedPrecision::Bf16 && runtime.device.is_cuda();
    if config.mixed_precision == MixedPrecision::Bf16 && !autocast {
        tracing::warn!(
            device = ?runtime.device,
            "mixed_precision = \"bf16\" applies on CUDA only; training in full precision on {:?}",
            runtime.device
        );
    }

    let net = Network::new(config.model.clone(), runtime.device)?;
    let mut opt = Optimizer::new(&config.optimizer, net.var_store())?;
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
    let monitor = Monitor::parse(&config.monitor)?;
    let early = config
        .early_stopping
        .as_ref()
        .map(|e| Ok::<_, Error>(EarlyStopping::new(Monitor::parse(&e.monitor)?, e.patience, e.min_delta)))
        .transpose()?;

    let mut state = RunState {
        early_stopping: early,
        ..RunState::default()
    };
    let log_path = out.join("metrics.jsonl");
    let mut log = match ckpt {
        Some(c) => {
            checkpoint::restore_model(&c, &net)?;
            opt.load_state(&c.tensors, c.state.optimizer_steps)?;
            state = c.state;
            let (steps, epochs) = (state.optimizer_steps, state.epochs.len() as u64);
            MetricsLog::resume(&log_path, |r| match r["kind"].as_str() {
                Some("step") => r["step"].as_u64().is_some_and(|s| s <= steps),
                Some("epoch") => r["epoch"].as_u64().is_some_and(|e| e <= epochs),
                _ => false,
            })?
        }
        None => MetricsLog::create(&log_path)?,
    };

    let per_epoch = train_loader.batches_per_epoch();
    let accumulate = config.optimizer.accumulate;
    let steps_per_epoch = per_epoch.div_ceil(accumulate);
    let total_steps = steps_per_epoch * config.epochs;
    let mut progress = Progress::new((per_epoch * config.epochs) as u64, opts.quiet);
    progress.set_position(state.batches_done);
    let val_samples = sources.val.as_ref().map_or(0, |v| v.len());
    progress.log(|| {
        tracing::info!(
            arch = config.model.arch(),
            parameters = net.parameter_count(),
            data = %sources.description,
            train_samples = sources.train.len(),
            val_samples,
            device = ?runtime.device,
            threads = runtime.threads,
            "training {} ({} parameters) on {} ({} train, {val_samples} validation samples) on {:?} with {} threads",
            config.model.arch(),
            net.parameter_count(),
            sources.description,
            sources.train.len(),
            runtime.device,
            runtime.threads,
        )
    });
    let base_lr = config.optimizer.lr;
    let mut lr = base_lr;
    let mut stopped_early = false;
    let mut first_step_logged = state.batches_done > 0;
    let labels = sources.classes.clone();

    while state.epoch < config.epochs {
        let epoch_start = Instant::now();
        let mut epoch_samples = 0usize;
        let mut group_loss = 0f64;
        for batch in train_loader.epoch_from(state.epoch as u64, state.batch_in_epoch) {
            let batch = batch?;
            tch::manual_seed(batch_seed(config.seed, state.batches_done));
            let group_start = state.batch_in_epoch - state.batch_in_epoch % accumulate;
            let group_len = accumulate.min(per_epoch - group_start);
            let labels_dev = batch.labels.f_to_device(runtime.device)?;
            let logits = if autocast {
                tch::autocast(true, || net.forward(&batch.inputs, true))?
            } else {
                net.forward(&batch.inputs, true)?
            }
            .f_to_kind(Kind::Float)?;
            let loss = cross_entropy(&logits, &labels_dev, config.label_smoothing)?;
            if group_len > 1 {
                loss.f_div_scalar(group_len as f64)?.f_backward()?;
            } else {
                loss.f_backward()?;
            }
            let loss_value = loss.f_double_value(&[])?;
            if !loss_value.is_finite() {
                return Err(Error::Diverged(format!(
                    "the loss became {loss_value} in epoch {}; try a lower optimizer.lr (now {base_lr})",
                    state.epoch + 1
                )));
            }
            state.tally.add(loss_value, &logits, &labels_dev)?;
            group_loss += loss_value / group_len as f64;
            epoch_samples += batch.len();
            state.batch_in_epoch += 1;
            state.batches_done += 1;
            progress.inc();
            if state.batch_in_epoch % accumulate != 0 && state.batch_in_epoch != per_epoch {
                continue;
            }
            if let Some(max) = config.optimizer.clip_grad_norm {
                opt.clip_grad_norm(max)?;
            }
            lr = config
                .optimizer
                .schedule
                .rate(base_lr, state.optimizer_steps as usize, total_steps, steps_per_epoch);
            opt.step(lr)?;
            opt.zero_grad();
            state.optimizer_steps += 1;
            let rate = epoch_samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            if !first_step_logged {
                first_step_logged = true;
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                log.write(&serde_json::json!({
                    "kind": "start",
                    "seconds_to_first_step": opts.started.elapsed().as_secs_f64(),
                    "first_step_unix_time": unix,
                }))?;
            }
            if state.optimizer_steps % config.log_every_steps as u64 == 0 {
                log.write(&serde_json::json!({
                    "kind": "step", "step": state.optimizer_steps, "epoch": state.epoch + 1,
                    "loss": group_loss, "lr": lr, "samples_per_sec": rate,
                }))?;
            }
            group_loss = 0.0;
            let (l, a) = state.tally.means();
            progress.show(state.epoch, config.epochs, l, a, rate);
            let mid_epoch = state.batch_in_epoch < per_epoch;
            let every = config.checkpoint.every_steps as u64;
            if mid_epoch && every > 0 && state.optimizer_steps % every == 0 {
                log.flush()?;
                checkpoint::save(out, &state, &net, &opt, config.checkpoint.keep)?;
            }
            if mid_epoch && opts.stop.load(Ordering::SeqCst) {
                log.flush()?;
                let dir = checkpoint::save(out, &state, &net, &opt, config.checkpoint.keep)?;
                progress.finish();
                return Err(Error::Interrupted(dir));
            }
        }
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        let (train_loss, train_accuracy) = state.tally.means();
        let val = sources
            .val
            .as_ref()
            .map(|v| evaluate(&net, &eval_loader(v), config.top_k, &labels))
            .transpose()?;
        let report = EpochReport {
            epoch: state.epoch + 1,
            train_loss,
            train_accuracy,
            val,
            lr,
            samples_per_sec: epoch_samples as f64 / train_seconds.max(1e-9),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        state.seconds += report.seconds;
        let metrics = report.metrics();
        let val_text = report
            .val
            .as_ref()
            .map(|v| format!(", val loss {:.4} acc {:.4}", v.loss, v.accuracy))
            .unwrap_or_default();
        // Without validation data the monitored metric may be missing: then the last epoch is kept.
        let value = monitor.value(&metrics).ok();
        let improved = match value {
            Some(v) => monitor.improves(v, state.best.map(|b| b.0), 0.0),
            None => true,
        };
        progress.log(|| {
            tracing::info!(
                epoch = report.epoch,
                epochs = config.epochs,
                train_loss = report.train_loss,
                train_accuracy = report.train_accuracy,
                val_loss = report.val.as_ref().map(|v| v.loss),
                val_accuracy = report.val.as_ref().map(|v| v.accuracy),
                samples_per_sec = report.samples_per_sec,
                seconds = report.seconds,
                improved,
                "epoch {:>3}/{}: train loss {:.4} acc {:.4}{val_text} ({:.0} samples/s, {:.1}s){}",
                report.epoch,
                config.epochs,
                report.train_loss,
                report.train_accuracy,
                report.samples_per_sec,
                report.seconds,
                if improved { " *" } else { "" }
            )
        });
        let mut record = serde_json::to_value(&report).map_err(|e| Error::Internal(e.to_string()))?;
        record["kind"] = "epoch".into();
        log.write(&record)?;
        state.epochs.push(report.clone());
        if improved {
            state.best = Some((value.unwrap_or(f64::NAN), report.epoch));
            let manifest = manifest_for(&config, &net, &sources, normalize.clone(), &state, None);
            Package::save(out.join("package"), manifest, &net)?;
        }
        if let Some(es) = state.early_stopping.as_mut() {
            if let Ok(v) = es.monitor.value(&metrics) {
                stopped_early = es.update(v);
            }
        }
        write_plots(out, &state.epochs, report.val.as_ref(), &labels, &config.name)?;
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.tally = Tally::default();
        log.flush()?;
        let dir = checkpoint::save(out, &state, &net, &opt, config.checkpoint.keep)?;
        if stopped_early {
            let monitor = config.early_stopping.as_ref().map_or("", |e| e.monitor.as_str());
            let bad_epochs = state.early_stopping.as_ref().map_or(0, |e| e.bad_epochs);
            progress.log(|| {
                tracing::info!(
                    monitor,
                    bad_epochs,
                    "early stopping: no improvement of {monitor} for {bad_epochs} epochs"
                )
            });
            break;
        }
        if opts.stop.load(Ordering::SeqCst) && state.epoch < config.epochs {
            progress.finish();
            return Err(Error::Interrupted(dir));
        }
    }
    progress.finish();

    // The package holds the best epoch's weights: evaluate those on the test data.
    let package_dir = out.join("package");
    let best = Package::load(&package_dir, runtime.device)?;
    let test = sources
        .test
        .as_ref()
        .map(|t| evaluate(&best.network, &eval_loader(t), config.top_k, &labels))
        .transpose()?;
    let manifest = manifest_for(&config, &best.network, &sources, normalize, &state, test.as_ref());
    let manifest = Package::save(&package_dir, manifest, &best.network)?;
    if let Some(t) = &test {
        atomic::write_file(
            &out.join("confusion.svg"),
            plot::confusion_svg(
                &t.confusion,
                &labels,
                &format!("{}: test confusion matrix", config.name),
            )
            .as_bytes(),
        )
        .map_err(|e| Error::io(out.join("confusion.svg"), e))?;
    }
    let best_epoch = state.best.map_or(state.epochs.len(), |b| b.1);
    log.write(&serde_json::json!({"kind": "test", "best_epoch": best_epoch, "test": test, "seconds": state.seconds}))?;
    log.flush()?;
    Ok(TrainReport {
        out_dir: out.to_path_buf(),
        package_dir,
        epochs: state.epochs,
        best_epoch,
        test,
        manifest,
        seconds: state.seconds,
        stopped_early,
    })
}

fn write_plots(
    out: &Path,
    epochs: &[EpochReport],
    val: Option<&EvalResult>,
    labels: &[String],
    name: &str,
) -> Result<()> {
    let curves = plot::curves_svg(epochs, name);
    atomic::write_file(&out.join("curves.svg"), curves.as_bytes()).map_err(|e| Error::io(out.join("curves.svg"), e))?;
    if let Some(v) = val {
        let svg = plot::confusion_svg(
            &v.confusion,
            labels,
            &format!("{name}: validation confusion matrix, last epoch"),
        );
        atomic::write_file(&out.join("confusion.svg"), svg.as_bytes())
            .map_err(|e| Error::io(out.join("confusion.svg"), e))?;
    }
    Ok(())
}

fn manifest_for(
    config: &TrainConfig,
    net: &Network,
    sources: &Sources,
    normalize: Option<Normalize>,
    state: &RunState,
    test: Option<&EvalResult>,
) -> Manifest {
    let mut manifest = Manifest::new(
        &config.name,
        config.version,
        net,
        sources.classes.clone(),
        normalize,
        sources.image,
    );
    let best_epoch = state.best.map_or(state.epochs.len(), |b| b.1);
    let mut metrics = state
        .epochs
        .get(best_epoch.saturating_sub(1))
        .map(EpochReport::metrics)
        .unwrap_or_default();
    metrics.insert("best_epoch".into(), best_epoch as f64);
    if let Some(t) = test {
        metrics.insert("test_loss".into(), t.loss);
        metrics.insert("test_accuracy".into(), t.accuracy);
        metrics.insert("test_top_k_accuracy".into(), t.top_k_accuracy);
        metrics.insert("test_macro_f1".into(), t.macro_f1);
    }
    manifest.training = Some(TrainingSummary {
        dataset: sources.description.clone(),
        epochs: state.epochs.len(),
        train_samples: sources.train.len(),
        seconds: state.seconds,
        metrics,
    });
    manifest
}
