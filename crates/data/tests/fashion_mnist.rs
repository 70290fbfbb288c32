//! The IDX reader against the real Fashion-MNIST files (installed by scripts/setup.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_data::{Dataset, IdxDataset, KnownDataset, Split};
use sha2::{Digest, Sha256};

// sha256 of the decompressed pixel and label payloads (everything after the IDX header).
const TRAIN_PIXELS_SHA256: &str = "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012";
const TRAIN_LABELS_SHA256: &str = "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7";
const TEST_PIXELS_SHA256: &str = "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a";

fn load(split: Split) -> IdxDataset {
    KnownDataset::FashionMnist
        .load(None, split)
        .expect("Fashion-MNIST must be installed: run scripts/setup.sh")
}

fn digest(ds: &IdxDataset) -> (String, String) {
    let (mut px, mut lb) = (Sha256::new(), Sha256::new());
    for i in 0..ds.len() {
        px.update(ds.raw_pixels(i).unwrap());
        lb.update([ds.label(i).unwrap() as u8]);
    }
    (format!("{:x}", px.finalize()), format!("{:x}", lb.finalize()))
}

#[test]
fn train_split_has_the_published_size_shape_labels_and_checksum() {
    let ds = load(Split::Train);
    assert_eq!(ds.len(), 60_000);
    assert_eq!(ds.sample_shape(), &[1, 28, 28]);
    assert_eq!(ds.classes().len(), 10);
    assert_eq!(ds.classes()[9], "Ankle boot");
    let mut per_class = [0usize; 10];
    for i in 0..ds.len() {
        let l = ds.label(i).unwrap();
        assert!((0..10).contains(&l), "label {l} out of range");
        per_class[l as usize] += 1;
    }
    assert_eq!(per_class, [6000; 10], "Fashion-MNIST's training set is balanced");
    // The first labels as published: ankle boot, T-shirt, T-shirt, dress, ...
    let first: Vec<i64> = (0..4).map(|i| ds.label(i).unwrap()).collect();
    assert_eq!(first, [9, 0, 0, 3]);
    let (px, lb) = digest(&ds);
    assert_eq!(px, TRAIN_PIXELS_SHA256);
    assert_eq!(lb, TRAIN_LABELS_SHA256);
    let mut sample = vec![0f32; 784];
    ds.read_into(0, &mut sample).unwrap();
    assert!(sample.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(sample.contains(&1.0), "pixels are scaled so 255 becomes 1.0");
}

#[test]
fn test_split_reads_from_the_same_folder() {
    let ds = load(Split::Test);
    assert_eq!(ds.len(), 10_000);
    assert_eq!(digest(&ds).0, TEST_PIXELS_SHA256);
}

#[test]
fn missing_dataset_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = KnownDataset::FashionMnist
        .load(Some(dir.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("scripts/setup.sh"),
        "{err}"
    );
}
