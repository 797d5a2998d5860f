//! Generates the gRPC backend's types and client from `proto/backend.proto` with protox, so
//! building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["backend.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // The rpc is named `Connect`: no transport `connect` constructor to clash with it.
        .build_transport(false)
        // Payload fields become `bytes::Bytes`: handed to deliveries without copying.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
