//! Turns a Pod's spec into CRI requests: the sandbox config (`RunPodSandbox`) and each
//! container's config (`CreateContainer`), the way the kubelet's kuberuntime does.

use crate::AgentError;
use crate::cri::{self, v1};
use crate::env::{Environment, expand_command};
use crate::quantity;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Grace period when neither the deletion nor the spec names one (the API default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Where `Localhost` seccomp profiles live (the kubelet's default `<root-dir>/seccomp`).
pub const SECCOMP_PROFILE_ROOT: &str = "/var/lib/kubelet/seccomp";

/// `<namespace>/<name>` for logs and errors.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's log directory: `<root>/<namespace>_<name>_<uid>` (kubelet's layout).
pub fn pod_log_dir(root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{name}_{uid}"))
}

/// A container's log file relative to the pod log dir: `<container>/<restartCount>.log`.
pub fn container_log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

pub fn host_network(spec: &PodSpec) -> bool {
    spec.host_network.unwrap_or(false)
}

/// Seconds the runtime waits between SIGTERM and SIGKILL when this pod is deleted.
pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

fn namespace_options(spec: &PodSpec) -> v1::NamespaceOption {
    let mode = |host: Option<bool>, otherwise: v1::NamespaceMode| {
        if host.unwrap_or(false) {
            v1::NamespaceMode::Node
        } else {
            otherwise
        }
    };
    let pid_default = if spec.share_process_namespace.unwrap_or(false) {
        v1::NamespaceMode::Pod
    } else {
        v1::NamespaceMode::Container
    };
    v1::NamespaceOption {
        network: mode(spec.host_network, v1::NamespaceMode::Pod).into(),
        pid: mode(spec.host_pid, pid_default).into(),
        ipc: mode(spec.host_ipc, v1::NamespaceMode::Pod).into(),
        target_id: String::new(),
    }
}

/// The identifying labels every sandbox and container carries.
fn pod_labels(pod: &Pod, node: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let meta = &pod.metadata;
    labels.insert(
        cri::LABEL_POD_NAME.to_owned(),
        meta.name.clone().unwrap_or_default(),
    );
    labels.insert(
        cri::LABEL_POD_NAMESPACE.to_owned(),
        meta.namespace.clone().unwrap_or_default(),
    );
    labels.insert(
        cri::LABEL_POD_UID.to_owned(),
        meta.uid.clone().unwrap_or_default(),
    );
    labels.insert(cri::LABEL_NODE.to_owned(), node.to_owned());
    labels
}

/// The `RunPodSandbox` config for attempt `attempt` of this pod.
pub fn sandbox_config(
    pod: &Pod,
    node: &str,
    log_root: &Path,
    attempt: u32,
    dns: &crate::dns::resolv::NodeDns,
) -> Result<v1::PodSandboxConfig, AgentError> {
    let key = pod_key(pod);
    let spec = pod.spec.as_ref().ok_or_else(|| AgentError::InvalidPod {
        pod: key.clone(),
        reason: "no spec".to_owned(),
    })?;
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let uid = meta.uid.clone().ok_or_else(|| AgentError::InvalidPod {
        pod: key,
        reason: "no metadata.uid".to_owned(),
    })?;
    // Host-network pods share the node's UTS namespace: setting a hostname would rename the host.
    let hostname = if host_network(spec) {
        String::new()
    } else {
        spec.hostname.clone().unwrap_or_else(|| name.clone())
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| v1::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => v1::Protocol::Udp,
                Some("SCTP") => v1::Protocol::Sctp,
                _ => v1::Protocol::Tcp,
            }
            .into(),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let psc = spec.security_context.as_ref();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    Ok(v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: pod_log_dir(log_root, &namespace, &name, &uid)
            .to_string_lossy()
            .into_owned(),
        dns_config: Some(crate::dns::resolv::pod_dns_config(spec, &namespace, dns)),
        port_mappings,
        labels: pod_labels(pod, node),
        annotations: meta
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(v1::LinuxPodSandboxConfig {
            // A cgroup prefix skiff owns (DESIGN.md): the runtime nests containers under it.
            cgroup_parent: format!("/skiff/{uid}"),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(spec)),
                run_as_user: psc
                    .and_then(|s| s.run_as_user)
                    .map(|value| v1::Int64Value { value }),
                run_as_group: psc
                    .and_then(|s| s.run_as_group)
                    .map(|value| v1::Int64Value { value }),
                supplemental_groups: psc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                privileged,
                seccomp: Some(seccomp_profile(
                    psc.and_then(|s| s.seccomp_profile.as_ref()),
                    privileged,
                )),
                ..Default::default()
            }),
            sysctls: psc
                .and_then(|s| s.sysctls.as_ref())
                .map(|v| {
                    v.iter()
                        .map(|s| (s.name.clone(), s.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }),
    })
}

/// The CRI seccomp profile for a Kubernetes `seccompProfile`. Unset means RuntimeDefault: skiff
/// runs as the kubelet does with `--seccomp-default` (Kubernetes 1.27+), since a runtime that is
/// secure by default should not need a flag for it. Privileged containers run unconfined.
pub fn seccomp_profile(
    p: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    privileged: bool,
) -> v1::SecurityProfile {
    use v1::security_profile::ProfileType;
    let (kind, localhost_ref) = match p.map(|p| (p.type_.as_str(), p.localhost_profile.as_ref())) {
        _ if privileged => (ProfileType::Unconfined, String::new()),
        Some(("Unconfined", _)) => (ProfileType::Unconfined, String::new()),
        Some(("Localhost", Some(rel))) => (
            ProfileType::Localhost,
            Path::new(SECCOMP_PROFILE_ROOT)
                .join(rel.trim_start_matches('/'))
                .display()
                .to_string(),
        ),
        _ => (ProfileType::RuntimeDefault, String::new()),
    };
    v1::SecurityProfile {
        profile_type: kind.into(),
        localhost_ref,
    }
}

/// Whether the container's or else the pod's security context sets `runAsNonRoot`.
pub fn run_as_non_root(pod: &Pod, container: &Container) -> bool {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or_else(|| psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false)
}

/// The kubelet's runAsNonRoot check, made before CreateContainer with the image's user as
/// ImageStatus reports it (`uid`, or a non-numeric `username`).
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_username: &str,
) -> Result<(), AgentError> {
    if !run_as_non_root(pod, container) {
        return Ok(());
    }
    let csc = container.security_context.as_ref();
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let who = format!("(pod: {:?}, container: {})", pod_key(pod), container.name);
    let reason = match csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user))
    {
        Some(0) => format!("container's runAsUser breaks non-root policy {who}"),
        Some(_) => return Ok(()),
        None => match image_uid {
            Some(0) => format!("container has runAsNonRoot and image will run as root {who}"),
            Some(_) => return Ok(()),
            None if !image_username.is_empty() => format!(
                "container has runAsNonRoot and image has non-numeric user ({image_username}), cannot verify user is non-root {who}"
            ),
            None => return Ok(()),
        },
    };
    Err(AgentError::RunAsNonRoot {
        pod: pod_key(pod),
        reason,
    })
}

