//! The language model's engine: iteration-level (continuous) batching on a row KV cache.
//!
//! Each instance holds its model and a row cache of `rows` sequences (each up to
//! `capacity` tokens; see [`kiln_model::Decoder::new_row_cache`]). Its loop, one step at a
//! time: sequences whose client has gone leave; queued requests join while rows are free,
//! each prompt prefilled in its row, up to `max_prefill_tokens` prompt tokens per step (a
//! longer prompt alone), so that a burst of long prompts delays the running streams by
//! about one budget per step instead of all of it at once; then one decoding call
//! advances every running sequence by one token. A finished sequence leaves at once and
//! the last row moves into its place, so the running rows stay `0..n` and one call feeds
//! them all. Requests that find every row busy wait in the bounded queue; a full queue is
//! a 429. Each sequence computes what it would alone (its own row, positions, mask and
//! seeded sampler), whatever else runs.

use crate::metrics::{GenerationMetrics, InstanceMetrics};
use crate::pool::{Ctx, Load, Pool};
use crate::worker::RunError;
use crate::{Error, Result, ServeConfig};
use crossbeam_channel::{select, Receiver, TryRecvError};
use kiln_model::{Decoder, Finish, KvCache, Sampler, Sampling};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// One sequence to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The prompt's token ids (at least one, fewer than the row capacity).
    pub prompt: Vec<u32>,
    /// Tokens to add at most (fewer when the row fills up).
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Tokens that end the sequence (kept as its last token).
    pub stop_tokens: Vec<u32>,
    /// With `Some(n)`, each token comes with its log-probability and the `n` most likely
    /// tokens' (the model's distribution, before temperature and truncation).
    pub logprobs: Option<usize>,
}

/// A token's log-probability and the most likely alternatives at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen token's.
    pub logprob: f32,
    /// The most likely tokens and theirs, most likely first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    /// Of `token` under `logits`, with the `n` most likely.
    pub fn of(logits: &[f32], token: u32, n: usize) -> TokenLogprobs {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let norm = max + total.ln() as f32;
        let mut top: Vec<(u32, f32)> = Vec::new();
        if n > 0 {
            let mut order: Vec<u32> = (0..logits.len() as u32).collect();
            let n = n.min(order.len());
            order.select_nth_unstable_by(n - 1, |a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
            order.truncate(n);
            order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
            top = order.into_iter().map(|t| (t, logits[t as usize] - norm)).collect();
        }
        TokenLogprobs {
            logprob: logits.get(token as usize).map_or(f32::NEG_INFINITY, |l| l - norm),
            top,
        }
    }
}

/// What a sequence's receiver hears, in order: tokens, then one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The next token, with its log-probabilities when they were asked for.
    Token(u32, Option<TokenLogprobs>),
    /// The sequence ended.
    Done(Finish),
    /// The model failed.
    Failed(RunError),
}

/// A queued request and where its tokens go.
pub struct GenerateJob {
    queued: Instant,
    request: GenerateRequest,
    events: UnboundedSender<Event>,
}

/// What a generation instance runs: a model with a row cache.
pub trait LanguageBackend {
    /// Sequences it can hold at once.
    fn rows(&self) -> usize;
    /// Prefills `prompt` into the empty row `row`: the logits of its last position, and
    /// how many of its first tokens were not computed but reused from the cache.
    fn prefill(&mut self, row: usize, prompt: &[u32]) -> std::result::Result<(Vec<f32>, usize), RunError>;
    /// Feeds `last[i]` to row `i` for every `i`; each row's next logits.
    fn decode(&mut self, last: &[u32]) -> std::result::Result<Vec<Vec<f32>>, RunError>;
    /// Row `row` is done: row `last` (the highest in use) moves into it.
    fn release(&mut self, row: usize, last: usize) -> std::result::Result<(), RunError>;
}

/// With prefix caching, a prompt reuses a row's keys and values when it starts with at
/// least this many of that row's tokens (fewer save little and only change rounding).
pub const MIN_REUSED_PREFIX: usize = 16;

/// A decoder and its row cache.
pub struct RowModel {
    model: Decoder,
    cache: KvCache,
    /// With prefix caching: the tokens whose keys and values each row's first slots hold,
    /// a freed row's too, until the row is filled again.
    held: Option<Vec<Vec<u32>>>,
}

