//! The runtime's state and operations behind the CRI services: sandboxes and containers kept in
//! memory and persisted under `<root>`, the image store, and the OS boundaries as traits.
//!
//! A container's state is split the way containerd splits it: its record and writable layer on
//! disk (`<root>/containers/<id>`), and what lives only while it can run (bundle, monitor files,
//! libcontainer's state) under the volatile `<run>` directory, a tmpfs on a real node: nothing
//! there is worth a disk write, as none of it outlives the machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cri::ContainerEventType as EventType;
use cri_api::v1 as cri;
use nix::sys::signal::Signal;

use super::events::{self, Event, Events};

use crate::container::cgroup::{self, Cgroups};
use crate::container::seccomp::{self, SeccompProfile};
use crate::container::spec::{
    self, BindMount, JoinNamespaces, PidNamespace, Propagation, Resources, SpecInput, UserRequest,
};
use crate::container::{ContainerRecord, Host, MountRecord, resolve_log_path};
use crate::error::{Result, RuntimeError};
use crate::image::ImageStore;
use crate::monitor::{EXIT_FILE, Ended, ExitRecord, Launcher, MONITOR_CONFIG, MonitorConfig};
use crate::network::{self, Attachment, Cni, PodNetwork, PortMapping};
use crate::sandbox::{self, NamespaceHelper, NsRequest, SandboxPhase, SandboxRecord};
use crate::state;

/// A container's observed state, derived from its record, its monitor's files and its pids.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// Created, StartContainer not called yet.
    Created,
    /// The monitor reported the process running and it has not exited.
    Running,
    /// It exited (or never could start); the record says how.
    Exited(ExitRecord),
}

/// How long StopContainer waits after SIGKILL before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often waits for an exit re-check the state, besides waking on the stop event.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Node-wide defaults the runtime applies to every container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDefaults {
    /// pids.max for containers whose CRI config sets none (0: no limit).
    pub pids_limit: i64,
    /// A container log file is rotated once it grows past this many bytes (0: never).
    pub log_max_size: u64,
    /// Log files kept per container, the live one included (at least 1).
    pub log_max_files: u32,
}

/// Default pids limit: generous for real workloads, small enough to stop a fork bomb.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

impl Default for ContainerDefaults {
    /// The kubelet's log defaults (`containerLogMaxSize` 10Mi, `containerLogMaxFiles` 5).
    fn default() -> Self {
        ContainerDefaults {
            pids_limit: DEFAULT_PIDS_LIMIT,
            log_max_size: 10 << 20,
            log_max_files: 5,
        }
    }
}

/// The runtime: everything the CRI services act on.
pub struct Runtime {
    defaults: ContainerDefaults,
    cgroups: Arc<dyn Cgroups>,
    /// The last CPU usage read per cgroup path (time ns, usage ns), to turn the cumulative
    /// counter into a rate (`usage_nano_cores`), as containerd keeps it.
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    root: PathBuf,
    /// Volatile task state: `containers/<id>` (bundle, monitor files) and `libcontainer/`.
    run: PathBuf,
    pub(crate) images: ImageStore,
    ns: Arc<dyn NamespaceHelper>,
    host: Arc<dyn Host>,
    launcher: Arc<dyn Launcher>,
    cni: Arc<dyn Cni>,
    sandboxes: Mutex<HashMap<String, SandboxRecord>>,
    containers: Mutex<HashMap<String, ContainerRecord>>,
    /// One operation at a time per container: a StartContainer racing a RemoveContainer must
    /// not launch a monitor for a rootfs that is being unmounted.
    ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    events: Events,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Records are replaced whole under the lock, so a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The records under `dir/<id>/`: the newest of `files` that exists in each (a started
/// container's record is `started.json`, written as a new file so that starting never frees
/// the blocks of the old one: on a disk mounted with `discard` that costs a synchronous trim).
fn load_dir<T: serde::de::DeserializeOwned>(dir: &Path, files: &[&str]) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| {
            let path = files
                .iter()
                .map(|f| e.path().join(f))
                .find(|p| p.exists())?;
            match state::read_json::<T>(&path) {
                Ok(v) => v,
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "skipping unreadable state");
                    None
                }
            }
        })
        .collect()
}

/// A container's record before and after StartContainer.
const CREATED_RECORD: &str = "state.json";
const STARTED_RECORD: &str = "started.json";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Internal(format!("blocking task: {e}")))?
}

fn new_id() -> String {
    // 32 hex characters: unique enough, and short enough for unix socket paths under the
    // libcontainer state dir (108-byte limit).
    uuid::Uuid::new_v4().simple().to_string()
}

fn to_btree(m: &HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn labels_match(selector: &HashMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The sandbox config's hostPorts in portmap's shape (mappings without a hostPort are only
/// informational).
fn host_port_mappings(config: &cri::PodSandboxConfig) -> Vec<PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Udp) => "udp",
                Ok(cri::Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .into(),
            host_ip: p.host_ip.clone(),
        })
        .collect()
}

