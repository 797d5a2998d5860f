//! Generates the protobuf types from `proto/` with protox, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["imgate/v1/frame.proto"], ["proto"])?;
    prost_build::Config::new()
        // Payload fields become `bytes::Bytes`: decoding from a `Bytes` buffer slices, never copies.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
