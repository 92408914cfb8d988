//! Bakes libtorch's directory into this crate's test binaries as an rpath, so they run
//! without LD_LIBRARY_PATH. torch-sys hands the directory to direct dependents only.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
