//! A PyTorch module of several inputs and outputs of different dtypes
//! (tests/parity/torchscript_models.py `tensors`: an FP32 image and INT64 tag ids in;
//! FP32 logits, an FP32 embedding and the INT64 argmax out), packaged as a module of named
//! tensors and served: Triton's own clients get PyTorch's answers over HTTP JSON, binary
//! data and gRPC; requests of the same shapes share a batch; bad requests are 400s that
//! say what the model takes.

use crate::python::torchscript_models;
use crate::util::{metric, Server};
use kiln_model::TensorSpec;
use serde_json::{json, Value};
use std::path::Path;

fn spec(text: &str) -> TensorSpec {
    TensorSpec::parse(text).unwrap()
}

fn facts(name: &str, inputs: &[&str], outputs: &[&str]) -> kiln_train::TorchScriptFacts {
    kiln_train::TorchScriptFacts {
        name: name.into(),
        version: 1,
        inputs: inputs.iter().map(|t| spec(t)).collect(),
        outputs: outputs.iter().map(|t| spec(t)).collect(),
        ..Default::default()
    }
}

const INPUTS: [&str; 2] = ["image:FP32:1,28,28", "tags:INT64:-1"];

/// The modules made by PyTorch, and a repository holding `multi` (the scripted module
/// returning a dict) and `pair` (the traced one returning a tuple).
fn modules() -> (tempfile::TempDir, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let data = kiln_data::KnownDataset::FashionMnist.default_dir();
    torchscript_models(&["tensors", data.to_str().unwrap(), work.path().to_str().unwrap()]);
    let repo = tempfile::tempdir().unwrap();
    let multi = facts("multi", &INPUTS, &["logits:FP32:10", "embedding:FP32:8", "top:INT64:"]);
    let m =
        kiln_train::import_torchscript(&work.path().join("tensors.pt"), &multi, &repo.path().join("multi/1")).unwrap();
    assert_eq!(m.task, kiln_package::Task::Tensors);
    let pair = facts("pair", &INPUTS, &["top:INT64:", "logits:FP32:10"]);
    kiln_train::import_torchscript(
        &work.path().join("tensors_tuple.pt"),
        &pair,
        &repo.path().join("pair/1"),
    )
    .unwrap();
    (work, repo)
}

/// tests/server/tensors_check.py against the server: its JSON report.
fn triton_clients(http: &str, grpc: &str, model: &str, expected: &Path, outputs: &str) -> Value {
    let args = [http, grpc, model, expected.to_str().unwrap(), outputs];
    let out = crate::python::run("tests/server/tensors_check.py", &args, b"").unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&out).unwrap()
}

/// A v2 JSON request for one of the expected file's requests.
fn request(r: &Value) -> Value {
    let shape = |v: &Value| {
        let rows = v.as_array().unwrap();
        let inner = rows[0].as_array().map_or(0, Vec::len);
        (rows.len(), inner)
    };
    let (n, t) = shape(&r["tags"]);
    json!({"inputs": [
        {"name": "image", "datatype": "FP32", "shape": [n, 1, 28, 28], "data": r["image"]},
        {"name": "tags", "datatype": "INT64", "shape": [n, t], "data": r["tags"]},
    ]})
}

fn error(s: &Server, path: &str, body: &Value) -> String {
    let (status, body) = s.post(path, body);
    assert_eq!(status, 400, "{body}");
    body["error"].as_str().unwrap().to_string()
}

