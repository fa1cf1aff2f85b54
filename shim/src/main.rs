//! `skiff-shim`: what a container's monitor becomes once the container runs. The monitor
//! (`skiff __monitor`) creates and starts the container with libcontainer, then execs this
//! small static binary in its place, keeping its pid, its children and the output pipes:
//!
//! (`skiff-shim --exec <work-dir>` runs one command in a running container instead; see
//! `skiff_shim::exec`.)
//!
//! `skiff-shim <container-dir> <init-pid> <stdout-fd> <stderr-fd> <log-path|-> <log-max-size>
//!  <log-max-files> <cgroup-path> <libcontainer-state-dir>`
//!
//! It copies output into the CRI log and reaps until the container's init exits, writes
//! `exit.json`, closes its stdout (the runtime waits for that end), then deletes the
//! container's cgroup and libcontainer state.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use skiff_shim::{clock, finish, log::LogSink, wait};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| a == skiff_shim::exec::EXEC_FLAG)
    {
        std::process::exit(skiff_shim::exec::main(&args[1..]));
    }
    if args.len() != 9 {
        eprintln!(
            "usage: skiff-shim <container-dir> <init-pid> <stdout-fd> <stderr-fd> <log-path|-> \
             <log-max-size> <log-max-files> <cgroup-path> <libcontainer-state-dir>"
        );
        std::process::exit(2);
    }
    let text = |i: usize| args[i].to_string_lossy().into_owned();
    let number = |i: usize| -> i64 {
        text(i).parse().unwrap_or_else(|_| {
            eprintln!(
                "skiff-shim: argument {} is not a number: {}",
                i + 1,
                text(i)
            );
            std::process::exit(2)
        })
    };
    let dir = PathBuf::from(&args[0]);
    let init = number(1) as i32;
    let (out_fd, err_fd) = (number(2) as i32, number(3) as i32);
    let log_path = (args[4] != "-").then(|| PathBuf::from(&args[4]));
    let (max_size, max_files) = (number(5) as u64, number(6) as u32);
    let cgroup = text(7);

    // SAFETY: the monitor passed these descriptors, open and unused by anything else, across
    // exec; each is owned by one File from here on.
    let (out, err) = unsafe { (File::from_raw_fd(out_fd), File::from_raw_fd(err_fd)) };
    let mut log = LogSink::open(log_path, max_size, max_files);
    let ended = wait::copy_and_wait(init, out, err, &mut log, &dir.join(wait::REOPEN_LOG));
    let oom = wait::oom_killed(&cgroup);
    if let Err(e) = wait::write_exit(&dir, ended.exit_code(), clock::now_ns(), oom, "") {
        eprintln!("skiff-shim: write exit record in {}: {e}", dir.display());
    }
    wait::release_exit_watch();
    drop(log);
    finish::finish(&finish::cgroup_mounts(), &cgroup, &PathBuf::from(&args[8]));
}
