//! Generates the blob transfer gRPC service from proto/blobs.proto (needs `protoc`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Blob chunks as `Bytes`: sent without copying into a Vec, received as slices of the
    // decode buffer.
    tonic_build::configure()
        .bytes([".keelson.blobs.BlobChunk.data"])
        .compile_protos(&["proto/blobs.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/blobs.proto");
    Ok(())
}
