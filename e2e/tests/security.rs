//! Security defaults, resources, stats and log rotation of skiff's runtime, end to end: a real
//! `skiff up`, a local registry with the busybox image, pods with different security contexts,
//! each checked from inside (what the container's own commands print) and from outside
//! (`/proc/<pid>/status`, mountinfo, cgroup files), and the CRI calls a kubelet makes for stats
//! and resources sent straight to the runtime's socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use cri_api::v1 as cri;
use e2e::*;

/// Docker's and containerd's default capability set as a CapEff mask.
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

fn pods_yaml(reg: &str) -> String {
    let img = format!("{reg}/busybox:1.36");
    let pod = |name: &str, pod_sc: &str, sc: &str, script: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n{pod_sc}  containers:\n  - name: c\n    image: {img}\n    command: [\"sh\", \"-c\", \"{script}\"]\n{sc}---\n"
        )
    };
    let mut y = String::new();
    // No security context at all: the defaults, plus a namespaced sysctl.
    y += &pod(
        "defaults",
        "  securityContext:\n    sysctls:\n    - {name: net.ipv4.ip_unprivileged_port_start, value: '80'}\n",
        "",
        "unshare -U true 2>/dev/null && echo unshare=ok || echo unshare=blocked; \
         echo timer_list=$(wc -c < /proc/timer_list); \
         (echo 1 > /proc/sys/kernel/shmmax) 2>/dev/null && echo procsys=rw || echo procsys=ro; \
         echo hostname=$(cat /etc/hostname); \
         echo port_start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
         echo ready; exec sleep 3600",
    );
    y += &pod(
        "unconfined",
        "",
        "    securityContext:\n      allowPrivilegeEscalation: true\n      seccompProfile: {type: Unconfined}\n",
        "unshare -U true && echo unshare=ok || echo unshare=blocked; echo ready; exec sleep 3600",
    );
    y += &pod(
        "privileged",
        "",
        "    securityContext:\n      privileged: true\n",
        "unshare -n true && echo unshare=ok || echo unshare=blocked; \
         mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mount=ok || echo mount=blocked; \
         echo timer_list=$(wc -c < /proc/timer_list); echo ready; exec sleep 3600",
    );
    y += &pod(
        "readonly",
        "  securityContext:\n    supplementalGroups: [4000]\n",
        "    securityContext:\n      readOnlyRootFilesystem: true\n      runAsUser: 1000\n      runAsGroup: 3000\n",
        "touch /probe 2>/dev/null && echo rootfs=rw || echo rootfs=ro; echo id=$(id); echo ready; exec sleep 3600",
    );
    y += &pod(
        "nonroot",
        "",
        "    securityContext:\n      runAsNonRoot: true\n",
        "echo should not run",
    );
    y += &pod(
        "chatty",
        "",
        "",
        "i=0; while [ $i -lt 400 ]; do echo line-$i-padding-padding-padding; i=$((i+1)); done; \
         echo done-writing; exec sleep 3600",
    );
    y
}

/// The first process in the container's cgroup.
fn pid_of(container_id: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(container_id) && l.contains("/skiff/"))
        })
}

/// `Key:\tvalue` lines of /proc/<pid>/status.
fn proc_status(pid: u32) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

struct Running {
    uid: String,
    cid: String,
    pid: u32,
    status: HashMap<String, String>,
    log: String,
}

fn running(c: &Cluster, name: &str) -> Result<Running> {
    let pod = wait_for(
        &format!("pod {name} to be Running"),
        Duration::from_secs(120),
        || {
            let p = c.pod(name)?;
            Ok((p["status"]["phase"] == "Running").then_some(p))
        },
    )?;
    let cid = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|s| s.split_once("://"))
        .map(|(_, id)| id.to_string())
        .context("no containerID")?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pid = wait_for(
        &format!("{name}'s process"),
        Duration::from_secs(10),
        || Ok(pid_of(&cid)),
    )?;
    let log = wait_for(
        &format!("{name}'s log to say ready"),
        Duration::from_secs(30),
        || {
            let l = c.skiff(&["logs", name])?;
            Ok(l.contains("ready").then_some(l))
        },
    )?;
    Ok(Running {
        uid,
        cid,
        pid,
        status: proc_status(pid)?,
        log,
    })
}

fn has(log: &str, line: &str) -> Result<()> {
    ensure!(
        log.lines().any(|l| l.trim() == line),
        "expected {line:?} in the log:\n{log}"
    );
    Ok(())
}

