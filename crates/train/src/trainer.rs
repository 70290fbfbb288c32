//! `train` and `resume`: the training loop from a config to a package, checkpointed so
//! that an interrupted run continues exactly where it stopped.

use crate::checkpoint::{self, RunState};
use crate::early_stop::{EarlyStopping, Monitor};
use crate::evaluate::Tally;
use crate::progress::Progress;
use crate::task::classify::Classify;
use crate::task::language::Language;
use crate::task::{Evaluation, Task};
use crate::{Error, EvalResult, MetricsLog, MixedPrecision, Optimizer, Result, TaskKind, TrainConfig};
use kiln_data::SplitMix64;
use kiln_package::{atomic, Manifest};
use kiln_tensor::{tch, Runtime};
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
    pub val: Option<Evaluation>,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Training throughput: samples per second, or tokens per second for a language model.
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
            m.extend(v.metrics("val_"));
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
    match config.task {
        TaskKind::Classification => {
            let task = Classify::new(&mut config, runtime.device)?;
            Loop::start(config, out, opts, ckpt, &runtime, &task)?.run()
        }
        TaskKind::LanguageModel => {
            let task = Language::new(&mut config, runtime.device, out, ckpt.is_some())?;
            Loop::start(config, out, opts, ckpt, &runtime, &task)?.run()
        }
    }
}

/// A run in progress: the task, the optimizer, where the run is, and its log.
struct Loop<'a, T: Task> {
    task: &'a T,
    config: TrainConfig,
    out: &'a Path,
    opts: &'a TrainOptions,
    opt: Optimizer,
    state: RunState,
    log: MetricsLog,
    progress: Progress,
    monitor: Monitor,
    autocast: bool,
    /// Batches per epoch and optimizer steps per epoch and in all.
    per_epoch: usize,
    steps_per_epoch: usize,
    total_steps: usize,
    lr: f64,
    first_step_logged: bool,
}

impl<'a, T: Task> Loop<'a, T> {
    /// Set-up and resume: writes `config.json` for a new run, or restores the model,
    /// the optimizer, the run state and the metrics log from a checkpoint.
    fn start(
        config: TrainConfig,
        out: &'a Path,
        opts: &'a TrainOptions,
        ckpt: Option<checkpoint::Checkpoint>,
        runtime: &Runtime,
        task: &'a T,
    ) -> Result<Self> {
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
        let mut opt = Optimizer::new(&config.optimizer, task.vars())?;
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
        let log = match ckpt {
            Some(c) => {
                checkpoint::restore_model(&c, task.vars())?;
                opt.load_state(&c.tensors, c.state.optimizer_steps)?;
                state = c.state;
                let (steps, epochs) = (state.optimizer_steps, state.epochs.len() as u64);
                MetricsLog::resume(&log_path, |r| match r["kind"].as_str() {
                    Some("step") | Some("eval") => r["step"].as_u64().is_some_and(|s| s <= steps),
                    Some("epoch") => r["epoch"].as_u64().is_some_and(|e| e <= epochs),
                    _ => false,
                })?
            }
            None => MetricsLog::create(&log_path)?,
        };
        let per_epoch = task.batches_per_epoch();
        let steps_per_epoch = per_epoch.div_ceil(config.optimizer.accumulate);
        let total_steps = steps_per_epoch * config.epochs;
        let progress = Progress::new((per_epoch * config.epochs) as u64, opts.quiet, task.unit());
        progress.set_position(state.batches_done);
        let description = task.describe();
        progress.log(|| {
            tracing::info!(
                device = ?runtime.device,
                threads = runtime.threads,
                "training {description} on {:?} with {} threads",
                runtime.device,
                runtime.threads,
            )
        });
        Ok(Loop {
            first_step_logged: state.batches_done > 0,
            lr: config.optimizer.lr,
            task,
            config,
            out,
            opts,
            opt,
            state,
            log,
            progress,
            monitor,
            autocast,
            per_epoch,
            steps_per_epoch,
            total_steps,
        })
    }

    /// Epochs until the last, early stopping, or an interruption; then the package.
    fn run(mut self) -> Result<TrainReport> {
        let mut stopped_early = false;
        // With evaluations during epochs, a new run also evaluates where it starts: the
        // baseline a fine-tuning run improves on.
        if self.state.batches_done == 0 && self.config.eval_every_steps > 0 {
            self.eval_record()?;
        }
        while self.state.epoch < self.config.epochs {
            let epoch_start = Instant::now();
            let samples = self.train_epoch(epoch_start)?;
            let dir;
            (stopped_early, dir) = self.end_epoch(epoch_start, samples)?;
            if stopped_early {
                break;
            }
            if self.opts.stop.load(Ordering::SeqCst) && self.state.epoch < self.config.epochs {
                self.progress.finish();
                return Err(Error::Interrupted(dir));
            }
        }
        self.progress.finish();
        self.finish(stopped_early)
    }