/// A cgroup path component that cannot climb or nest.
fn cgroup_component(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The pod's cgroup, parent of its containers' ones.
fn sandbox_cgroup(sb: &SandboxRecord) -> String {
    let pod = if sb.uid.is_empty() {
        sb.id.clone()
    } else {
        cgroup_component(&sb.uid)
    };
    format!("/skiff/{pod}")
}

mod stats;

/// Where removed containers' directories wait to be deleted, under the runtime root.
const TRASH: &str = "trash";

/// Removes `dir` and everything in it; gone already is fine. The container's shim may be
/// deleting the libcontainer state at the same moment (its last step), so what vanishes midway
/// is retried rather than an error.
fn remove_tree(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if tries < 3 => tries += 1,
            Err(e) => return Err(RuntimeError::io("remove", dir)(e)),
        }
    }
}

/// At open: empties the trash of containers removed before a restart, and deletes volatile
/// state that no container record claims any more.
fn sweep_volatile(root: &Path, run: &Path, containers: &HashMap<String, ContainerRecord>) {
    let _ = remove_tree(&root.join(TRASH));
    for d in ["containers", "libcontainer"] {
        let Ok(entries) = std::fs::read_dir(run.join(d)) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !containers.contains_key(&id) {
                let _ = remove_tree(&e.path());
            }
        }
    }
}

