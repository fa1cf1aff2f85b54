//! Node registration and status: creates (or updates) the Node object with the machine's
//! capacity, addresses and system info, and refreshes its conditions (Ready from the CRI
//! runtime's status) every [`HEARTBEAT`] with a JSON merge patch on `nodes/status`.

use crate::AgentError;
use crate::cri::{Cri, v1};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the Node's conditions are re-written (lastHeartbeatTime).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
pub const KUBELET_VERSION: &str = "v1.35.0-skiff";
/// The kubelet's default pod capacity.
pub const MAX_PODS: &str = "110";

/// Facts about the machine, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    pub hostname: String,
    pub cpus: usize,
    pub memory_kib: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn read(path: &str) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|source| AgentError::Io {
        path: path.into(),
        source,
    })
}

/// `MemTotal` in KiB from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `PRETTY_NAME` from `/etc/os-release` text, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
}

fn count_cpus(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor") && l.contains(':'))
        .count()
}

impl Machine {
    /// Reads `/proc` and `/etc`. Memory and hostname are required; the rest falls back to
    /// "unknown" rather than keeping the node from registering.
    pub fn read() -> Result<Machine, AgentError> {
        let meminfo = read("/proc/meminfo")?;
        let memory_kib = parse_meminfo(&meminfo).ok_or_else(|| AgentError::Io {
            path: "/proc/meminfo".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no MemTotal line"),
        })?;
        let cpus = read("/proc/cpuinfo")
            .map(|t| count_cpus(&t))
            .ok()
            .filter(|n| *n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        let trimmed = |p: &str| read(p).map(|s| s.trim().to_owned());
        Ok(Machine {
            hostname: trimmed("/proc/sys/kernel/hostname")?,
            cpus,
            memory_kib,
            kernel_version: trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image: read("/etc/os-release")
                .ok()
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".to_owned()),
            machine_id: trimmed("/etc/machine-id").unwrap_or_default(),
            boot_id: trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        })
    }
}

/// The host's primary IPv4 address: the source address of the default route, found by
/// connecting a UDP socket (no packet is sent). 127.0.0.1 when there is no route.
pub fn primary_ip() -> IpAddr {
    let found = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    match found {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

/// The labels the agent sets on its Node.
pub fn node_labels(node_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), node_name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("beta.kubernetes.io/arch".to_owned(), "amd64".to_owned()),
    ])
}

/// Why the node is or is not Ready, from the runtime's `Status` (kubelet: RuntimeReady and
/// NetworkReady must both hold; a runtime that does not report NetworkReady is taken at its
/// word).
pub fn runtime_readiness(status: &Result<v1::RuntimeStatus, AgentError>) -> Result<(), String> {
    let status = match status {
        Ok(s) => s,
        Err(e) => return Err(format!("container runtime is down: {e}")),
    };
    let cond = |t: &str| status.conditions.iter().find(|c| c.r#type == t);
    match cond("RuntimeReady") {
        Some(c) if c.status => {}
        Some(c) => {
            return Err(format!(
                "container runtime not ready: {} {}",
                c.reason, c.message
            ));
        }
        None => return Err("container runtime status has no RuntimeReady condition".to_owned()),
    }
    match cond("NetworkReady") {
        Some(c) if !c.status => Err(format!(
            "container runtime network not ready: {} {}",
            c.reason, c.message
        )),
        _ => Ok(()),
    }
}

/// Everything the status needs besides the runtime's answer.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub machine: &'a Machine,
    pub node_ip: IpAddr,
    pub port: u16,
    pub runtime_version: &'a str,
}

/// How many images the node reports, largest first (the kubelet's `--node-status-max-images`).
pub const MAX_IMAGES: usize = 50;

/// The runtime's images as `status.images` lists them: every name (tags, then digests) with
/// the size, the largest [`MAX_IMAGES`] first; the scheduler's ImageLocality reads them.
pub fn node_images(images: Vec<v1::Image>) -> Vec<ContainerImage> {
    let mut images: Vec<v1::Image> = images
        .into_iter()
        .filter(|i| !i.repo_tags.is_empty() || !i.repo_digests.is_empty())
        .collect();
    images.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    images.truncate(MAX_IMAGES);
    images
        .into_iter()
        .map(|i| ContainerImage {
            names: Some(i.repo_tags.into_iter().chain(i.repo_digests).collect()),
            size_bytes: i64::try_from(i.size).ok(),
        })
        .collect()
}

