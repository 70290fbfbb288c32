//! Model instances: each its own OS thread holding its own copy of the model (built inside
//! that thread; libtorch tensors are not `Sync` and grad mode is per thread), all of a
//! model version's instances taking work from one bounded queue, each running whatever
//! requests are queued together as one batch.
//!
//! An instance whose model panics is discarded: its thread ends, the version reports one
//! healthy instance fewer (not ready when none is left), and a fresh thread loads the
//! model again.

use crate::metrics::{lock, InstanceMetrics};
use crate::{Error, Result, ServeConfig};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Why a batch failed: what happened, and whether the input caused it (the request then
/// gets a 4xx, not a 500).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    /// What went wrong.
    pub message: String,
    /// Whether the request's input caused it.
    pub caused_by_input: bool,
}

impl RunError {
    /// A failure of the server or the model, not of the input.
    pub fn internal(message: impl Into<String>) -> RunError {
        RunError {
            message: message.into(),
            caused_by_input: false,
        }
    }
}

/// What a model instance runs: model-ready samples in, one row of logits per sample out.
pub trait Backend {
    /// Runs one batch.
    fn run(&self, samples: &[Vec<f32>]) -> std::result::Result<Vec<Vec<f32>>, RunError>;
}

impl Backend for kiln_package::Package {
    fn run(&self, samples: &[Vec<f32>]) -> std::result::Result<Vec<Vec<f32>>, RunError> {
        self.logits(samples).map_err(|e| RunError {
            caused_by_input: e.is_input_error(),
            message: e.to_string(),
        })
    }
}

/// Builds an instance's backend; called on the instance's own thread.
pub type Loader = Arc<dyn Fn() -> Result<Box<dyn Backend>> + Send + Sync>;

/// One request's samples (model-ready values) and where its answer goes.
pub struct Job {
    /// When it was queued.
    pub queued: Instant,
    /// Model-ready samples, each the model's input size.
    pub samples: Vec<Vec<f32>>,
    /// Receives the logits of each sample, or why the batch failed.
    pub reply: oneshot::Sender<std::result::Result<Vec<Vec<f32>>, RunError>>,
}

/// Everything an instance thread needs; cloned for each instance.
#[derive(Clone)]
struct Shared {
    loader: Loader,
    queue: Receiver<Job>,
    config: Arc<ServeConfig>,
    metrics: Arc<InstanceMetrics>,
    label: String,
}

/// An instance, stopped when dropped (it finishes its current batch first).
struct Instance {
    _stop: Sender<()>,
}

/// A model version's instances and their shared queue.
pub struct Worker {
    tx: Sender<Job>,
    shared: Shared,
    instances: Mutex<Vec<Instance>>,
    /// What the instances have measured.
    pub metrics: Arc<InstanceMetrics>,
}

impl Worker {
    /// Starts `instances` instances, each building its model with `loader`, and returns
    /// once all are ready, or the first loading error.
    pub fn spawn(loader: Loader, instances: usize, config: Arc<ServeConfig>, label: String) -> Result<Worker> {
        let (tx, queue) = bounded::<Job>(config.queue_capacity.max(1));
        let metrics = Arc::new(InstanceMetrics::default());
        let worker = Worker {
            tx,
            shared: Shared {
                loader,
                queue,
                config,
                metrics: metrics.clone(),
                label,
            },
            instances: Mutex::new(Vec::new()),
            metrics,
        };
        worker.set_instances(instances)?;
        Ok(worker)
    }

    /// Instances running now.
    pub fn instances(&self) -> usize {
        lock(&self.instances).len()
    }

    /// Starts or stops instances until `n` run; new ones are ready when this returns.
    pub fn set_instances(&self, n: usize) -> Result<()> {
        let mut running = lock(&self.instances);
        while running.len() > n {
            running.pop();
        }
        let mut waiting = Vec::new();
        for i in running.len()..n {
            let (stop_tx, stop_rx) = bounded::<()>(0);
            let (ready_tx, ready_rx) = bounded::<Result<()>>(1);
            start_thread(self.shared.clone(), i, stop_rx, Some(ready_tx))?;
            waiting.push((Instance { _stop: stop_tx }, ready_rx));
        }
        for (instance, ready) in waiting {
            match ready.recv() {
                Ok(Ok(())) => running.push(instance),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Internal("a model thread died while loading".into())),
            }
        }
        self.metrics.instances.store(running.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Queues `job`; a full queue is [`Error::Overloaded`] at once, and a job of more
    /// samples than the server's `max_batch` is [`Error::BatchTooLarge`].
    pub fn submit(&self, job: Job, model: &str) -> Result<()> {
        if job.samples.len() > self.shared.config.max_batch {
            return Err(Error::BatchTooLarge {
                samples: job.samples.len(),
                max: self.shared.config.max_batch,
            });
        }
        self.metrics.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(job).map_err(|e| {
            self.metrics.depth.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => Error::Overloaded(model.to_string()),
                TrySendError::Disconnected(_) => Error::Unavailable(format!("model {model} is not running")),
            }
        })
    }

