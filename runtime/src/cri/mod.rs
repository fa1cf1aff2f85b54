//! The CRI `runtime.v1` gRPC services: thin adapters from tonic requests onto [`Runtime`]. All
//! error mapping goes through `From<RuntimeError> for tonic::Status`.

pub mod events;
mod images;
pub mod runtime;

use std::sync::Arc;

use base64::Engine as _;
use cri_api::v1 as cri;
use tonic::{Request, Response, Status};

pub use self::runtime::{Live, Runtime};
use crate::error::RuntimeError;
use crate::image::ImageRecord;
use crate::image::registry::Credentials;
use crate::stream::exec::{ExecSpawner, ExecSpec};
use crate::stream::{StreamRequest, Streams};

/// Implements both CRI services over one shared [`Runtime`].
#[derive(Clone)]
pub struct CriService {
    rt: Arc<Runtime>,
    /// The streaming server's request table and the exec boundary; `None` answers the
    /// streaming calls with Unimplemented.
    streaming: Option<(Arc<Streams>, Arc<dyn ExecSpawner>)>,
    /// Ends the GetContainerEvents streams, which a graceful shutdown would otherwise wait for.
    shutdown: tokio_util::sync::CancellationToken,
}

impl CriService {
    pub fn new(rt: Arc<Runtime>) -> Self {
        CriService {
            rt,
            streaming: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends the open GetContainerEvents streams when `cancel` fires.
    pub fn with_shutdown(mut self, cancel: tokio_util::sync::CancellationToken) -> Self {
        self.shutdown = cancel;
        self
    }

    /// Serves ExecSync, Exec, Attach and PortForward through `streams` and `spawner`.
    pub fn with_streaming(mut self, streams: Arc<Streams>, spawner: Arc<dyn ExecSpawner>) -> Self {
        self.streaming = Some((streams, spawner));
        self
    }

    fn streaming(&self) -> Result<&(Arc<Streams>, Arc<dyn ExecSpawner>), Status> {
        self.streaming
            .as_ref()
            .ok_or_else(|| Status::unimplemented("streaming is not configured"))
    }

    /// The container, if it runs: exec and attach need a live process to join.
    fn running(
        &self,
        id: &str,
        action: &'static str,
    ) -> Result<crate::container::ContainerRecord, RuntimeError> {
        let c = self.rt.container(id)?;
        match self.rt.live(&c) {
            Live::Running => Ok(c),
            other => Err(RuntimeError::FailedPrecondition {
                kind: "container",
                name: id.to_string(),
                state: match other {
                    Live::Created => "created".into(),
                    _ => "not running".into(),
                },
                action,
            }),
        }
    }
}

type R<T> = Result<Response<T>, Status>;

impl CriService {
    /// Runs a synchronous runtime operation (file walks, cgroup files) on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, Status> {
        let rt = self.rt.clone();
        tokio::task::spawn_blocking(move || f(&rt))
            .await
            .map_err(|e| RuntimeError::Internal(format!("blocking task: {e}")))?
            .map_err(Status::from)
    }
}

#[tonic::async_trait]
impl cri_api::RuntimeService for CriService {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "skiff".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: cri_api::API_VERSION.into(),
        }))
    }

    async fn status(&self, _req: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let cond = |t: &str| cri::RuntimeCondition {
            r#type: t.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        // RuntimeReady: this server answers, so its state loaded and its store is open.
        let network = match self.rt.network_status() {
            Ok(()) => cond("NetworkReady"),
            Err(e) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: match &e {
                    RuntimeError::NetworkNotReady { reason, .. } => (*reason).into(),
                    _ => "NetworkPluginNotReady".into(),
                },
                message: e.to_string(),
            },
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![cond("RuntimeReady"), network],
            }),
            info: Default::default(),
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        // An empty config changes nothing, as in containerd.
        if !cidr.is_empty() {
            self.rt.set_pod_cidr(&cidr).map_err(Status::from)?;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        // skiff writes cgroupfs paths itself (`/skiff/<pod>/<container>`), never through systemd.
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        use futures::StreamExt as _;
        use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
        let rt = self.rt.clone();
        let events = BroadcastStream::new(self.rt.subscribe_events())
            .take_until(self.shutdown.clone().cancelled_owned());
        let stream = events.filter_map(move |ev| {
            let out = match ev {
                Ok(ev) => Some(Ok(rt.event_response(&ev))),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "a container events stream fell behind");
                    None
                }
            };
            std::future::ready(out)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        self.blocking(move |rt| rt.update_container_resources(&req.container_id, req.linux))
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        self.blocking(move |rt| rt.reopen_container_log(&id))
            .await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let stats = self.blocking(move |rt| rt.container_stats(&id)).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self
            .blocking(move |rt| Ok(rt.list_container_stats(filter)))
            .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let stats = self.blocking(move |rt| rt.pod_sandbox_stats(&id)).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self
            .blocking(move |rt| Ok(rt.list_pod_sandbox_stats(filter)))
            .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let config = req.config.ok_or_else(|| {
            RuntimeError::InvalidArgument("run pod sandbox without config".into())
        })?;
        let id = self.rt.run_pod_sandbox(config, req.runtime_handler).await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        self.rt
            .stop_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        self.rt
            .remove_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let status = self.rt.pod_sandbox_status(&id)?;
        let containers_statuses = self
            .rt
            .list_containers(Some(cri::ContainerFilter {
                pod_sandbox_id: id,
                ..Default::default()
            }))
            .iter()
            .filter_map(|c| self.rt.container_status(&c.id).ok())
            .collect();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(status),
            info: Default::default(),
            containers_statuses,
            timestamp: crate::state::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        Ok(Response::new(cri::ListPodSandboxResponse {
            items: self.rt.list_pod_sandbox(req.into_inner().filter),
        }))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let config = req.config.ok_or_else(|| {
            RuntimeError::InvalidArgument("create container without config".into())
        })?;
        let id = self
            .rt
            .create_container(&req.pod_sandbox_id, config)
            .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        self.rt
            .start_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let req = req.into_inner();
        self.rt
            .stop_container(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        self.rt
            .remove_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        Ok(Response::new(cri::ListContainersResponse {
            containers: self.rt.list_containers(req.into_inner().filter),
        }))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let (_, spawner) = self.streaming()?;
        if req.cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec without a command".into()).into());
        }
        self.running(&req.container_id, "exec")?;
        let timeout = u64::try_from(req.timeout)
            .ok()
            .filter(|t| *t > 0)
            .map(std::time::Duration::from_secs);
        let spec = ExecSpec {
            container_id: req.container_id,
            cmd: req.cmd,
            tty: false,
            stdin: false,
        };
        let (stdout, stderr, exit_code) =
            crate::stream::exec::exec_sync(spawner.as_ref(), spec, timeout).await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        let req = req.into_inner();
        let (streams, _) = self.streaming()?;
        if req.cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec without a command".into()).into());
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(RuntimeError::InvalidArgument(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            )
            .into());
        }
        self.running(&req.container_id, "exec")?;
        let url = streams.register(StreamRequest::Exec {
            spec: ExecSpec {
                container_id: req.container_id,
                cmd: req.cmd,
                tty: req.tty,
                stdin: req.stdin,
            },
            stdout: req.stdout,
            // With a tty, stderr is merged into the terminal.
            stderr: req.stderr && !req.tty,
        });
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        let req = req.into_inner();
        let (streams, _) = self.streaming()?;
        let c = self.running(&req.container_id, "attach")?;
        if req.stdin {
            return Err(RuntimeError::InvalidArgument(format!(
                "attach to container {} with stdin: skiff runs containers with stdin closed",
                req.container_id
            ))
            .into());
        }
        if c.log_path.is_empty() {
            return Err(RuntimeError::FailedPrecondition {
                kind: "container",
                name: req.container_id,
                state: "without a log".into(),
                action: "attach",
            }
            .into());
        }
        let url = streams.register(StreamRequest::Attach {
            log_path: c.log_path.into(),
            container_id: req.container_id,
            stdout: req.stdout,
            stderr: req.stderr,
            tty: req.tty,
        });
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        let req = req.into_inner();
        let (streams, _) = self.streaming()?;
        let sandbox = self.rt.sandbox(&req.pod_sandbox_id)?;
        let ports = req
            .port
            .iter()
            .map(|p| {
                u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "port-forward port {p}: want a number from 1 to 65535"
                    ))
                })
            })
            .collect::<Result<Vec<u16>, _>>()?;
        let url = streams.register(StreamRequest::PortForward {
            sandbox_id: req.pod_sandbox_id,
            netns: sandbox.ns.net,
            ports,
        });
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let status = self.rt.container_status(&req.into_inner().container_id)?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            info: Default::default(),
        }))
    }
}

