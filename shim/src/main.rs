//! `skiff-shim`: what a container's monitor becomes once the container runs. The monitor
//! (`skiff __monitor`) creates and starts the container with libcontainer, then execs this
//! small static binary in its place, keeping its pid, its children and the output pipes:
//!
//! `skiff-shim <container-dir> <init-pid> <stdout-fd> <stderr-fd> <log-path|-> <log-max-size>
//!  <log-max-files> <cgroup-path> <skiff-exe>`
//!
//! It copies output into the CRI log and reaps until the container's init exits, writes
//! `exit.json`, then execs `<skiff-exe> __monitor-finish <container-dir>` to delete the
//! container's libcontainer state and cgroup.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use skiff_shim::{clock, log::LogSink, wait};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.len() != 9 {
        eprintln!(
            "usage: skiff-shim <container-dir> <init-pid> <stdout-fd> <stderr-fd> <log-path|-> \
             <log-max-size> <log-max-files> <cgroup-path> <skiff-exe>"
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
    drop(log);

    let finish = [
        args[8].as_bytes(),
        b"__monitor-finish".as_slice(),
        args[0].as_bytes(),
    ];
    let finish: Vec<CString> = finish
        .iter()
        .filter_map(|a| CString::new(*a).ok())
        .collect();
    let mut argv: Vec<*const libc::c_char> = finish.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: argv is a null-terminated array of pointers to NUL-terminated strings that
    // outlive the call; execv only returns on failure.
    unsafe { libc::execv(argv[0], argv.as_ptr()) };
    eprintln!(
        "skiff-shim: exec {} __monitor-finish: {}",
        args[8].to_string_lossy(),
        std::io::Error::last_os_error()
    );
}