/// The Node status the agent writes, keeping `lastTransitionTime` from `previous` while a
/// condition's status is unchanged.
pub fn node_status(
    input: &StatusInput<'_>,
    readiness: &Result<(), String>,
    previous: &[NodeCondition],
    now: &Time,
) -> NodeStatus {
    let m = input.machine;
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(m.cpus.to_string())),
        ("memory".to_owned(), Quantity(format!("{}Ki", m.memory_kib))),
        ("pods".to_owned(), Quantity(MAX_PODS.to_owned())),
    ]);
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|p| p.type_ == type_ && p.status == status)
            .and_then(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(since),
        }
    };
    let ready = match readiness {
        Ok(()) => cond(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        ),
        Err(why) => cond("Ready", false, "KubeletNotReady", why.clone()),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: input.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: m.hostname.clone(),
            },
        ]),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".to_owned(),
            ),
            cond(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".to_owned(),
            ),
            cond(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".to_owned(),
            ),
            ready,
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(input.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_owned(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: input.runtime_version.to_owned(),
            kernel_version: m.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".to_owned(),
            os_image: m.os_image.clone(),
            system_uuid: m.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node, or merges the agent's labels and `annotations` into an existing one.
/// Returns the Node (its UID owns the Lease).
pub async fn register(
    api: &Api<Node>,
    node_name: &str,
    annotations: &BTreeMap<String, String>,
    extra_labels: &BTreeMap<String, String>,
    taints: &[k8s_openapi::api::core::v1::Taint],
) -> Result<Node, AgentError> {
    let mut labels = node_labels(node_name);
    labels.extend(extra_labels.clone());
    match api
        .get_opt(node_name)
        .await
        .map_err(|e| AgentError::kube("get", "node", node_name, e))?
    {
        Some(_) => {
            let patch =
                serde_json::json!({ "metadata": { "labels": labels, "annotations": annotations } });
            api.patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| AgentError::kube("patch", "node", node_name, e))
        }
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(node_name.to_owned()),
                    labels: Some(labels),
                    annotations: Some(annotations.clone()),
                    ..Default::default()
                },
                // As the kubelet's --register-with-taints: on the Node's creation only, so a
                // taint an admin removed later stays removed.
                spec: (!taints.is_empty()).then(|| k8s_openapi::api::core::v1::NodeSpec {
                    taints: Some(taints.to_vec()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(n) => Ok(n),
                Err(kube::Error::Api(s)) if s.code == 409 => api
                    .get(node_name)
                    .await
                    .map_err(|e| AgentError::kube("get", "node", node_name, e)),
                Err(e) => Err(AgentError::kube("create", "node", node_name, e)),
            }
        }
    }
}

/// `<runtime_name>://<runtime_version>` as nodeInfo shows it.
pub fn runtime_version_string(v: &v1::VersionResponse) -> String {
    format!("{}://{}", v.runtime_name, v.runtime_version)
}

/// Writes the Node status now and every [`HEARTBEAT`] until `cancel`. Failures are logged and
/// retried on the next beat: the node going NotReady is the API server's call, not ours.
#[allow(clippy::too_many_arguments)]
pub async fn run_status_loop<C: Cri>(
    api: Api<Node>,
    cri: std::sync::Arc<C>,
    node_name: String,
    input_machine: Machine,
    node_ip: IpAddr,
    port: u16,
    kick: std::sync::Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) -> (&'static str, Result<(), AgentError>) {
    let mut previous: Vec<NodeCondition> = Vec::new();
    let mut runtime_version = String::new();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return ("node status", Ok(())),
            _ = tick.tick() => {}
            // The runtime's readiness changed (it got the node's pod subnet): say so now.
            _ = kick.notified() => {}
        }
        if runtime_version.is_empty() {
            match cri.version().await {
                Ok(v) => runtime_version = runtime_version_string(&v),
                Err(e) => tracing::warn!(node = %node_name, error = %e, "cri version failed"),
            }
        }
        let readiness = runtime_readiness(&cri.status().await);
        let input = StatusInput {
            machine: &input_machine,
            node_ip,
            port,
            runtime_version: &runtime_version,
        };
        let now = Time(jiff::Timestamp::now());
        let mut status = node_status(&input, &readiness, &previous, &now);
        match cri.list_images().await {
            Ok(images) => status.images = Some(node_images(images)),
            Err(e) => tracing::debug!(node = %node_name, error = %e, "cri list images failed"),
        }
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(&node_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                let was_ready = previous
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if was_ready != readiness.is_ok() || previous.is_empty() {
                    tracing::info!(node = %node_name, ready = readiness.is_ok(), "node status written");
                }
                previous = status.conditions.unwrap_or_default();
            }
            Err(e) => tracing::warn!(node = %node_name, error = %e, "write node status failed"),
        }
    }
}