    /// Trains on the rest of the current epoch; returns the samples it saw.
    fn train_epoch(&mut self, epoch_start: Instant) -> Result<usize> {
        let accumulate = self.config.optimizer.accumulate;
        let base_lr = self.config.optimizer.lr;
        let mut epoch_samples = 0usize;
        let mut group_loss = 0f64;
        let (epoch, first) = (self.state.epoch as u64, self.state.batch_in_epoch);
        let task = self.task;
        for batch in task.batches(epoch, first) {
            let batch = batch?;
            let state = &mut self.state;
            tch::manual_seed(batch_seed(self.config.seed, state.batches_done));
            let group_start = state.batch_in_epoch - state.batch_in_epoch % accumulate;
            let group_len = accumulate.min(self.per_epoch - group_start);
            let fwd = self.task.forward(&batch, self.autocast)?;
            let loss_value = fwd.loss;
            if !loss_value.is_finite() {
                return Err(Error::Diverged(format!(
                    "the loss became {loss_value} in epoch {}; try a lower optimizer.lr (now {base_lr})",
                    state.epoch + 1
                )));
            }
            if group_len > 1 {
                fwd.objective.f_div_scalar(group_len as f64)?.f_backward()?;
            } else {
                fwd.objective.f_backward()?;
            }
            state.tally.add(loss_value, fwd.predictions, fwd.correct);
            group_loss += loss_value / group_len as f64;
            epoch_samples += fwd.samples;
            state.batch_in_epoch += 1;
            state.batches_done += 1;
            self.progress.inc();
            if state.batch_in_epoch % accumulate != 0 && state.batch_in_epoch != self.per_epoch {
                continue;
            }
            let rate = epoch_samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            self.optimizer_step(group_loss, rate)?;
            group_loss = 0.0;
            let mid_epoch = self.state.batch_in_epoch < self.per_epoch;
            let every = self.config.checkpoint.every_steps as u64;
            let steps = self.state.optimizer_steps;
            if mid_epoch && self.config.eval_every_steps > 0 && steps % self.config.eval_every_steps as u64 == 0 {
                self.eval_record()?;
            }
            if mid_epoch && every > 0 && steps % every == 0 {
                self.checkpoint()?;
            }
            if mid_epoch && self.opts.stop.load(Ordering::SeqCst) {
                let dir = self.checkpoint()?;
                self.progress.finish();
                return Err(Error::Interrupted(dir));
            }
        }
        Ok(epoch_samples)
    }

    /// Flushes the metrics log, then writes a checkpoint of where the run is.
    fn checkpoint(&mut self) -> Result<PathBuf> {
        self.log.flush()?;
        checkpoint::save(
            self.out,
            &self.state,
            self.task.vars(),
            &self.opt,
            self.config.checkpoint.keep,
        )
    }

    /// Clips, steps the optimizer at the schedule's rate, and logs the step.
    fn optimizer_step(&mut self, group_loss: f64, rate: f64) -> Result<()> {
        if let Some(max) = self.config.optimizer.clip_grad_norm {
            self.opt.clip_grad_norm(max)?;
        }
        let o = &self.config.optimizer;
        self.lr = o.schedule.rate(
            o.lr,
            self.state.optimizer_steps as usize,
            self.total_steps,
            self.steps_per_epoch,
        );
        self.opt.step(self.lr)?;
        self.opt.zero_grad();
        self.state.optimizer_steps += 1;
        if !self.first_step_logged {
            self.first_step_logged = true;
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.log.write(&serde_json::json!({
                "kind": "start",
                "seconds_to_first_step": self.opts.started.elapsed().as_secs_f64(),
                "first_step_unix_time": unix,
            }))?;
        }
        if self.state.optimizer_steps % self.config.log_every_steps as u64 == 0 {
            let unit = format!("{}_per_sec", self.task.unit());
            let mut record = serde_json::json!({
                "kind": "step", "step": self.state.optimizer_steps, "epoch": self.state.epoch + 1,
                "loss": group_loss, "lr": self.lr, "samples_per_sec": rate,
            });
            record[unit] = rate.into();
            self.log.write(&record)?;
        }
        let (l, a) = self.state.tally.means();
        self.progress.show(self.state.epoch, self.config.epochs, l, a, rate);
        Ok(())
    }

