//! Compiles skiff's `.proto` files with protox (pure Rust, no system `protoc`): the peer service
//! into tonic code, and Kubernetes' vendored `generated.proto` files (`proto/k8s`) into a
//! descriptor set that the API server decodes protobuf request bodies with.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/peer.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto/k8s");
    // The object kinds the API server serves, their subresources' bodies and DeleteOptions; the
    // apimachinery files come in as imports. No source info: the comments are most of the text.
    let k8s: Vec<String> = [
        "core",
        "apps",
        "batch",
        "coordination",
        "discovery",
        "autoscaling",
        "policy",
        "storage",
        "rbac",
        "scheduling",
    ]
    .iter()
    .map(|g| format!("k8s.io/api/{g}/v1/generated.proto"))
    .chain(std::iter::once(
        "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1/generated.proto".to_owned(),
    ))
    .collect();
    let set = protox::Compiler::new(["proto/k8s"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(&k8s)?
        .encode_file_descriptor_set();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("k8s-descriptors.bin");
    std::fs::write(out, set)?;
    Ok(())
}
