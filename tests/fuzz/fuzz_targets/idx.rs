//! IDX files (MNIST's format): the first byte splits the input into an images file and a
//! labels file, each read as kiln-data reads a dataset's files.
#![no_main]
use std::io::Write;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let cut = (cut as usize * rest.len() / 255).min(rest.len());
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images"), dir.path().join("labels"));
    std::fs::File::create(&images).unwrap().write_all(&rest[..cut]).unwrap();
    std::fs::File::create(&labels).unwrap().write_all(&rest[cut..]).unwrap();
    let classes = (0..10).map(|i| i.to_string()).collect();
    if let Ok(ds) = kiln_data::IdxDataset::load(&images, &labels, classes) {
        use kiln_data::Dataset;
        let mut out = vec![0f32; ds.sample_len()];
        for i in 0..ds.len().min(4) {
            let _ = ds.read_into(i, &mut out);
            let _ = ds.label(i);
        }
    }
});
