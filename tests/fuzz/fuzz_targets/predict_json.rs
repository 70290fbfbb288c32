//! A `/predict` JSON body (pixel values or a base64 image, which is then decoded).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_serve::fuzzing::predict_body("application/json", data);
});
