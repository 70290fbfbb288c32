//! Compiles the C++ shim over libtorch's c10d against the libtorch that torch-sys links
//! (its include folder) and Debian's gloo headers (`libgloo-dev`, which scripts/setup.sh
//! installs). `USE_C10D_GLOO` must be defined: without it ProcessGroupGloo.hpp compiles
//! to nothing.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-env-changed=KILN_GLOO_INCLUDE");
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
    cc::Build::new()
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
        .file("cpp/shim.cpp")
        .compile("kiln_dist");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