#[test]
fn security_defaults_stats_and_log_rotation() -> Result<()> {
    with_cluster(|c, work, reg| {
        c.extra_args = [
            "--container-log-max-size",
            "2048",
            "--container-log-max-files",
            "3",
        ]
        .map(String::from)
        .to_vec();
        scenario(c, work, reg)
    })
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    let file = work.join("pods.yaml");
    std::fs::write(&file, pods_yaml(reg))?;
    c.skiff(&["apply", "-f", file.to_str().unwrap_or_default()])?;

    // Defaults: containerd's capabilities, no_new_privs, skiff's seccomp filter enforced,
    // masked and read-only /proc paths, the pids limit, the pod's files and sysctls.
    let d = running(c, "defaults")?;
    ensure!(
        d.status["CapEff"] == DEFAULT_CAP_EFF,
        "CapEff {} != {DEFAULT_CAP_EFF}",
        d.status["CapEff"]
    );
    ensure!(
        d.status["NoNewPrivs"] == "1",
        "NoNewPrivs {:?}",
        d.status["NoNewPrivs"]
    );
    ensure!(
        d.status["Seccomp"] == "2",
        "Seccomp {:?}",
        d.status["Seccomp"]
    );
    has(&d.log, "unshare=blocked")?;
    has(&d.log, "timer_list=0")?;
    has(&d.log, "procsys=ro")?;
    has(&d.log, "hostname=defaults")?;
    has(&d.log, "port_start=80")?;
    // Masked paths are mounts over the file; /proc/kcore only where the kernel has one.
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid))?;
    let mut masked = vec!["/proc/keys", "/proc/timer_list", "/sys/firmware"];
    if Path::new("/proc/kcore").exists() {
        masked.push("/proc/kcore");
    }
    for path in masked {
        ensure!(
            mountinfo
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some(path)),
            "{path} is not masked:\n{mountinfo}"
        );
    }
    let pids_max = cgroup_file(&d, "pids", "pids.max", "pids.max")?;
    ensure!(pids_max.trim() == "4096", "pids.max is {pids_max}");

    // Unconfined seccomp and allowed escalation: no filter, no no_new_privs, and the call the
    // filter blocked goes through.
    let u = running(c, "unconfined")?;
    ensure!(
        u.status["Seccomp"] == "0",
        "Seccomp {:?}",
        u.status["Seccomp"]
    );
    ensure!(
        u.status["NoNewPrivs"] == "0",
        "NoNewPrivs {:?}",
        u.status["NoNewPrivs"]
    );
    has(&u.log, "unshare=ok")?;

    // Privileged: every capability, no filter, nothing masked, mount allowed.
    let p = running(c, "privileged")?;
    ensure!(
        p.status["Seccomp"] == "0",
        "Seccomp {:?}",
        p.status["Seccomp"]
    );
    let cap = u64::from_str_radix(&p.status["CapEff"], 16)?;
    ensure!(cap & (1 << 21) != 0, "no CAP_SYS_ADMIN: {:x}", cap);
    has(&p.log, "unshare=ok")?;
    has(&p.log, "mount=ok")?;
    ensure!(
        !p.log.contains("timer_list=0"),
        "privileged still masked:\n{}",
        p.log
    );

    // Read-only rootfs, user, group and supplemental groups.
    let r = running(c, "readonly")?;
    has(&r.log, "rootfs=ro")?;
    ensure!(
        r.log.contains("uid=1000") && r.log.contains("gid=3000") && r.log.contains("4000"),
        "id output: {}",
        r.log
    );
    ensure!(
        r.status["Uid"].split_whitespace().all(|u| u == "1000"),
        "Uid {:?}",
        r.status["Uid"]
    );
    ensure!(
        r.status["Groups"].contains("4000"),
        "Groups {:?}",
        r.status["Groups"]
    );

    // runAsNonRoot with an image that runs as root: refused, and the pod status says why.
    let waiting = wait_for(
        "pod nonroot to report CreateContainerConfigError",
        Duration::from_secs(60),
        || {
            let p = c.pod("nonroot")?;
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            Ok((w["reason"] == "CreateContainerConfigError").then_some(w))
        },
    )?;
    let msg = waiting["message"].as_str().unwrap_or_default();
    ensure!(
        msg.contains("container has runAsNonRoot and image will run as root"),
        "message: {msg}"
    );

    cri_calls(c, &d)?;
    clone_flags_filtered(c, work, reg)?;
    log_rotation(c)?;
    Ok(())
}

/// A CRI client on the runtime's socket, driven from a small tokio runtime.
struct CriClient {
    rt: tokio::runtime::Runtime,
    svc: cri_api::RuntimeServiceClient<tonic::transport::Channel>,
    img: cri_api::ImageServiceClient<tonic::transport::Channel>,
}

