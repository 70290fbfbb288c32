//! A closed-loop load generator for kiln-serve's KServe v2 gRPC endpoint (benches/
//! v2_transports.sh): CONCURRENCY calls in flight on one HTTP/2 connection each, each a
//! `ModelInfer` of BATCH images as `raw_input_contents`, for SECONDS; prints one
//! Markdown row: requests/s, p50 and p99 in ms, failed calls.
//!
//! Usage: grpc_load ADDRESS MODEL BATCH CONCURRENCY SECONDS IMAGE_F32_FILE LABEL

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use kiln_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_serve::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use kiln_serve::grpc::proto::ModelInferRequest;
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (addr, model, label) = (a[1].clone(), a[2].clone(), a[7].clone());
    let batch: i64 = a[3].parse().unwrap();
    let concurrency: usize = a[4].parse().unwrap();
    let seconds: f64 = a[5].parse().unwrap();
    let image = std::fs::read(&a[6]).unwrap();
    let raw: Vec<u8> = (0..batch).flat_map(|_| image.iter().copied()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (latencies, failed) = runtime.block_on(async move {
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let mut client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let request = ModelInferRequest {
                model_name: model.clone(),
                inputs: vec![InferInputTensor {
                    name: "input".into(),
                    datatype: "FP32".into(),
                    shape: vec![batch, 1, 28, 28],
                    ..Default::default()
                }],
                outputs: vec![InferRequestedOutputTensor {
                    name: "probabilities".into(),
                    ..Default::default()
                }],
                raw_input_contents: vec![raw.clone()],
                ..Default::default()
            };
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut failed) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    let t = Instant::now();
                    match client.model_infer(request.clone()).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => failed += 1,
                    }
                }
                (lat, failed)
            }));
        }
        let (mut all, mut failed) = (Vec::new(), 0);
        for t in tasks {
            let (l, f) = t.await.unwrap();
            all.extend(l);
            failed += f;
        }
        (all, failed)
    });
    let mut l = latencies;
    l.sort();
    let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))].as_secs_f64() * 1e3;
    println!(
        "| {label} | {:.0} | {:.2} | {:.2} | {failed} |",
        l.len() as f64 / seconds,
        q(0.5),
        q(0.99)
    );
}
