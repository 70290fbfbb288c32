//! Data-loader throughput on the real Fashion-MNIST training set, in samples per second,
//! for the settings the trainer uses. Run: `cargo bench -p kiln-data --bench loader`.
//!
//! The trainer must not be slowed by its loader: kiln trains the classic MLP at about
//! 100k samples/s on 2 cores, so the loader should deliver several times that. In-memory
//! data without augmentation is prepared once and batched with one `index_select`;
//! augmented batches are built per sample (on a prefetch thread when `prefetch` > 0).

use kiln_data::{Augment, DataLoader, Dataset, KnownDataset, LoaderConfig, Normalize, Split};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let train: Arc<dyn Dataset> = Arc::new(KnownDataset::FashionMnist.load(None, Split::Train)?);
    let norm = Normalize::fit(&*train, 1, 20_000)?;
    let aug = Augment { hflip: true, shift: 2 };
    let cases = [
        ("batch 64, prepared once", 64, 4, Augment::default()),
        ("batch 128, prepared once", 128, 4, Augment::default()),
        ("batch 128, hflip+shift 2, inline", 128, 0, aug.clone()),
        ("batch 128, hflip+shift 2, prefetch 4", 128, 4, aug),
    ];
    println!("{:<40} {:>14} {:>10}", "loader", "samples/s", "epoch s");
    for (name, batch_size, prefetch, augment) in cases {
        let loader = DataLoader::new(
            train.clone(),
            LoaderConfig {
                batch_size,
                prefetch,
                augment,
                normalize: Some(norm.clone()),
                seed: 1,
                ..Default::default()
            },
        );
        // One warm-up epoch, then the best of three.
        let mut best = f64::MAX;
        for epoch in 0..4u64 {
            let start = Instant::now();
            let mut n = 0;
            for batch in loader.epoch(epoch) {
                n += batch?.len();
            }
            assert_eq!(n, train.len());
            if epoch > 0 {
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        println!("{name:<40} {:>14.0} {best:>10.3}", train.len() as f64 / best);
    }
    Ok(())
}
