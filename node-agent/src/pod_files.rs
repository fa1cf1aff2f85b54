//! Files the agent makes for a pod on the node and mounts into its containers: the kubelet's
//! managed `/etc/hosts` for pods with `hostAliases`.

use crate::AgentError;
use crate::cri::v1;
use crate::spec;
use crate::worker::NodeContext;
use k8s_openapi::api::core::v1::Pod;

/// With `hostAliases`, the pod gets the kubelet's managed hosts file, mounted at /etc/hosts
/// (the runtime's own is used otherwise).
pub fn with_hosts_file(
    node: &NodeContext,
    pod: &Pod,
    ips: &[String],
    mut config: v1::ContainerConfig,
) -> Result<v1::ContainerConfig, AgentError> {
    let Some(spec) = pod
        .spec
        .as_ref()
        .filter(|s| s.host_aliases.as_ref().is_some_and(|a| !a.is_empty()))
    else {
        return Ok(config);
    };
    // The node's file is read only for a hostNetwork pod that has aliases to add to it.
    let node_hosts = spec
        .host_network
        .unwrap_or(false)
        .then(|| std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    let Some(content) = spec::hosts_file(pod, ips, node_hosts.as_deref()) else {
        return Ok(config);
    };
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = node.pods_dir.join(uid);
    let path = dir.join("etc-hosts");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, content))
        .map_err(|source| AgentError::StateDir {
            path: path.clone(),
            source,
        })?;
    if !config
        .mounts
        .iter()
        .any(|m| m.container_path == "/etc/hosts")
    {
        config.mounts.push(v1::Mount {
            container_path: "/etc/hosts".to_owned(),
            host_path: path.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    Ok(config)
}
