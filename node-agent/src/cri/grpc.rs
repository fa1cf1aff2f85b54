//! [`Cri`] over tonic to a CRI runtime's unix socket (skiff's runtime or containerd).

use super::{Cri, v1};
use crate::AgentError;
use cri_api::{ImageServiceClient, RuntimeServiceClient};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Deadline for ordinary CRI calls; a wedged runtime must not wedge a pod worker forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Image pulls download layers and may take long.
const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The real CRI client. Cheap to share: tonic clients are clones of one `Channel`.
#[derive(Clone)]
pub struct GrpcCri {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

impl GrpcCri {
    /// A client for the runtime at `socket`. The connection is made lazily and re-made after
    /// failures, so the agent may start before the runtime does (as in `skiff up`).
    pub fn connect_lazy(socket: &Path) -> Result<Self, AgentError> {
        let path: PathBuf = socket.to_owned();
        // The URI is never dialled: the connector below ignores it and opens the unix socket.
        let endpoint =
            Endpoint::try_from("http://[::]:50051").map_err(|e| AgentError::CriEndpoint {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }));
        Ok(GrpcCri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
        })
    }
}

impl Cri for GrpcCri {
    async fn version(&self) -> Result<v1::VersionResponse, AgentError> {
        let msg = v1::VersionRequest {
            version: cri_api::API_VERSION.to_owned(),
        };
        let mut c = self.runtime.clone();
        c.version(request(msg, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| AgentError::cri("Version", "runtime", s))
    }

    async fn status(&self) -> Result<v1::RuntimeStatus, AgentError> {
        let mut c = self.runtime.clone();
        c.status(request(v1::StatusRequest { verbose: false }, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().status.unwrap_or_default())
            .map_err(|s| AgentError::cri("Status", "runtime", s))
    }

    async fn update_pod_cidr(&self, cidr: &str) -> Result<(), AgentError> {
        let mut c = self.runtime.clone();
        let msg = v1::UpdateRuntimeConfigRequest {
            runtime_config: Some(v1::RuntimeConfig {
                network_config: Some(v1::NetworkConfig {
                    pod_cidr: cidr.to_owned(),
                }),
            }),
        };
        c.update_runtime_config(request(msg, CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|s| AgentError::cri("UpdateRuntimeConfig", "runtime", s))
    }

    async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, AgentError> {
        let target = config
            .metadata
            .as_ref()
            .map(|m| format!("pod {}/{}", m.namespace, m.name))
            .unwrap_or_default();
        let msg = v1::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let mut c = self.runtime.clone();
        c.run_pod_sandbox(request(msg, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|s| AgentError::cri("RunPodSandbox", target, s))
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), AgentError> {
        let msg = v1::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        let mut c = self.runtime.clone();
        c.stop_pod_sandbox(request(msg, CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|s| AgentError::cri("StopPodSandbox", format!("sandbox {id}"), s))
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), AgentError> {
        let msg = v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        let mut c = self.runtime.clone();
        c.remove_pod_sandbox(request(msg, CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|s| AgentError::cri("RemovePodSandbox", format!("sandbox {id}"), s))
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<v1::PodSandboxStatus, AgentError> {
        let msg = v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let mut c = self.runtime.clone();
        let resp = c
            .pod_sandbox_status(request(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| AgentError::cri("PodSandboxStatus", format!("sandbox {id}"), s))?;
        resp.into_inner().status.ok_or_else(|| AgentError::Cri {
            op: "PodSandboxStatus",
            target: format!("sandbox {id}"),
            code: tonic::Code::Internal,
            message: "response has no status".to_owned(),
        })
    }

    async fn list_pod_sandbox(
        &self,
        filter: v1::PodSandboxFilter,
    ) -> Result<Vec<v1::PodSandbox>, AgentError> {
        let msg = v1::ListPodSandboxRequest {
            filter: Some(filter),
        };
        let mut c = self.runtime.clone();
        c.list_pod_sandbox(request(msg, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().items)
            .map_err(|s| AgentError::cri("ListPodSandbox", "sandboxes", s))
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, AgentError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let msg = v1::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let mut c = self.runtime.clone();
        c.create_container(request(msg, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(|s| AgentError::cri("CreateContainer", format!("container {name}"), s))
    }

    async fn start_container(&self, id: &str) -> Result<(), AgentError> {
        let msg = v1::StartContainerRequest {
            container_id: id.to_owned(),
        };
        let mut c = self.runtime.clone();
        c.start_container(request(msg, CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|s| AgentError::cri("StartContainer", format!("container {id}"), s))
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), AgentError> {
        let msg = v1::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: timeout_seconds,
        };
        // The runtime waits up to `timeout` before SIGKILL: give it that plus the usual deadline.
        let deadline = CALL_TIMEOUT + Duration::from_secs(timeout_seconds.max(0).unsigned_abs());
        let mut c = self.runtime.clone();
        c.stop_container(request(msg, deadline))
            .await
            .map(|_| ())
            .map_err(|s| AgentError::cri("StopContainer", format!("container {id}"), s))
    }

    async fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let msg = v1::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        let mut c = self.runtime.clone();
        c.remove_container(request(msg, CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|s| AgentError::cri("RemoveContainer", format!("container {id}"), s))
    }

    async fn list_containers(
        &self,
        filter: v1::ContainerFilter,
    ) -> Result<Vec<v1::Container>, AgentError> {
        let msg = v1::ListContainersRequest {
            filter: Some(filter),
        };
        let mut c = self.runtime.clone();
        c.list_containers(request(msg, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| AgentError::cri("ListContainers", "containers", s))
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<v1::ExecSyncResponse, AgentError> {
        let mut c = self.runtime.clone();
        let msg = v1::ExecSyncRequest {
            container_id: container_id.to_owned(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        // The runtime enforces the command's timeout; the call may take that long and more.
        c.exec_sync(request(msg, CALL_TIMEOUT + timeout))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| AgentError::cri("ExecSync", container_id, s))
    }

    async fn exec(&self, req: v1::ExecRequest) -> Result<String, AgentError> {
        let id = req.container_id.clone();
        let mut c = self.runtime.clone();
        c.exec(request(req, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| AgentError::cri("Exec", &id, s))
    }

    async fn attach(&self, req: v1::AttachRequest) -> Result<String, AgentError> {
        let id = req.container_id.clone();
        let mut c = self.runtime.clone();
        c.attach(request(req, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| AgentError::cri("Attach", &id, s))
    }

    async fn port_forward(&self, req: v1::PortForwardRequest) -> Result<String, AgentError> {
        let id = req.pod_sandbox_id.clone();
        let mut c = self.runtime.clone();
        c.port_forward(request(req, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| AgentError::cri("PortForward", &id, s))
    }

    async fn pod_events(&self) -> Result<Option<super::PodEvents>, AgentError> {
        use futures::StreamExt as _;
        let mut c = self.runtime.clone();
        // No deadline: the stream lasts as long as the runtime serves it.
        match c.get_container_events(v1::GetEventsRequest {}).await {
            Ok(r) => Ok(Some(
                r.into_inner()
                    .map(|ev| match ev {
                        Ok(ev) => Ok(ev
                            .pod_sandbox_status
                            .and_then(|s| s.metadata)
                            .map(|m| m.uid)
                            .unwrap_or_default()),
                        Err(s) => Err(AgentError::cri("GetContainerEvents", "", s)),
                    })
                    .boxed(),
            )),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
            Err(s) => Err(AgentError::cri("GetContainerEvents", "", s)),
        }
    }

    async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, AgentError> {
        let msg = v1::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let mut c = self.runtime.clone();
        let resp = c
            .container_status(request(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| AgentError::cri("ContainerStatus", format!("container {id}"), s))?;
        resp.into_inner().status.ok_or_else(|| AgentError::Cri {
            op: "ContainerStatus",
            target: format!("container {id}"),
            code: tonic::Code::Internal,
            message: "response has no status".to_owned(),
        })
    }

    async fn list_images(&self) -> Result<Vec<v1::Image>, AgentError> {
        let mut c = self.image.clone();
        let msg = v1::ListImagesRequest { filter: None };
        match c.list_images(request(msg, CALL_TIMEOUT)).await {
            Ok(r) => Ok(r.into_inner().images),
            Err(s) => Err(AgentError::cri("ListImages", "every image".to_owned(), s)),
        }
    }

    async fn image_status(&self, image: &str) -> Result<Option<v1::Image>, AgentError> {
        let msg = v1::ImageStatusRequest {
            image: Some(v1::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let mut c = self.image.clone();
        match c.image_status(request(msg, CALL_TIMEOUT)).await {
            Ok(r) => Ok(r.into_inner().image),
            // Some runtimes answer NotFound rather than an empty response.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(AgentError::cri("ImageStatus", format!("image {image}"), s)),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<v1::PodSandboxConfig>,
        auth: Option<v1::AuthConfig>,
    ) -> Result<String, AgentError> {
        let msg = v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: image.to_owned(),
                user_specified_image: image.to_owned(),
                ..Default::default()
            }),
            auth,
            sandbox_config,
        };
        let mut c = self.image.clone();
        c.pull_image(request(msg, PULL_TIMEOUT))
            .await
            .map(|r| r.into_inner().image_ref)
            .map_err(|s| AgentError::ImagePull {
                image: image.to_owned(),
                message: s.message().to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::{RuntimeService, RuntimeServiceServer};
    use tonic::{Request, Response, Status};

    /// A runtime that answers `Version` and `ContainerStatus` (NotFound); nothing else.
    struct TinyRuntime;

    /// Writes the impl with every call but the two below answering `Unimplemented`; the whole
    /// impl comes out of the macro so `async_trait` sees the expanded methods.
    macro_rules! tiny_runtime {
        ($($name:ident: $req:ident -> $resp:ident;)*) => {
            #[tonic::async_trait]
            impl RuntimeService for TinyRuntime {
                async fn version(
                    &self,
                    _: Request<v1::VersionRequest>,
                ) -> Result<Response<v1::VersionResponse>, Status> {
                    Ok(Response::new(v1::VersionResponse {
                        version: "0.1.0".to_owned(),
                        runtime_name: "tiny".to_owned(),
                        runtime_version: "9.9".to_owned(),
                        runtime_api_version: "v1".to_owned(),
                    }))
                }

                async fn container_status(
                    &self,
                    req: Request<v1::ContainerStatusRequest>,
                ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
                    Err(Status::not_found(format!(
                        "container {} not found",
                        req.into_inner().container_id
                    )))
                }

                type GetContainerEventsStream = futures::stream::Empty<
                    Result<v1::ContainerEventResponse, Status>,
                >;

                async fn get_container_events(
                    &self,
                    _: Request<v1::GetEventsRequest>,
                ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
                    Err(Status::unimplemented("get_container_events"))
                }

                $(async fn $name(&self, _: Request<v1::$req>) -> Result<Response<v1::$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                })*
            }
        };
    }

    tiny_runtime! {
        run_pod_sandbox: RunPodSandboxRequest -> RunPodSandboxResponse;
        stop_pod_sandbox: StopPodSandboxRequest -> StopPodSandboxResponse;
        remove_pod_sandbox: RemovePodSandboxRequest -> RemovePodSandboxResponse;
        pod_sandbox_status: PodSandboxStatusRequest -> PodSandboxStatusResponse;
        list_pod_sandbox: ListPodSandboxRequest -> ListPodSandboxResponse;
        create_container: CreateContainerRequest -> CreateContainerResponse;
        start_container: StartContainerRequest -> StartContainerResponse;
        stop_container: StopContainerRequest -> StopContainerResponse;
        remove_container: RemoveContainerRequest -> RemoveContainerResponse;
        list_containers: ListContainersRequest -> ListContainersResponse;
        status: StatusRequest -> StatusResponse;
        update_runtime_config: UpdateRuntimeConfigRequest -> UpdateRuntimeConfigResponse;
        update_container_resources: UpdateContainerResourcesRequest -> UpdateContainerResourcesResponse;
        reopen_container_log: ReopenContainerLogRequest -> ReopenContainerLogResponse;
        container_stats: ContainerStatsRequest -> ContainerStatsResponse;
        list_container_stats: ListContainerStatsRequest -> ListContainerStatsResponse;
        pod_sandbox_stats: PodSandboxStatsRequest -> PodSandboxStatsResponse;
        list_pod_sandbox_stats: ListPodSandboxStatsRequest -> ListPodSandboxStatsResponse;
        runtime_config: RuntimeConfigRequest -> RuntimeConfigResponse;
        exec_sync: ExecSyncRequest -> ExecSyncResponse;
        exec: ExecRequest -> ExecResponse;
        attach: AttachRequest -> AttachResponse;
        port_forward: PortForwardRequest -> PortForwardResponse;
    }

    #[tokio::test]
    async fn talks_cri_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("cri.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RuntimeServiceServer::new(TinyRuntime))
                .serve_with_incoming(incoming),
        );

        let cri = GrpcCri::connect_lazy(&socket).expect("client");
        let v = cri.version().await.expect("version");
        assert_eq!(
            (v.runtime_name.as_str(), v.runtime_version.as_str()),
            ("tiny", "9.9")
        );
        let err = cri.container_status("c1").await.expect_err("not found");
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("container c1"), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_hang() {
        let cri = GrpcCri::connect_lazy(Path::new("/nonexistent/cri.sock")).expect("lazy client");
        let err = cri.version().await.expect_err("no runtime");
        assert!(
            matches!(err, AgentError::Cri { op: "Version", .. }),
            "{err}"
        );
    }
}
