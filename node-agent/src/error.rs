//! The node agent's one error type: every fallible path in the crate returns [`AgentError`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// What went wrong in the node agent. Variants are what callers branch on (a CRI `NotFound` is
/// success for a teardown; an image pull failure becomes `ErrImagePull` in the pod status).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A CRI call returned an error status.
    #[error("cri {op} for {target}: {code:?}: {message}")]
    Cri {
        op: &'static str,
        target: String,
        code: tonic::Code,
        message: String,
    },
    /// The image could not be pulled.
    #[error("pull image {image:?}: {message}")]
    ImagePull { image: String, message: String },
    /// `imagePullPolicy: Never` and the image is not on the node.
    #[error("container image {image:?} is not present with pull policy of Never")]
    ImageNeverPull { image: String },
    /// A Kubernetes resource quantity that does not parse or does not fit.
    #[error("invalid quantity {value:?}: {reason}")]
    InvalidQuantity { value: String, reason: &'static str },
    /// The pod's spec cannot be turned into CRI requests.
    #[error("pod {pod} is invalid: {reason}")]
    InvalidPod { pod: String, reason: String },
    /// `runAsNonRoot` is set and the container would run as root (the kubelet's wording, which
    /// names the pod and container itself).
    #[error("{reason}")]
    RunAsNonRoot { pod: String, reason: String },
    /// A call to the Kubernetes API server failed.
    #[error("kubernetes api {verb} {kind} {name:?}: {source}")]
    Kube {
        verb: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The pod watch ended for good.
    #[error("watch pods of node {node}: {message}")]
    Watch { node: String, message: String },
    /// Reading a local file (meminfo, os-release, a log file) failed.
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The local-path storage root could not be made.
    #[error("local-path storage: {0}")]
    LocalPath(#[from] crate::volumes::local_path::LocalPathError),
    /// The resolv.conf pods with `dnsPolicy: Default` get (`--resolv-conf`) cannot be read.
    #[error("cannot read the node's resolv.conf {path} (set --resolv-conf)")]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent's state directory could not be made.
    #[error("create state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent's HTTP server could not bind or serve.
    #[error("serve http on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The CRI endpoint is not a usable address.
    #[error("cri endpoint for socket {path}: {message}")]
    CriEndpoint { path: PathBuf, message: String },
    /// A ConfigMap, Secret or the Service list could not be read in time (its watch has not
    /// listed yet: the API server is unreachable or refuses the watch).
    #[error("cannot read {kind} {name:?} from the api server")]
    ObjectUnavailable { kind: &'static str, name: String },
    /// A downward API reference the agent cannot resolve.
    #[error("invalid downward API reference {field:?}: {reason}")]
    FieldRef { field: String, reason: String },
    /// A ConfigMap or Secret the container's environment needs does not exist (the kubelet's
    /// `CreateContainerConfigError` message).
    #[error("{kind} \"{name}\" not found")]
    ObjectMissing { kind: &'static str, name: String },
    /// A key the container's environment needs is not in its ConfigMap or Secret.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyMissing {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    /// A pod's volume could not be set up or mounted into a container.
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    /// A background task panicked or was aborted.
    #[error("task {task} failed: {message}")]
    Task { task: &'static str, message: String },
    /// The cluster DNS address could not be made an address of the node.
    #[error("cannot put the cluster DNS address {address} on the loopback link")]
    DnsAddress {
        address: std::net::Ipv4Addr,
        #[source]
        source: nlink::Error,
    },
    /// The DNS server could not listen (something else holds port 53 on that address).
    #[error("cluster DNS cannot listen on {address}")]
    DnsListen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The pod routes to other nodes (or their marks) could not be read or written.
    #[error("pod routes to other nodes (routes of protocol 95, table ip skiff-routes)")]
    Routes {
        #[source]
        source: nlink::Error,
    },
    /// The service rules could not be read or written in the kernel's nftables.
    #[error("nftables (table ip skiff-proxy)")]
    Proxy {
        #[source]
        source: nlink::Error,
    },
}

impl AgentError {
    /// Builds a [`AgentError::Cri`] from a tonic status.
    pub fn cri(op: &'static str, target: impl Into<String>, status: tonic::Status) -> Self {
        AgentError::Cri {
            op,
            target: target.into(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// Builds a [`AgentError::Kube`].
    pub fn kube(
        verb: &'static str,
        kind: &'static str,
        name: impl Into<String>,
        source: kube::Error,
    ) -> Self {
        AgentError::Kube {
            verb,
            kind,
            name: name.into(),
            source: Box::new(source),
        }
    }

    /// True when the runtime or the API server says the object does not exist; teardown paths
    /// treat that as done.
    pub fn is_not_found(&self) -> bool {
        match self {
            AgentError::Cri { code, .. } => *code == tonic::Code::NotFound,
            AgentError::Kube { source, .. } => {
                matches!(source.as_ref(), kube::Error::Api(s) if s.is_not_found())
            }
            _ => false,
        }
    }

    /// True for a Kubernetes 409 (stale resourceVersion or failed precondition).
    pub fn is_conflict(&self) -> bool {
        matches!(self, AgentError::Kube { source, .. }
            if matches!(source.as_ref(), kube::Error::Api(s) if s.is_conflict()))
    }
}
