//! The classifier's engine: all of a model version's instances take requests from one
//! bounded queue ([`crate::pool`]), each running whatever requests are queued together as
//! one batch, up to `max_batch` samples and `max_delay` of waiting.

use crate::pool::{Ctx, Pool};
use crate::{Error, Result, ServeConfig};
use crossbeam_channel::{select, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
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

/// A classifier version's instances and their shared queue.
pub struct Worker {
    pool: Pool<dyn Backend, Job>,
    /// What the instances have measured.
    pub metrics: Arc<crate::metrics::InstanceMetrics>,
}

impl Worker {
    /// Starts `instances` instances, each building its model with `loader`, and returns
    /// once all are ready, or the first loading error.
    pub fn spawn(loader: Loader, instances: usize, config: Arc<ServeConfig>, label: String) -> Result<Worker> {
        let pool = Pool::spawn(loader, Arc::new(serve_loop), instances, config, label)?;
        Ok(Worker {
            metrics: pool.metrics().clone(),
            pool,
        })
    }

    /// Instances running now.
    pub fn instances(&self) -> usize {
        self.pool.instances()
    }

    /// Starts or stops instances until `n` run; new ones are ready when this returns.
    pub fn set_instances(&self, n: usize) -> Result<()> {
        self.pool.set_instances(n)
    }

    /// Queues `job`; a full queue is [`Error::Overloaded`] at once, and a job of more
    /// samples than the server's `max_batch` is [`Error::BatchTooLarge`].
    pub fn submit(&self, job: Job, model: &str) -> Result<()> {
        let max = self.pool.config().max_batch;
        if job.samples.len() > max {
            return Err(Error::BatchTooLarge {
                samples: job.samples.len(),
                max,
            });
        }
        self.pool.submit(job, model)
    }

    /// Whether at least one instance is loaded and serving.
    pub fn healthy(&self) -> bool {
        self.pool.healthy()
    }
}

fn serve_loop(backend: &mut (dyn Backend + 'static), ctx: &Ctx<dyn Backend, Job>, stop: &Receiver<()>) {
    let (rx, cfg, metrics) = (&ctx.queue, &ctx.config, &ctx.metrics);
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
        for j in &live {
            metrics.queue.observe(start.duration_since(j.queued).as_secs_f64());
        }
        // The samples move into the batch (no copy); each reply takes back its share.
        let mut samples: Vec<Vec<f32>> = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(live.len());
        for j in live {
            replies.push((j.samples.len(), j.reply));
            samples.extend(j.samples);
        }
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
        metrics.compute.observe(start.elapsed().as_secs_f64());
        metrics.batch.observe(samples.len() as f64);
        match result {
            Ok(rows) => {
                let mut rows = rows.into_iter();
                for (count, reply) in replies {
                    let _ = reply.send(Ok(rows.by_ref().take(count).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