fn invalid(pod: &Pod, container: &str, e: AgentError) -> AgentError {
    AgentError::InvalidPod {
        pod: pod_key(pod),
        reason: format!("container {container}: {e}"),
    }
}

/// CRI Linux resources from the container's requests and limits.
pub fn resources(
    pod: &Pod,
    container: &Container,
) -> Result<v1::LinuxContainerResources, AgentError> {
    let res = container.resources.as_ref();
    let get = |which: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
               key: &str| which.and_then(|m| m.get(key)).map(|q| q.0.clone());
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let err = |e| invalid(pod, &container.name, e);

    let memory_limit = match get(limits, "memory") {
        Some(q) => quantity::to_value(&q).map_err(err)?,
        None => 0,
    };
    let cpu_limit_milli = match get(limits, "cpu") {
        Some(q) => quantity::to_milli(&q).map_err(err)?,
        None => 0,
    };
    // The API server defaults requests to limits; do the same for objects it did not default.
    let cpu_request_milli = match get(requests, "cpu") {
        Some(q) => quantity::to_milli(&q).map_err(err)?,
        None => cpu_limit_milli,
    };
    let cpu_quota = quantity::milli_cpu_to_quota(cpu_limit_milli);
    Ok(v1::LinuxContainerResources {
        cpu_period: if cpu_quota > 0 {
            quantity::CPU_PERIOD_US
        } else {
            0
        },
        cpu_quota,
        cpu_shares: quantity::milli_cpu_to_shares(cpu_request_milli),
        memory_limit_in_bytes: memory_limit,
        ..Default::default()
    })
}