impl CriClient {
    fn connect(socket: PathBuf) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = rt.block_on(
            tonic::transport::Endpoint::try_from("http://[::]:50051")?.connect_with_connector(
                tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }),
            ),
        )?;
        Ok(CriClient {
            rt,
            svc: cri_api::RuntimeServiceClient::new(channel.clone()),
            img: cri_api::ImageServiceClient::new(channel),
        })
    }
}

fn cri_calls(c: &Cluster, d: &Running) -> Result<()> {
    let mut cl = CriClient::connect(c.data.join("runtime/cri.sock"))?;
    let CriClient { rt, svc, img } = &mut cl;

    let status = rt
        .block_on(svc.status(cri::StatusRequest::default()))?
        .into_inner();
    let conds = status.status.context("no status")?.conditions;
    ensure!(
        conds.iter().any(|x| x.r#type == "RuntimeReady" && x.status),
        "{conds:?}"
    );
    let config = rt
        .block_on(svc.runtime_config(cri::RuntimeConfigRequest {}))?
        .into_inner();
    ensure!(
        config.linux.map(|l| l.cgroup_driver) == Some(cri::CgroupDriver::Cgroupfs as i32),
        "cgroup driver is not cgroupfs"
    );

    // Stats from the cgroups: two reads, so the second one has a rate.
    let stats = || -> Result<cri::ContainerStats> {
        rt.block_on(svc.clone().container_stats(cri::ContainerStatsRequest {
            container_id: d.cid.clone(),
        }))?
        .into_inner()
        .stats
        .context("no stats")
    };
    stats()?;
    std::thread::sleep(Duration::from_millis(300));
    let s = stats()?;
    let cpu = s.cpu.context("no cpu")?;
    ensure!(
        cpu.usage_core_nano_seconds.is_some_and(|v| v.value > 0),
        "cpu {cpu:?}"
    );
    ensure!(
        cpu.usage_nano_cores.is_some(),
        "no cpu rate on the second read"
    );
    let mem = s.memory.context("no memory")?;
    ensure!(
        mem.working_set_bytes.is_some_and(|v| v.value > 0),
        "memory {mem:?}"
    );
    ensure!(s.writable_layer.is_some(), "no writable layer usage");

    let pods = rt
        .block_on(svc.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }))?
        .into_inner()
        .stats;
    let mine = pods
        .iter()
        .find(|p| {
            p.attributes
                .as_ref()
                .and_then(|a| a.metadata.as_ref())
                .is_some_and(|m| m.uid == d.uid)
        })
        .context("defaults pod missing from ListPodSandboxStats")?;
    let linux = mine.linux.clone().context("no linux stats")?;
    ensure!(
        linux
            .process
            .and_then(|p| p.process_count)
            .is_some_and(|n| n.value >= 1),
        "no processes counted"
    );
    ensure!(linux.containers.len() == 1, "{:?}", linux.containers);

    let fs = rt
        .block_on(img.image_fs_info(cri::ImageFsInfoRequest {}))?
        .into_inner();
    ensure!(
        fs.image_filesystems
            .first()
            .and_then(|f| f.used_bytes)
            .is_some_and(|b| b.value > 1_000_000),
        "image fs usage {fs:?}"
    );

    // UpdateContainerResources reaches the live cgroup.
    rt.block_on(
        svc.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: d.cid.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            annotations: Default::default(),
        }),
    )?;
    let limit = cgroup_file(d, "memory", "memory.limit_in_bytes", "memory.max")?;
    ensure!(
        limit.trim() == (96u64 << 20).to_string(),
        "memory limit {limit}"
    );
    let quota = cgroup_file(d, "cpu", "cpu.cfs_quota_us", "cpu.max")?;
    ensure!(
        quota.trim() == "50000" || quota.trim() == "50000 100000",
        "cpu quota {quota}"
    );
    Ok(())
}

/// A file of the container's cgroup: `v1` under the controller's hierarchy, or `v2` in the
/// unified one, whichever the host mounts.
fn cgroup_file(d: &Running, controller: &str, v1: &str, v2: &str) -> Result<String> {
    let rel = format!("skiff/{}/{}", d.uid, d.cid);
    let p = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup/{rel}/{v2}")
    } else {
        format!("/sys/fs/cgroup/{controller}/{rel}/{v1}")
    };
    std::fs::read_to_string(&p).with_context(|| p.clone())
}

