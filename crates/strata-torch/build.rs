//! Bakes libtorch's directory into this crate's test binaries as an rpath, so they run
//! without LD_LIBRARY_PATH (torch-sys hands the directory to direct dependents only), and
//! compiles `csrc/script_module.cpp`, the TorchScript calls tch does not expose, against the
//! same libtorch.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/script_module.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys names libtorch's lib directory"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // torch-sys's own default when the variable is unset: PyPI's wheels use the new ABI.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let root = lib.parent().expect("libtorch's lib directory has a parent");
    cc::Build::new()
        .cpp(true)
        .file("csrc/script_module.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // libtorch's headers warn about themselves; this file's own warnings stay on.
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("strata_script_module");
}