fn image_proto(r: &ImageRecord) -> cri::Image {
    let user = r.config.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(u) => (Some(cri::Int64Value { value: u }), String::new()),
        Err(_) if user.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// Credentials from a CRI AuthConfig: username/password, or `auth` = base64("user:pass").
fn credentials(auth: Option<cri::AuthConfig>) -> Result<Option<Credentials>, RuntimeError> {
    let Some(a) = auth else { return Ok(None) };
    let server_host = crate::image::hosts::server_host(&a.server_address);
    if !a.username.is_empty() {
        return Ok(Some(Credentials {
            username: a.username,
            password: a.password,
            server_host,
        }));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| RuntimeError::InvalidArgument(format!("auth is not base64: {e}")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| RuntimeError::InvalidArgument("auth is not utf-8".into()))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| RuntimeError::InvalidArgument("auth is not user:password".into()))?;
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
            server_host,
        }));
    }
    Ok(None)
}

fn image_name(spec: Option<cri::ImageSpec>) -> Result<String, RuntimeError> {
    spec.map(|s| s.image)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RuntimeError::InvalidArgument("no image specified".into()))
}

#[tonic::async_trait]
impl cri_api::ImageService for CriService {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> R<cri::ListImagesResponse> {
        let wanted = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .unwrap_or_default();
        let images = if wanted.is_empty() {
            self.rt.images.list()
        } else {
            self.rt.images.get(&wanted).into_iter().collect()
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(image_proto).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let name = image_name(req.into_inner().image)?;
        Ok(Response::new(cri::ImageStatusResponse {
            image: self.rt.images.get(&name).as_ref().map(image_proto),
            info: Default::default(),
        }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = req.into_inner();
        let name = image_name(req.image)?;
        let creds = credentials(req.auth)?;
        let id = self.rt.images.pull(&name, creds.as_ref()).await?;
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let name = image_name(req.into_inner().image)?;
        let in_use = self.rt.snapshots_in_use();
        self.rt.images.remove(&name, &in_use)?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let info = self.blocking(|rt| Ok(rt.image_fs_info())).await?;
        Ok(Response::new(info))
    }
}

#[cfg(test)]
mod tests;
