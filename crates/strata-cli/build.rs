//! Bakes libtorch's directory into this crate's binaries as an rpath, so they run without
//! LD_LIBRARY_PATH. torch-sys hands the directory to direct dependents only.
//!
//! CUDA: nothing in Rust calls into libtorch_cuda, so the linker's --as-needed drops it and
//! libtorch then sees no GPU (tch-rs issue #980). Linking it costs every process ~0.4 s and
//! ~700 MB of mapped libraries, so the `strata` binary links it only where it can be used:
//! with `STRATA_LINK_CUDA=1` (the CUDA image, scripts/gpu-check.sh), or by default when the
//! build machine has an NVIDIA driver; `STRATA_LINK_CUDA=0` turns it off.
fn main() {
    println!("cargo:rerun-if-env-changed=STRATA_LINK_CUDA");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let wanted = match std::env::var("STRATA_LINK_CUDA").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::path::Path::new("/proc/driver/nvidia/version").exists(),
    };
    if wanted && std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
