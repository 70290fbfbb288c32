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
    // Real training on the GPU, in full precision and with bf16 autocast.
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("fp32", "mixed_precision=\"none\""),
        ("bf16", "mixed_precision=\"bf16\""),
    ] {
        let out = dir.path().join(name);
        let o = crate::util::quick_train(&out, &["--device", "cuda", "--set", extra]);
        let err = crate::util::stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(!err.contains("applies on CUDA only"), "{err}");
        let pkg = kiln_package::Package::read_manifest(out.join("package")).unwrap();
        let acc = pkg.training.unwrap().metrics["test_accuracy"];
        assert!(acc > 0.6, "{name}: test accuracy {acc}");
    }
}

#[test]
fn bf16_on_the_cpu_falls_back_to_full_precision_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let o = crate::util::quick_train(
        &dir.path().join("run"),
        &["--device", "cpu", "--set", "mixed_precision=\"bf16\""],
    );
    let err = crate::util::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("applies on CUDA only"), "{err}");
}
