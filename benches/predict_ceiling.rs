//! The ceiling kiln-serve's `POST /predict` is measured against (benches/serve.sh,
//! server `ceiling`): the least a Rust server can do for the same request. actix-web with
//! the same workers, serde_json straight into a `Vec<f32>`, one model thread running
//! whatever is queued as one batch with tch, softmax, and `{"class", "probabilities"}`
//! back. No model repository, versions, limits, metrics, labels, top-k or error handling.
//!
//! Usage: predict_ceiling PACKAGE_DIR ADDRESS [HTTP_WORKERS]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use actix_web::{web, App, HttpResponse, HttpServer};
use kiln_tensor::{Device, Kind, Tensor};
use serde::Deserialize;
use tokio::sync::oneshot;

#[derive(Deserialize)]
struct Request {
    image: Vec<f32>,
}

type Job = (Vec<f32>, oneshot::Sender<Vec<f32>>);

fn model_thread(package: std::path::PathBuf, jobs: crossbeam_channel::Receiver<Job>) {
    kiln_tensor::tch::set_num_threads(1);
    let package = kiln_package::Package::load(&package, Device::Cpu).unwrap();
    let norm = package.manifest.input.normalize.clone();
    let n = package.manifest.sample_len();
    // Batches and samples run, printed every 100,000 samples (benches compare batching).
    let (mut batches, mut samples) = (0u64, 0u64);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(j) = jobs.try_recv() {
            batch.push(j);
        }
        batches += 1;
        samples += batch.len() as u64;
        if samples % 100_000 < batch.len() as u64 {
            eprintln!(
                "ceiling: {batches} batches, {samples} samples, {:.2} a batch",
                samples as f64 / batches as f64
            );
        }
        let mut flat = Vec::with_capacity(batch.len() * n);
        for (x, _) in &batch {
            flat.extend_from_slice(x);
        }
        if let Some(norm) = &norm {
            flat.chunks_mut(n).for_each(|s| norm.apply(s));
        }
        let x = Tensor::from_slice(&flat).reshape([batch.len() as i64, 1, 28, 28]);
        let p = package.network.infer(&x).unwrap().softmax(-1, Kind::Float);
        let classes = p.size()[1] as usize;
        let p = Vec::<f32>::try_from(p.flatten(0, -1)).unwrap();
        for ((_, reply), row) in batch.into_iter().zip(p.chunks(classes)) {
            let _ = reply.send(row.to_vec());
        }
    }
}

async fn predict(jobs: web::Data<crossbeam_channel::Sender<Job>>, body: web::Json<Request>) -> HttpResponse {
    let (tx, rx) = oneshot::channel();
    jobs.send((body.into_inner().image, tx)).unwrap();
    let p = rx.await.unwrap();
    let class = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
    HttpResponse::Ok().json(serde_json::json!({"class": class, "probabilities": p}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (package, addr) = (std::path::PathBuf::from(&args[1]), args[2].clone());
    let workers: usize = args.get(3).map_or(2, |w| w.parse().unwrap());
    let (tx, rx) = crossbeam_channel::bounded::<Job>(256);
    std::thread::spawn(move || model_thread(package, rx));
    let tx = web::Data::new(tx);
    HttpServer::new(move || {
        App::new()
            .app_data(tx.clone())
            .route("/predict", web::post().to(predict))
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
