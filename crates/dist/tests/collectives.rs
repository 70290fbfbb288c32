//! The collectives between real ranks: threads of this process, each with its own
//! TCPStore client and Gloo group over loopback (rank 0 hosts the store). These would
//! fail on a header or ABI break between the shim and libtorch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_dist::{Error, GradBuckets, ProcessGroup, ReduceOp, Rendezvous};
use kiln_tensor::{Kind, Tensor};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rendezvous(rank: usize, world: usize, port: u16, timeout: Duration) -> Rendezvous {
    Rendezvous {
        addr: "127.0.0.1".into(),
        port,
        rank,
        world,
        local_rank: rank,
        timeout,
        bind: Some("127.0.0.1".into()),
    }
}

/// Runs `f` as every rank of a `world`-rank group, each on its own thread.
fn ranks<T: Send + 'static>(world: usize, f: fn(ProcessGroup) -> T) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|r| {
            std::thread::spawn(move || {
                let pg = ProcessGroup::join(&rendezvous(r, world, port, Duration::from_secs(30))).unwrap();
                f(pg)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn allreduce_broadcast_allgather_and_barrier_across_three_ranks() {
    let out = ranks(3, |mut pg| {
        let r = pg.rank() as f32;
        let mut sum = Tensor::from_slice(&[r, 10.0 * r]);
        pg.allreduce(&mut sum, ReduceOp::Sum).unwrap();
        let mut avg = Tensor::from_slice(&[r, 1.0]);
        pg.allreduce(&mut avg, ReduceOp::Avg).unwrap();
        let mut max = Tensor::from_slice(&[r as i64, -(r as i64)]);
        pg.allreduce(&mut max, ReduceOp::Max).unwrap();
        let mut b = Tensor::from_slice(&[r + 5.0; 4]);
        pg.broadcast(&mut b, 1).unwrap();
        let gathered = pg.allgather(&Tensor::from_slice(&[r, r * r])).unwrap();
        pg.barrier().unwrap();
        let sums = pg.sum_f64(&[1.5, r as f64]).unwrap();
        (
            Vec::<f32>::try_from(&sum).unwrap(),
            Vec::<f32>::try_from(&avg).unwrap(),
            Vec::<i64>::try_from(&max).unwrap(),
            Vec::<f32>::try_from(&b).unwrap(),
            gathered
                .iter()
                .map(|t| Vec::<f32>::try_from(t).unwrap())
                .collect::<Vec<_>>(),
            sums,
        )
    });
    for (sum, avg, max, b, gathered, sums) in out {
        assert_eq!(sum, vec![3.0, 30.0]);
        assert_eq!(avg, vec![1.0, 1.0]);
        assert_eq!(max, vec![2, 0]);
        assert_eq!(b, vec![6.0; 4]);
        assert_eq!(gathered, vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 4.0]]);
        assert_eq!(sums, vec![4.5, 3.0]);
    }
}

#[test]
fn buckets_average_gradients_and_sum_the_extras() {
    let out = ranks(2, |mut pg| {
        let r = pg.rank() as f64;
        // Three parameters; a 12-byte cap puts them in separate buckets, the last parameter first.
        let params: Vec<Tensor> = [[2i64, 2], [3, 1], [1, 1]]
            .iter()
            .map(|s| Tensor::zeros(s.as_slice(), (Kind::Float, kiln_tensor::Device::Cpu)).set_requires_grad(true))
            .collect();
        let loss = params
            .iter()
            .enumerate()
            .map(|(i, p)| p.sum(Kind::Float) * (r + 1.0) * (i as f64 + 1.0))
            .fold(Tensor::from(0f32), |a, b| a + b);
        loss.backward();
        let mut buckets = GradBuckets::new(&params, 12, 2).unwrap();
        assert_eq!(buckets.sizes(), vec![1, 3, 4 + 2]);
        let mut extras = [r + 0.5, 1.0];
        buckets.average(&mut pg, &mut extras).unwrap();
        let grads = |params: &[Tensor]| -> Vec<Vec<f32>> {
            params
                .iter()
                .map(|p| Vec::<f32>::try_from(&p.grad().view([-1])).unwrap())
                .collect()
        };
        let first = grads(&params);
        // The next step: gradients zeroed in place (they are views into the buckets), a
        // backward pass that accumulates into them, then the average.
        for p in &params {
            let _ = kiln_tensor::tch::no_grad(|| p.grad().zero_());
        }
        let loss = params
            .iter()
            .enumerate()
            .map(|(i, p)| p.sum(Kind::Float) * (r + 1.0) * (i as f64 + 1.0) * 2.0)
            .fold(Tensor::from(0f32), |a, b| a + b);
        loss.backward();
        let mut extras2 = [0.0, 0.0];
        buckets.average(&mut pg, &mut extras2).unwrap();
        (first, grads(&params), extras, extras2)
    });
    for (first, second, extras, extras2) in out {
        // The mean over ranks of (r + 1) * (i + 1): 1.5 * (i + 1); then twice that.
        assert_eq!(first, vec![vec![1.5; 4], vec![3.0; 3], vec![4.5]]);
        assert_eq!(second, vec![vec![3.0; 4], vec![6.0; 3], vec![9.0]]);
        assert_eq!(extras, [2.0, 2.0]);
        assert_eq!(extras2, [0.0, 0.0]);
    }
}

#[test]
fn a_peer_that_leaves_is_named_in_the_error_not_waited_for() {
    let port = free_port();
    let leaver = std::thread::spawn(move || {
        let mut pg = ProcessGroup::join(&rendezvous(1, 2, port, Duration::from_secs(60))).unwrap();
        pg.barrier().unwrap();
        drop(pg); // its connections close, as a killed process's would
    });
    let mut pg = ProcessGroup::join(&rendezvous(0, 2, port, Duration::from_secs(60))).unwrap();
    pg.barrier().unwrap();
    leaver.join().unwrap();
    let started = Instant::now();
    let mut t = Tensor::from_slice(&[1f32; 8]);
    let err = pg.allreduce(&mut t, ReduceOp::Sum).unwrap_err();
    match &err {
        Error::PeerLost { lost, rank, .. } => assert_eq!((lost.as_slice(), *rank), ([1].as_slice(), 0), "{err}"),
        other => panic!("expected PeerLost, got {other}"),
    }
    assert!(err.to_string().contains("lost rank 1"), "{err}");
    // Found from the closed connection, well before the 60 s timeout.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn a_rank_that_never_arrives_fails_the_rendezvous_after_the_timeout() {
    let port = free_port();
    let err = ProcessGroup::join(&rendezvous(0, 2, port, Duration::from_secs(2))).unwrap_err();
    assert!(matches!(err, Error::Rendezvous { .. }), "{err}");
    assert!(err.to_string().contains("rank 0 of 2"), "{err}");
}
