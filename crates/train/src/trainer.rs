//! `train` and `resume`: the training loop from a config to a package, checkpointed so
//! that an interrupted run continues exactly where it stopped.

use crate::checkpoint::{self, RunState};
use crate::distributed::{self, DataParallel};
use crate::early_stop::{EarlyStopping, Monitor};
use crate::evaluate::Tally;
use crate::progress::Progress;
use crate::task::classify::Classify;
use crate::task::language::Language;
use crate::task::{Evaluation, Task};
use crate::{Error, EvalResult, MetricsLog, MixedPrecision, Optimizer, Result, TaskKind, TrainConfig};
use kiln_data::{Shard, SplitMix64};
use kiln_dist::ProcessGroup;
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
    /// The manifest written (by rank 0 alone in a data-parallel run: `None` on the others).
    pub manifest: Option<Manifest>,
    /// Training wall time, summed over resumptions.
    pub seconds: f64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// This process's rank and the number of ranks (0 and 1 for a single process).
    pub rank: usize,
    /// The number of ranks that trained together.
    pub world: usize,
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
    /// [`train`] continues the run when the output folder already holds its checkpoints
    /// (as [`resume`] does, with the config the run was started with) instead of
    /// refusing: for schedulers that restart a failed job with the same command.
    pub resume_existing: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            quiet: false,
            stop: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            resume_existing: false,
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
///
/// Under `kiln-train launch`, `torchrun` or a `PyTorchJob` (`WORLD_SIZE` > 1 in the
/// environment) the run is one rank of a data-parallel job: rank 0 alone writes to `out`.
pub fn train(config: &TrainConfig, out: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    config.validate()?;
    let mut config = config.clone();
    let pg = distributed::join(&mut config)?;
    if opts.resume_existing && !checkpoint::list(out).is_empty() {
        return resume_in(out, opts, pg);
    }
    if pg.as_ref().is_some_and(|pg| pg.rank() != 0) {
        return run(config, out, opts, None, pg);
    }
    prepare_out_dir(out)?;
    if !checkpoint::list(out).is_empty() {
        return Err(Error::Config(format!(
            "{} already holds checkpoints of a run; continue it with `kiln-train resume {}`, or choose another --out",
            out.display(),
            out.display()
        )));
    }
    run(config, out, opts, None, pg)
}

/// Continues the run in `out` from its newest intact checkpoint, with the config it was
/// started with. A data-parallel run resumes with the same number of ranks, each reading
/// `out` (a folder every rank can read: a shared volume across machines).
pub fn resume(out: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    resume_in(out, opts, None)
}

/// [`resume`], in the process group `pg` when `train --resume` already joined one.
fn resume_in(out: &Path, opts: &TrainOptions, pg: Option<ProcessGroup>) -> Result<TrainReport> {
    let config_path = out.join("config.json");
    let mut config = TrainConfig::load(Some(&config_path), &[])?;
    let pg = match pg {
        Some(pg) => Some(pg),
        None => distributed::join(&mut config)?,
    };
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
    if let Some(pg) = &pg {
        let steps = ckpt.state.optimizer_steps;
        tracing::info!(rank = pg.rank(), "rank {} resumes at step {steps}", pg.rank());
    }
    run(config, out, opts, Some(ckpt), pg)
}

/// The dropout generator's seed for batch `n`: a function of the run's seed and the
/// position (and the rank in a data-parallel run), so a resumed run draws the same masks
/// without saving generator state.
fn batch_seed(seed: u64, n: u64, shard: Shard) -> i64 {
    let mut stream = if shard.world > 1 {
        SplitMix64::for_stream(seed, &[n, 0xD50, shard.rank as u64])
    } else {
        SplitMix64::for_stream(seed, &[n, 0xD50])
    };
    (stream.next_u64() >> 1) as i64
}

