//! A CSV file of features and a label column, as kiln-data reads it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    std::fs::write(&path, data).unwrap();
    for label in [kiln_data::LabelColumn::Index(0), kiln_data::LabelColumn::Name("label".into())] {
        if let Ok(ds) = kiln_data::CsvDataset::load(&path, &label) {
            use kiln_data::Dataset;
            let mut out = vec![0f32; ds.sample_len()];
            for i in 0..ds.len().min(4) {
                let _ = ds.read_into(i, &mut out);
                let _ = ds.label(i);
            }
        }
    }
});
