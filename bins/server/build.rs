//! With the `cuda` feature, keeps libtorch_cuda linked: Rust links with `--as-needed`,
//! which drops it (nothing references its symbols directly), and tch then sees no GPU.
fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