    /// Whether at least one instance is loaded and serving.
    pub fn healthy(&self) -> bool {
        self.metrics.healthy.load(Ordering::Relaxed) > 0
    }
}

/// Starts instance `index` on a new thread. `ready` hears the result of its first load;
/// without it (a restart) a failed load is retried until the instance is stopped.
fn start_thread(shared: Shared, index: usize, stop: Receiver<()>, ready: Option<Sender<Result<()>>>) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("kiln-model-{}-{index}", shared.label))
        .spawn(move || instance_main(shared, index, stop, ready))
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("cannot start a model thread: {e}")))
}

fn instance_main(shared: Shared, index: usize, stop: Receiver<()>, ready: Option<Sender<Result<()>>>) {
    kiln_tensor::keep_freed_memory();
    if shared.config.threads_per_instance > 0 {
        kiln_tensor::tch::set_num_threads(shared.config.threads_per_instance as i32);
    }
    let _no_grad = kiln_tensor::tch::no_grad_guard();
    let mut backoff = Duration::from_millis(100);
    let backend = loop {
        match catch_unwind(AssertUnwindSafe(|| (shared.loader)())) {
            Ok(Ok(b)) => break b,
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e,
                    _ => Error::Internal("the model panicked while loading".into()),
                };
                if let Some(ready) = ready {
                    let _ = ready.send(Err(e));
                    return;
                }
                tracing::error!(
                    instance = %shared.label,
                    index,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "restarting {} instance {index}: {e}; retrying in {backoff:?}",
                    shared.label
                );
                // Wait, but leave at once when the instance is stopped.
                if !matches!(stop.recv_timeout(backoff), Err(RecvTimeoutError::Timeout)) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    shared.metrics.healthy.fetch_add(1, Ordering::Relaxed);
    if let Some(ready) = ready {
        let _ = ready.send(Ok(()));
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| serve_loop(&*backend, &shared, &stop)));
    shared.metrics.healthy.fetch_sub(1, Ordering::Relaxed);
    if let Err(panic) = outcome {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        tracing::error!(
            instance = %shared.label,
            index,
            cause = why,
            "{} instance {index} died ({why}); starting a new one",
            shared.label
        );
        shared.metrics.restarts.fetch_add(1, Ordering::Relaxed);
        drop(backend);
        if let Err(e) = start_thread(shared.clone(), index, stop, None) {
            tracing::error!(
                instance = %shared.label,
                index,
                error = %e,
                "{} instance {index} cannot restart: {e}",
                shared.label
            );
        }
    }
}

fn serve_loop(backend: &dyn Backend, shared: &Shared, stop: &Receiver<()>) {
    let (rx, cfg, metrics) = (&shared.queue, &shared.config, &shared.metrics);
    // A job taken from the queue that would have made the batch too big: it starts the next.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(j) => j,
            None => select! {
                recv(rx) -> job => match job { Ok(j) => j, Err(_) => return },
                recv(stop) -> _ => return,
            },
        };
        let mut n = first.samples.len();
        let mut jobs = vec![first];
        let deadline = Instant::now() + cfg.max_delay;
        // Take what is queued, then wait up to max_delay for more, never going over
        // max_batch samples (a single request over it is refused before it is queued).
        while n < cfg.max_batch {
            let next = match rx.try_recv() {
                Ok(j) => Ok(j),
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    rx.recv_timeout(left)
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(j) if n + j.samples.len() > cfg.max_batch => {
                    carried = Some(j);
                    break;
                }
                Ok(j) => {
                    n += j.samples.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // The carried job stays counted in the queue depth until it runs.
        metrics.depth.fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        // A request whose client has gone is dropped without running.
        let (live, gone): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| !j.reply.is_closed());
        metrics.cancelled.fetch_add(gone.len() as u64, Ordering::Relaxed);
        if live.is_empty() {
            continue;
        }
        let start = Instant::now();
        {
            let mut q = lock(&metrics.queue);
            for j in &live {
                q.observe(start.duration_since(j.queued).as_secs_f64());
            }
        }
        let samples: Vec<Vec<f32>> = live.iter().flat_map(|j| j.samples.iter().cloned()).collect();
        let result = backend.run(&samples).and_then(|rows| {
            if rows.len() == samples.len() {
                Ok(rows)
            } else {
                Err(RunError::internal(format!(
                    "the model gave {} answers for {} samples",
                    rows.len(),
                    samples.len()
                )))
            }
        });
        lock(&metrics.compute).observe(start.elapsed().as_secs_f64());
        lock(&metrics.batch).observe(samples.len() as f64);
        match result {
            Ok(mut rows) => {
                for job in live {
                    let rest = rows.split_off(job.samples.len());
                    let mine = std::mem::replace(&mut rows, rest);
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for job in live {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
