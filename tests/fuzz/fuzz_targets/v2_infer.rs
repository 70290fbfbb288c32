//! A KServe v2 infer body, as kiln-serve reads it before the model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_serve::fuzzing::v2_infer_body(data);
});
