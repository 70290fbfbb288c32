//! A checkpoint folder: the first two bytes give the length of state.json, the rest is
//! tensors.safetensors; loaded as `kiln-train resume` loads the newest checkpoint.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (state, tensors) = data[2..].split_at(n);
    let run = tempfile::tempdir().unwrap();
    let ckpt = run.path().join("checkpoints/ckpt-000000000001");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("state.json"), state).unwrap();
    std::fs::write(ckpt.join("tensors.safetensors"), tensors).unwrap();
    let _ = kiln_train::load_checkpoint(run.path());
});
