//! A safetensors file (package weights, checkpoint tensors), header and data.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_package::decode_tensors(data);
});