impl RowModel {
    /// `model` with a cache of `rows` sequences of up to `capacity` tokens each; with
    /// `prefix_cache`, a prompt that starts with tokens a row holds (a running sequence's,
    /// or a finished one's) copies their keys and values instead of computing them again.
    pub fn new(model: Decoder, rows: usize, capacity: i64, prefix_cache: bool) -> Result<RowModel> {
        let cache = model
            .new_row_cache(rows, capacity)
            .map_err(|e| Error::Internal(format!("cannot allocate the KV cache: {e}")))?;
        Ok(RowModel {
            model,
            cache,
            held: prefix_cache.then(|| vec![Vec::new(); rows]),
        })
    }

    /// The row holding the longest start of `prompt` (at least [`MIN_REUSED_PREFIX`]
    /// tokens, and one short of the whole prompt, whose last token must be computed), and
    /// that length; `row` itself wins a tie, as it needs no copy.
    fn longest_prefix(&self, row: usize, prompt: &[u32]) -> Option<(usize, usize)> {
        let held = self.held.as_ref()?;
        let most = prompt.len().saturating_sub(1);
        held.iter()
            .enumerate()
            .map(|(r, h)| {
                let n = h.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(most);
                (r, n)
            })
            .max_by_key(|&(r, n)| (n, r == row))
            .filter(|&(_, n)| n >= MIN_REUSED_PREFIX)
    }
}

fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::internal(e.to_string())
}

impl LanguageBackend for RowModel {
    fn rows(&self) -> usize {
        self.cache.batch()
    }

    fn prefill(&mut self, row: usize, prompt: &[u32]) -> std::result::Result<(Vec<f32>, usize), RunError> {
        let mut reused = 0;
        if let Some((from, n)) = self.longest_prefix(row, prompt) {
            self.cache.reuse_prefix(from, row, n as i64).map_err(failed)?;
            reused = n;
        }
        let logits = self
            .model
            .prefill_row(&prompt[reused..], row, &mut self.cache)
            .map_err(|e| RunError {
                caused_by_input: matches!(e, kiln_model::Error::Input(_)),
                message: e.to_string(),
            });
        if let Some(h) = self.held.as_mut().and_then(|held| held.get_mut(row)) {
            // A failed prefill may have written part of the row.
            *h = if logits.is_ok() { prompt.to_vec() } else { Vec::new() };
        }
        Ok((logits?, reused))
    }

    fn decode(&mut self, last: &[u32]) -> std::result::Result<Vec<Vec<f32>>, RunError> {
        let logits = self.model.decode_rows(last, &mut self.cache).map_err(failed);
        if let Some(held) = &mut self.held {
            for (h, &t) in held.iter_mut().zip(last) {
                if logits.is_ok() {
                    h.push(t);
                } else {
                    h.clear();
                }
            }
        }
        logits
    }

    fn release(&mut self, row: usize, last: usize) -> std::result::Result<(), RunError> {
        if row == last {
            self.cache.clear_row(row).map_err(failed)
        } else {
            self.cache.move_row(last, row).map_err(failed)?;
            if let Some(held) = &mut self.held {
                // Row `last` keeps its slots, and so what it held, until it is filled again.
                held[row] = held[last].clone();
            }
            self.cache.clear_row(last).map_err(failed)
        }
    }
}

/// A language-model version's instances, their queue and their generation metrics.
pub struct Generator {
    pool: Pool<dyn LanguageBackend, GenerateJob>,
    /// Per-token metrics of every instance.
    pub generation: Arc<GenerationMetrics>,
    /// Tokens a sequence may hold, prompt and generated together.
    pub capacity: usize,
}