    /// An `eval` record in the middle of an epoch.
    fn eval_record(&mut self) -> Result<()> {
        if let Some(v) = self.task.evaluate()? {
            let mut record =
                serde_json::json!({"kind": "eval", "step": self.state.optimizer_steps, "epoch": self.state.epoch + 1});
            for (k, x) in v.metrics("val_") {
                record[k] = x.into();
            }
            let summary = v.summary();
            let step = self.state.optimizer_steps;
            self.progress.log(|| tracing::info!(step, "step {step}: {summary}"));
            self.log.write(&record)?;
        }
        Ok(())
    }

    /// Evaluation, the epoch's report, the package when it improved, plots and the
    /// end-of-epoch checkpoint. Returns whether early stopping ends the run, and the
    /// checkpoint written.
    fn end_epoch(&mut self, epoch_start: Instant, epoch_samples: usize) -> Result<(bool, PathBuf)> {
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        let (train_loss, train_accuracy) = self.state.tally.means();
        let val = self.task.evaluate()?;
        let report = EpochReport {
            epoch: self.state.epoch + 1,
            train_loss,
            train_accuracy,
            val,
            lr: self.lr,
            samples_per_sec: epoch_samples as f64 / train_seconds.max(1e-9),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        self.state.seconds += report.seconds;
        let metrics = report.metrics();
        let val_text = report
            .val
            .as_ref()
            .map(|v| format!(", {}", v.summary()))
            .unwrap_or_default();
        // Without validation data the monitored metric may be missing: then the last epoch is kept.
        let value = self.monitor.value(&metrics).ok();
        let improved = match value {
            Some(v) => self.monitor.improves(v, self.state.best.map(|b| b.0), 0.0),
            None => true,
        };
        let (epochs, unit) = (self.config.epochs, self.task.unit());
        self.progress.log(|| {
            tracing::info!(
                epoch = report.epoch,
                epochs,
                train_loss = report.train_loss,
                train_accuracy = report.train_accuracy,
                val_loss = report.val.as_ref().map(|v| v.loss()),
                val_accuracy = report.val.as_ref().map(|v| v.accuracy()),
                samples_per_sec = report.samples_per_sec,
                seconds = report.seconds,
                improved,
                "epoch {:>3}/{epochs}: train loss {:.4} acc {:.4}{val_text} ({:.0} {unit}/s, {:.1}s){}",
                report.epoch,
                report.train_loss,
                report.train_accuracy,
                report.samples_per_sec,
                report.seconds,
                if improved { " *" } else { "" }
            )
        });
        let mut record = serde_json::to_value(&report).map_err(|e| Error::Internal(e.to_string()))?;
        record["kind"] = "epoch".into();
        self.log.write(&record)?;
        self.state.epochs.push(report.clone());
        if improved {
            self.state.best = Some((value.unwrap_or(f64::NAN), report.epoch));
            self.task.save_package(self.out, &self.state)?;
        }
        let mut stopped_early = false;
        if let Some(es) = self.state.early_stopping.as_mut() {
            if let Ok(v) = es.monitor.value(&metrics) {
                stopped_early = es.update(v);
            }
        }
        self.task.write_plots(self.out, &self.state, report.val.as_ref())?;
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.tally = Tally::default();
        let dir = self.checkpoint()?;
        if stopped_early {
            let monitor = self.config.early_stopping.as_ref().map_or("", |e| e.monitor.as_str());
            let bad_epochs = self.state.early_stopping.as_ref().map_or(0, |e| e.bad_epochs);
            self.progress.log(|| {
                tracing::info!(
                    monitor,
                    bad_epochs,
                    "early stopping: no improvement of {monitor} for {bad_epochs} epochs"
                )
            });
        }
        Ok((stopped_early, dir))
    }

    /// Packaging: the task's last word on the package (a test evaluation for a
    /// classifier), then the final `test` record.
    fn finish(mut self, stopped_early: bool) -> Result<TrainReport> {
        let (test, manifest) = self.task.finish(self.out, &self.state)?;
        let state = self.state;
        let best_epoch = state.best.map_or(state.epochs.len(), |b| b.1);
        self.log.write(
            &serde_json::json!({"kind": "test", "best_epoch": best_epoch, "test": test, "seconds": state.seconds}),
        )?;
        self.log.flush()?;
        Ok(TrainReport {
            out_dir: self.out.to_path_buf(),
            package_dir: self.out.join("package"),
            epochs: state.epochs,
            best_epoch,
            test,
            manifest,
            seconds: state.seconds,
            stopped_early,
        })
    }
}
