//! A PNG or JPEG body of `/predict`, decoded within the server's default limits.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_serve::fuzzing::predict_body("image/png", data);
});
