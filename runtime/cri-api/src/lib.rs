//! The CRI `runtime.v1` contract as Rust types and tonic clients and servers.
//!
//! The `.proto` is skiff's own text with CRI's names and numbers, so the node agent can drive any
//! CRI runtime and skiff's runtime can serve any CRI client. Depend on this crate, not on
//! `runtime`, to speak CRI.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// skiff's own image operations beside CRI on the runtime's socket: pull progress, imports.
#[allow(clippy::all, missing_docs)]
pub mod images {
    tonic::include_proto!("skiff.images.v1");
}

pub use v1::image_service_client::ImageServiceClient;
pub use v1::image_service_server::{ImageService, ImageServiceServer};
pub use v1::runtime_service_client::RuntimeServiceClient;
pub use v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};

/// The CRI API version this crate speaks, as `Version` reports it.
pub const API_VERSION: &str = "v1";

/// The packet mark bit the node agent sets on traffic from this node's pods to another node's
/// pods (routed to that node by pod IP) and skiff's runtime exempts from its pod masquerade, so
/// pods see each other's own addresses across nodes. Not part of CRI: a contract between the
/// two halves of a skiff node (a flannel-like network keeps such traffic unmasqueraded the
/// same way).
pub const KEEP_SOURCE_MARK: u32 = 0x0002_0000;
