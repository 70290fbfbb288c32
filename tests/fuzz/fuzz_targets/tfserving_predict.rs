//! A TensorFlow Serving predict body, as kiln-serve reads it before the model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_serve::fuzzing::tfserving_predict_body(data);
});
