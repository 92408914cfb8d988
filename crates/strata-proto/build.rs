//! Generates the tonic/prost code for `proto/strata/v1` with a vendored protoc,
//! so that building needs no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("strata/v1/federation.proto");
    // The proto lives outside this package: without this, editing it would not rebuild.
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &[proto], &[root])?;
    Ok(())
}
