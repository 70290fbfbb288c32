//! `DecodePool`: CPU-heavy request work (decoding images) off the HTTP workers, on a
//! bounded number of blocking threads, with a bounded number of requests waiting for one.
//! Health checks and other clients are answered by the HTTP workers meanwhile.

use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Requests that may wait for a decoding thread, per thread; beyond, 429.
const WAITING_PER_THREAD: usize = 16;

/// Runs closures on at most `threads` blocking threads at once.
#[derive(Debug)]
pub struct DecodePool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl DecodePool {
    /// A pool of `threads` (at least 1).
    pub fn new(threads: usize) -> DecodePool {
        let threads = threads.max(1);
        DecodePool {
            permits: Arc::new(Semaphore::new(threads)),
            waiting: AtomicUsize::new(0),
            max_waiting: threads * WAITING_PER_THREAD,
        }
    }

    /// Runs `f` on a blocking thread once one of the pool's slots is free; when too many
    /// requests already wait, [`Error::Overloaded`] at once.
    pub async fn run<T: Send + 'static>(&self, what: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Error::Overloaded(what.to_string()));
                }
                let p = self.permits.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                p.map_err(|_| Error::Unavailable("the server is shutting down".into()))?
            }
        };
        actix_web::web::block(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| Error::Internal(format!("{what} failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, RwLock};
    use std::time::Duration;

    #[actix_web::test]
    // The write guard is a gate the blocking threads wait on, held on purpose while the
    // test awaits; no task on this runtime takes it.
    #[allow(clippy::await_holding_lock)]
    async fn at_most_threads_run_at_once_and_waiting_is_bounded() {
        let pool = Arc::new(DecodePool::new(2));
        // Work blocks until the gate opens, so every request is in place first.
        let gate = Arc::new(RwLock::new(()));
        let closed = gate.write().unwrap();
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let refused = Arc::new(Mutex::new(0));
        let mut tasks = Vec::new();
        for _ in 0..(2 + 2 * WAITING_PER_THREAD + 5) {
            let (pool, gate, running, peak, refused) = (
                pool.clone(),
                gate.clone(),
                running.clone(),
                peak.clone(),
                refused.clone(),
            );
            tasks.push(actix_web::rt::spawn(async move {
                let r = pool
                    .run("test work", move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        drop(gate.read().unwrap());
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await;
                if let Err(Error::Overloaded(_)) = r {
                    *refused.lock().unwrap() += 1;
                }
                r
            }));
        }
        // All but the two running and the 32 waiting are refused at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while *refused.lock().unwrap() < 5 || pool.waiting.load(Ordering::SeqCst) < 2 * WAITING_PER_THREAD {
            assert!(std::time::Instant::now() < deadline, "the requests never queued up");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(running.load(Ordering::SeqCst), 2);
        drop(closed);
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 2 + 2 * WAITING_PER_THREAD);
        assert_eq!(*refused.lock().unwrap(), 5);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "never more than the pool's threads at once"
        );
    }
}
