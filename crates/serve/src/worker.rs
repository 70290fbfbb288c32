//! The batching engine of classifiers and of modules of named tensors: all of a model
//! version's instances take requests from one bounded queue ([`crate::pool`]), each
//! running whatever requests are queued together (and can share a batch) as one batch,
//! up to `max_batch` rows and `max_delay` of waiting.

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

/// What a request to a batching engine carries: rows that a batch joins with other
/// requests' rows, and the answer each request gets back for its own rows.
pub trait Request: Sized + Send + 'static {
    /// What the model gives for a batch, and each request for its share of it.
    type Output: Send + 'static;
    /// The rows (samples) it holds; `max_batch` counts these.
    fn rows(&self) -> usize;
    /// Whether it can run in the same batch as `first` (same dtypes and sizes past the
    /// batch dimension, for tensors).
    fn joins(&self, first: &Self) -> bool;
    /// The requests' rows as one batch, in order.
    fn join(parts: Vec<Self>) -> std::result::Result<Self, RunError>;
    /// The batch's answer split into one per request, `rows[i]` rows each.
    fn split(output: Self::Output, rows: &[usize]) -> std::result::Result<Vec<Self::Output>, RunError>;
    /// A joined batch split back into its requests, `rows[i]` rows each.
    fn unjoin(batch: Self, rows: &[usize]) -> std::result::Result<Vec<Self>, RunError>;
}

/// A classifier's request: model-ready samples, each the model's input size; its
/// answer is one row of logits per sample.
impl Request for Vec<Vec<f32>> {
    type Output = Vec<Vec<f32>>;

    fn rows(&self) -> usize {
        self.len()
    }

    fn joins(&self, _first: &Self) -> bool {
        true
    }

    fn join(parts: Vec<Self>) -> std::result::Result<Self, RunError> {
        // The samples move into the batch (no copy).
        let mut parts = parts.into_iter();
        let mut batch = parts.next().unwrap_or_default();
        for p in parts {
            batch.extend(p);
        }
        Ok(batch)
    }

    fn split(output: Self::Output, rows: &[usize]) -> std::result::Result<Vec<Self::Output>, RunError> {
        let want: usize = rows.iter().sum();
        if output.len() != want {
            return Err(RunError::internal(format!(
                "the model gave {} answers for {want} samples",
                output.len()
            )));
        }
        let mut output = output.into_iter();
        Ok(rows.iter().map(|&n| output.by_ref().take(n).collect()).collect())
    }

    fn unjoin(batch: Self, rows: &[usize]) -> std::result::Result<Vec<Self>, RunError> {
        Self::split(batch, rows)
    }
}

/// What a model instance runs: one batch of requests joined, to the batch's answer.
pub trait Backend<R: Request = Vec<Vec<f32>>> {
    /// Runs one batch.
    fn run(&self, batch: &R) -> std::result::Result<R::Output, RunError>;
}

impl Backend for kiln_package::Package {
    fn run(&self, samples: &Vec<Vec<f32>>) -> std::result::Result<Vec<Vec<f32>>, RunError> {
        self.logits(samples).map_err(run_error)
    }
}

/// A package error as a batch's failure: the input's fault or the server's.
pub(crate) fn run_error(e: kiln_package::Error) -> RunError {
    RunError {
        caused_by_input: e.is_input_error(),
        message: e.to_string(),
    }
}

/// Builds an instance's backend; called on the instance's own thread.
pub type Loader<R = Vec<Vec<f32>>> = Arc<dyn Fn() -> Result<Box<dyn Backend<R>>> + Send + Sync>;

/// One request's input and where its answer goes.
pub struct Job<R: Request = Vec<Vec<f32>>> {
    /// When it was queued.
    pub queued: Instant,
    /// What it asks the model: a classifier's model-ready samples, each the model's
    /// input size.
    pub samples: R,
    /// Receives the answer for its rows (a classifier's: the logits of each sample), or
    /// why the batch failed.
    pub reply: oneshot::Sender<std::result::Result<R::Output, RunError>>,
}