/// The chatty pod wrote ~30 KiB with rotation at 2 KiB and 3 files kept: the directory holds
/// exactly three files, kubectl still reads the end, and ReopenContainerLog starts a new file.
/// (kubectl reads the live file only, as with the kubelet, so only the last line is certain.)
fn log_rotation(c: &Cluster) -> Result<()> {
    let pod = wait_for("pod chatty to be Running", Duration::from_secs(60), || {
        let p = c.pod("chatty")?;
        Ok((p["status"]["phase"] == "Running").then_some(p))
    })?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let cid = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|s| s.split_once("://"))
        .map(|(_, id)| id.to_string())
        .context("no containerID")?;
    let dir = c.data.join(format!("pods/default_chatty_{uid}/c"));
    let kubectl_tail = || -> Result<String> {
        run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(c.kubeconfig())
            .args(["logs", "chatty", "--tail=2"]))
    };
    wait_for(
        "kubectl logs to show the end",
        Duration::from_secs(30),
        || {
            let l = kubectl_tail()?;
            Ok(l.contains("done-writing").then_some(l))
        },
    )?;
    let names = |dir: &Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    };
    let files = names(&dir)?;
    ensure!(
        files.len() == 3 && files.contains(&"0.log".to_string()),
        "log files: {files:?}"
    );
    ensure!(
        files
            .iter()
            .all(|f| f == "0.log" || f.starts_with("0.log.")),
        "log files: {files:?}"
    );

    // The kubelet's way: rename the file, then ReopenContainerLog.
    std::fs::rename(dir.join("0.log"), dir.join("0.log.19700101-000000"))?;
    let mut cl = CriClient::connect(c.data.join("runtime/cri.sock"))?;
    cl.rt.block_on(
        cl.svc
            .reopen_container_log(cri::ReopenContainerLogRequest { container_id: cid }),
    )?;
    ensure!(dir.join("0.log").is_file(), "no new log file after reopen");
    Ok(())
}

/// clone(2) with CLONE_NEWUSER needs no capability, so only the filter can refuse it; plain
/// clone (fork) must still work. Busybox has no applet that calls clone with flags, so a tiny
/// static C program is compiled here and bind-mounted into a container made through CRI.
const CLONE_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
static char stack[65536];
static int child(void *arg) { (void)arg; return 0; }
static void probe(const char *name, int flags) {
    int pid = clone(child, stack + sizeof stack, flags | SIGCHLD, NULL);
    if (pid < 0) { printf("%s=%s\n", name, strerror(errno)); return; }
    waitpid(pid, NULL, 0);
    printf("%s=ok\n", name);
}
int main(void) {
    probe("clone-newuser", CLONE_NEWUSER);
    probe("clone-plain", 0);
    return 0;
}
"#;

fn clone_flags_filtered(c: &Cluster, work: &Path, reg: &str) -> Result<()> {
    let src = work.join("clone-probe.c");
    let bin = work.join("clone-probe");
    std::fs::write(&src, CLONE_PROBE)?;
    run(Command::new("cc")
        .arg("-static")
        .arg("-o")
        .arg(&bin)
        .arg(&src))?;
    let logs = work.join("probe-logs");
    std::fs::create_dir_all(&logs)?;
    let mut cl = CriClient::connect(c.data.join("runtime/cri.sock"))?;
    let CriClient { rt, svc, .. } = &mut cl;
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "probe".into(),
            uid: "probe-uid".into(),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        ..Default::default()
    };
    let sb = rt
        .block_on(svc.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        }))?
        .into_inner()
        .pod_sandbox_id;
    let run_probe = |svc: &mut cri_api::RuntimeServiceClient<tonic::transport::Channel>,
                     name: &str,
                     profile: cri::security_profile::ProfileType|
     -> Result<String> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: format!("{reg}/busybox:1.36"),
                ..Default::default()
            }),
            command: vec!["/probe".into()],
            mounts: vec![cri::Mount {
                container_path: "/probe".into(),
                host_path: bin.display().to_string(),
                readonly: true,
                ..Default::default()
            }],
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig {
                resources: None,
                security_context: Some(cri::LinuxContainerSecurityContext {
                    no_new_privs: true,
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: profile as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let id = rt
            .block_on(svc.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))?
            .into_inner()
            .container_id;
        rt.block_on(svc.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        }))?;
        let log = logs.join(format!("{name}.log"));
        wait_for(
            &format!("{name} to print both probes"),
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Ok(text.contains("clone-plain=").then_some(text))
            },
        )
    };
    use cri::security_profile::ProfileType;
    let filtered = run_probe(svc, "filtered", ProfileType::RuntimeDefault)?;
    ensure!(
        filtered.contains("clone-newuser=Operation not permitted")
            && filtered.contains("clone-plain=ok"),
        "under RuntimeDefault:\n{filtered}"
    );
    let unfiltered = run_probe(svc, "unfiltered", ProfileType::Unconfined)?;
    ensure!(
        unfiltered.contains("clone-newuser=ok"),
        "unconfined:\n{unfiltered}"
    );
    rt.block_on(svc.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    }))?;
    rt.block_on(svc.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb }))?;
    Ok(())
}