/// Passes the Node's pod subnet (`spec.podCIDR`, from node IPAM) on to the runtime through
/// CRI UpdateRuntimeConfig, as the kubelet does, whenever it is set or changes; then `kick`s
/// the status loop, since the runtime's network is ready from then on.
pub async fn run_pod_cidr<C: Cri>(
    api: Api<Node>,
    cri: std::sync::Arc<C>,
    node_name: String,
    kick: std::sync::Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) -> (&'static str, Result<(), AgentError>) {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let stream = watcher(api, cfg).default_backoff().applied_objects();
    let mut stream = std::pin::pin!(stream);
    let mut given = String::new();
    loop {
        let node = tokio::select! {
            _ = cancel.cancelled() => return ("pod cidr", Ok(())),
            n = stream.next() => n,
        };
        let node = match node {
            None => return ("pod cidr", Ok(())),
            Some(Err(e)) => {
                tracing::debug!(node = %node_name, error = %e, "node watch error");
                continue;
            }
            Some(Ok(n)) => n,
        };
        let cidr = node.spec.and_then(|s| s.pod_cidr).unwrap_or_default();
        if cidr.is_empty() || cidr == given {
            continue;
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match cri.update_pod_cidr(&cidr).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(node = %node_name, pod_cidr = %cidr, error = %e, "cannot give the runtime the pod subnet");
                    tokio::select! {
                        _ = cancel.cancelled() => return ("pod cidr", Ok(())),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!(node = %node_name, pod_cidr = %cidr, "pod subnet given to the runtime");
        given = cidr;
        kick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_reported_largest_first_up_to_the_limit() {
        let image = |id: &str, tag: &str, size: u64| v1::Image {
            id: id.to_owned(),
            repo_tags: if tag.is_empty() {
                vec![]
            } else {
                vec![tag.to_owned()]
            },
            repo_digests: vec![format!("registry/x@sha256:{id}")],
            size,
            ..Default::default()
        };
        let mut all: Vec<v1::Image> = (0..60)
            .map(|i| image(&format!("{i:02}"), &format!("t:{i}"), 1000 + i))
            .collect();
        all.push(image("big", "", 1 << 30));
        all.push(v1::Image {
            id: "nameless".to_owned(),
            size: 1 << 40,
            ..Default::default()
        });
        let listed = node_images(all);
        assert_eq!(listed.len(), MAX_IMAGES);
        assert_eq!(
            listed[0].names.as_deref(),
            Some(&["registry/x@sha256:big".to_owned()][..]),
            "an image without tags still has its digest; one without names is left out"
        );
        assert_eq!(listed[0].size_bytes, Some(1 << 30));
        assert_eq!(
            listed[1].names.as_deref(),
            Some(&["t:59".to_owned(), "registry/x@sha256:59".to_owned()][..])
        );
        assert_eq!(listed[49].size_bytes, Some(1000 + 11));
    }

    #[test]
    fn parses_meminfo_and_os_release() {
        let meminfo = "MemTotal:       16316412 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(16_316_412));
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            count_cpus("processor\t: 0\nmodel\t: x\nprocessor\t: 1\n"),
            2
        );
    }

    #[test]
    fn this_machine_reads() {
        let m = Machine::read().expect("machine");
        assert!(m.cpus > 0 && m.memory_kib > 0, "{m:?}");
    }

    fn runtime(conds: &[(&str, bool)]) -> Result<v1::RuntimeStatus, AgentError> {
        Ok(v1::RuntimeStatus {
            conditions: conds
                .iter()
                .map(|(t, s)| v1::RuntimeCondition {
                    r#type: (*t).to_owned(),
                    status: *s,
                    ..Default::default()
                })
                .collect(),
        })
    }

    #[test]
    fn ready_follows_the_runtime() {
        assert!(
            runtime_readiness(&runtime(&[("RuntimeReady", true), ("NetworkReady", true)])).is_ok()
        );
        assert!(runtime_readiness(&runtime(&[("RuntimeReady", true)])).is_ok());
        assert!(runtime_readiness(&runtime(&[("RuntimeReady", false)])).is_err());
        assert!(
            runtime_readiness(&runtime(&[("RuntimeReady", true), ("NetworkReady", false)]))
                .is_err()
        );
        let down = Err(AgentError::Cri {
            op: "Status",
            target: "runtime".to_owned(),
            code: tonic::Code::Unavailable,
            message: "connection refused".to_owned(),
        });
        assert!(runtime_readiness(&down).is_err());
    }

    #[test]
    fn status_has_capacity_conditions_and_info() {
        let m = Machine {
            hostname: "h".to_owned(),
            cpus: 2,
            memory_kib: 1024,
            ..Default::default()
        };
        let input = StatusInput {
            machine: &m,
            node_ip: "10.0.0.2".parse().expect("ip"),
            port: 10250,
            runtime_version: "skiff://0.1.0",
        };
        let t0 = Time(jiff::Timestamp::from_second(100).expect("ts"));
        let t1 = Time(jiff::Timestamp::from_second(200).expect("ts"));
        let st = node_status(&input, &Ok(()), &[], &t0);
        let cap = st.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "1024Ki");
        assert_eq!(cap["pods"].0, "110");
        let conds = st.conditions.clone().expect("conditions");
        let ready = conds.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert_eq!(
            st.node_info
                .as_ref()
                .map(|i| i.container_runtime_version.as_str()),
            Some("skiff://0.1.0")
        );
        // A heartbeat moves lastHeartbeatTime, not lastTransitionTime.
        let st2 = node_status(&input, &Ok(()), &conds, &t1);
        let ready2 = st2
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .expect("ready");
        assert_eq!(ready2.last_transition_time, Some(t0));
        assert_eq!(ready2.last_heartbeat_time, Some(t1.clone()));
        let st3 = node_status(
            &input,
            &Err("down".to_owned()),
            &st2.conditions.unwrap_or_default(),
            &t1,
        );
        let ready3 = st3
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .expect("ready");
        assert_eq!(ready3.status, "False");
        assert_eq!(ready3.last_transition_time, Some(t1));
    }
}