/// A model version's batching instances and their shared queue: a classifier's
/// (samples to logits) by default, or a module of named tensors'.
pub struct Worker<R: Request = Vec<Vec<f32>>> {
    pool: Pool<dyn Backend<R>, Job<R>>,
    /// What the instances have measured.
    pub metrics: Arc<crate::metrics::InstanceMetrics>,
}

impl<R: Request> Worker<R> {
    /// Starts `instances` instances, each building its model with `loader`, and returns
    /// once all are ready, or the first loading error.
    pub fn spawn(loader: Loader<R>, instances: usize, config: Arc<ServeConfig>, label: String) -> Result<Worker<R>> {
        let pool = Pool::spawn(loader, Arc::new(serve_loop::<R>), instances, config, label)?;
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
    /// rows than the server's `max_batch` is [`Error::BatchTooLarge`].
    pub fn submit(&self, job: Job<R>, model: &str) -> Result<()> {
        let max = self.pool.config().max_batch;
        if job.samples.rows() > max {
            return Err(Error::BatchTooLarge {
                samples: job.samples.rows(),
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

fn serve_loop<R: Request>(
    backend: &mut (dyn Backend<R> + 'static),
    ctx: &Ctx<dyn Backend<R>, Job<R>>,
    stop: &Receiver<()>,
) {
    let (rx, cfg, metrics) = (&ctx.queue, &ctx.config, &ctx.metrics);
    // A job taken from the queue that would have made the batch too big: it starts the next.
    let mut carried: Option<Job<R>> = None;
    // Rows of the batch run last: how busy the queue is.
    let mut last_rows = 0;
    loop {
        let first = match carried.take() {
            Some(j) => j,
            None => match wait_briefly(rx, last_rows) {
                Some(j) => j,
                None => select! {
                recv(rx) -> job => match job { Ok(j) => j, Err(_) => return },
                recv(stop) -> _ => return,
                },
            },
        };
        let mut n = first.samples.rows();
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
                Ok(j) if n + j.samples.rows() > cfg.max_batch || !j.samples.joins(&jobs[0].samples) => {
                    carried = Some(j);
                    break;
                }
                Ok(j) => {
                    n += j.samples.rows();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // The carried job stays counted in the queue depth until it runs.
        metrics.depth.fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        // A request whose client has gone is dropped without running.
        let (live, gone): (Vec<Job<R>>, Vec<Job<R>>) = jobs.into_iter().partition(|j| !j.reply.is_closed());
        metrics.cancelled.fetch_add(gone.len() as u64, Ordering::Relaxed);
        if live.is_empty() {
            continue;
        }
        let start = Instant::now();
        for j in &live {
            metrics.queue.observe(start.duration_since(j.queued).as_secs_f64());
        }
        let mut parts = Vec::with_capacity(live.len());
        let mut replies = Vec::with_capacity(live.len());
        for j in live {
            replies.push(j.reply);
            parts.push(j.samples);
        }
        let rows: Vec<usize> = parts.iter().map(Request::rows).collect();
        let result = R::join(parts).map(|batch| run_batch(backend, batch, &rows));
        metrics.compute.observe(start.elapsed().as_secs_f64());
        last_rows = rows.iter().sum::<usize>();
        metrics.batch.observe(last_rows as f64);
        match result {
            Ok(answers) => {
                for (answer, reply) in answers.into_iter().zip(replies) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The next job when one comes soon. After a batch of several requests (a busy queue), the
/// instance yields its core a few times while the queue is empty before it sleeps on it:
/// when request threads share the cores with it (a small machine under load), they queue
/// more requests meanwhile, and the instance runs fewer, larger batches instead of waking
/// for each request (at 64 connections on 2 cores: about 4x fewer sleeps, larger batches
/// and some 10% more requests answered; BENCHMARKS.md). After a batch of one request it sleeps at once,
/// so light load pays nothing; with nothing else to run, a yield returns at once.
fn wait_briefly<J>(rx: &Receiver<J>, last_rows: usize) -> Option<J> {
    if last_rows >= BUSY_ROWS {
        for _ in 0..YIELDS_BEFORE_SLEEP {
            if let Ok(j) = rx.try_recv() {
                return Some(j);
            }
            std::thread::yield_now();
        }
    }
    rx.try_recv().ok()
}

/// Rows in the last batch that mark the queue as busy.
const BUSY_ROWS: usize = 2;
/// Yields before sleeping after a busy batch.
const YIELDS_BEFORE_SLEEP: usize = 4;

type Answer<R> = std::result::Result<<R as Request>::Output, RunError>;

/// The answer of each request of a batch (`rows[i]` rows each). When the batch fails
/// because of an input, each half of it runs again as a batch, and so on down to single
/// requests, so that one request's bad input (a token id past a module's vocabulary, say)
/// fails only that request, not the others it was batched with, at the cost of about
/// 2·log2(n) runs for one bad request among n (rerunning each alone took n).
fn run_batch<R: Request>(backend: &(dyn Backend<R> + 'static), batch: R, rows: &[usize]) -> Vec<Answer<R>> {
    let all = |e: RunError| rows.iter().map(|_| Err(e.clone())).collect();
    match backend.run(&batch) {
        Ok(out) => match R::split(out, rows) {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(e) => all(e),
        },
        Err(e) if e.caused_by_input && rows.len() > 1 => {
            let (front_rows, back_rows) = rows.split_at(rows.len() / 2);
            let halves = R::unjoin(batch, rows).and_then(|mut parts| {
                let back = parts.split_off(front_rows.len());
                Ok((R::join(parts)?, R::join(back)?))
            });
            match halves {
                Ok((front, back)) => {
                    let mut answers = run_batch(backend, front, front_rows);
                    answers.extend(run_batch(backend, back, back_rows));
                    answers
                }
                Err(e) => all(e),
            }
        }
        Err(e) => all(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Logits of one value a sample (the sample's first); a negative sample is a bad input.
    struct Counting(Cell<usize>);

    impl Backend for Counting {
        fn run(&self, batch: &Vec<Vec<f32>>) -> std::result::Result<Vec<Vec<f32>>, RunError> {
            self.0.set(self.0.get() + 1);
            if batch.iter().any(|s| s[0] < 0.0) {
                return Err(RunError {
                    message: "a negative sample".into(),
                    caused_by_input: true,
                });
            }
            Ok(batch.iter().map(|s| vec![s[0] * 2.0]).collect())
        }
    }

    #[test]
    fn a_bad_input_fails_only_its_request_in_halving_reruns() {
        // Eight requests of one sample, then one of two samples; the sixth request is bad.
        let mut batch: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32]).collect();
        batch[5][0] = -1.0;
        let rows = [1, 1, 1, 1, 1, 1, 1, 1, 2];
        let backend = Counting(Cell::new(0));
        let answers = run_batch(&backend, batch, &rows);
        assert_eq!(answers.len(), rows.len());
        for (i, a) in answers.iter().enumerate() {
            match (i, a) {
                (5, Err(e)) => assert!(e.caused_by_input && e.message.contains("negative")),
                (8, Ok(out)) => assert_eq!(out, &vec![vec![16.0], vec![18.0]]),
                (i, Ok(out)) => assert_eq!(out, &vec![vec![2.0 * i as f32]]),
                (i, other) => panic!("request {i}: {other:?}"),
            }
        }
        // The whole batch, then halves down to the bad request: [0..9] [0..4] [4..9] [4..6]
        // [4] [5] [6..9] -- 7 runs where rerunning each of the 9 alone took 10.
        assert_eq!(backend.0.get(), 7);

        // A failure that is not the input's fails every request, without reruns.
        struct Broken;
        impl Backend for Broken {
            fn run(&self, _: &Vec<Vec<f32>>) -> std::result::Result<Vec<Vec<f32>>, RunError> {
                Err(RunError::internal("out of memory"))
            }
        }
        let answers = run_batch(&Broken, vec![vec![1.0], vec![2.0]], &[1, 1]);
        assert!(answers.iter().all(|a| matches!(a, Err(e) if !e.caused_by_input)));
    }
}
