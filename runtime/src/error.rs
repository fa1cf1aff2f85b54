//! The runtime's one error type and its single mapping onto gRPC status codes.

use std::path::PathBuf;

/// Everything that can go wrong inside the runtime. Variants are what callers branch on; the
/// message names the object, digest or path that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A sandbox, container or image that the caller named does not exist.
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// The request is malformed: a missing field, an unparsable reference, a bad path.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object exists but is not in a state that allows the operation.
    #[error("{kind} {name} is {state}, cannot {action}")]
    FailedPrecondition {
        kind: &'static str,
        name: String,
        state: String,
        action: &'static str,
    },
    /// Talking to a registry failed (network, auth, missing manifest).
    #[error("pull {image} from {registry}: {message}")]
    Pull {
        image: String,
        registry: String,
        message: String,
    },
    /// Downloaded content did not hash to the digest that named it.
    #[error("digest mismatch for {expected}: got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// An image's manifest or config is not something we can run.
    #[error("unsupported image {image}: {message}")]
    UnsupportedImage { image: String, message: String },
    /// A layer tar tried to write outside its snapshot or is otherwise corrupt.
    #[error("unpack layer {layer}: {message}")]
    Unpack { layer: String, message: String },
    /// A filesystem operation on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system call that is not about one path failed (unshare, mount, kill).
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
    /// Starting or talking to a container monitor failed.
    #[error("container {id}: {message}")]
    Launch { id: String, message: String },
    /// Pods cannot be networked: no usable CNI config, or a plugin it names is missing.
    /// `reason` is the CamelCase word the Status RPC's NetworkReady condition carries.
    #[error("network not ready: {message}")]
    NetworkNotReady {
        reason: &'static str,
        message: String,
    },
    /// A CNI plugin failed or could not be run; the message is the plugin's own (its CNI
    /// error, and its stderr).
    #[error("cni {command} of plugin {plugin} (network {network}): {message}")]
    Cni {
        command: &'static str,
        plugin: String,
        network: String,
        message: String,
    },
    /// A command could not be run in a container (no such executable, container gone).
    #[error("exec in container {id}: {message}")]
    Exec { id: String, message: String },
    /// ExecSync's timeout passed; the command was killed.
    #[error("exec in container {id}: command timed out after {seconds}s")]
    ExecTimeout { id: String, seconds: u64 },
    /// Persisted state could not be (de)serialised.
    #[error("state {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Serving the CRI socket failed.
    #[error("serve cri socket {path}: {message}")]
    Serve { path: PathBuf, message: String },
    /// A streaming client spoke SPDY this server cannot read (a bad frame or header block).
    #[error("spdy: {0}")]
    Spdy(String),
    /// An internal invariant broke (a task panicked, a lock was poisoned).
    #[error("internal: {0}")]
    Internal(String),
}

impl RuntimeError {
    /// Wraps an I/O error with the operation and path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| RuntimeError::Io { op, path, source }
    }

    /// Wraps a nix error with a description of the call.
    pub fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let op = op.into();
        move |source| RuntimeError::Sys { op, source }
    }

    /// Shorthand for a `NotFound`.
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        RuntimeError::NotFound {
            kind,
            name: name.into(),
        }
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(err: RuntimeError) -> Self {
        let msg = err.to_string();
        match err {
            RuntimeError::NotFound { .. } => tonic::Status::not_found(msg),
            RuntimeError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            RuntimeError::FailedPrecondition { .. } | RuntimeError::NetworkNotReady { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            RuntimeError::Pull { .. } => tonic::Status::unavailable(msg),
            RuntimeError::DigestMismatch { .. }
            | RuntimeError::UnsupportedImage { .. }
            | RuntimeError::Unpack { .. }
            // A container that cannot start (bad executable, bad mount) is what containerd
            // reports as Unknown too.
            | RuntimeError::Launch { .. }
            // containerd reports a failed network setup as Unknown as well.
            | RuntimeError::Cni { .. }
            | RuntimeError::Exec { .. } => tonic::Status::unknown(msg),
            RuntimeError::ExecTimeout { .. } => tonic::Status::deadline_exceeded(msg),
            RuntimeError::Io { .. }
            | RuntimeError::Sys { .. }
            | RuntimeError::State { .. }
            | RuntimeError::Serve { .. }
            | RuntimeError::Spdy(_)
            | RuntimeError::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

/// The crate's result alias.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_maps_to_not_found_code() {
        let status: tonic::Status = RuntimeError::not_found("container", "abc").into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "container abc not found");
    }

    #[test]
    fn pull_error_names_image_and_registry() {
        let status: tonic::Status = RuntimeError::Pull {
            image: "docker.io/library/busybox:latest".into(),
            registry: "docker.io".into(),
            message: "connection refused".into(),
        }
        .into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .message()
                .contains("docker.io/library/busybox:latest")
        );
    }
}
