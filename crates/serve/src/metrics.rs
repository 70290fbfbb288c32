//! Prometheus metrics: requests by model, version, endpoint and status; latency, queue and
//! compute time and batch size as histograms; queue depth; models loaded; failed loads.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bucket bounds for durations, in seconds.
pub const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds for batch sizes.
pub const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A Prometheus histogram, recorded without locks (atomic bucket counters), so that
/// request threads and model threads never wait on one another to count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// The sum's f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        // Buckets are cumulative: the first bound at or above v and every one after it.
        let first = self.bounds.partition_point(|b| *b < v);
        for c in &self.counts[first..] {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match self
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds `other`'s counts (same bounds) into this one.
    fn merge(&self, other: &Histogram) {
        for (c, o) in self.counts.iter().zip(other.counts.iter()) {
            c.fetch_add(o.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + f64::from_bits(other.sum.load(Ordering::Relaxed));
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
        self.count.fetch_add(other.count(), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let count = self.count();
        for (b, c) in self.bounds.iter().zip(self.counts.iter()) {
            // A value counted in its buckets but not yet in the total is shown in neither.
            let c = c.load(Ordering::Relaxed).min(count);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            f64::from_bits(self.sum.load(Ordering::Relaxed))
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Per model instance: what its thread measured.
#[derive(Debug)]
pub struct InstanceMetrics {
    /// Seconds requests waited in the queue.
    pub queue: Histogram,
    /// Seconds each batch took to run.
    pub compute: Histogram,
    /// Samples per batch.
    pub batch: Histogram,
    /// Requests in the queue now.
    pub depth: AtomicU64,
    /// Requests dropped because their client had gone.
    pub cancelled: AtomicU64,
    /// Instances asked for.
    pub instances: AtomicU64,
    /// Instances loaded and serving now.
    pub healthy: AtomicU64,
    /// Instances that died and were started again.
    pub restarts: AtomicU64,
}

impl Default for InstanceMetrics {
    fn default() -> Self {
        InstanceMetrics {
            queue: Histogram::new(SECONDS),
            compute: Histogram::new(SECONDS),
            batch: Histogram::new(BATCH),
            depth: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            instances: AtomicU64::new(0),
            healthy: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }
}

/// Bucket bounds for the time between tokens, in seconds: finer than [`SECONDS`].
pub const TOKEN_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram of the generation metrics: name, help and where it lives.
type GenerationHistogram = (&'static str, &'static str, fn(&GenerationMetrics) -> &Histogram);

/// A gauge or counter of the generation metrics: name, help, type and how to read it.
type GenerationScalar = (&'static str, &'static str, &'static str, fn(&GenerationMetrics) -> u64);

/// Per language-model version: what its schedulers measured, token by token.
#[derive(Debug)]
pub struct GenerationMetrics {
    /// Seconds from a request's arrival to its first token.
    pub ttft: Histogram,
    /// Seconds between a sequence's tokens.
    pub itl: Histogram,
    /// Seconds from a request's arrival to its last token.
    pub e2e: Histogram,
    /// Prompt tokens prefilled.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens whose keys and values were reused from the cache, not computed.
    pub prefix_hits: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Sequences that ended with a stop token or string.
    pub finished_stop: AtomicU64,
    /// Sequences that ended at their token limit or the row's capacity.
    pub finished_length: AtomicU64,
    /// Sequences the model failed.
    pub failed: AtomicU64,
    /// Sequences running now.
    pub running: AtomicU64,
    /// KV-cache rows (sequences the instances can hold at once).
    pub rows: AtomicU64,
    /// Tokens each row holds at most.
    pub capacity: AtomicU64,
    /// Tokens held in the KV cache now.
    pub kv_tokens: AtomicU64,
}

impl Default for GenerationMetrics {
    fn default() -> Self {
        GenerationMetrics {
            ttft: Histogram::new(SECONDS),
            itl: Histogram::new(TOKEN_SECONDS),
            e2e: Histogram::new(SECONDS),
            prompt_tokens: AtomicU64::new(0),
            prefix_hits: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            finished_stop: AtomicU64::new(0),
            finished_length: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            running: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            kv_tokens: AtomicU64::new(0),
        }
    }
}

impl GenerationMetrics {
    /// A token was made, `since` after the sequence's previous one (after its arrival for
    /// the first).
    pub fn observe_token(&self, first: bool, since: Duration) {
        let h = if first { &self.ttft } else { &self.itl };
        h.observe(since.as_secs_f64());
    }

    /// A sequence ended: `Some` finish reason, or `None` when the model failed.
    pub fn finished(&self, finish: Option<kiln_model::Finish>) {
        let counter = match finish {
            Some(kiln_model::Finish::Stop) => &self.finished_stop,
            Some(kiln_model::Finish::Length) => &self.finished_length,
            None => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the Prometheus text of `versions` (model, version, metrics).
    pub fn render(out: &mut String, versions: &[(String, u64, &GenerationMetrics)]) {
        if versions.is_empty() {
            return;
        }
        let labels = |name: &str, v: u64| format!("model=\"{}\",version=\"{v}\"", esc(name));
        let histograms: [GenerationHistogram; 3] = [
            (
                "kiln_time_to_first_token_seconds",
                "Seconds from a generation request's arrival to its first token.",
                |g| &g.ttft,
            ),
            (
                "kiln_inter_token_latency_seconds",
                "Seconds between consecutive tokens of a sequence.",
                |g| &g.itl,
            ),
            (
                "kiln_e2e_request_latency_seconds",
                "Seconds from a generation request's arrival to its last token.",
                |g| &g.e2e,
            ),
        ];
        for (name, help, h) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (m, v, g) in versions {
                h(g).render(out, name, &labels(m, *v));
            }
        }
        let scalars: [GenerationScalar; 7] = [
            ("kiln_prompt_tokens_total", "Prompt tokens prefilled.", "counter", |g| {
                g.prompt_tokens.load(Ordering::Relaxed)
            }),
            (
                "kiln_prefix_cache_hits_total",
                "Prompt tokens whose keys and values were reused from the cache (--prefix-cache).",
                "counter",
                |g| g.prefix_hits.load(Ordering::Relaxed),
            ),
            ("kiln_generation_tokens_total", "Tokens generated.", "counter", |g| {
                g.generated_tokens.load(Ordering::Relaxed)
            }),
            (
                "kiln_num_requests_running",
                "Sequences being generated now.",
                "gauge",
                |g| g.running.load(Ordering::Relaxed),
            ),
            (
                "kiln_kv_cache_rows",
                "Sequences the KV cache can hold at once.",
                "gauge",
                |g| g.rows.load(Ordering::Relaxed),
            ),
            (
                "kiln_kv_cache_tokens",
                "Tokens held in the KV cache now.",
                "gauge",
                |g| g.kv_tokens.load(Ordering::Relaxed),
            ),
            (
                "kiln_kv_cache_capacity_tokens",
                "Tokens the KV cache can hold (rows times tokens per row).",
                "gauge",
                |g| g.rows.load(Ordering::Relaxed) * g.capacity.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, get) in scalars {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (m, v, g) in versions {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(m, *v), get(g));
            }
        }
        let name = "kiln_kv_cache_usage_perc";
        let _ = writeln!(
            out,
            "# HELP {name} Share of the KV cache's tokens in use, 0 to 1.\n# TYPE {name} gauge"
        );
        for (m, v, g) in versions {
            let cap = g.rows.load(Ordering::Relaxed) * g.capacity.load(Ordering::Relaxed);
            let used = g.kv_tokens.load(Ordering::Relaxed) as f64 / cap.max(1) as f64;
            let _ = writeln!(out, "{name}{{{}}} {used}", labels(m, *v));
        }
        let name = "kiln_request_finished_total";
        let _ = writeln!(
            out,
            "# HELP {name} Sequences that ended, by why.\n# TYPE {name} counter"
        );
        for (m, v, g) in versions {
            for (reason, c) in [
                ("stop", &g.finished_stop),
                ("length", &g.finished_length),
                ("error", &g.failed),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{{},finished_reason=\"{reason}\"}} {}",
                    labels(m, *v),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// A histogram metric of the model instances: name, help, type and where it lives.
type Section = (
    &'static str,
    &'static str,
    &'static str,
    fn(&InstanceMetrics) -> &Histogram,
);

/// A per-instance gauge or counter: name, help, type and where it lives.
type Scalar = (
    &'static str,
    &'static str,
    &'static str,
    fn(&InstanceMetrics) -> &AtomicU64,
);

/// Server-wide request metrics. Each thread that answers requests counts into a shard of
/// its own (locked only by itself, and by `/metrics` when it renders), so request threads
/// never wait on one another; the key is built in a reused buffer, so counting allocates
/// only the first time a series is seen.
#[derive(Debug)]
pub struct Metrics {
    id: u64,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    /// Request-count and latency series created over all shards (a series seen by two
    /// threads counts twice: the bound they enforce is a safety bound).
    created: [AtomicUsize; 2],
    /// Model versions that failed to load.
    pub failed_loads: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::default(),
            created: [AtomicUsize::new(0), AtomicUsize::new(0)],
            failed_loads: AtomicU64::new(0),
        }
    }
}

/// One thread's counts: requests by "model\u{1f}version\u{1f}endpoint\u{1f}status" and
/// latency by "model\u{1f}endpoint".
#[derive(Debug, Default)]
struct Shard {
    requests: HashMap<String, u64>,
    latency: HashMap<String, Histogram>,
}

const SEP: char = '\u{1f}';

/// A thread's shard of each `Metrics` (by id), and the buffer its keys are built in.
type ThreadShards = (Vec<(u64, Arc<Mutex<Shard>>)>, String);

/// Request counts and latency histograms by label, merged over the shards.
type Merged = (
    BTreeMap<(String, String, String, u16), u64>,
    BTreeMap<(String, String), Histogram>,
);

thread_local! {
    static SHARDS: RefCell<ThreadShards> = const { RefCell::new((Vec::new(), String::new())) };
}

/// Locks `m`, also after a thread panicked holding it (the data are counters).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Most series a request metric holds; requests beyond it are counted under
/// [`OVERFLOW_LABEL`]. The server only passes labels it knows, so this is a second bound
/// (a repository of thousands of models), not the first.
pub const MAX_SERIES: usize = 10_000;
/// The model label of requests counted past [`MAX_SERIES`].
pub const OVERFLOW_LABEL: &str = "_overflow";

impl Metrics {
    /// Records a finished request.
    pub fn observe(&self, model: &str, version: &str, endpoint: &str, status: u16, latency: Duration) {
        SHARDS.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (shards, key) = &mut *cell;
            let shard = match shards.iter().find(|(id, _)| *id == self.id) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = Arc::new(Mutex::new(Shard::default()));
                    lock(&self.shards).push(s.clone());
                    shards.push((self.id, s.clone()));
                    s
                }
            };
            let mut shard = lock(&shard);
            key.clear();
            let _ = write!(key, "{model}{SEP}{version}{SEP}{endpoint}{SEP}{status}");
            match shard.requests.get_mut(key.as_str()) {
                Some(n) => *n += 1,
                None => {
                    if self.created[0].fetch_add(1, Ordering::Relaxed) >= MAX_SERIES {
                        key.clear();
                        let _ = write!(key, "{OVERFLOW_LABEL}{SEP}{SEP}{endpoint}{SEP}{status}");
                    }
                    *shard.requests.entry(key.clone()).or_insert(0) += 1;
                }
            }
            key.clear();
            let _ = write!(key, "{model}{SEP}{endpoint}");
            let seconds = latency.as_secs_f64();
            match shard.latency.get(key.as_str()) {
                Some(h) => h.observe(seconds),
                None => {
                    if self.created[1].fetch_add(1, Ordering::Relaxed) >= MAX_SERIES {
                        key.clear();
                        let _ = write!(key, "{OVERFLOW_LABEL}{SEP}{endpoint}");
                    }
                    shard
                        .latency
                        .entry(key.clone())
                        .or_insert_with(|| Histogram::new(SECONDS))
                        .observe(seconds);
                }
            }
        });
    }

    /// Every shard's counts, merged and sorted by label.
    fn merged(&self) -> Merged {
        let (mut requests, mut latency) = (BTreeMap::new(), BTreeMap::new());
        for shard in lock(&self.shards).iter() {
            let shard = lock(shard);
            for (k, n) in &shard.requests {
                let mut parts = k.split(SEP);
                let mut next = || parts.next().unwrap_or_default().to_string();
                let (m, v, e, s) = (next(), next(), next(), next());
                *requests.entry((m, v, e, s.parse().unwrap_or(0))).or_insert(0) += n;
            }
            for (k, h) in &shard.latency {
                let (m, e) = k.split_once(SEP).unwrap_or((k, ""));
                latency
                    .entry((m.to_string(), e.to_string()))
                    .or_insert_with(|| Histogram::new(SECONDS))
                    .merge(h);
            }
        }
        (requests, latency)
    }

    /// Series held by the request counters (for tests and the soak benchmark).
    pub fn series(&self) -> usize {
        let (requests, latency) = self.merged();
        requests.len() + latency.len()
    }

    /// The Prometheus text of the request metrics and of `instances` (model, version, metrics).
    pub fn render(&self, instances: &[(String, u64, &InstanceMetrics)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP kiln_requests_total Requests answered, by model, version, endpoint and status.\n# TYPE kiln_requests_total counter\n");
        let (requests, latency) = self.merged();
        for ((m, v, e, s), n) in &requests {
            let _ = writeln!(
                out,
                "kiln_requests_total{{model=\"{}\",version=\"{}\",endpoint=\"{}\",status=\"{s}\"}} {n}",
                esc(m),
                esc(v),
                esc(e)
            );
        }
        out.push_str(
            "# HELP kiln_request_duration_seconds Request latency.\n# TYPE kiln_request_duration_seconds histogram\n",
        );
        for ((m, e), h) in &latency {
            h.render(
                &mut out,
                "kiln_request_duration_seconds",
                &format!("model=\"{}\",endpoint=\"{}\"", esc(m), esc(e)),
            );
        }
        let sections: [Section; 3] = [
            (
                "kiln_queue_duration_seconds",
                "Time requests waited in a model's queue.",
                "histogram",
                |i| &i.queue,
            ),
            (
                "kiln_compute_duration_seconds",
                "Time a batch took to run.",
                "histogram",
                |i| &i.compute,
            ),
            ("kiln_batch_size", "Samples per batch run.", "histogram", |i| &i.batch),
        ];
        for (name, help, kind, get) in sections {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (m, v, i) in instances {
                get(i).render(&mut out, name, &format!("model=\"{}\",version=\"{v}\"", esc(m)));
            }
        }
        let scalars: [Scalar; 5] = [
            (
                "kiln_queue_depth",
                "Requests waiting in a model's queue.",
                "gauge",
                |i| &i.depth,
            ),
            (
                "kiln_cancelled_total",
                "Requests dropped unrun because their client had gone.",
                "counter",
                |i| &i.cancelled,
            ),
            ("kiln_instances", "Model instances asked for.", "gauge", |i| {
                &i.instances
            }),
            (
                "kiln_instances_healthy",
                "Model instances loaded and serving.",
                "gauge",
                |i| &i.healthy,
            ),
            (
                "kiln_instance_restarts_total",
                "Model instances that died and were started again.",
                "counter",
                |i| &i.restarts,
            ),
        ];
        for (name, help, kind, get) in scalars {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (m, v, i) in instances {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",version=\"{v}\"}} {}",
                    esc(m),
                    get(i).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP kiln_models_loaded Model versions being served.\n# TYPE kiln_models_loaded gauge\nkiln_models_loaded {}", instances.len());
        let _ = writeln!(
            out,
            "# HELP kiln_model_load_failures_total Model versions that failed to load.\n# TYPE kiln_model_load_failures_total counter\nkiln_model_load_failures_total {}",
            self.failed_loads.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_render_in_prometheus_format() {
        let h = Histogram::new(BATCH);
        for v in [1.0, 3.0, 3.0, 300.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"1\"} 1\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"4\"} 3\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"256\"} 3\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_sum{m=\"a\"} 307\n"));
    }

    #[test]
    fn series_are_bounded_whatever_the_labels() {
        let m = Metrics::default();
        for i in 0..(MAX_SERIES + 500) {
            m.observe(&format!("m{i}"), "", "infer", 404, Duration::from_millis(1));
        }
        // Each map holds at most MAX_SERIES distinct keys plus the overflow one.
        assert!(m.series() <= 2 * (MAX_SERIES + 1), "{} series", m.series());
        let text = m.render(&[]);
        assert!(text.contains("model=\"_overflow\",version=\"\",endpoint=\"infer\",status=\"404\"} 500"));
    }
}
