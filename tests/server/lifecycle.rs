//! Deadlines, clients that go away, and shutdown under load.

use crate::util::{test_images, v2_request, wait_for, Server};
use std::io::Write;
use std::time::{Duration, Instant};

/// The server's one queued request was dropped without running, and it still serves.
fn assert_dropped_unrun(s: &Server, what: &str) {
    wait_for(&format!("{what} to be dropped"), || {
        s.metric("kiln_cancelled_total", "model=\"fashion\"") == 1.0
    });
    assert_eq!(
        s.metric("kiln_batch_size_count", "model=\"fashion\""),
        0.0,
        "{what} ran anyway"
    );
    assert!(s.healthy());
}

#[test]
fn a_request_past_its_deadline_gets_504_and_is_dropped_unrun() {
    // Batches wait 3 s for company; requests may wait 1 s.
    let s = Server::start(&["--max-delay-ms", "3000", "--request-timeout-s", "1"]);
    let img = test_images(1).remove(0).0;
    let started = Instant::now();
    let (status, body) = s.post("/v2/models/fashion/infer", &v2_request(&[img]));
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not answered within 1000 ms"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered only after the batch ran"
    );
    assert_dropped_unrun(&s, "the expired request");
}

#[test]
fn a_client_that_hangs_up_has_its_request_dropped_unrun() {
    let s = Server::start(&["--max-delay-ms", "1500"]);
    let img = test_images(1).remove(0).0;
    let body = serde_json::to_vec(&v2_request(&[img])).unwrap();
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body).unwrap();
    wait_for("the request to be queued", || {
        s.metric("kiln_queue_depth", "model=\"fashion\"") == 1.0
    });
    drop(conn);
    assert_dropped_unrun(&s, "the abandoned request");
}

#[test]
fn sigterm_under_load_finishes_in_flight_requests_then_exits_0() {
    // A 2 s batching delay keeps requests in flight when the signal arrives.
    let mut s = Server::start(&["--max-delay-ms", "2000", "--max-batch", "256"]);
    let images: Vec<Vec<f32>> = test_images(8).into_iter().map(|(v, _)| v).collect();
    let statuses = std::thread::scope(|scope| {
        let clients: Vec<_> = images
            .iter()
            .map(|img| {
                let s = &s;
                scope.spawn(move || {
                    s.post("/v2/models/fashion/infer", &v2_request(std::slice::from_ref(img)))
                        .0
                })
            })
            .collect();
        wait_for("all requests to be queued", || {
            s.metric("kiln_queue_depth", "model=\"fashion\"") == 8.0
        });
        s.sigterm();
        clients.into_iter().map(|c| c.join().unwrap()).collect::<Vec<u16>>()
    });
    assert_eq!(statuses, vec![200; 8], "in-flight requests must finish");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = s.try_wait() {
            assert!(status.success(), "kiln-serve exited with {status} after SIGTERM");
            break;
        }
        assert!(Instant::now() < deadline, "kiln-serve still running 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And it no longer accepts connections.
    assert!(std::net::TcpStream::connect(s.url.trim_start_matches("http://")).is_err());
}
