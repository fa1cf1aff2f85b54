//! Pod sandboxes: the namespaces a pod's containers share (network, set up through CNI; IPC;
//! UTS with the pod's hostname; the host's network and UTS for hostNetwork pods), the pod's
//! resolv.conf, and the sandbox record persisted at `<root>/sandboxes/<id>/state.json`.

pub mod ns;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod pause;
pub use self::ns::{LinuxNamespaces, NamespaceHelper, NsPaths, NsRequest};
use crate::error::{Result, RuntimeError};
use crate::network::PodNetwork;

/// A sandbox's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxPhase {
    /// Namespaces exist; containers may be created. Set by RunPodSandbox.
    Ready,
    /// Not usable: stopped (its containers were stopped, its network torn down), or its
    /// network setup never finished (the runtime died during CNI ADD). Only RemovePodSandbox
    /// moves on from here.
    NotReady,
}

/// A sandbox as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub host_network: bool,
    pub created_at: i64,
    pub phase: SandboxPhase,
    pub ns: NsPaths,
    /// `<root>/sandboxes/<id>/resolv.conf`, bind-mounted into containers when present.
    pub resolv_conf: Option<PathBuf>,
    /// `<root>/sandboxes/<id>/hosts` and `hostname`, bind-mounted like resolv.conf.
    #[serde(default)]
    pub etc_hosts: Option<PathBuf>,
    #[serde(default)]
    pub etc_hostname: Option<PathBuf>,
    /// The pod's sysctls (CRI `LinuxPodSandboxConfig.sysctls`), checked to be namespaced; every
    /// container of the pod sets them in the namespaces it shares.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// The pod's CNI attachment: set before ADD runs, so a crash during it still leaves what
    /// DEL needs; `None` for hostNetwork pods and once DEL has run.
    #[serde(default)]
    pub network: Option<PodNetwork>,
}

/// Writes the pod's `/etc/hosts` and `/etc/hostname`, as containerd does: a host-network pod
/// gets copies of the node's files, any other pod localhost entries and its own name.
/// `host_hosts` and `host_hostname` are the node's files' contents.
pub fn write_etc_files(
    dir: &Path,
    hostname: &str,
    host_hosts: Option<&str>,
    host_hostname: &str,
) -> Result<(PathBuf, PathBuf)> {
    let hosts = match host_hosts {
        Some(h) => h.to_string(),
        None => "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            .to_string(),
    };
    let name = if hostname.is_empty() {
        host_hostname.trim()
    } else {
        hostname
    };
    let hosts_path = dir.join("hosts");
    let hostname_path = dir.join("hostname");
    std::fs::write(&hosts_path, hosts).map_err(RuntimeError::io("write", &hosts_path))?;
    std::fs::write(&hostname_path, format!("{name}\n"))
        .map_err(RuntimeError::io("write", &hostname_path))?;
    Ok((hosts_path, hostname_path))
}

/// Appends `ip<TAB>name` to the pod's hosts file.
pub fn add_host_entry(hosts: &Path, ip: &str, name: &str) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(hosts)
        .map_err(RuntimeError::io("open", hosts))?;
    writeln!(f, "{ip}\t{name}").map_err(RuntimeError::io("write", hosts))
}

/// Writes a resolv.conf for the pod from CRI's DNS config. Without one, the host's is copied
/// (containerd's behaviour for the default DNS policy).
pub fn write_resolv_conf(
    dir: &Path,
    servers: &[String],
    searches: &[String],
    options: &[String],
) -> Result<Option<PathBuf>> {
    let path = dir.join("resolv.conf");
    let content = if servers.is_empty() && searches.is_empty() && options.is_empty() {
        match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(c) => c,
            Err(_) => return Ok(None),
        }
    } else {
        let mut c = String::new();
        if !searches.is_empty() {
            c.push_str(&format!("search {}\n", searches.join(" ")));
        }
        for s in servers {
            c.push_str(&format!("nameserver {s}\n"));
        }
        if !options.is_empty() {
            c.push_str(&format!("options {}\n", options.join(" ")));
        }
        c
    };
    std::fs::write(&path, content).map_err(RuntimeError::io("write", &path))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_files_for_pod_and_host_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (hosts, name) = write_etc_files(dir.path(), "web", None, "node1\n").expect("write");
        let h = std::fs::read_to_string(hosts).expect("read");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"), "{h}");
        assert_eq!(std::fs::read_to_string(&name).expect("read"), "web\n");
        let (hosts, name) =
            write_etc_files(dir.path(), "", Some("10.0.0.1 node1\n"), "node1\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(hosts).expect("read"),
            "10.0.0.1 node1\n"
        );
        assert_eq!(std::fs::read_to_string(name).expect("read"), "node1\n");
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write_resolv_conf(
            dir.path(),
            &["10.96.0.10".into()],
            &["default.svc.cluster.local".into()],
            &["ndots:5".into()],
        )
        .expect("write")
        .expect("path");
        assert_eq!(
            std::fs::read_to_string(p).expect("read"),
            "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