impl Generator {
    /// Starts `instances` instances, each building its backend with `load`; each holds
    /// sequences of up to `capacity` tokens.
    pub fn spawn(
        load: Load<dyn LanguageBackend>,
        instances: usize,
        capacity: usize,
        config: Arc<ServeConfig>,
        label: String,
    ) -> Result<Generator> {
        let generation = Arc::new(GenerationMetrics::default());
        let metrics = generation.clone();
        let serve = Arc::new(
            move |backend: &mut (dyn LanguageBackend + 'static),
                  ctx: &Ctx<dyn LanguageBackend, GenerateJob>,
                  stop: &Receiver<()>| { schedule(backend, ctx, stop, capacity, &metrics) },
        );
        let pool = Pool::spawn(load, serve, instances, config, label)?;
        Ok(Generator {
            generation,
            pool,
            capacity,
        })
    }

    /// Queues `request`: its tokens arrive on the receiver as they are made. Dropping the
    /// receiver ends the sequence at the next step. A full queue is [`Error::Overloaded`].
    pub fn submit(&self, request: GenerateRequest, model: &str) -> Result<UnboundedReceiver<Event>> {
        if request.prompt.is_empty() || request.prompt.len() >= self.capacity {
            return Err(Error::BadRequest(format!(
                "the prompt of {} tokens must be at least 1 and below {} (the tokens a sequence may hold here)",
                request.prompt.len(),
                self.capacity
            )));
        }
        let (tx, rx) = unbounded_channel();
        self.pool.submit(
            GenerateJob {
                queued: Instant::now(),
                request,
                events: tx,
            },
            model,
        )?;
        Ok(rx)
    }

    /// Instance metrics (queue, step time, sequences per step, depth, health).
    pub fn metrics(&self) -> &Arc<InstanceMetrics> {
        self.pool.metrics()
    }

    /// Instances running now.
    pub fn instances(&self) -> usize {
        self.pool.instances()
    }

    /// Starts or stops instances until `n` run.
    pub fn set_instances(&self, n: usize) -> Result<()> {
        self.pool.set_instances(n)
    }

    /// Whether at least one instance is loaded and serving.
    pub fn healthy(&self) -> bool {
        self.pool.healthy()
    }
}

/// A running sequence.
struct Sequence {
    events: UnboundedSender<Event>,
    sampler: Sampler,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    prompt: usize,
    queued: Instant,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    logprobs: Option<usize>,
    last_token: Instant,
}

impl Sequence {
    /// Draws the next token from `logits` and sends it; `Some(finish)` when the sequence
    /// ends with it (or its client has gone).
    fn advance(&mut self, logits: &[f32], capacity: usize, g: &GenerationMetrics) -> Option<Finish> {
        let token = self.sampler.next(logits, &self.history);
        self.history.push(token);
        let now = Instant::now();
        g.observe_token(
            self.history.len() - self.prompt == 1,
            now.duration_since(self.last_token),
        );
        self.last_token = now;
        g.generated_tokens.fetch_add(1, Ordering::Relaxed);
        // A client that has gone is noticed at the next step, and its row freed there.
        let logprobs = self.logprobs.map(|n| TokenLogprobs::of(logits, token, n));
        let _ = self.events.send(Event::Token(token, logprobs));
        let made = self.history.len() - self.prompt;
        if self.stop_tokens.contains(&token) {
            Some(Finish::Stop)
        } else if made >= self.max_tokens || self.history.len() >= capacity {
            Some(Finish::Length)
        } else {
            None
        }
    }
}

fn schedule(
    backend: &mut (dyn LanguageBackend + 'static),
    ctx: &Ctx<dyn LanguageBackend, GenerateJob>,
    stop: &Receiver<()>,
    capacity: usize,
    generation: &GenerationMetrics,
) {
    let (queue, cfg, metrics) = (&ctx.queue, &ctx.config, &ctx.metrics);
    let rows = backend.rows();
    generation.rows.fetch_add(rows as u64, Ordering::Relaxed);
    generation.capacity.store(capacity as u64, Ordering::Relaxed);
    let mut running: Vec<Sequence> = Vec::new();
    let mut draining = false;
    // What this instance has added to the version's gauges.
    let mut shown = (0u64, 0u64);
    let publish = |running: &[Sequence], shown: &mut (u64, u64)| {
        let now = (
            running.len() as u64,
            running.iter().map(|s| s.history.len() as u64).sum::<u64>(),
        );
        generation.running.fetch_add(now.0, Ordering::Relaxed);
        generation.running.fetch_sub(shown.0, Ordering::Relaxed);
        generation.kv_tokens.fetch_add(now.1, Ordering::Relaxed);
        generation.kv_tokens.fetch_sub(shown.1, Ordering::Relaxed);
        *shown = now;
    };
    loop {
        if !draining && !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
            draining = true;
        }
        // Sequences whose client has gone (or hit a stop string) leave.
        let mut i = 0;
        while i < running.len() {
            if running[i].events.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                leave(backend, &mut running, i);
            } else {
                i += 1;
            }
        }
        // Before the admission below may wait for work: the gauges show what runs now.
        publish(&running, &mut shown);
        // New sequences join while rows are free, within the step's prefill budget.
        let mut prefilled = 0usize;
        while !draining && running.len() < rows && prefilled < cfg.max_prefill_tokens.max(1) {
            let job = if running.is_empty() {
                select! {
                    recv(queue) -> job => match job { Ok(j) => j, Err(_) => break },
                    recv(stop) -> _ => { draining = true; break },
                }
            } else {
                match queue.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            metrics.depth.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let started = Instant::now();
            metrics.queue.observe(started.duration_since(job.queued).as_secs_f64());
            let row = running.len();
            let r = job.request;
            prefilled += r.prompt.len();
            generation
                .prompt_tokens
                .fetch_add(r.prompt.len() as u64, Ordering::Relaxed);
            match backend.prefill(row, &r.prompt) {
                Ok((logits, reused)) => {
                    // The budget counts the tokens computed.
                    prefilled -= reused;
                    generation.prefix_hits.fetch_add(reused as u64, Ordering::Relaxed);
                    let mut seq = Sequence {
                        events: job.events,
                        sampler: Sampler::new(r.sampling),
                        prompt: r.prompt.len(),
                        queued: job.queued,
                        history: r.prompt,
                        max_tokens: r.max_tokens,
                        stop_tokens: r.stop_tokens,
                        logprobs: r.logprobs,
                        last_token: job.queued,
                    };
                    metrics.compute.observe(started.elapsed().as_secs_f64());
                    let done = seq.advance(&logits, capacity, generation);
                    running.push(seq);
                    if let Some(finish) = done {
                        end(backend, &mut running, row, Event::Done(finish), generation);
                    }
                }
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e));
                    generation.finished(None);
                    if let Err(e) = backend.release(row, row) {
                        tracing::error!(instance = %ctx.label, error = %e.message, "cannot clear a KV-cache row: {}", e.message);
                    }
                }
            }
        }
        publish(&running, &mut shown);
        if running.is_empty() {
            if draining {
                generation.rows.fetch_sub(rows as u64, Ordering::Relaxed);
                return;
            }
            continue;
        }
        // One token for every running sequence.
        let started = Instant::now();
        let last: Vec<u32> = running.iter().map(|s| s.history[s.history.len() - 1]).collect();
        match backend.decode(&last) {
            Ok(logits) if logits.len() == running.len() => {
                metrics.compute.observe(started.elapsed().as_secs_f64());
                metrics.batch.observe(running.len() as f64);
                let mut done = Vec::new();
                for (i, (seq, l)) in running.iter_mut().zip(&logits).enumerate() {
                    if let Some(f) = seq.advance(l, capacity, generation) {
                        done.push((i, f));
                    }
                }
                // Highest rows first, so that the rows still to remove keep their index.
                for (i, f) in done.into_iter().rev() {
                    end(backend, &mut running, i, Event::Done(f), generation);
                }
            }
            outcome => {
                let e = match outcome {
                    Err(e) => e,
                    Ok(l) => RunError::internal(format!(
                        "the model gave {} rows of logits for {} sequences",
                        l.len(),
                        running.len()
                    )),
                };
                tracing::error!(instance = %ctx.label, error = %e.message, "decoding failed: {}", e.message);
                while !running.is_empty() {
                    let last = running.len() - 1;
                    end(backend, &mut running, last, Event::Failed(e.clone()), generation);
                }
            }
        }
        publish(&running, &mut shown);
    }
}

/// Sequence `i` ends with `event`; it leaves its row.
fn end(backend: &mut dyn LanguageBackend, running: &mut Vec<Sequence>, i: usize, event: Event, g: &GenerationMetrics) {
    g.finished(match &event {
        Event::Done(f) => Some(*f),
        _ => None,
    });
    g.e2e.observe(running[i].queued.elapsed().as_secs_f64());
    let _ = running[i].events.send(event);
    leave(backend, running, i);
}

/// Sequence `i` leaves: the last running sequence moves into its row.
fn leave(backend: &mut dyn LanguageBackend, running: &mut Vec<Sequence>, i: usize) {
    let last = running.len() - 1;
    if let Err(e) = backend.release(i, last) {
        tracing::error!(error = %e.message, "cannot free a KV-cache row: {}", e.message);
    }
    running.swap_remove(i);
}
