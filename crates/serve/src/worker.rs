//! A model instance: its own OS thread holding the loaded model, fed by a bounded queue,
//! running whatever requests are queued together as one batch.

use crate::metrics::InstanceMetrics;
use crate::{Error, Result, ServeConfig};
use kiln_package::{Manifest, Package};
use kiln_tensor::Device;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// One request's samples (model-ready values) and where its answer goes.
pub struct Job {
    /// When it was queued.
    pub queued: Instant,
    /// Model-ready samples, each the model's input size.
    pub samples: Vec<Vec<f32>>,
    /// Receives the logits of each sample, or an error message.
    pub reply: oneshot::Sender<std::result::Result<Vec<Vec<f32>>, String>>,
}

/// The sending side of a model instance.
pub struct Worker {
    tx: SyncSender<Job>,
    /// What the instance has measured.
    pub metrics: Arc<InstanceMetrics>,
}

impl Worker {
    /// Loads the package at `dir` on a new thread and returns once it is ready to serve
    /// (or failed to load, with the reason).
    pub fn spawn(dir: &Path, cfg: &ServeConfig, label: String) -> Result<(Worker, Manifest)> {
        let (tx, rx) = sync_channel::<Job>(cfg.queue_capacity.max(1));
        let (ready_tx, ready_rx) = sync_channel::<Result<Manifest>>(1);
        let metrics = Arc::new(InstanceMetrics::default());
        let (dir, cfg, thread_metrics) = (dir.to_path_buf(), cfg.clone(), metrics.clone());
        std::thread::Builder::new()
            .name(format!("kiln-model-{label}"))
            .spawn(move || {
                if cfg.threads_per_instance > 0 {
                    kiln_tensor::tch::set_num_threads(cfg.threads_per_instance as i32);
                }
                let package = match Package::load(&dir, Device::Cpu) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(package.manifest.clone()));
                serve_loop(&package, &rx, &cfg, &thread_metrics);
            })
            .map_err(|e| Error::Internal(format!("cannot start a model thread: {e}")))?;
        let manifest = ready_rx
            .recv()
            .map_err(|_| Error::Internal("the model thread died while loading".into()))??;
        Ok((Worker { tx, metrics }, manifest))
    }

    /// Queues `job`; a full queue is [`Error::Overloaded`] at once.
    pub fn submit(&self, job: Job, model: &str) -> Result<()> {
        self.metrics.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(job).map_err(|e| {
            self.metrics.depth.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => Error::Overloaded(model.to_string()),
                TrySendError::Disconnected(_) => Error::Unavailable(format!("model {model} is not running")),
            }
        })
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve_loop(package: &Package, rx: &std::sync::mpsc::Receiver<Job>, cfg: &ServeConfig, metrics: &InstanceMetrics) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].samples.len();
        let deadline = Instant::now() + cfg.max_delay;
        // Take what is queued, then wait up to max_delay for more, up to max_batch samples.
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
                Ok(j) => {
                    n += j.samples.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
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
        let result = package.logits(&samples).map_err(|e| e.to_string());
        lock(&metrics.compute).observe(start.elapsed().as_secs_f64());
        lock(&metrics.batch).observe(samples.len() as f64);
        match result {
            Ok(mut probs) => {
                for job in live {
                    let rest = probs.split_off(job.samples.len().min(probs.len()));
                    let mine = std::mem::replace(&mut probs, rest);
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
