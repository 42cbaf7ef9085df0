//! Generates the blob transfer gRPC service from proto/blobs.proto (needs `protoc`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_build::configure().compile_protos(&["proto/blobs.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/blobs.proto");
    Ok(())
}
