//! Model instances, whatever they serve: each its own OS thread holding its own copy of
//! the model (built inside that thread; libtorch tensors are not `Sync` and grad mode is
//! per thread), all of a model version's instances taking work from one bounded queue.
//! What an instance does with the work is its engine's loop: the classifier's batcher
//! ([`crate::worker`]) or the language model's scheduler ([`crate::generator`]).
//!
//! An instance whose model panics is discarded: its thread ends, the version reports one
//! healthy instance fewer (not ready when none is left), and a fresh thread loads the
//! model again.

use crate::metrics::{lock, InstanceMetrics};
use crate::{Error, Result, ServeConfig};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Builds an instance's model; called on the instance's own thread.
pub(crate) type Load<B> = Arc<dyn Fn() -> Result<Box<B>> + Send + Sync>;

/// An instance's loop: takes work from `ctx.queue` until `stop` is closed or sends.
pub(crate) type Serve<B, J> = Arc<dyn Fn(&mut B, &Ctx<B, J>, &Receiver<()>) + Send + Sync>;

/// Everything an instance thread needs; cloned for each instance.
pub(crate) struct Ctx<B: ?Sized, J> {
    load: Load<B>,
    serve: Serve<B, J>,
    /// The shared queue.
    pub(crate) queue: Receiver<J>,
    /// The server's configuration.
    pub(crate) config: Arc<ServeConfig>,
    /// What the instances measure.
    pub(crate) metrics: Arc<InstanceMetrics>,
    /// `model-version`, for thread names and logs.
    pub(crate) label: String,
}

impl<B: ?Sized, J> Clone for Ctx<B, J> {
    fn clone(&self) -> Self {
        Ctx {
            load: self.load.clone(),
            serve: self.serve.clone(),
            queue: self.queue.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            label: self.label.clone(),
        }
    }
}

/// An instance, stopped when dropped (it finishes its current work first).
struct Instance {
    _stop: Sender<()>,
}

/// A model version's instances and their shared queue.
pub(crate) struct Pool<B: ?Sized, J> {
    tx: Sender<J>,
    ctx: Ctx<B, J>,
    instances: Mutex<Vec<Instance>>,
}

impl<B: ?Sized + 'static, J: Send + 'static> Pool<B, J> {
    /// Starts `instances` instances, each building its model with `load` and running
    /// `serve`, and returns once all are ready, or the first loading error.
    pub(crate) fn spawn(
        load: Load<B>,
        serve: Serve<B, J>,
        instances: usize,
        config: Arc<ServeConfig>,
        label: String,
    ) -> Result<Pool<B, J>> {
        let (tx, queue) = bounded::<J>(config.queue_capacity.max(1));
        let pool = Pool {
            tx,
            ctx: Ctx {
                load,
                serve,
                queue,
                config,
                metrics: Arc::new(InstanceMetrics::default()),
                label,
            },
            instances: Mutex::new(Vec::new()),
        };
        pool.set_instances(instances)?;
        Ok(pool)
    }

    /// The server's configuration.
    pub(crate) fn config(&self) -> &ServeConfig {
        &self.ctx.config
    }

    /// What the instances have measured.
    pub(crate) fn metrics(&self) -> &Arc<InstanceMetrics> {
        &self.ctx.metrics
    }

    /// Instances asked for. Read without the lock that `set_instances` holds while new
    /// instances load, so that listing models never waits for a load.
    pub(crate) fn instances(&self) -> usize {
        self.ctx.metrics.instances.load(Ordering::Relaxed) as usize
    }

    /// Starts or stops instances until `n` run; new ones are ready when this returns.
    pub(crate) fn set_instances(&self, n: usize) -> Result<()> {
        let mut running = lock(&self.instances);
        while running.len() > n {
            running.pop();
        }
        let mut waiting = Vec::new();
        for i in running.len()..n {
            let (stop_tx, stop_rx) = bounded::<()>(0);
            let (ready_tx, ready_rx) = bounded::<Result<()>>(1);
            start_thread(self.ctx.clone(), i, stop_rx, Some(ready_tx))?;
            waiting.push((Instance { _stop: stop_tx }, ready_rx));
        }
        let mut outcome = Ok(());
        for (instance, ready) in waiting {
            match ready.recv() {
                Ok(Ok(())) => running.push(instance),
                Ok(Err(e)) => outcome = outcome.and(Err(e)),
                Err(_) => outcome = outcome.and(Err(Error::Internal("a model thread died while loading".into()))),
            }
        }
        self.ctx
            .metrics
            .instances
            .store(running.len() as u64, Ordering::Relaxed);
        outcome
    }

    /// Queues `job`; a full queue is [`Error::Overloaded`] at once.
    pub(crate) fn submit(&self, job: J, model: &str) -> Result<()> {
        let metrics = &self.ctx.metrics;
        metrics.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(job).map_err(|e| {
            metrics.depth.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => Error::Overloaded(model.to_string()),
                TrySendError::Disconnected(_) => Error::Unavailable(format!("model {model} is not running")),
            }
        })
    }

    /// Whether at least one instance is loaded and serving.
    pub(crate) fn healthy(&self) -> bool {
        self.ctx.metrics.healthy.load(Ordering::Relaxed) > 0
    }
}

/// Starts instance `index` on a new thread. `ready` hears the result of its first load;
/// without it (a restart) a failed load is retried until the instance is stopped.
fn start_thread<B: ?Sized + 'static, J: Send + 'static>(
    ctx: Ctx<B, J>,
    index: usize,
    stop: Receiver<()>,
    ready: Option<Sender<Result<()>>>,
) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("kiln-model-{}-{index}", ctx.label))
        .spawn(move || instance_main(ctx, index, stop, ready))
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("cannot start a model thread: {e}")))
}

fn instance_main<B: ?Sized + 'static, J: Send + 'static>(
    ctx: Ctx<B, J>,
    index: usize,
    stop: Receiver<()>,
    ready: Option<Sender<Result<()>>>,
) {
    kiln_tensor::keep_freed_memory();
    if ctx.config.threads_per_instance > 0 {
        kiln_tensor::tch::set_num_threads(ctx.config.threads_per_instance as i32);
    }
    let _no_grad = kiln_tensor::tch::no_grad_guard();
    let mut backoff = Duration::from_millis(100);
    let mut model = loop {
        match catch_unwind(AssertUnwindSafe(|| (ctx.load)())) {
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
                    instance = %ctx.label,
                    index,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "restarting {} instance {index}: {e}; retrying in {backoff:?}",
                    ctx.label
                );
                // Wait, but leave at once when the instance is stopped.
                if !matches!(stop.recv_timeout(backoff), Err(RecvTimeoutError::Timeout)) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    ctx.metrics.healthy.fetch_add(1, Ordering::Relaxed);
    if let Some(ready) = ready {
        let _ = ready.send(Ok(()));
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| (ctx.serve)(&mut *model, &ctx, &stop)));
    ctx.metrics.healthy.fetch_sub(1, Ordering::Relaxed);
    if let Err(panic) = outcome {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        tracing::error!(
            instance = %ctx.label,
            index,
            cause = why,
            "{} instance {index} died ({why}); starting a new one",
            ctx.label
        );
        ctx.metrics.restarts.fetch_add(1, Ordering::Relaxed);
        drop(model);
        if let Err(e) = start_thread(ctx.clone(), index, stop, None) {
            tracing::error!(
                instance = %ctx.label,
                index,
                error = %e,
                "{} instance {index} cannot restart: {e}",
                ctx.label
            );
        }
    }
}
