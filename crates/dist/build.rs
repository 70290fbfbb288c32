//! Compiles the C++ shim over libtorch's c10d against the libtorch that torch-sys links
//! (its include folder) and Debian's gloo headers (`libgloo-dev`, which scripts/setup.sh
//! installs). `USE_C10D_GLOO` must be defined: without it ProcessGroupGloo.hpp compiles
//! to nothing.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-env-changed=KILN_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_NCCL");
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(l) => PathBuf::from(l),
        Err(_) => {
            println!("cargo:warning=torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)");
            std::process::exit(1);
        }
    };
    let root = lib.parent().map(PathBuf::from).unwrap_or_default();
    let include = root.join("include");
    let gloo = std::env::var("KILN_GLOO_INCLUDE").map_or_else(|_| PathBuf::from("/usr/include"), PathBuf::from);
    if !gloo.join("gloo/config.h").exists() {
        println!(
            "cargo:warning=gloo's headers are missing: {} has no gloo/config.h. Install Debian's libgloo-dev \
             (scripts/setup.sh does), or point KILN_GLOO_INCLUDE at a folder holding gloo/",
            gloo.display()
        );
        std::process::exit(1);
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-DUSE_C10D_GLOO")
        .file("cpp/shim.cpp");
    let nccl = std::env::var_os("CARGO_FEATURE_NCCL").is_some();
    if nccl {
        // The torch wheel keeps the CUDA and NCCL headers in site-packages/nvidia/.
        let torch = root.canonicalize().unwrap_or_else(|_| root.clone());
        let nvidia = torch.parent().map(|p| p.join("nvidia")).unwrap_or_default();
        let dir = |var: &str, default: PathBuf, probe: &str| {
            println!("cargo:rerun-if-env-changed={var}");
            let d = std::env::var(var).map_or(default, PathBuf::from);
            if !d.join(probe).exists() {
                println!(
                    "cargo:warning=the nccl feature needs {probe} in {} (set {var} to the folder holding it)",
                    d.display()
                );
                std::process::exit(1);
            }
            d
        };
        build
            .include(dir(
                "KILN_CUDA_INCLUDE",
                nvidia.join("cu13/include"),
                "cuda_runtime_api.h",
            ))
            .include(dir("KILN_NCCL_INCLUDE", nvidia.join("nccl/include"), "nccl.h"))
            .flag("-DUSE_C10D_NCCL")
            .flag("-DUSE_CUDA")
            .flag("-DKILN_NCCL");
    }
    build.compile("kiln_dist");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
}
