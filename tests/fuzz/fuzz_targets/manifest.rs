//! A package's manifest.json, read and checked as kiln-serve and kiln-train read it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), data).unwrap();
    let _ = kiln_package::Package::read_manifest(dir.path());
});
