//! The management API (bearer token, list, unload, load, instances) and the optional
//! inference token.

use crate::util::{test_images, v2_request, Server};
use serde_json::json;

const ADMIN: (&str, &str) = ("authorization", "Bearer adm1n-t0ken");
const INFER: (&str, &str) = ("authorization", "Bearer inf3rence");

#[test]
fn management_api_needs_its_token_and_manages_models() {
    let s = Server::start(&[
        "--admin-token",
        "adm1n-t0ken",
        "--inference-token",
        "inf3rence",
        "--poll-interval",
        "200ms",
    ]);
    let img = test_images(1).remove(0).0;
    let req = v2_request(std::slice::from_ref(&img));

    // 401 without a token (with the challenge header), 403 with a wrong one.
    let (status, body, headers) = s.request("POST", "/v2/repository/index", &[], None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    assert!(
        body["error"].as_str().unwrap().contains("Authorization: Bearer"),
        "{body}"
    );
    let (status, _, _) = s.request("POST", "/v2/repository/index", &[("authorization", "Basic eDp5")], None);
    assert_eq!(status, 401);
    let (status, body, _) = s.request(
        "POST",
        "/v2/repository/index",
        &[("authorization", "Bearer nope")],
        None,
    );
    assert_eq!(status, 403, "{body}");
    // The inference token is not the admin token.
    let (status, _, _) = s.request("POST", "/v2/repository/index", &[INFER], None);
    assert_eq!(status, 403);

    let (status, index, _) = s.request("POST", "/v2/repository/index", &[ADMIN], None);
    assert_eq!(status, 200);
    assert_eq!(
        index,
        json!([{"name": "fashion", "version": "2", "state": "READY", "reason": "", "instances": 1}])
    );

    // Inference needs the inference token; health and metrics stay open.
    assert_eq!(s.request("POST", "/v2/models/fashion/infer", &[], Some(&req)).0, 401);
    assert_eq!(
        s.request("POST", "/v2/models/fashion/infer", &[ADMIN], Some(&req)).0,
        403
    );
    assert_eq!(
        s.request("POST", "/v2/models/fashion/infer", &[INFER], Some(&req)).0,
        200
    );
    assert_eq!(s.request("GET", "/v2/models/fashion", &[], None).0, 401);
    assert_eq!(s.request("POST", "/predict", &[], Some(&json!({"image": img}))).0, 401);
    assert_eq!(
        s.request("POST", "/predict", &[INFER], Some(&json!({"image": img}))).0,
        200
    );
    assert_eq!(s.get("/v2/health/ready").0, 200);
    assert_eq!(s.get("/metrics").0, 200);

    // Instances.
    let (status, body, _) = s.request(
        "PUT",
        "/v2/repository/models/fashion/instances",
        &[ADMIN],
        Some(&json!({"count": 3})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["instances"], 3);
    assert_eq!(
        s.metric("kiln_instances_healthy", "model=\"fashion\",version=\"2\""),
        3.0
    );
    let (status, body, _) = s.request(
        "PUT",
        "/v2/repository/models/fashion/instances",
        &[ADMIN],
        Some(&json!({"count": 0})),
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("between 1 and 64"), "{body}");
    assert_eq!(
        s.request("POST", "/v2/models/fashion/infer", &[INFER], Some(&req)).0,
        200
    );

    // Unload: 503 with the reason, and polling does not bring it back.
    let (status, body, _) = s.request("POST", "/v2/repository/models/fashion/unload", &[ADMIN], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unloaded_versions"], json!([2]));
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (status, body, _) = s.request("POST", "/v2/models/fashion/infer", &[INFER], Some(&req));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unloaded"), "{body}");
    let (_, index, _) = s.request("POST", "/v2/repository/index", &[ADMIN], None);
    assert_eq!(index[0]["state"], "UNLOADED");

    // Load brings it back with the instances set before.
    let (status, body, _) = s.request("POST", "/v2/repository/models/fashion/load", &[ADMIN], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["versions"], json!([2]));
    assert_eq!(
        s.request("POST", "/v2/models/fashion/infer", &[INFER], Some(&req)).0,
        200
    );
    let (_, index, _) = s.request("POST", "/v2/repository/index", &[ADMIN], None);
    assert_eq!(index[0]["instances"], 3, "{index}");

    let (status, body, _) = s.request("POST", "/v2/repository/models/nope/load", &[ADMIN], None);
    assert_eq!(status, 404, "{body}");
    assert!(s.healthy());
}

#[test]
fn management_api_is_off_without_a_token() {
    let s = Server::start(&[]);
    let (status, body, _) = s.request("POST", "/v2/repository/index", &[("authorization", "Bearer x")], None);
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("management API is off"),
        "{body}"
    );
}
