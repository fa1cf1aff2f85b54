//! The node agent's view of a CRI runtime: the [`Cri`] trait with the RuntimeService and
//! ImageService calls the agent makes, a tonic implementation over a unix socket
//! ([`GrpcCri`]) and an in-memory fake for unit tests ([`fake::FakeCri`]).
//!
//! Everything above this module codes against the trait (STYLE.md §6), so pod workers are
//! tested without a runtime and run unchanged against skiff's runtime or containerd.

pub mod fake;
mod grpc;

pub use cri_api::v1;
pub use grpc::GrpcCri;

use crate::AgentError;
use std::future::Future;

/// Label keys the kubelet puts on sandboxes and containers; the agent finds its pods by them.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Which skiff node agent created a sandbox, so agents sharing a runtime never reap each other's.
pub const LABEL_NODE: &str = "skiff.io/node";

/// GetContainerEvents as the agent uses it: the UID of the pod each event is about.
pub type PodEvents = futures::stream::BoxStream<'static, Result<String, AgentError>>;

/// The CRI calls the node agent makes. Errors are [`AgentError::Cri`] (with the gRPC code, so
/// `NotFound` can be told apart) except `pull_image`, which fails with
/// [`AgentError::ImagePull`].
pub trait Cri: Send + Sync + 'static {
    fn version(&self) -> impl Future<Output = Result<v1::VersionResponse, AgentError>> + Send;
    fn status(&self) -> impl Future<Output = Result<v1::RuntimeStatus, AgentError>> + Send;
    /// UpdateRuntimeConfig with the node's pod subnet.
    fn update_pod_cidr(&self, cidr: &str) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn run_pod_sandbox(
        &self,
        config: v1::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<v1::PodSandboxStatus, AgentError>> + Send;
    fn list_pod_sandbox(
        &self,
        filter: v1::PodSandboxFilter,
    ) -> impl Future<Output = Result<Vec<v1::PodSandbox>, AgentError>> + Send;
    fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn stop_container(
        &self,
        id: &str,
        timeout_seconds: i64,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn list_containers(
        &self,
        filter: v1::ContainerFilter,
    ) -> impl Future<Output = Result<Vec<v1::Container>, AgentError>> + Send;
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<v1::ContainerStatus, AgentError>> + Send;
    /// Every image the runtime holds.
    fn list_images(&self) -> impl Future<Output = Result<Vec<v1::Image>, AgentError>> + Send;
    /// `None` when the image is not on the node.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<v1::Image>, AgentError>> + Send;
    /// Returns the image reference (digest or id) the runtime resolved. `auth`: registry
    /// credentials from the pod's pull secrets.
    fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<v1::PodSandboxConfig>,
        auth: Option<v1::AuthConfig>,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;
    /// ExecSync: runs `cmd` in the container to completion; `timeout` 0 runs it without limit.
    /// A command that outlives its timeout is `DeadlineExceeded`.
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<v1::ExecSyncResponse, AgentError>> + Send;
    /// Exec: the URL of the runtime's streaming server for this command.
    fn exec(&self, req: v1::ExecRequest)
    -> impl Future<Output = Result<String, AgentError>> + Send;
    /// Attach: the streaming URL for the container's own stdio.
    fn attach(
        &self,
        req: v1::AttachRequest,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;
    /// PortForward: the streaming URL for forwarding to the sandbox's ports.
    fn port_forward(
        &self,
        req: v1::PortForwardRequest,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;
    /// GetContainerEvents, as the UIDs of the pods whose sandbox or containers changed;
    /// `None` from a runtime without events (containerd 1.6), where re-syncs must do.
    fn pod_events(&self) -> impl Future<Output = Result<Option<PodEvents>, AgentError>> + Send;
}
