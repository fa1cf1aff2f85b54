//! `skiff cluster`: multi-node test clusters on one machine without Docker, as kind makes them
//! with containers. Every node is a network namespace of its own on a host bridge, running
//! real skiff processes (`skiff controller` on control-plane nodes, `skiff agent` with skiff's
//! runtime on every node) in a data dir of its own under `<root>/<name>/nodes/<node>/`.
//!
//! [`Clusters`] creates, starts, stops, deletes and lists them and loads images into their
//! nodes; `spec` decides names, addresses and command lines; `balancer` is the API load
//! balancer of clusters with several control-plane members; `kubeconfig` writes the
//! cluster's kubeconfig and its context in the user's; [`host::Host`] is the boundary with the
//! kernel and processes ([`host::LinuxHost`]). A cluster's record is `<root>/<name>/cluster.json`;
//! whether a node's process runs is whether it holds its data dir's lock.

pub mod balancer;
mod error;
pub mod host;
pub mod kubeconfig;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ClusterError;
use host::Host;
use spec::{ClusterSpec, Role};

/// Where clusters live unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/skiff/clusters";
/// How long a node's process gets to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Whether a cluster's processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopped,
    /// Some run, some do not (a node was killed, or a start or stop was cut short).
    Degraded,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running => "Running",
            State::Stopped => "Stopped",
            State::Degraded => "Degraded",
        })
    }
}

/// A cluster and how many of its processes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub spec: ClusterSpec,
    pub running: usize,
    pub processes: usize,
}

impl Status {
    pub fn state(&self) -> State {
        match self.running {
            0 => State::Stopped,
            n if n == self.processes => State::Running,
            _ => State::Degraded,
        }
    }
}

/// The clusters under one root, made on one host.
pub struct Clusters<H> {
    pub root: PathBuf,
    pub host: H,
}

impl<H: Host> Clusters<H> {
    pub fn new(root: impl Into<PathBuf>, host: H) -> Self {
        Self {
            root: root.into(),
            host,
        }
    }

    fn record(&self, name: &str) -> PathBuf {
        self.root.join(name).join("cluster.json")
    }

