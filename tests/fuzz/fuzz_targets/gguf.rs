//! A GGUF file (llama.cpp's model format) as kiln-gguf reads it: header, metadata, tensor
//! table, and every tensor dequantised.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(g) = kiln_gguf::GgufFile::from_bytes(data.to_vec()) {
        for t in g.tensors() {
            let _ = g.tensor_f32(&t.name);
        }
    }
});
