//! The crate's one error type: each variant names what failed and keeps its cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "invalid cluster name {name:?}: use lower-case letters, digits and '-' (at most 40, starting and ending with a letter or digit)"
    )]
    InvalidName { name: String },
    #[error("a cluster's control plane has 1, 3 or 5 members, not {count}")]
    Controllers { count: usize },
    #[error("{count} nodes is more than a cluster's /24 holds (200 at most)")]
    TooManyNodes { count: usize },
    #[error("cluster {name:?} already exists (`skiff cluster delete {name}` removes it)")]
    Exists { name: String },
    #[error("no cluster {name:?} (`skiff cluster list` shows the clusters)")]
    NotFound { name: String },
    #[error(
        "no free subnet for a cluster in 172.30.0.0/16: the host's networks or other clusters use every /24"
    )]
    NoSubnet,
    #[error("node {node} of cluster {cluster} is not running (`skiff cluster start {cluster}`)")]
    NodeStopped { node: String, cluster: String },
    #[error("{path} is still mounted: unmount it, then delete again")]
    StillMounted { path: PathBuf },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a cluster record skiff can read")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a kubeconfig skiff can read")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{path}: not a kubeconfig skiff can read (not a YAML mapping)")]
    KubeconfigShape { path: PathBuf },
    #[error("cannot write the kubeconfig {path}")]
    KubeconfigWrite {
        path: PathBuf,
        #[source]
        source: serde_saphyr::SerializeError,
    },
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: nlink::Error,
    },
    #[error("{what}")]
    Os {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("{node}: {what} did not stop within {seconds} s of SIGTERM")]
    Stuck {
        node: String,
        what: &'static str,
        seconds: u64,
    },
}

impl ClusterError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(nlink::Error) -> Self {
        let what = what.into();
        move |source| Self::Netlink { what, source }
    }

    pub(crate) fn os(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let what = what.into();
        move |source| Self::Os { what, source }
    }
}