impl Runtime {
    /// Opens the runtime state under `root` (and the volatile task state under `run`), loading
    /// persisted sandboxes and containers.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        root: &Path,
        run: &Path,
        images: ImageStore,
        ns: Arc<dyn NamespaceHelper>,
        host: Arc<dyn Host>,
        launcher: Arc<dyn Launcher>,
        cni: Arc<dyn Cni>,
    ) -> Result<Self> {
        for p in [
            root.join("sandboxes"),
            root.join("containers"),
            run.join("containers"),
            run.join("libcontainer"),
        ] {
            std::fs::create_dir_all(&p).map_err(RuntimeError::io("create dir", &p))?;
        }
        let sandboxes: HashMap<_, _> =
            load_dir::<SandboxRecord>(&root.join("sandboxes"), &["state.json"])
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect();
        let containers: HashMap<_, _> = load_dir::<ContainerRecord>(
            &root.join("containers"),
            &[STARTED_RECORD, CREATED_RECORD],
        )
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
        sweep_volatile(root, run, &containers);
        let in_use: HashSet<String> = containers
            .values()
            .flat_map(|c| c.snapshots.iter().cloned())
            .collect();
        let (blobs, snapshots) = images.sweep(&in_use)?;
        if blobs + snapshots > 0 {
            tracing::info!(
                blobs,
                snapshots,
                "removed content no image or container uses"
            );
        }
        tracing::info!(
            sandboxes = sandboxes.len(),
            containers = containers.len(),
            "runtime state loaded"
        );
        Ok(Runtime {
            defaults: ContainerDefaults::default(),
            cgroups: Arc::from(cgroup::host()),
            cpu_samples: Mutex::default(),
            root: root.to_path_buf(),
            run: run.to_path_buf(),
            images,
            ns,
            host,
            launcher,
            cni,
            sandboxes: Mutex::new(sandboxes),
            containers: Mutex::new(containers),
            ops: Mutex::default(),
            events: Events::default(),
        })
    }

    /// Replaces the node-wide container defaults.
    pub fn with_defaults(mut self, defaults: ContainerDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    /// Replaces the cgroup hierarchy stats are read from and updates written to.
    pub fn with_cgroups(mut self, cgroups: Arc<dyn Cgroups>) -> Self {
        self.cgroups = cgroups;
        self
    }

    /// cgroup limits from CRI resources, with the node's default pids limit.
    fn resources_from(&self, r: &cri::LinuxContainerResources) -> Resources {
        Resources {
            memory_limit: r.memory_limit_in_bytes,
            cpu_shares: r.cpu_shares,
            cpu_quota: r.cpu_quota,
            cpu_period: r.cpu_period,
            oom_score_adj: r.oom_score_adj,
            pids_limit: self.defaults.pids_limit,
        }
    }

    async fn op_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = lock(&self.ops).entry(id.to_string()).or_default().clone();
        m.lock_owned().await
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    /// The container's record and writable layer (disk).
    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// The volatile task state directory.
    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// The container's bundle and monitor files (volatile).
    pub(crate) fn task_dir(&self, id: &str) -> PathBuf {
        self.run.join("containers").join(id)
    }

    fn save_sandbox(&self, s: &SandboxRecord) -> Result<()> {
        state::write_json(&self.sandbox_dir(&s.id).join("state.json"), s)?;
        lock(&self.sandboxes).insert(s.id.clone(), s.clone());
        Ok(())
    }

    fn save_container(&self, c: &ContainerRecord) -> Result<()> {
        let file = if c.started_at == 0 {
            CREATED_RECORD
        } else {
            STARTED_RECORD
        };
        state::write_json_unsynced(&self.container_dir(&c.id).join(file), c)?;
        lock(&self.containers).insert(c.id.clone(), c.clone());
        Ok(())
    }

    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        lock(&self.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::not_found("sandbox", id))
    }

    pub fn container(&self, id: &str) -> Result<ContainerRecord> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::not_found("container", id))
    }

    // ---- sandboxes ----

    /// RunPodSandbox.
    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String> {
        let meta = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("sandbox config has no metadata".into())
        })?;
        if meta.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "sandbox metadata has no name".into(),
            ));
        }
        let nsopts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let host_network = nsopts.network == cri::NamespaceMode::Node as i32;
        let host_ipc = nsopts.ipc == cri::NamespaceMode::Node as i32;
        let sysctls: BTreeMap<String, String> = config
            .linux
            .as_ref()
            .map(|l| to_btree(&l.sysctls))
            .unwrap_or_default();
        for name in sysctls.keys() {
            spec::check_sysctl(name, host_network, host_ipc)?;
        }
        // Before anything is made: a node whose network is not ready runs no pod networks.
        let net_config = if host_network {
            None
        } else {
            let cni = self.cni.clone();
            Some(blocking(move || cni.network()).await?)
        };
        let hostname = if host_network {
            None
        } else if config.hostname.is_empty() {
            Some(meta.name.clone())
        } else {
            Some(config.hostname.clone())
        };
        let id = new_id();
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create dir", &dir))?;
        let req = NsRequest {
            private_net: !host_network,
            private_ipc: !host_ipc,
            hostname: hostname.clone(),
            shared_pid: nsopts.pid == cri::NamespaceMode::Pod as i32,
        };
        let ns = self.ns.clone();
        let ns_dir = dir.join("ns");
        let created = blocking(move || ns.create(&ns_dir, &req)).await;
        let ns_paths = match created {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let dns = config.dns_config.clone().unwrap_or_default();
        let resolv_conf =
            match sandbox::write_resolv_conf(&dir, &dns.servers, &dns.searches, &dns.options) {
                Ok(r) => r,
                Err(e) => {
                    let _ = self.ns.release(&ns_paths);
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            };
        let host_hosts = host_network.then(|| std::fs::read_to_string("/etc/hosts").ok());
        let host_hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let (etc_hosts, etc_hostname) = match sandbox::write_etc_files(
            &dir,
            hostname.as_deref().unwrap_or_default(),
            host_hosts.flatten().as_deref(),
            &host_hostname,
        ) {
            Ok(files) => files,
            Err(e) => {
                let _ = self.ns.release(&ns_paths);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let network = match (net_config, &ns_paths.net) {
            (Some(net), Some(netns)) => Some(PodNetwork {
                attachment: Attachment {
                    container_id: id.clone(),
                    netns: netns.clone(),
                    ifname: network::POD_IFNAME.into(),
                    args: vec![
                        ("K8S_POD_NAMESPACE".into(), meta.namespace.clone()),
                        ("K8S_POD_NAME".into(), meta.name.clone()),
                        ("K8S_POD_INFRA_CONTAINER_ID".into(), id.clone()),
                        ("K8S_POD_UID".into(), meta.uid.clone()),
                    ],
                    port_mappings: host_port_mappings(&config),
                },
                config: net,
                result: None,
            }),
            _ => None,
        };
        let mut record = SandboxRecord {
            id: id.clone(),
            name: meta.name,
            uid: meta.uid,
            namespace: meta.namespace,
            attempt: meta.attempt,
            hostname: hostname.unwrap_or_default(),
            log_directory: config.log_directory.clone(),
            labels: to_btree(&config.labels),
            annotations: to_btree(&config.annotations),
            runtime_handler,
            host_network,
            created_at: state::now_ns(),
            // Ready once its network is: a crash during ADD leaves a sandbox that the kubelet
            // removes, and whose removal runs DEL.
            phase: if network.is_some() {
                SandboxPhase::NotReady
            } else {
                SandboxPhase::Ready
            },
            ns: ns_paths,
            resolv_conf,
            etc_hosts: Some(etc_hosts),
            etc_hostname: Some(etc_hostname),
            sysctls,
            network,
        };
        if let Err(e) = self.save_sandbox(&record) {
            self.discard_sandbox(&record).await;
            return Err(e);
        }
        if let Some(pn) = record.network.clone() {
            let cni = self.cni.clone();
            let added = blocking(move || cni.add(&pn.config, &pn.attachment)).await;
            let result = match added {
                Ok(r) => r,
                Err(e) => {
                    // ADD undid itself; what is left is the namespaces and the record.
                    record.network = None;
                    self.discard_sandbox(&record).await;
                    return Err(e);
                }
            };
            if let Some(pn) = record.network.as_mut() {
                pn.result = Some(result);
            }
            record.phase = SandboxPhase::Ready;
            if let Err(e) = self.save_sandbox(&record) {
                self.discard_sandbox(&record).await;
                return Err(e);
            }
        }
        let ips = record
            .network
            .as_ref()
            .map(PodNetwork::ips)
            .unwrap_or_default();
        // The pod's own name resolves to its IP, as in the kubelet's hosts file.
        if let (Some(hosts), Some(ip)) = (&record.etc_hosts, ips.first())
            && !record.hostname.is_empty()
            && let Err(e) = sandbox::add_host_entry(hosts, ip, &record.hostname)
        {
            tracing::warn!(sandbox = %id, error = %e, "the pod's name is not in its hosts file");
        }
        tracing::info!(sandbox = %id, pod = %record.name, namespace = %record.namespace, host_network, ips = ?ips, "sandbox ready");
        self.events.send(&id, &id, EventType::ContainerCreatedEvent);
        self.events.send(&id, &id, EventType::ContainerStartedEvent);
        Ok(id)
    }

    /// Undoes a RunPodSandbox that failed part-way: DEL (if the record still has a network),
    /// the namespaces, the directory and the record. Errors are logged: the caller returns
    /// the one that made it give up.
    async fn discard_sandbox(&self, record: &SandboxRecord) {
        if let Err(e) = self.teardown_network(record).await {
            tracing::warn!(sandbox = %record.id, error = %e, "cni del of a failed sandbox failed");
        }
        if let Err(e) = self.ns.release(&record.ns) {
            tracing::warn!(sandbox = %record.id, error = %e, "release namespaces of a failed sandbox failed");
        }
        let _ = std::fs::remove_dir_all(self.sandbox_dir(&record.id));
        lock(&self.sandboxes).remove(&record.id);
    }

    /// Runs CNI DEL for the sandbox's network, if it has one.
    async fn teardown_network(&self, record: &SandboxRecord) -> Result<()> {
        let Some(pn) = record.network.clone() else {
            return Ok(());
        };
        let cni = self.cni.clone();
        blocking(move || cni.del(&pn.config, &pn.attachment, pn.result.as_ref())).await
    }

    /// UpdateRuntimeConfig: the node's pod subnet.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        self.cni.set_pod_cidr(cidr)
    }

    /// Whether pod networks can be set up now (the Status RPC's NetworkReady).
    pub fn network_status(&self) -> Result<()> {
        self.cni.network().map(|_| ())
    }

    fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        lock(&self.containers)
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }

    /// StopPodSandbox: stops every container (SIGKILL, as containerd does), tears its network
    /// down (CNI DEL, which releases its address) and marks it not ready.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let _op = self.op_lock(id).await;
        let mut sb = self.sandbox(id)?;
        for c in self.containers_of(id) {
            self.stop_container(&c, 0).await?;
        }
        self.teardown_network(&sb).await?;
        if sb.phase != SandboxPhase::NotReady || sb.network.is_some() {
            sb.phase = SandboxPhase::NotReady;
            sb.network = None;
            self.save_sandbox(&sb)?;
            self.events.send(id, id, EventType::ContainerStoppedEvent);
        }
        tracing::info!(sandbox = %id, "sandbox stopped");
        Ok(())
    }

    /// RemovePodSandbox: removes its containers, releases its namespaces, deletes its state.
    /// Removing an unknown sandbox is not an error (CRI semantics).
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let op = self.op_lock(id).await;
        let Ok(mut sb) = self.sandbox(id) else {
            return Ok(());
        };
        for c in self.containers_of(id) {
            self.remove_container(&c).await?;
        }
        // Not stopped first, or its DEL failed then: the network goes before its namespace,
        // while the plugins can still find the pod's interface and its rules.
        if sb.network.is_some() {
            self.teardown_network(&sb).await?;
            sb.network = None;
            sb.phase = SandboxPhase::NotReady;
            self.save_sandbox(&sb)?;
        }
        let ns = self.ns.clone();
        let paths = sb.ns.clone();
        blocking(move || ns.release(&paths)).await?;
        let dir = self.sandbox_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(RuntimeError::io("remove", &dir))?;
        }
        lock(&self.sandboxes).remove(id);
        drop(op);
        lock(&self.ops).remove(id);
        tracing::info!(sandbox = %id, "sandbox removed");
        self.events.send(id, id, EventType::ContainerDeletedEvent);
        Ok(())
    }

    fn sandbox_state(s: &SandboxRecord) -> cri::PodSandboxState {
        match s.phase {
            SandboxPhase::Ready => cri::PodSandboxState::SandboxReady,
            SandboxPhase::NotReady => cri::PodSandboxState::SandboxNotready,
        }
    }

    fn sandbox_metadata(s: &SandboxRecord) -> cri::PodSandboxMetadata {
        cri::PodSandboxMetadata {
            name: s.name.clone(),
            uid: s.uid.clone(),
            namespace: s.namespace.clone(),
            attempt: s.attempt,
        }
    }

    /// PodSandboxStatus.
    pub fn pod_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus> {
        let s = self.sandbox(id)?;
        let mut ips = if s.host_network {
            vec![sandbox::ns::primary_ipv4()]
        } else {
            s.network.as_ref().map(PodNetwork::ips).unwrap_or_default()
        }
        .into_iter();
        let ip = ips.next().unwrap_or_default();
        let additional_ips = ips.map(|ip| cri::PodIp { ip }).collect();
        let mode = |private: bool| {
            if private {
                cri::NamespaceMode::Pod as i32
            } else {
                cri::NamespaceMode::Node as i32
            }
        };
        Ok(cri::PodSandboxStatus {
            id: s.id.clone(),
            metadata: Some(Self::sandbox_metadata(&s)),
            state: Self::sandbox_state(&s) as i32,
            created_at: s.created_at,
            network: Some(cri::PodSandboxNetworkStatus { ip, additional_ips }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: mode(s.ns.net.is_some()),
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: mode(s.ns.ipc.is_some()),
                        target_id: String::new(),
                    }),
                }),
            }),
            labels: to_hash(&s.labels),
            annotations: to_hash(&s.annotations),
            runtime_handler: s.runtime_handler.clone(),
        })
    }

    /// ListPodSandbox.
    pub fn list_pod_sandbox(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let filter = filter.unwrap_or_default();
        let mut out: Vec<_> = lock(&self.sandboxes)
            .values()
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|st| st.state == Self::sandbox_state(s) as i32)
            })
            .filter(|s| labels_match(&filter.label_selector, &s.labels))
            .map(|s| cri::PodSandbox {
                id: s.id.clone(),
                metadata: Some(Self::sandbox_metadata(s)),
                state: Self::sandbox_state(s) as i32,
                created_at: s.created_at,
                labels: to_hash(&s.labels),
                annotations: to_hash(&s.annotations),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect();
        out.sort_by_key(|s| s.created_at);
        out
    }

    // ---- containers ----

    /// CreateContainer: resolves the image, mounts the rootfs, writes the OCI bundle.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        let sb = self.sandbox(sandbox_id)?;
        if sb.phase != SandboxPhase::Ready {
            return Err(RuntimeError::FailedPrecondition {
                kind: "sandbox",
                name: sandbox_id.to_string(),
                state: "not ready".into(),
                action: "create containers",
            });
        }
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.warm_cgroup_attach());
        let meta = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("container config has no metadata".into())
        })?;
        if meta.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container metadata has no name".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container config has no image".into(),
            ));
        }
        let image = self
            .images
            .get(&image_name)
            .ok_or_else(|| RuntimeError::not_found("image", &image_name))?;
        let lowerdirs = self.images.lowerdirs(&image)?;
        let log_path = resolve_log_path(&sb.log_directory, &config.log_path)?;

        let id = new_id();
        let dir = self.container_dir(&id);
        let task = self.task_dir(&id);
        let rootfs = dir.join("rootfs");
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let res = linux.resources.clone().unwrap_or_default();
        let user_req = UserRequest {
            run_as_user: sc.run_as_user.as_ref().map(|v| v.value),
            run_as_group: sc.run_as_group.as_ref().map(|v| v.value),
            run_as_username: sc.run_as_username.clone(),
            supplemental_groups: sc.supplemental_groups.clone(),
            image_user: image.config.user.clone(),
        };
        let passwd = spec::read_from_layers(&lowerdirs, Path::new("etc/passwd"));
        let group = spec::read_from_layers(&lowerdirs, Path::new("etc/group"));
        let user = spec::resolve_user(&user_req, &passwd, &group)?;
        let mut mounts: Vec<BindMount> = config
            .mounts
            .iter()
            .map(|m| BindMount {
                host_path: PathBuf::from(&m.host_path),
                container_path: PathBuf::from(&m.container_path),
                readonly: m.readonly,
                propagation: match cri::MountPropagation::try_from(m.propagation) {
                    Ok(cri::MountPropagation::PropagationHostToContainer) => {
                        Propagation::HostToContainer
                    }
                    Ok(cri::MountPropagation::PropagationBidirectional) => {
                        Propagation::Bidirectional
                    }
                    _ => Propagation::Private,
                },
            })
            .collect();
        // The pod's files unless the caller mounts its own (the kubelet mounts /etc/hosts).
        for (file, target) in [
            (&sb.resolv_conf, "/etc/resolv.conf"),
            (&sb.etc_hosts, "/etc/hosts"),
            (&sb.etc_hostname, "/etc/hostname"),
        ] {
            if let Some(file) = file
                && !mounts.iter().any(|m| m.container_path == Path::new(target))
            {
                mounts.push(BindMount {
                    host_path: file.clone(),
                    container_path: target.into(),
                    readonly: sc.readonly_rootfs,
                    propagation: Propagation::Private,
                });
            }
        }
        let seccomp = match &sc.seccomp {
            None => SeccompProfile::Unconfined,
            Some(p) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
                Ok(cri::security_profile::ProfileType::RuntimeDefault) => {
                    SeccompProfile::RuntimeDefault
                }
                Ok(cri::security_profile::ProfileType::Unconfined) => SeccompProfile::Unconfined,
                Ok(cri::security_profile::ProfileType::Localhost) => {
                    let path = p.localhost_ref.clone();
                    SeccompProfile::Localhost(
                        blocking(move || seccomp::load_localhost(&path)).await?,
                    )
                }
                Err(_) => {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "unknown seccomp profile type {}",
                        p.profile_type
                    )));
                }
            },
        };
        let host = self.host.clone();
        let privileged = sc.privileged;
        let (host_devices, bounding_caps) = blocking(move || {
            let devices = if privileged {
                host.devices()
            } else {
                Vec::new()
            };
            Ok((devices, host.bounding_caps()))
        })
        .await?;
        let cgroup_path = format!("{}/{id}", sandbox_cgroup(&sb));
        let caps = sc.capabilities.clone().unwrap_or_default();
        let resources = self.resources_from(&res);
        let input = SpecInput {
            image: image.config.clone(),
            command: config.command.clone(),
            args: config.args.clone(),
            envs: config
                .envs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            working_dir: config.working_dir.clone(),
            user: Some(user),
            privileged: sc.privileged,
            readonly_rootfs: sc.readonly_rootfs,
            cap_add: caps.add_capabilities,
            cap_drop: caps.drop_capabilities,
            rootfs: rootfs.clone(),
            namespaces: JoinNamespaces {
                net: sb.ns.net.clone(),
                ipc: sb.ns.ipc.clone(),
                uts: sb.ns.uts.clone(),
                pid: match sc
                    .namespace_options
                    .as_ref()
                    .map(|n| n.pid)
                    .and_then(|p| cri::NamespaceMode::try_from(p).ok())
                {
                    // hostPID: the container sees (and is seen by) the node's processes.
                    Some(cri::NamespaceMode::Node) => PidNamespace::Host,
                    Some(cri::NamespaceMode::Pod) => match &sb.ns.pid {
                        Some(p) => PidNamespace::Join(p.clone()),
                        None => {
                            return Err(RuntimeError::InvalidArgument(format!(
                                "container asks for the pod's PID namespace, but sandbox {sandbox_id} was made without one"
                            )));
                        }
                    },
                    _ => PidNamespace::Own,
                },
            },
            mounts,
            resources: resources.clone(),
            cgroups_path: cgroup_path.clone(),
            annotations: config
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            no_new_privs: sc.no_new_privs,
            seccomp,
            sysctls: sb.sysctls.clone(),
            masked_paths: sc.masked_paths.clone(),
            readonly_paths: sc.readonly_paths.clone(),
            host_devices,
            bounding_caps,
        };
        let oci = spec::build_spec(&input)?;

        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            name: meta.name,
            attempt: meta.attempt,
            image: image_name,
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            labels: to_btree(&config.labels),
            annotations: to_btree(&config.annotations),
            log_path: log_path.clone(),
            created_at: state::now_ns(),
            started_at: 0,
            pid: 0,
            monitor_pid: 0,
            cgroup_path: cgroup_path.clone(),
            snapshots: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                })
                .collect(),
            start_error: String::new(),
            resources,
            stop_signal: image.config.stop_signal.clone(),
        };
        let monitor = MonitorConfig {
            id: id.clone(),
            bundle: task.join("bundle"),
            state_root: self.run.join("libcontainer"),
            log_path: (!log_path.is_empty()).then(|| PathBuf::from(&log_path)),
            cgroup_path,
            log_max_size: self.defaults.log_max_size,
            log_max_files: self.defaults.log_max_files,
        };
        let host = self.host.clone();
        let dir2 = dir.clone();
        let task2 = task.clone();
        let result = blocking(move || {
            let bundle = task2.join("bundle");
            std::fs::create_dir_all(&bundle).map_err(RuntimeError::io("create dir", &bundle))?;
            host.mount_overlay(
                &lowerdirs,
                &dir2.join("upper"),
                &dir2.join("work"),
                &dir2.join("rootfs"),
            )?;
            state::write_json_unsynced(&bundle.join("config.json"), &oci)?;
            state::write_json_unsynced(&task2.join(MONITOR_CONFIG), &monitor)?;
            Ok(())
        })
        .await
        .and_then(|()| self.save_container(&record));
        if let Err(e) = result {
            let _ = self.host.unmount(&rootfs);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir_all(&task);
            return Err(e);
        }
        tracing::info!(container = %id, sandbox = %sandbox_id, name = %record.name, "container created");
        self.events
            .send(&id, sandbox_id, EventType::ContainerCreatedEvent);
        Ok(id)
    }

    /// The observed state of a container.
    pub fn live(&self, c: &ContainerRecord) -> Live {
        if !c.start_error.is_empty() {
            return Live::Exited(ExitRecord {
                exit_code: 128,
                finished_at: c.started_at,
                oom_killed: false,
                message: c.start_error.clone(),
            });
        }
        if c.started_at == 0 {
            return Live::Created;
        }
        let task = self.task_dir(&c.id);
        let exit_path = task.join(EXIT_FILE);
        let read_exit = || state::read_json::<ExitRecord>(&exit_path).ok().flatten();
        if let Some(e) = read_exit() {
            return Live::Exited(e);
        }
        if !task.exists() {
            // The volatile state is gone with the machine it ran on; so is the container (and
            // its pids may name other processes now).
            return Live::Exited(ExitRecord {
                exit_code: 255,
                finished_at: c.started_at,
                oom_killed: false,
                message: "the container's state was lost: the node restarted while it ran".into(),
            });
        }
        if self.launcher.alive(c.monitor_pid) || self.launcher.alive(c.pid) {
            return Live::Running;
        }
        // The monitor may have written the record between the two checks.
        read_exit().map_or_else(
            || {
                Live::Exited(ExitRecord {
                    exit_code: 255,
                    finished_at: state::now_ns(),
                    oom_killed: false,
                    message: "container monitor exited without recording the exit".into(),
                })
            },
            Live::Exited,
        )
    }

    /// StartContainer: returns once the process runs, or with why it could not.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let _op = self.op_lock(id).await;
        let mut c = self.container(id)?;
        if self.live(&c) != Live::Created {
            return Err(RuntimeError::FailedPrecondition {
                kind: "container",
                name: id.to_string(),
                state: "not in created state".into(),
                action: "start",
            });
        }
        let sb = self.sandbox(&c.sandbox_id)?;
        if sb.phase != SandboxPhase::Ready {
            return Err(RuntimeError::FailedPrecondition {
                kind: "sandbox",
                name: sb.id,
                state: "not ready".into(),
                action: "start containers",
            });
        }
        let dir = self.task_dir(id);
        match self.launcher.start(id, &dir).await {
            Ok(started) => {
                c.pid = started.pid;
                c.monitor_pid = started.monitor_pid;
                c.started_at = state::now_ns();
                self.save_container(&c)?;
                tracing::info!(container = %id, pid = started.pid, "container started");
                self.events
                    .send(id, &c.sandbox_id, EventType::ContainerStartedEvent);
                // Watched only now, so that the stop event follows the start and shows the
                // saved record; an exit meanwhile is not missed (the pipe's end stays readable).
                self.report_stop(&c, started.ended);
                Ok(())
            }
            Err(e) => {
                c.started_at = state::now_ns();
                c.start_error = e.to_string();
                self.save_container(&c)?;
                tracing::warn!(container = %id, error = %e, "container failed to start");
                self.events
                    .send(id, &c.sandbox_id, EventType::ContainerStoppedEvent);
                Err(e)
            }
        }
    }

    /// Sends the stop event of `c` once `ended` resolves.
    fn report_stop(&self, c: &ContainerRecord, ended: Ended) {
        let events = self.events.clone();
        let (id, sandbox_id) = (c.id.clone(), c.sandbox_id.clone());
        tokio::spawn(async move {
            ended.wait().await;
            events.send(&id, &sandbox_id, EventType::ContainerStoppedEvent);
        });
    }

    /// Watches the containers that were running when this runtime opened its state, so that
    /// their exits are reported too. Call once, from within the tokio runtime.
    pub fn watch_running(&self) {
        let running: Vec<ContainerRecord> = lock(&self.containers)
            .values()
            .filter(|c| self.live(c) == Live::Running)
            .cloned()
            .collect();
        for c in running {
            let monitor = self.launcher.ended(c.monitor_pid);
            let container = self.launcher.ended(c.pid);
            let exit = self.task_dir(&c.id).join(EXIT_FILE);
            // A monitor that died without recording the exit leaves the container's own end.
            let ended = Ended::new(async move {
                monitor.wait().await;
                if !exit.exists() {
                    container.wait().await;
                }
            });
            self.report_stop(&c, ended);
        }
    }

    /// Lifecycle events from now on (GetContainerEvents).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// What GetContainerEvents sends for `ev`: the sandbox's and its containers' status now.
    pub fn event_response(&self, ev: &Event) -> cri::ContainerEventResponse {
        let containers_statuses = self
            .containers_of(&ev.sandbox_id)
            .iter()
            .filter_map(|id| self.container_status(id).ok())
            .collect();
        cri::ContainerEventResponse {
            container_id: ev.id.clone(),
            container_event_type: ev.kind as i32,
            created_at: ev.at,
            pod_sandbox_status: self.pod_sandbox_status(&ev.sandbox_id).ok(),
            containers_statuses,
        }
    }

    /// Whether `c` exits within `within`: woken by its stop event, and checking every
    /// [`POLL`] as well in case an event was missed.
    async fn wait_exit(&self, c: &ContainerRecord, within: Duration) -> bool {
        let mut rx = self.events.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if matches!(self.live(c), Live::Exited(_)) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::select! {
                () = events::stopped(&mut rx, &c.id) => {}
                () = tokio::time::sleep(POLL.min(deadline - now)) => {}
            }
        }
    }

    /// StopContainer: the image's stop signal (SIGTERM unless its STOPSIGNAL says otherwise),
    /// then SIGKILL after `timeout` seconds. Stopping a container that is not running is a
    /// no-op.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let _op = self.op_lock(id).await;
        self.stop_locked(id, timeout).await
    }

    async fn stop_locked(&self, id: &str, timeout: i64) -> Result<()> {
        let c = self.container(id)?;
        if self.live(&c) != Live::Running {
            return Ok(());
        }
        if timeout > 0 {
            self.launcher
                .signal(c.pid, crate::container::stop_signal(&c.stop_signal))?;
            if self
                .wait_exit(&c, Duration::from_secs(timeout.unsigned_abs()))
                .await
            {
                tracing::info!(container = %id, "container stopped");
                return Ok(());
            }
        }
        self.launcher.signal(c.pid, Signal::SIGKILL)?;
        if self.wait_exit(&c, KILL_WAIT).await {
            tracing::info!(container = %id, "container killed");
            Ok(())
        } else {
            Err(RuntimeError::Launch {
                id: id.to_string(),
                message: format!("still running {}s after SIGKILL", KILL_WAIT.as_secs()),
            })
        }
    }

    /// RemoveContainer: kills it if needed, unmounts the rootfs, removes cgroups and state.
    /// Removing an unknown container is not an error (CRI semantics).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let _op = self.op_lock(id).await;
        let Ok(c) = self.container(id) else {
            return Ok(());
        };
        self.stop_locked(id, 0).await?;
        let host = self.host.clone();
        let dir = self.container_dir(id);
        let trash = self.root.join(TRASH).join(id);
        let volatile = [self.run.join("libcontainer").join(id), self.task_dir(id)];
        let cgroup = c.cgroup_path.clone();
        blocking(move || {
            host.unmount(&dir.join("rootfs"))?;
            host.remove_cgroup(&cgroup)?;
            for d in &volatile {
                remove_tree(d)?;
            }
            // The record and writable layer go to the trash at once and are deleted after the
            // answer: freeing disk blocks can wait on the device (a trim per file).
            if let Some(parent) = trash.parent() {
                std::fs::create_dir_all(parent).map_err(RuntimeError::io("create dir", parent))?;
            }
            match std::fs::rename(&dir, &trash) {
                Ok(()) => {
                    std::thread::spawn(move || {
                        if let Err(e) = std::fs::remove_dir_all(&trash) {
                            tracing::warn!(path = %trash.display(), error = %e, "emptying the trash");
                        }
                    });
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(_) => remove_tree(&dir),
            }
        })
        .await?;
        lock(&self.containers).remove(id);
        lock(&self.ops).remove(id);
        tracing::info!(container = %id, "container removed");
        self.events
            .send(id, &c.sandbox_id, EventType::ContainerDeletedEvent);
        Ok(())
    }

    fn container_state(live: &Live) -> cri::ContainerState {
        match live {
            Live::Created => cri::ContainerState::ContainerCreated,
            Live::Running => cri::ContainerState::ContainerRunning,
            Live::Exited(_) => cri::ContainerState::ContainerExited,
        }
    }

    /// ContainerStatus.
    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let c = self.container(id)?;
        let live = self.live(&c);
        let (finished_at, exit_code, reason, message) = match &live {
            Live::Exited(e) => {
                let reason = if !c.start_error.is_empty() {
                    "StartError"
                } else if e.oom_killed {
                    "OOMKilled"
                } else if e.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                (
                    e.finished_at,
                    e.exit_code,
                    reason.to_string(),
                    e.message.clone(),
                )
            }
            _ => (0, 0, String::new(), String::new()),
        };
        Ok(cri::ContainerStatus {
            id: c.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt: c.attempt,
            }),
            state: Self::container_state(&live) as i32,
            created_at: c.created_at,
            started_at: if c.start_error.is_empty() {
                c.started_at
            } else {
                0
            },
            finished_at,
            exit_code,
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            image_ref: c.image_ref.clone(),
            reason,
            message,
            labels: to_hash(&c.labels),
            annotations: to_hash(&c.annotations),
            mounts: c
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    ..Default::default()
                })
                .collect(),
            log_path: c.log_path.clone(),
            image_id: c.image_id.clone(),
        })
    }

    /// ListContainers.
    pub fn list_containers(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        let filter = filter.unwrap_or_default();
        // Filtered under the lock, cloned after: a pod's sync asks for its own few containers
        // out of every container on the node.
        let matching: Vec<ContainerRecord> = lock(&self.containers)
            .values()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| labels_match(&filter.label_selector, &c.labels))
            .cloned()
            .collect();
        let mut out: Vec<_> = matching
            .iter()
            .map(|c| (c, Self::container_state(&self.live(c))))
            .filter(|(_, st)| filter.state.as_ref().is_none_or(|f| f.state == *st as i32))
            .map(|(c, st)| cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: Some(cri::ContainerMetadata {
                    name: c.name.clone(),
                    attempt: c.attempt,
                }),
                image: Some(cri::ImageSpec {
                    image: c.image.clone(),
                    ..Default::default()
                }),
                image_ref: c.image_ref.clone(),
                state: st as i32,
                created_at: c.created_at,
                labels: to_hash(&c.labels),
                annotations: to_hash(&c.annotations),
                image_id: c.image_id.clone(),
            })
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }

    /// Snapshot diff ids that containers' rootfs mounts use.
    pub fn snapshots_in_use(&self) -> HashSet<String> {
        lock(&self.containers)
            .values()
            .flat_map(|c| c.snapshots.iter().cloned())
            .collect()
    }
}