/// Whether the container may gain privileges (setuid binaries, file capabilities).
fn escalation_allowed(container: &Container) -> bool {
    let sc = container.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let sys_admin = sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.as_ref())
        .is_some_and(|a| a.iter().any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"));
    sc.and_then(|s| s.allow_privilege_escalation)
        .unwrap_or(false)
        || privileged
        || sys_admin
}

/// The kubelet's managed hosts file for a pod with `hostAliases` (`None` without): localhost
/// entries (the node's file for hostNetwork pods), the pod's IP and hostname, then the aliases.
pub fn hosts_file(pod: &Pod, ips: &[String], node_hosts: Option<&str>) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let aliases = spec.host_aliases.as_ref().filter(|a| !a.is_empty())?;
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    match node_hosts {
        Some(h) => out.push_str(h),
        None => {
            out.push_str(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
                 fe00::2\tip6-allrouters\n",
            );
            let name = spec
                .hostname
                .clone()
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default();
            if let Some(ip) = ips.first() {
                out.push_str(&format!("{ip}\t{name}\n"));
            }
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&format!(
            "{}\t{}\n",
            a.ip,
            a.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    Some(out)
}

/// What a container is created with besides its spec: its environment (see `env`) and its
/// mounts (see `volumes`).
#[derive(Debug, Clone, Default)]
pub struct ContainerInputs {
    pub env: Environment,
    pub mounts: Vec<v1::Mount>,
}

/// The `CreateContainer` config for attempt `attempt` of `container`.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    node: &str,
    attempt: u32,
    inputs: ContainerInputs,
) -> Result<v1::ContainerConfig, AgentError> {
    let spec = pod.spec.as_ref().ok_or_else(|| AgentError::InvalidPod {
        pod: pod_key(pod),
        reason: "no spec".to_owned(),
    })?;
    let image = container.image.clone().unwrap_or_default();
    let command = expand_command(
        container.command.as_deref().unwrap_or_default(),
        &inputs.env,
    );
    let args = expand_command(container.args.as_deref().unwrap_or_default(), &inputs.env);
    let envs = inputs
        .env
        .vars
        .into_iter()
        .map(|(key, value)| v1::KeyValue { key, value })
        .collect();
    let mut labels = pod_labels(pod, node);
    labels.retain(|k, _| k.starts_with("io.kubernetes.") || k == cri::LABEL_NODE);
    labels.insert(cri::LABEL_CONTAINER_NAME.to_owned(), container.name.clone());
    let csc = container.security_context.as_ref();
    let psc = spec.security_context.as_ref();
    let capabilities = csc
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| v1::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: vec![],
        });
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(v1::ImageSpec {
            image: image.clone(),
            user_specified_image: image,
            ..Default::default()
        }),
        // The runtime applies the image's entrypoint rule to what is left empty.
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        mounts: inputs.mounts,
        labels,
        annotations: HashMap::from([(
            "io.kubernetes.container.restartCount".to_owned(),
            attempt.to_string(),
        )]),
        log_path: container_log_path(&container.name, attempt),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources(pod, container)?),
            security_context: Some(v1::LinuxContainerSecurityContext {
                capabilities,
                privileged: csc.and_then(|s| s.privileged).unwrap_or(false),
                namespace_options: Some(namespace_options(spec)),
                run_as_user: csc
                    .and_then(|s| s.run_as_user)
                    .or_else(|| psc.and_then(|s| s.run_as_user))
                    .map(|value| v1::Int64Value { value }),
                run_as_group: csc
                    .and_then(|s| s.run_as_group)
                    .or_else(|| psc.and_then(|s| s.run_as_group))
                    .map(|value| v1::Int64Value { value }),
                readonly_rootfs: csc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                supplemental_groups: psc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                // no_new_privs unless escalation is explicitly allowed (or implied by
                // privileged or CAP_SYS_ADMIN, as the API server's defaulting treats them).
                no_new_privs: !escalation_allowed(container),
                seccomp: Some(seccomp_profile(
                    csc.and_then(|s| s.seccomp_profile.as_ref())
                        .or_else(|| psc.and_then(|s| s.seccomp_profile.as_ref())),
                    csc.and_then(|s| s.privileged).unwrap_or(false),
                )),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// `imagePullPolicy`, defaulted as the API server does: `Always` for `:latest` or untagged
/// images, `IfNotPresent` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

pub fn pull_policy(container: &Container) -> PullPolicy {
    match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => {
            let image = container.image.as_deref().unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or(image);
            let tag = last.split_once(':').map(|(_, t)| t);
            if image.contains('@') || tag.is_some_and(|t| t != "latest") {
                PullPolicy::IfNotPresent
            } else {
                PullPolicy::Always
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn pod_with(container: Container) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".to_owned());
        pod.metadata.namespace = Some("default".to_owned());
        pod.metadata.uid = Some("u1".to_owned());
        pod.spec = Some(PodSpec {
            containers: vec![container],
            ..Default::default()
        });
        pod
    }

    fn q(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                .collect(),
        )
    }

    #[test]
    fn resources_from_requests_and_limits() {
        let c = Container {
            name: "app".to_owned(),
            resources: Some(ResourceRequirements {
                limits: q(&[("cpu", "1500m"), ("memory", "64Mi")]),
                requests: q(&[("cpu", "250m")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = resources(&pod_with(c.clone()), &c).expect("resources");
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 150_000);
        assert_eq!(r.cpu_period, 100_000);
    }

    #[test]
    fn no_resources_is_best_effort() {
        let c = Container {
            name: "app".to_owned(),
            ..Default::default()
        };
        let r = resources(&pod_with(c.clone()), &c).expect("resources");
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes
            ),
            (2, 0, 0, 0)
        );
    }

    #[test]
    fn bad_quantity_names_the_container() {
        let c = Container {
            name: "app".to_owned(),
            resources: Some(ResourceRequirements {
                limits: q(&[("memory", "lots")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = resources(&pod_with(c.clone()), &c).expect_err("invalid");
        assert!(e.to_string().contains("container app"), "{e}");
    }

    #[test]
    fn pull_policy_defaults() {
        let with = |image: &str| Container {
            image: Some(image.to_owned()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&with("busybox")), PullPolicy::Always);
        assert_eq!(pull_policy(&with("busybox:latest")), PullPolicy::Always);
        assert_eq!(pull_policy(&with("busybox:1.36")), PullPolicy::IfNotPresent);
        assert_eq!(
            pull_policy(&with("localhost:5000/busybox")),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&with("r/b@sha256:abc")),
            PullPolicy::IfNotPresent
        );
    }

    fn secured(sc: k8s_openapi::api::core::v1::SecurityContext) -> Container {
        Container {
            name: "c".to_owned(),
            security_context: Some(sc),
            ..Default::default()
        }
    }

    fn linux_sc(pod: &Pod, c: &Container) -> v1::LinuxContainerSecurityContext {
        container_config(pod, c, "n1", 0, ContainerInputs::default())
            .expect("config")
            .linux
            .and_then(|l| l.security_context)
            .expect("security context")
    }

    #[test]
    fn seccomp_defaults_to_runtime_default_and_honours_the_spec() {
        use k8s_openapi::api::core::v1::{SeccompProfile, SecurityContext};
        use v1::security_profile::ProfileType;
        let c = Container::default();
        let pod = pod_with(c.clone());
        let sc = linux_sc(&pod, &c);
        assert_eq!(
            sc.seccomp.expect("seccomp").profile_type(),
            ProfileType::RuntimeDefault
        );
        assert!(sc.no_new_privs, "no_new_privs unless escalation is allowed");

        let profile = |t: &str, l: Option<&str>| SeccompProfile {
            type_: t.to_owned(),
            localhost_profile: l.map(str::to_owned),
        };
        let c = secured(SecurityContext {
            seccomp_profile: Some(profile("Unconfined", None)),
            allow_privilege_escalation: Some(true),
            ..Default::default()
        });
        let sc = linux_sc(&pod_with(c.clone()), &c);
        assert_eq!(
            sc.seccomp.expect("seccomp").profile_type(),
            ProfileType::Unconfined
        );
        assert!(!sc.no_new_privs);

        let c = secured(SecurityContext {
            seccomp_profile: Some(profile("Localhost", Some("profiles/audit.json"))),
            ..Default::default()
        });
        let p = linux_sc(&pod_with(c.clone()), &c).seccomp.expect("seccomp");
        assert_eq!(p.profile_type(), ProfileType::Localhost);
        assert_eq!(
            p.localhost_ref,
            "/var/lib/kubelet/seccomp/profiles/audit.json"
        );

        let c = secured(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let sc = linux_sc(&pod_with(c.clone()), &c);
        assert_eq!(
            sc.seccomp.expect("seccomp").profile_type(),
            ProfileType::Unconfined
        );
        assert!(!sc.no_new_privs);
    }

    #[test]
    fn pod_sysctls_go_to_the_sandbox() {
        use k8s_openapi::api::core::v1::{PodSecurityContext, Sysctl};
        let mut pod = pod_with(Container::default());
        if let Some(spec) = pod.spec.as_mut() {
            spec.security_context = Some(PodSecurityContext {
                sysctls: Some(vec![Sysctl {
                    name: "net.ipv4.ip_unprivileged_port_start".to_owned(),
                    value: "0".to_owned(),
                }]),
                ..Default::default()
            });
        }
        let cfg =
            sandbox_config(&pod, "n1", Path::new("/l"), 0, &Default::default()).expect("config");
        assert_eq!(
            cfg.linux.expect("linux").sysctls["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_image_user() {
        use k8s_openapi::api::core::v1::SecurityContext;
        let non_root = |user: Option<i64>| {
            secured(SecurityContext {
                run_as_non_root: Some(true),
                run_as_user: user,
                ..Default::default()
            })
        };
        let c = non_root(None);
        let pod = pod_with(c.clone());
        let err = verify_run_as_non_root(&pod, &c, Some(0), "").expect_err("root image");
        assert!(
            err.to_string()
                .contains("container has runAsNonRoot and image will run as root"),
            "{err}"
        );
        assert!(verify_run_as_non_root(&pod, &c, Some(1000), "").is_ok());
        let err = verify_run_as_non_root(&pod, &c, None, "nobody").expect_err("name");
        assert!(
            err.to_string().contains("non-numeric user (nobody)"),
            "{err}"
        );
        let c = non_root(Some(0));
        let err =
            verify_run_as_non_root(&pod_with(c.clone()), &c, Some(1000), "").expect_err("uid 0");
        assert!(
            err.to_string().contains("runAsUser breaks non-root policy"),
            "{err}"
        );
        let c = non_root(Some(1000));
        assert!(verify_run_as_non_root(&pod_with(c.clone()), &c, Some(0), "").is_ok());
        let plain = Container::default();
        assert!(verify_run_as_non_root(&pod_with(plain.clone()), &plain, Some(0), "").is_ok());
    }

    #[test]
    fn host_network_sandbox_has_no_hostname() {
        let mut pod = pod_with(Container::default());
        let cfg = sandbox_config(
            &pod,
            "n1",
            Path::new("/var/log/pods"),
            0,
            &Default::default(),
        )
        .expect("config");
        assert_eq!(cfg.hostname, "web");
        assert_eq!(cfg.log_directory, "/var/log/pods/default_web_u1");
        if let Some(spec) = pod.spec.as_mut() {
            spec.host_network = Some(true);
        }
        let cfg = sandbox_config(
            &pod,
            "n1",
            Path::new("/var/log/pods"),
            0,
            &Default::default(),
        )
        .expect("config");
        assert_eq!(cfg.hostname, "");
        let ns = cfg
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("ns options");
        assert_eq!(ns.network(), v1::NamespaceMode::Node);
    }

    #[test]
    fn host_aliases_make_the_kubelets_hosts_file() {
        let mut pod = pod_with(Container::default());
        assert_eq!(hosts_file(&pod, &["10.88.0.5".into()], None), None);
        if let Some(s) = pod.spec.as_mut() {
            s.host_aliases = Some(vec![k8s_openapi::api::core::v1::HostAlias {
                ip: "1.2.3.4".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            }]);
        }
        let text = hosts_file(&pod, &["10.88.0.5".into()], None).expect("a hosts file");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("\n10.88.0.5\tweb\n"), "{text}");
        assert!(
            text.ends_with("\n# Entries added by HostAliases.\n1.2.3.4\tfoo.local\tbar.local\n"),
            "{text}"
        );
        // hostNetwork: the node's file instead of localhost and the pod's own line.
        let text = hosts_file(&pod, &[], Some("127.0.0.1 node-local")).expect("a hosts file");
        assert!(text.contains("127.0.0.1 node-local\n\n# Entries added by HostAliases."));
    }
}
