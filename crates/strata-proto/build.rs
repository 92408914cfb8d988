//! Generates the tonic/prost code for `proto/strata/v1` with a vendored protoc,
//! so that building needs no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): a build script compiled in one checkout is reused by
    // another sharing the target directory, and must look at the checkout being built.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("strata/v1/federation.proto");
    // The proto lives outside this package: without this, editing it would not rebuild.
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Malformed messages are the sender's error (INVALID_ARGUMENT), not tonic's INTERNAL.
    tonic_prost_build::configure().codec_path("crate::codec::StrictCodec").compile_with_config(
        config,
        &[proto],
        &[root],
    )?;
    Ok(())
}