    /// The cluster `name`'s record.
    pub fn load(&self, name: &str) -> Result<ClusterSpec, ClusterError> {
        spec::validate_name(name)?;
        let path = self.record(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClusterError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(ClusterError::io(&path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| ClusterError::Record { path, source })
    }

    fn save(&self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        let path = self.record(&spec.name);
        let text = serde_json::to_vec_pretty(spec).map_err(|source| ClusterError::Record {
            path: path.clone(),
            source,
        })?;
        write_private(&path, &text)
    }

    /// The names of the clusters with a record, sorted.
    fn names(&self) -> Result<Vec<String>, ClusterError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ClusterError::io(&self.root)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| self.record(n).exists())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every cluster with a record, by name.
    pub fn list(&self) -> Result<Vec<Status>, ClusterError> {
        self.names()?.iter().map(|n| self.status(n)).collect()
    }

    /// The cluster `name` and how many of its processes run.
    pub fn status(&self, name: &str) -> Result<Status, ClusterError> {
        let spec = self.load(name)?;
        let launches = spec.launches(&self.root);
        let running = launches
            .iter()
            .filter(|l| self.host.holder(&l.data_dir).is_some())
            .count();
        Ok(Status {
            processes: launches.len(),
            running,
            spec,
        })
    }

    /// Makes the cluster and starts its processes; on any failure, removes what it made.
    /// The caller waits for the nodes to be Ready (and deletes the cluster if they are not).
    pub async fn create(
        &self,
        name: &str,
        controllers: usize,
        workers: usize,
    ) -> Result<ClusterSpec, ClusterError> {
        spec::validate_name(name)?;
        let dir = self.root.join(name);
        if dir.exists() {
            return Err(ClusterError::Exists {
                name: name.to_owned(),
            });
        }
        let taken: Vec<u8> = self
            .names()?
            .iter()
            .map(|n| self.load(n).map(|c| c.subnet))
            .collect::<Result<_, _>>()?;
        let networks = self.host.networks().await?;
        let subnet = spec::pick_subnet(&taken, &networks).ok_or(ClusterError::NoSubnet)?;
        let spec = ClusterSpec::new(name, controllers, workers, subnet)?;
        create_private_dir(&dir)?;
        let made = async {
            self.save(&spec)?;
            write_private(
                &spec.kubeconfig(&self.root),
                kubeconfig::own(&spec.context(), &spec.server())?.as_bytes(),
            )?;
            self.bring_up(&spec).await
        }
        .await;
        if let Err(e) = made {
            if let Err(undo) = self.delete(name).await {
                tracing::warn!(cluster = name, error = %undo, "cannot remove the half-made cluster");
            }
            return Err(e);
        }
        Ok(spec)
    }

    /// Starts the cluster's stopped processes, making its network first where it is missing
    /// (after a reboot none of it is left).
    pub async fn start(&self, name: &str) -> Result<ClusterSpec, ClusterError> {
        let spec = self.load(name)?;
        self.bring_up(&spec).await?;
        Ok(spec)
    }

    async fn bring_up(&self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        self.host.ensure_bridge(spec).await?;
        for node in spec.namespaces() {
            self.host.ensure_node(spec, node).await?;
        }
        for launch in spec.launches(&self.root) {
            if self.host.holder(&launch.data_dir).is_some() {
                continue;
            }
            create_private_dir(&launch.data_dir)?;
            let pid = self.host.spawn(&launch)?;
            tracing::debug!(node = %launch.node, role = ?launch.role, pid, "started");
        }
        Ok(())
    }

    /// Stops every process of the cluster and its pods' containers (each node is taken down
    /// with `skiff down` in its namespace); the network and data stay for `start`.
    pub async fn stop(&self, name: &str) -> Result<ClusterSpec, ClusterError> {
        let spec = self.load(name)?;
        self.stop_nodes(&spec, false).await?;
        Ok(spec)
    }

    async fn stop_nodes(&self, spec: &ClusterSpec, purge: bool) -> Result<(), ClusterError> {
        let launches = spec.launches(&self.root);
        let downs = launches
            .iter()
            .filter(|l| l.role == Role::Agent)
            // A node that ran has its lock file; one that never started has nothing to stop.
            .filter(|l| {
                l.data_dir.join("skiff.lock").exists() || self.host.holder(&l.data_dir).is_some()
            })
            // A namespace that is gone (a reboot) took the node's processes and network with it.
            .filter(|l| self.host.has_netns(&l.netns))
            .map(|l| {
                let mut args = vec![
                    "down".to_owned(),
                    "--data-dir".to_owned(),
                    l.data_dir.display().to_string(),
                ];
                if purge {
                    args.push("--purge".to_owned());
                }
                async move { self.host.run(Some(&l.netns), &args).await }
            });
        let results = futures::future::join_all(downs).await;
        for l in launches.iter().filter(|l| l.role != Role::Agent) {
            if let Some(pid) = self.host.holder(&l.data_dir) {
                self.host.terminate(pid, STOP_GRACE).await?;
            }
        }
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// Stops the cluster and removes everything of it: its nodes' pods and namespaces, the
    /// bridge and NAT, and its directory; what it removed besides the nodes.
    pub async fn delete(&self, name: &str) -> Result<Vec<String>, ClusterError> {
        let dir = self.root.join(name);
        let spec = match self.load(name) {
            Ok(s) => s,
            // A create cut short before its record: only the directory is there.
            Err(ClusterError::NotFound { .. }) if dir.exists() => {
                remove_dir(&dir)?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        self.stop_nodes(&spec, true).await?;
        let mut removed = Vec::new();
        for node in spec.namespaces() {
            if self.host.remove_node(node).await? {
                removed.push(format!("network namespace {}", node.netns));
            }
        }
        removed.extend(self.host.remove_bridge(&spec).await?);
        remove_dir(&dir)?;
        Ok(removed)
    }

    /// Imports an image archive (OCI layout or `docker save`) into every node's runtime, as
    /// kind's `load image-archive`; each node's name and answer.
    pub async fn load_image(
        &self,
        name: &str,
        archive: &Path,
    ) -> Result<Vec<(String, String)>, ClusterError> {
        let spec = self.load(name)?;
        let archive = std::fs::canonicalize(archive).map_err(ClusterError::io(archive))?;
        let mut out = Vec::new();
        for l in spec
            .launches(&self.root)
            .iter()
            .filter(|l| l.role == Role::Agent)
        {
            if self.host.holder(&l.data_dir).is_none() {
                return Err(ClusterError::NodeStopped {
                    node: l.node.clone(),
                    cluster: spec.name.clone(),
                });
            }
            let args = [
                "image".to_owned(),
                "--data-dir".to_owned(),
                l.data_dir.display().to_string(),
                "import".to_owned(),
                archive.display().to_string(),
            ];
            out.push((l.node.clone(), self.host.run(None, &args).await?));
        }
        Ok(out)
    }
}

/// Removes a cluster's directory, refusing while anything is mounted under it (a
/// recursive delete would go into the mount).
fn remove_dir(dir: &Path) -> Result<(), ClusterError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(ClusterError::io("/proc/self/mountinfo"))?;
    let prefix = dir.display().to_string();
    if let Some(m) = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| Path::new(m).starts_with(&prefix))
    {
        return Err(ClusterError::StillMounted {
            path: PathBuf::from(m),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClusterError::io(dir)(e)),
    }
}

/// A directory only root reads: clusters hold their store (Secrets included).
fn create_private_dir(dir: &Path) -> Result<(), ClusterError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(ClusterError::io(dir))
}

/// Writes a file only its owner reads, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ClusterError::io(&tmp))?;
    f.write_all(bytes).map_err(ClusterError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ClusterError::io(path))
}

#[cfg(test)]
mod tests;
