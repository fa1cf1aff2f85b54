//! What a container's monitor does once the container runs, in a crate of its own so it can be
//! built as a small static binary (`skiff-shim`) that the monitor execs into after libcontainer
//! started the container: the monitor process keeps its pid and children, and drops the memory
//! of the whole skiff binary. The runtime links the same code for when no shim is installed.
//!
//! The same binary runs one command in a running container from a plan the runtime resolved
//! (`skiff-shim --exec <work-dir>`, [`exec`]).
//!
//! [`log`] writes the CRI log, [`wait`] copies the container's output into it and reaps it,
//! [`finish`] deletes the ended container's cgroup and libcontainer state, [`clock`] formats
//! times without a date library.

pub mod clock;
pub mod exec;
pub mod finish;
pub mod log;
pub mod wait;
