//! Loader behaviour: seeded order, the last partial batch, prefetching, splits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_data::{split, Augment, DataLoader, Dataset, LoaderConfig, Normalize, Result, Subset};
use kiln_tensor::convert;
use std::sync::Arc;

/// A dataset whose sample `i` is `[i, i+0.5]` and whose label is `i % 3`.
struct Counting(usize);

impl Dataset for Counting {
    fn len(&self) -> usize {
        self.0
    }
    fn sample_shape(&self) -> &[usize] {
        &[2]
    }
    fn classes(&self) -> &[String] {
        &[]
    }
    fn label(&self, index: usize) -> Result<i64> {
        Ok((index % 3) as i64)
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        out[0] = index as f32;
        out[1] = index as f32 + 0.5;
        Ok(())
    }
}

fn order(loader: &DataLoader, epoch: u64) -> Vec<usize> {
    loader.epoch(epoch).flat_map(|b| b.unwrap().indices).collect()
}

fn loader(n: usize, cfg: LoaderConfig) -> DataLoader {
    DataLoader::new(Arc::new(Counting(n)), cfg)
}

#[test]
fn shuffling_is_deterministic_for_a_seed_and_differs_across_seeds_and_epochs() {
    let a = loader(
        100,
        LoaderConfig {
            batch_size: 8,
            seed: 1,
            ..Default::default()
        },
    );
    let b = loader(
        100,
        LoaderConfig {
            batch_size: 8,
            seed: 1,
            prefetch: 0,
            ..Default::default()
        },
    );
    let c = loader(
        100,
        LoaderConfig {
            batch_size: 8,
            seed: 2,
            ..Default::default()
        },
    );
    assert_eq!(
        order(&a, 0),
        order(&b, 0),
        "same seed, same order, with or without prefetch"
    );
    assert_ne!(order(&a, 0), order(&c, 0), "another seed, another order");
    assert_ne!(order(&a, 0), order(&a, 1), "each epoch is reshuffled");
    let mut all = order(&a, 0);
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>(), "every sample exactly once");
    let unshuffled = loader(
        10,
        LoaderConfig {
            shuffle: false,
            batch_size: 4,
            ..Default::default()
        },
    );
    assert_eq!(order(&unshuffled, 0), (0..10).collect::<Vec<_>>());
}

#[test]
fn the_last_partial_batch_is_kept_unless_told_not_to() {
    let keep = loader(
        10,
        LoaderConfig {
            batch_size: 4,
            ..Default::default()
        },
    );
    let sizes: Vec<usize> = keep.epoch(0).map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(keep.batches_per_epoch(), 3);
    let drop = loader(
        10,
        LoaderConfig {
            batch_size: 4,
            drop_last: true,
            ..Default::default()
        },
    );
    let sizes: Vec<usize> = drop.epoch(0).map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, [4, 4]);
    assert_eq!(drop.batches_per_epoch(), 2);
}

#[test]
fn batches_hold_the_samples_and_labels_of_their_indices() {
    let l = loader(
        10,
        LoaderConfig {
            batch_size: 3,
            seed: 9,
            ..Default::default()
        },
    );
    for batch in l.epoch(0) {
        let batch = batch.unwrap();
        let n = batch.len() as i64;
        assert_eq!(batch.inputs.size(), vec![n, 2]);
        let x = convert::tensor_to_f32(&batch.inputs).unwrap();
        let y = convert::tensor_to_i64(&batch.labels).unwrap();
        for (k, &i) in batch.indices.iter().enumerate() {
            assert_eq!(x[2 * k], i as f32);
            assert_eq!(y[k], (i % 3) as i64);
        }
    }
}

#[test]
fn epoch_from_continues_where_an_epoch_stopped() {
    let l = loader(
        50,
        LoaderConfig {
            batch_size: 8,
            seed: 4,
            ..Default::default()
        },
    );
    let full = order(&l, 3);
    let rest: Vec<usize> = l.epoch_from(3, 2).flat_map(|b| b.unwrap().indices).collect();
    assert_eq!(rest, full[16..]);
}

#[test]
fn normalisation_is_applied_and_checked() {
    let norm = Normalize {
        mean: vec![1.0, 0.5],
        std: vec![2.0, 1.0],
    };
    let l = loader(
        2,
        LoaderConfig {
            batch_size: 2,
            shuffle: false,
            normalize: Some(norm),
            ..Default::default()
        },
    );
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(convert::tensor_to_f32(&b.inputs).unwrap(), vec![-0.5, 0.0, 0.0, 1.0]);
    let bad = Normalize {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    let l = loader(
        2,
        LoaderConfig {
            normalize: Some(bad),
            ..Default::default()
        },
    );
    let err = l.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(err.contains("dividing the sample size 2"), "{err}");
}

#[test]
fn augmentation_is_deterministic_per_seed() {
    struct Img;
    impl Dataset for Img {
        fn len(&self) -> usize {
            64
        }
        fn sample_shape(&self) -> &[usize] {
            &[1, 4, 4]
        }
        fn classes(&self) -> &[String] {
            &[]
        }
        fn label(&self, _: usize) -> Result<i64> {
            Ok(0)
        }
        fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
            for (k, v) in out.iter_mut().enumerate() {
                *v = (index * 16 + k) as f32;
            }
            Ok(())
        }
    }
    let cfg = |seed| LoaderConfig {
        batch_size: 64,
        shuffle: false,
        seed,
        augment: Augment { hflip: true, shift: 1 },
        ..Default::default()
    };
    let get = |seed| {
        let l = DataLoader::new(Arc::new(Img), cfg(seed));
        convert::tensor_to_f32(&l.epoch(0).next().unwrap().unwrap().inputs).unwrap()
    };
    assert_eq!(get(1), get(1));
    assert_ne!(get(1), get(2));
}

#[test]
fn split_is_seeded_disjoint_and_complete() {
    let data: Arc<dyn Dataset> = Arc::new(Counting(1000));
    let (t1, v1): (Subset, Subset) = split(data.clone(), 0.1, 7).unwrap();
    let (t2, v2) = split(data.clone(), 0.1, 7).unwrap();
    let (_, v3) = split(data.clone(), 0.1, 8).unwrap();
    assert_eq!((t1.len(), v1.len()), (900, 100));
    assert_eq!(v1.indices(), v2.indices());
    assert_eq!(t1.indices(), t2.indices());
    assert_ne!(v1.indices(), v3.indices());
    let mut all: Vec<usize> = t1.indices().iter().chain(v1.indices()).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert!(split(data, 1.0, 0).unwrap_err().to_string().contains("below 1"));
}
