//! Model instances on their own threads: several per version, restarted after a panic
//! with the version reported unhealthy meanwhile, a failed first load refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_serve::worker::{Backend, Job, Loader, Worker};
use kiln_serve::{Error, ServeConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Doubles each sample's first value; panics on a sample starting with -1.
struct Doubler;

impl Backend for Doubler {
    fn run(&self, samples: &Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, kiln_serve::worker::RunError> {
        if samples.iter().any(|s| s[0] == -1.0) {
            panic!("injected failure");
        }
        Ok(samples.iter().map(|s| vec![s[0] * 2.0]).collect())
    }
}

fn config() -> Arc<ServeConfig> {
    Arc::new(ServeConfig {
        max_delay: Duration::ZERO,
        ..Default::default()
    })
}

fn ask(w: &Worker, value: f32) -> Result<Vec<Vec<f32>>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    w.submit(
        Job {
            queued: Instant::now(),
            samples: vec![vec![value]],
            reply: tx,
        },
        "m",
    )
    .unwrap();
    rx.blocking_recv()
        .map_err(|_| "dropped".to_string())?
        .map_err(|e| e.message)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_panicking_instance_is_reported_and_restarted() {
    let loads = Arc::new(AtomicUsize::new(0));
    // The restart's load waits for the gate, so the unhealthy state can be observed.
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let (l, g) = (loads.clone(), gate.clone());
    let loader: Loader = Arc::new(move || {
        if l.fetch_add(1, Ordering::SeqCst) > 0 {
            drop(g.lock().unwrap());
        }
        Ok(Box::new(Doubler) as Box<dyn Backend>)
    });
    let w = Worker::spawn(loader, 1, config(), "m-1".into()).unwrap();
    assert!(w.healthy());
    assert_eq!(ask(&w, 3.0).unwrap(), vec![vec![6.0]]);
    assert_eq!(
        ask(&w, -1.0).unwrap_err(),
        "dropped",
        "the panicking batch gets no answer"
    );
    wait_for("the version to report no healthy instance", || !w.healthy());
    assert_eq!(w.metrics.restarts.load(Ordering::SeqCst), 1);
    drop(held);
    wait_for("the instance to come back", || w.healthy());
    assert_eq!(loads.load(Ordering::SeqCst), 2, "the model was loaded again");
    assert_eq!(ask(&w, 4.0).unwrap(), vec![vec![8.0]]);
    assert_eq!(w.instances(), 1);
}

#[test]
fn instances_run_on_their_own_threads_and_can_be_resized() {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let t = threads.clone();
    let loader: Loader = Arc::new(move || {
        t.lock()
            .unwrap()
            .push(std::thread::current().name().unwrap_or("").to_string());
        Ok(Box::new(Doubler) as Box<dyn Backend>)
    });
    let w = Worker::spawn(loader, 3, config(), "m-1".into()).unwrap();
    let mut names = threads.lock().unwrap().clone();
    names.sort();
    assert_eq!(names, ["kiln-model-m-1-0", "kiln-model-m-1-1", "kiln-model-m-1-2"]);
    assert_eq!(w.metrics.healthy.load(Ordering::SeqCst), 3);
    std::thread::scope(|s| {
        for i in 0..16 {
            let w = &w;
            s.spawn(move || assert_eq!(ask(w, i as f32).unwrap(), vec![vec![2.0 * i as f32]]));
        }
    });
    w.set_instances(1).unwrap();
    assert_eq!(w.instances(), 1);
    assert_eq!(w.metrics.instances.load(Ordering::SeqCst), 1);
    wait_for("stopped instances to end", || {
        w.metrics.healthy.load(Ordering::SeqCst) == 1
    });
    assert_eq!(ask(&w, 5.0).unwrap(), vec![vec![10.0]]);
    w.set_instances(2).unwrap();
    assert_eq!(w.metrics.healthy.load(Ordering::SeqCst), 2);
}

#[test]
fn a_failed_first_load_is_an_error_with_its_reason() {
    let loader: Loader = Arc::new(|| Err(Error::BadRequest("weights.safetensors is damaged".into())));
    let e = Worker::spawn(loader, 2, config(), "m-1".into()).err().unwrap();
    assert!(e.to_string().contains("weights.safetensors is damaged"), "{e}");
}

/// Records the size of every batch it runs.
struct Recorder(Arc<Mutex<Vec<usize>>>);

impl Backend for Recorder {
    fn run(&self, samples: &Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, kiln_serve::worker::RunError> {
        self.0.lock().unwrap().push(samples.len());
        Ok(samples.to_vec())
    }
}

#[test]
fn merged_batches_never_exceed_max_batch_and_larger_requests_are_refused() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = sizes.clone();
    let loader: Loader = Arc::new(move || Ok(Box::new(Recorder(s.clone())) as Box<dyn Backend>));
    let cfg = Arc::new(ServeConfig {
        max_batch: 4,
        // Long enough for every request below to be queued before a batch closes.
        max_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let w = Worker::spawn(loader, 1, cfg, "m-1".into()).unwrap();
    let submit = |n: usize, v: f32| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            queued: Instant::now(),
            samples: vec![vec![v]; n],
            reply: tx,
        };
        w.submit(job, "m").map(|()| rx)
    };
    // Requests of 3, 3, 1, 2, 1 samples: merged greedily they would make 3+3 = 6 > 4.
    let waits: Vec<_> = [3, 3, 1, 2, 1]
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i as f32, submit(n, i as f32).unwrap()))
        .collect();
    for (n, v, rx) in waits {
        let rows = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(rows, vec![vec![v]; n], "each request gets its own rows back");
    }
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 4), "a batch went over max_batch: {sizes:?}");
    assert!(sizes.contains(&4), "requests were still merged: {sizes:?}");
    // One request over the limit is refused, naming it.
    let err = submit(5, 0.0).err().unwrap();
    assert!(err.to_string().contains("at most 4 per batch"), "{err}");
    assert_eq!(w.metrics.depth.load(Ordering::SeqCst), 0);
}
