//! Everything one container is created with besides its image, gathered as the kubelet's
//! `generateContainerConfig` does: the `runAsNonRoot` check against the image, the environment
//! (`env`), the mounts of its volumes and its termination message file (`volumes`), the
//! managed hosts file, then the CRI config (`spec`). Any failure here is the container's
//! `CreateContainerConfigError`.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::AgentError;
use crate::cri::{Cri, v1};
use crate::env::{self, EnvContext};
use crate::fieldref::Addresses;
use crate::pod_files::with_hosts_file;
use crate::spec::{self, ContainerInputs};
use crate::volumes::PodVolumes;
use crate::worker::NodeContext;

/// A container ready to be created.
#[derive(Debug)]
pub struct PreparedContainer {
    pub config: v1::ContainerConfig,
    /// The host file behind `terminationMessagePath`, read when the container exits.
    pub message_file: Option<PathBuf>,
}

/// The pod's addresses as the downward API gives them.
pub fn addresses(node: &NodeContext, pod: &Pod, sandbox_ips: &[String]) -> Addresses {
    let host_ip = node.node_ip.to_string();
    let host_network = pod.spec.as_ref().is_some_and(spec::host_network);
    Addresses {
        pod_ips: if host_network {
            vec![host_ip.clone()]
        } else {
            sandbox_ips.to_vec()
        },
        host_ip,
    }
}

/// Builds the CreateContainer config of attempt `attempt` of `c`.
pub async fn container<C: Cri>(
    cri: &C,
    node: &NodeContext,
    pod: &Pod,
    c: &Container,
    attempt: u32,
    sandbox_ips: &[String],
    volumes: &PodVolumes,
) -> Result<PreparedContainer, AgentError> {
    // Only asked when the pod cares: one more CRI call per start otherwise.
    if spec::run_as_non_root(pod, c) {
        let image = c.image.clone().unwrap_or_default();
        if let Some(img) = cri.image_status(&image).await? {
            spec::verify_run_as_non_root(pod, c, img.uid.map(|u| u.value), &img.username)?;
        }
    }
    let addresses = addresses(node, pod, sandbox_ips);
    let environment = env::environment(
        pod,
        c,
        EnvContext {
            objects: node.objects.as_ref(),
            addresses: &addresses,
            allocatable: node.allocatable,
        },
    )
    .await?;
    let (mounts, message_file) = node
        .volumes
        .container_mounts(pod, c, &environment, volumes)?;
    let config = spec::container_config(
        pod,
        c,
        &node.node_name,
        attempt,
        ContainerInputs {
            env: environment,
            mounts,
        },
    )?;
    let config = with_hosts_file(node, pod, sandbox_ips, config)?;
    Ok(PreparedContainer {
        config,
        message_file,
    })
}
