//! Compiles the peer service's `.proto` with protox (pure Rust, no system `protoc`) into tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/peer.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
