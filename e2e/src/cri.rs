//! A CRI client over a runtime's unix socket, for the conformance suite and `cri-bench`: the
//! calls they share, with sandbox and container configs as the kubelet would fill them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use cri_api::v1 as cri;
use cri_api::{ImageServiceClient, RuntimeServiceClient};
use tonic::transport::Channel;

/// Both CRI services on one connection.
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

pub fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// A pod sandbox config: `name` in namespace `ns`, its log directory under `log_root`.
pub fn sandbox_config(
    name: &str,
    uid: &str,
    ns: &str,
    log_root: &std::path::Path,
) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.to_owned(),
            namespace: ns.to_owned(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_root.join(uid).to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container `name` of `image` running `cmd`, logging to `<name>.log`.
pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: image_spec(image),
        command: cmd.iter().map(|s| (*s).to_owned()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

impl Cri {
    pub async fn connect(socket: PathBuf) -> Result<Self> {
        let ch = tonic::transport::Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await?;
        Ok(Cri {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
        })
    }

    /// RunPodSandbox, after making its log directory as the kubelet does.
    pub async fn run_pod_with(&mut self, config: &cri::PodSandboxConfig) -> Result<String> {
        std::fs::create_dir_all(&config.log_directory)
            .with_context(|| format!("create {}", config.log_directory))?;
        Ok(self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn sandbox_status(&mut self, id: &str) -> Result<cri::PodSandboxStatus> {
        self.rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .context("no sandbox status")
    }

    /// StopPodSandbox and RemovePodSandbox.
    pub async fn remove_pod(&mut self, id: &str) -> Result<()> {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await?;
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await?;
        Ok(())
    }

    pub async fn create(
        &mut self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        Ok(self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_owned(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start(&mut self, id: &str) -> Result<()> {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// CreateContainer and StartContainer.
    pub async fn run(
        &mut self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        let id = self.create(pod, pod_config, config).await?;
        self.start(&id).await?;
        Ok(id)
    }

    pub async fn status(&mut self, id: &str) -> Result<cri::ContainerStatus> {
        self.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .context("no container status")
    }

    /// Polls every `every` until the container is in `state` (at most 30 s).
    pub async fn wait_state(
        &mut self,
        id: &str,
        state: cri::ContainerState,
        every: Duration,
    ) -> Result<cri::ContainerStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.status(id).await?;
            if st.state == state as i32 {
                return Ok(st);
            }
            ensure!(
                Instant::now() < deadline,
                "container {id} never reached {state:?}: {st:?}"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// The runtime's GetContainerEvents stream, or `None` from a runtime without it
    /// (containerd 1.6 answers Unimplemented).
    pub async fn events(
        &mut self,
    ) -> Result<Option<tonic::Streaming<cri::ContainerEventResponse>>> {
        match self.rt.get_container_events(cri::GetEventsRequest {}).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    pub async fn pull(&mut self, image: &str) -> Result<String> {
        Ok(self
            .img
            .pull_image(cri::PullImageRequest {
                image: image_spec(image),
                ..Default::default()
            })
            .await?
            .into_inner()
            .image_ref)
    }

    /// ImageStatus: `None` when the image is not on the node.
    pub async fn image_status(&mut self, image: &str) -> Result<Option<cri::Image>> {
        Ok(self
            .img
            .image_status(cri::ImageStatusRequest {
                image: image_spec(image),
                verbose: false,
            })
            .await?
            .into_inner()
            .image)
    }

    pub async fn remove_image(&mut self, image: &str) -> Result<()> {
        self.img
            .remove_image(cri::RemoveImageRequest {
                image: image_spec(image),
            })
            .await?;
        Ok(())
    }
}

/// The next event on `events` of `kind` for `id` (others are skipped), within 30 s.
pub async fn next_event(
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
    id: &str,
    kind: cri::ContainerEventType,
) -> Result<cri::ContainerEventResponse> {
    let wait = async {
        loop {
            let ev = events
                .message()
                .await?
                .context("the container events stream ended")?;
            if ev.container_id == id && ev.container_event_type == kind as i32 {
                return Ok(ev);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .with_context(|| format!("no {kind:?} event for {id} within 30s"))?
}
