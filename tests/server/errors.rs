//! Every bad request gets a 4xx with an error message, and the server keeps serving.

use crate::util::{test_images, v2_request, Server};
use serde_json::json;

fn assert_error(s: &Server, (status, body): (u16, serde_json::Value), want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    assert!(s.healthy(), "the server stopped answering after: {msg}");
}

#[test]
fn bad_requests_are_answered_and_the_server_keeps_serving() {
    let s = Server::start(&["--body-limit", "200000"]);
    let img = test_images(1).remove(0).0;
    let post_raw = |ct: &str, body: &[u8]| {
        let (st, _, v) = s.post_raw("/v2/models/fashion/infer", ct, body.to_vec());
        (st, v)
    };
    assert_error(
        &s,
        post_raw("application/json", b"{\"inputs\": ["),
        400,
        "malformed JSON",
    );
    assert_error(&s, post_raw("text/plain", b"{}"), 400, "Content-Type: application/json");
    assert_error(
        &s,
        s.post("/v2/models/nope/infer", &v2_request(std::slice::from_ref(&img))),
        404,
        "no model named \"nope\"",
    );
    assert_error(
        &s,
        s.post(
            "/v2/models/fashion/versions/9/infer",
            &v2_request(std::slice::from_ref(&img)),
        ),
        404,
        "no version 9",
    );
    assert_error(
        &s,
        s.get("/v2/models/fashion/versions/x"),
        400,
        "not a positive integer",
    );
    let bad_shape = json!({"inputs": [{"name": "input", "shape": [1, 3, 27, 28], "datatype": "FP32", "data": vec![0.0; 3 * 27 * 28]}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &bad_shape),
        400,
        "does not match the model's [-1, 1, 28, 28]",
    );
    let bad_count = json!({"inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": img}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &bad_count),
        400,
        "784 elements, its shape [2, 1, 28, 28] needs 1568",
    );
    let bad_type = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP16", "data": img}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &bad_type),
        400,
        "datatype \"FP16\" is not supported",
    );
    let mut huge = img.iter().map(|&v| json!(v)).collect::<Vec<_>>();
    huge[3] = json!(1e39);
    let not_finite = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": huge}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &not_finite),
        400,
        "not a finite FP32 value",
    );
    let mut strings = img.iter().map(|&v| json!(v)).collect::<Vec<_>>();
    strings[0] = json!("zero");
    let wrong_elem =
        json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": strings}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &wrong_elem),
        400,
        "\"zero\" is not a FP32 value",
    );
    let mut deep = json!(0.5);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let too_deep = json!({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": deep}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &too_deep),
        400,
        "nested deeper than 32",
    );
    let deep_predict = json!({"image": deep});
    assert_error(&s, s.post("/predict", &deep_predict), 400, "nested deeper than 32");
    assert_error(
        &s,
        s.post("/predict", &json!({"image": vec![0.5; 10]})),
        400,
        "10 values given; the model takes 784",
    );
    assert_error(
        &s,
        s.post("/predict", &json!({"image": img.clone(), "model": "other"})),
        404,
        "no model named",
    );
    let big = json!({"inputs": [{"name": "input", "shape": [64, 1, 28, 28], "datatype": "FP32", "data": vec![0.123456; 64 * 784]}]});
    assert_error(
        &s,
        s.post("/v2/models/fashion/infer", &big),
        413,
        "larger than the limit of 200000 bytes",
    );
}

#[test]
fn overload_is_answered_429_at_once_and_the_server_recovers() {
    // One queue slot and a long batching delay: most of 48 simultaneous clients must be
    // turned away with 429 and Retry-After, none may hang.
    let s = Server::start(&["--queue-capacity", "1", "--max-batch", "1", "--max-delay-ms", "0"]);
    let img = test_images(1).remove(0).0;
    let body = serde_json::to_vec(&v2_request(&[img])).unwrap();
    let results: Vec<(u16, Option<String>, std::time::Duration)> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..48)
            .map(|_| {
                let (s, body) = (&s, body.clone());
                scope.spawn(move || {
                    let t = std::time::Instant::now();
                    let (st, retry, _) = s.post_raw("/v2/models/fashion/infer", "application/json", body);
                    (st, retry, t.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rejected: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(
        results.iter().all(|r| r.0 == 200 || r.0 == 429),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(!rejected.is_empty(), "no request was shed");
    assert!(
        rejected.iter().all(|r| r.1.as_deref() == Some("1")),
        "429 without Retry-After"
    );
    assert!(s.healthy());
    let (status, _) = s.post("/v2/models/fashion/infer", &v2_request(&[test_images(1).remove(0).0]));
    assert_eq!(status, 200);
}
