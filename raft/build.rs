//! Generates the peer gRPC service from proto/peer.proto (needs `protoc`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/peer.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/peer.proto");
    Ok(())
}
