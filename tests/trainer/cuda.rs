//! CUDA builds: libtorch's CUDA library must stay linked so that tch sees the GPU.
//! Runs only in a `--features cuda` build on a machine with an NVIDIA driver.

#[test]
#[cfg(feature = "cuda")]
fn a_cuda_build_sees_the_gpu_where_there_is_one() {
    let has_gpu = std::path::Path::new("/dev/nvidia0").exists();
    if !has_gpu {
        eprintln!("skipped: no /dev/nvidia0 on this machine");
        return;
    }
    assert!(
        kiln_tensor::tch::Cuda::is_available(),
        "built with --features cuda on a GPU machine, but libtorch sees no CUDA"
    );
    let device = kiln_tensor::DeviceChoice::Auto.resolve().unwrap();
    assert!(device.is_cuda());
    // A real training step on the GPU.
    let dir = tempfile::tempdir().unwrap();
    let o = crate::util::quick_train(&dir.path().join("run"), &["--device", "cuda"]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
}
