//! Compiles skiff's CRI `.proto` and its own image service's with protox (pure Rust, no system
//! `protoc`) into tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/runtime_v1.proto", "proto/skiff_images_v1.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