#[test]
fn a_pytorch_module_of_two_inputs_and_three_outputs_answers_as_pytorch_over_json_binary_and_grpc() {
    let (work, repo) = modules();
    let grpc = format!("127.0.0.1:{}", crate::util::free_port());
    let s = Server::start_on(repo, &["--grpc-bind", &grpc]);
    let http = s.url.trim_start_matches("http://").to_string();
    let expected = work.path().join("tensors.json");

    let r = triton_clients(&http, &grpc, "multi", &expected, "logits:FP32,embedding:FP32,top:INT64");
    for meta in [&r["http_metadata"], &r["grpc_metadata"]] {
        assert_eq!(meta["platform"], "pytorch_libtorch", "{meta}");
        let names: Vec<&str> = meta["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["image", "tags"], "{meta}");
        assert_eq!(meta["inputs"][1]["datatype"], "INT64", "{meta}");
        assert_eq!(meta["outputs"][2]["name"], "top", "{meta}");
        assert_eq!(meta["outputs"][2]["datatype"], "INT64", "{meta}");
    }
    let (_, meta) = s.get("/v2/models/multi");
    assert_eq!(meta["inputs"][1]["shape"], json!([-1, -1]));
    assert_eq!(meta["outputs"][2]["shape"], json!([-1]));
    for transport in ["http_json", "http_binary", "grpc"] {
        let t = &r[transport];
        assert!(t["max_diff"].as_f64().unwrap() <= 1e-5, "multi over {transport}: {t}");
        assert_eq!(t["integers_equal"], true, "multi over {transport}: {t}");
    }
    // The traced module returns a tuple (top, logits): outputs in its declared order.
    let r = triton_clients(&http, &grpc, "pair", &expected, "top:INT64,logits:FP32");
    for transport in ["http_json", "http_binary", "grpc"] {
        let t = &r[transport];
        assert!(t["max_diff"].as_f64().unwrap() <= 1e-5, "pair over {transport}: {t}");
        assert_eq!(t["integers_equal"], true, "pair over {transport}: {t}");
    }
    // The answers are not all alike (a module that answers a constant would match anything).
    let e: Value = serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
    let logits = &e["requests"][0]["logits"];
    assert_ne!(logits[0], logits[1]);

    // Unnamed outputs: all of them, in the module's order, with their dtypes and shapes.
    let (status, body) = s.post("/v2/models/multi/infer", &request(&e["requests"][2]));
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["logits", "embedding", "top"]);
    assert_eq!(body["outputs"][2]["datatype"], "INT64");
    assert_eq!(body["outputs"][2]["shape"], json!([1]));
    assert_eq!(body["outputs"][2]["data"], e["requests"][2]["top"]);

    // Bad requests say what the model takes.
    let good = request(&e["requests"][0]);
    let path = "/v2/models/multi/infer";
    let mut missing = good.clone();
    missing["inputs"].as_array_mut().unwrap().remove(1);
    let m = error(&s, path, &missing);
    assert!(
        m.contains("\"tags\" is missing") && m.contains("\"image\", \"tags\""),
        "{m}"
    );
    let mut wrong_dtype = good.clone();
    wrong_dtype["inputs"][1]["datatype"] = json!("FP32");
    let m = error(&s, path, &wrong_dtype);
    assert!(m.contains("INT64 [-1, -1]"), "{m}");
    let mut wrong_shape = good.clone();
    wrong_shape["inputs"][0]["shape"] = json!([3, 784]);
    let m = error(&s, path, &wrong_shape);
    assert!(m.contains("FP32 [-1, 1, 28, 28]"), "{m}");
    let mut rows = good.clone();
    rows["inputs"][1]["shape"] = json!([1, 12]);
    let m = error(&s, path, &rows);
    assert!(m.contains("same batch"), "{m}");
    let mut extra = good.clone();
    extra["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "mask", "datatype": "BOOL", "shape": [3], "data": [true, true, false]}));
    assert!(error(&s, path, &extra).contains("unknown input \"mask\""));
    let mut twice = good.clone();
    let first = twice["inputs"][0].clone();
    twice["inputs"].as_array_mut().unwrap().push(first);
    assert!(error(&s, path, &twice).contains("given twice"));
    let mut huge = good.clone();
    huge["inputs"][1]["data"][0][0] = json!(9223372036854775808u64);
    assert!(error(&s, path, &huge).contains("not a INT64 value"));
    let mut unknown_out = good.clone();
    unknown_out["outputs"] = json!([{"name": "probabilities"}]);
    let m = error(&s, path, &unknown_out);
    assert!(m.contains("\"logits\", \"embedding\", \"top\""), "{m}");
    let m = error(&s, "/predict?model=multi", &json!({"image": vec![0.0; 784]}));
    assert!(
        m.contains("named tensors") && m.contains("/v2/models/multi/infer"),
        "{m}"
    );
    let m = error(&s, "/v1/models/multi:predict", &json!({"instances": [vec![0.0; 784]]}));
    assert!(m.contains("named tensors"), "{m}");
}

#[test]
fn requests_of_the_same_shapes_share_a_batch_and_others_run_apart() {
    let (work, repo) = modules();
    // A batch closes at 5 rows (the two requests of tags of length 4: 3 + 2 rows) or
    // after 2 s: long enough for both to be queued however slow the machine.
    let s = Server::start_on(repo, &["--max-batch", "5", "--max-delay-ms", "2000"]);
    let e: Value = serde_json::from_slice(&std::fs::read(work.path().join("tensors.json")).unwrap()).unwrap();
    let requests = e["requests"].as_array().unwrap();
    let batches = |s: &Server| {
        let m = s.get_text("/metrics");
        (
            metric(&m, "kiln_batch_size_count", "model=\"multi\""),
            metric(&m, "kiln_batch_size_sum", "model=\"multi\""),
        )
    };
    // Sends requests at once: each of `which` (its answer checked against PyTorch's), and
    // `bad` if given (its answer returned).
    let together = |which: &[usize], bad: Option<Value>| {
        std::thread::scope(|scope| {
            let s = &s;
            let bad = bad.map(|b| scope.spawn(move || s.post("/v2/models/multi/infer", &b)));
            let handles: Vec<_> = which
                .iter()
                .map(|&i| {
                    let r = &requests[i];
                    scope.spawn(move || (i, s.post("/v2/models/multi/infer", &request(r))))
                })
                .collect();
            for h in handles {
                let (i, (status, body)) = h.join().unwrap();
                assert_eq!(status, 200, "{body}");
                let top = body["outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["name"] == "top")
                    .unwrap();
                assert_eq!(top["data"], requests[i]["top"], "request {i}");
                let logits = &body["outputs"][0]["data"];
                let want: Vec<f64> = requests[i]["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                    .collect();
                for (g, w) in logits.as_array().unwrap().iter().zip(&want) {
                    assert!((g.as_f64().unwrap() - w).abs() <= 1e-5, "request {i}: {g} against {w}");
                }
            }
            bad.map(|h| h.join().unwrap())
        })
    };
    let before = batches(&s);
    together(&[0, 1], None);
    let after = batches(&s);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1.0, 5.0),
        "one batch of 5 rows"
    );
    // Tags of length 2 cannot join tags of length 4: two batches, each answered right.
    together(&[0, 2], None);
    let last = batches(&s);
    assert_eq!(
        (last.0 - after.0, last.1 - after.1),
        (2.0, 4.0),
        "two batches of 3 and 1 rows"
    );
    // A tag id past the module's vocabulary of 50 fails the module's forward: that request
    // gets a 400, and the one batched with it is answered all the same.
    let mut bad = request(&requests[1]);
    bad["inputs"][1]["data"][0][0] = json!(50);
    let (status, body) = together(&[0], Some(bad)).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("forward failed"), "{body}");
    let end = batches(&s);
    assert_eq!((end.0 - last.0, end.1 - last.1), (1.0, 5.0), "the two shared a batch");
}
