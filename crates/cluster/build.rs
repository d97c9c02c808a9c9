//! Generates the gRPC code of `proto/cluster.proto` with the protoc shipped in
//! `protoc-bin-vendored`, so building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../../proto/cluster.proto");
    tonic_prost_build::configure().compile_protos(&["../../proto/cluster.proto"], &["../../proto"])?;
    Ok(())
}