fn run(
    mut config: TrainConfig,
    out: &Path,
    opts: &TrainOptions,
    ckpt: Option<checkpoint::Checkpoint>,
    pg: Option<ProcessGroup>,
) -> Result<TrainReport> {
    let runtime = Runtime::init(config.device, config.threads, config.seed)?;
    let shard = distributed::shard(pg.as_ref());
    match config.task {
        TaskKind::Classification => {
            let task = Classify::new(&mut config, runtime.device, shard)?;
            Loop::start(config, out, opts, ckpt, &runtime, &task, pg)?.run()
        }
        TaskKind::LanguageModel => {
            let task = Language::new(&mut config, runtime.device, out, ckpt.is_some(), shard)?;
            Loop::start(config, out, opts, ckpt, &runtime, &task, pg)?.run()
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
    /// The other ranks of a data-parallel run.
    dp: Option<DataParallel>,
    /// This rank's share of the data.
    shard: Shard,
    /// Whether this process writes the run's files (rank 0, or the only process).
    leader: bool,
    /// Whether a stop was asked for on some rank (agreed on at each step).
    stop_agreed: bool,
    /// Steps since the last `step` record, for its allreduce time per step.
    steps_since_record: u64,
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
        pg: Option<ProcessGroup>,
    ) -> Result<Self> {
        let shard = distributed::shard(pg.as_ref());
        let leader = shard.rank == 0;
        if ckpt.is_none() && leader {
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
            Some(c) if !leader => {
                checkpoint::restore_model(&c, task.vars())?;
                opt.load_state(&c.tensors, c.state.optimizer_steps)?;
                // The checkpoint's tally is all ranks' (rank 0 carries it on).
                state = RunState {
                    tally: Tally::default(),
                    ..c.state
                };
                MetricsLog::discard()
            }
            None if !leader => MetricsLog::discard(),
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
        let mut dp = pg.map(|pg| DataParallel::new(pg, task.vars(), &config)).transpose()?;
        if let Some(dp) = dp.as_mut() {
            dp.check_position(state.optimizer_steps)?;
        }
        let per_epoch = task.batches_per_epoch();
        let steps_per_epoch = per_epoch.div_ceil(config.optimizer.accumulate);
        let total_steps = steps_per_epoch * config.epochs;
        let progress = Progress::new((per_epoch * config.epochs) as u64, opts.quiet || !leader, task.unit());
        progress.set_position(state.batches_done);
        let description = task.describe();
        let ranks = if shard.world > 1 {
            format!(
                ", rank {} of {} ({per_epoch} batches per epoch each)",
                shard.rank, shard.world
            )
        } else {
            String::new()
        };
        progress.log(|| {
            tracing::info!(
                device = ?runtime.device,
                threads = runtime.threads,
                "training {description} on {:?} with {} threads{ranks}",
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
            dp,
            shard,
            leader,
            stop_agreed: false,
            steps_since_record: 0,
        })
    }

    /// Whether the run should stop: asked on this process, or (data-parallel) on any rank
    /// as of the last step, so that every rank stops at the same step.
    fn stop_requested(&self) -> bool {
        if self.dp.is_some() {
            self.stop_agreed
        } else {
            self.opts.stop.load(Ordering::SeqCst)
        }
    }

    /// Epochs until the last, early stopping, or an interruption; then the package.
    fn run(mut self) -> Result<TrainReport> {
        let mut stopped_early = false;
        // With evaluations during epochs, a new run also evaluates where it starts: the
        // baseline a fine-tuning run improves on.
        if self.state.batches_done == 0 && self.config.eval_every_steps > 0 && self.leader {
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
            if self.stop_requested() && self.state.epoch < self.config.epochs {
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
            tch::manual_seed(batch_seed(self.config.seed, state.batches_done, self.shard));
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
            if !state.batch_in_epoch.is_multiple_of(accumulate) && state.batch_in_epoch != self.per_epoch {
                continue;
            }
            let rate = (epoch_samples * self.shard.world) as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            self.optimizer_step(group_loss, rate)?;
            group_loss = 0.0;
            let mid_epoch = self.state.batch_in_epoch < self.per_epoch;
            let every = self.config.checkpoint.every_steps as u64;
            let steps = self.state.optimizer_steps;
            if mid_epoch
                && self.config.eval_every_steps > 0
                && steps.is_multiple_of(self.config.eval_every_steps as u64)
            {
                self.eval_record()?;
            }
            if mid_epoch && every > 0 && steps.is_multiple_of(every) {
                self.checkpoint()?;
            }
            if mid_epoch && self.stop_requested() {
                let dir = self.checkpoint()?;
                self.progress.finish();
                return Err(Error::Interrupted(dir));
            }
        }
        Ok(epoch_samples)
    }

    /// Flushes the metrics log, then writes a checkpoint of where the run is (rank 0
    /// alone in a data-parallel run; the others return the folder it writes to).
    fn checkpoint(&mut self) -> Result<PathBuf> {
        // The epoch's running tally over all ranks goes into rank 0's checkpoint; the other
        // ranks count on from zero, so that the end-of-epoch sum is the same.
        if let Some(dp) = self.dp.as_mut() {
            let t = &self.state.tally;
            let sum = dp.sum(&[t.loss_sum, t.correct as f64, t.samples as f64])?;
            self.state.tally = Tally::default();
            if self.leader {
                self.state.tally.loss_sum = sum[0];
                self.state.tally.correct = sum[1] as i64;
                self.state.tally.samples = sum[2] as usize;
            }
        }
        if !self.leader {
            return Ok(checkpoint::checkpoints_dir(self.out));
        }
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
    fn optimizer_step(&mut self, mut group_loss: f64, rate: f64) -> Result<()> {
        if let Some(dp) = self.dp.as_mut() {
            let stop = self.opts.stop.load(Ordering::SeqCst);
            let mut extras = [group_loss, f64::from(u8::from(stop))];
            dp.average_gradients(&mut extras)?;
            group_loss = extras[0] / dp.world() as f64;
            self.stop_agreed = extras[1] > 0.0;
        }
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
        self.steps_since_record += 1;
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
        if self
            .state
            .optimizer_steps
            .is_multiple_of(self.config.log_every_steps as u64)
        {
            let unit = format!("{}_per_sec", self.task.unit());
            let mut record = serde_json::json!({
                "kind": "step", "step": self.state.optimizer_steps, "epoch": self.state.epoch + 1,
                "loss": group_loss, "lr": self.lr, "samples_per_sec": rate,
            });
            record[unit] = rate.into();
            if let Some(dp) = self.dp.as_mut() {
                let per_step = dp.take_comm() / self.steps_since_record.max(1) as f64;
                record["allreduce_seconds_per_step"] = per_step.into();
            }
            self.steps_since_record = 0;
            self.log.write(&record)?;
        }
        let (l, a) = self.state.tally.means();
        self.progress.show(self.state.epoch, self.config.epochs, l, a, rate);
        Ok(())
    }

    /// An `eval` record in the middle of an epoch.
    fn eval_record(&mut self) -> Result<()> {
        if !self.leader {
            return Ok(());
        }
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
        let mut epoch_samples = epoch_samples;
        let mut per_rank = None;
        if let Some(dp) = self.dp.as_mut() {
            // The epoch's figures over all ranks; what each rank did, for the record.
            let (rank, world) = (dp.rank(), dp.world());
            let t = &self.state.tally;
            let summed = dp.sum(&[t.loss_sum, t.correct as f64, t.samples as f64, epoch_samples as f64])?;
            let mut mine = vec![0f64; 2 * world];
            mine[2 * rank] = self.per_epoch as f64;
            mine[2 * rank + 1] = epoch_samples as f64;
            let all = dp.sum(&mine)?;
            per_rank = Some(
                (0..world)
                    .map(|r| serde_json::json!({"rank": r, "batches": all[2 * r], "samples": all[2 * r + 1]}))
                    .collect::<Vec<_>>(),
            );
            let t = &mut self.state.tally;
            t.loss_sum = summed[0];
            t.correct = summed[1] as i64;
            t.samples = summed[2] as usize;
            epoch_samples = summed[3] as usize;
        }
        let (train_loss, train_accuracy) = self.state.tally.means();
        let val = if self.leader { self.task.evaluate()? } else { None };
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
        // In a data-parallel run, rank 0 alone reports the epoch.
        if self.leader {
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
            })
        }
        let mut record = serde_json::to_value(&report).map_err(|e| Error::Internal(e.to_string()))?;
        record["kind"] = "epoch".into();
        if let Some(ranks) = per_rank {
            record["ranks"] = ranks.into();
        }
        self.log.write(&record)?;
        self.state.epochs.push(report.clone());
        if improved && self.leader {
            self.state.best = Some((value.unwrap_or(f64::NAN), report.epoch));
            self.task.save_package(self.out, &self.state)?;
        }
        let mut stopped_early = false;
        if let Some(es) = self.state.early_stopping.as_mut() {
            if let Ok(v) = es.monitor.value(&metrics) {
                stopped_early = es.update(v);
            }
        }
        // Rank 0 evaluated: its decision holds for every rank.
        if let Some(dp) = self.dp.as_mut() {
            stopped_early = dp.decide(stopped_early)?;
        }
        if self.leader {
            self.task.write_plots(self.out, &self.state, report.val.as_ref())?;
        }
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
        let (test, manifest) = if self.leader {
            let (test, manifest) = self.task.finish(self.out, &self.state)?;
            (test, Some(manifest))
        } else {
            (None, None)
        };
        // Every rank ends when rank 0 has written the package (or fails if it could not).
        if let Some(dp) = self.dp.as_mut() {
            dp.barrier()?;
        }
        let (rank, world) = (self.shard.rank, self.shard.world);
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
            rank,
            world,
        })
    }
}
