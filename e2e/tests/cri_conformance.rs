//! A CRI conformance suite modelled on critest's categories, run against skiff's runtime over
//! its real socket (a `skiff up` node, real containers): runtime info, sandbox lifecycle,
//! container lifecycle, exec, logs, images, security context, networking, stats. Each category
//! runs in turn and reports; the test fails with every category that failed and why.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use cri_api::v1 as cri;
use e2e::cri::{Cri, container_config, image_spec as spec, next_event, sandbox_config};
use e2e::{busybox, with_cluster};

/// The suite's state: the client, the image, where pod logs go.
struct Suite {
    cri: Cri,
    image: String,
    logs: std::path::PathBuf,
    next: u32,
}

impl std::ops::Deref for Suite {
    type Target = Cri;
    fn deref(&self) -> &Cri {
        &self.cri
    }
}

impl std::ops::DerefMut for Suite {
    fn deref_mut(&mut self) -> &mut Cri {
        &mut self.cri
    }
}

impl Suite {
    fn container_config(&self, name: &str, cmd: &[&str]) -> cri::ContainerConfig {
        container_config(name, &self.image, cmd)
    }

    /// A pod with a DNS config and labels, named `name`.
    async fn run_pod(&mut self, name: &str) -> Result<(String, cri::PodSandboxConfig)> {
        self.next += 1;
        let uid = format!("conformance-{name}-{}", self.next);
        let mut config = sandbox_config(name, &uid, "conformance", &self.logs);
        config.dns_config = Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["conformance.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        config.labels = [("suite".to_owned(), "conformance".to_owned())].into();
        let id = self.cri.run_pod_with(&config).await?;
        Ok((id, config))
    }

    /// A new pod `name` with one container running `script` under `sh -c`, once it runs: the
    /// pod's id and config, and the container's status.
    async fn running(
        &mut self,
        name: &str,
        script: &str,
    ) -> Result<(String, cri::PodSandboxConfig, cri::ContainerStatus)> {
        let (pod, pc) = self.run_pod(name).await?;
        let config = self.container_config(name, &["sh", "-c", script]);
        let id = self.run(&pod, &pc, config).await?;
        let st = self
            .wait_state(&id, cri::ContainerState::ContainerRunning)
            .await?;
        Ok((pod, pc, st))
    }

    async fn wait_state(
        &mut self,
        id: &str,
        state: cri::ContainerState,
    ) -> Result<cri::ContainerStatus> {
        self.cri
            .wait_state(id, state, Duration::from_millis(50))
            .await
    }

    /// Runs `cmd` in container `id`: (stdout, stderr, exit code).
    async fn exec(&mut self, id: &str, cmd: &str) -> Result<(String, String, i32)> {
        let r = self
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: 10,
            })
            .await?
            .into_inner();
        Ok((
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
            r.exit_code,
        ))
    }

    /// The output of `cmd` in a fresh container of a fresh pod, its security context set by `edit`.
    async fn output_with(
        &mut self,
        name: &str,
        cmd: &str,
        edit: impl FnOnce(&mut cri::LinuxContainerSecurityContext),
    ) -> Result<String> {
        let (pod, pc) = self.run_pod(name).await?;
        let mut config = self.container_config(name, &["sh", "-c", cmd]);
        edit(
            config
                .linux
                .get_or_insert_default()
                .security_context
                .get_or_insert_default(),
        );
        let id = self.run(&pod, &pc, config).await?;
        let st = self
            .wait_state(&id, cri::ContainerState::ContainerExited)
            .await?;
        let log = std::fs::read_to_string(&st.log_path)
            .with_context(|| format!("read {}", st.log_path))?;
        self.remove_pod(&pod).await?;
        Ok(log
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

async fn runtime_info(c: &mut Suite) -> Result<()> {
    let v =
        c.rt.version(cri::VersionRequest::default())
            .await?
            .into_inner();
    ensure!(
        v.runtime_api_version == "v1" && !v.runtime_name.is_empty(),
        "version: {v:?}"
    );
    let st =
        c.rt.status(cri::StatusRequest { verbose: false })
            .await?
            .into_inner()
            .status
            .context("no status")?;
    for want in ["RuntimeReady", "NetworkReady"] {
        ensure!(
            st.conditions.iter().any(|x| x.r#type == want && x.status),
            "{want} is not true: {st:?}"
        );
    }
    let cfg =
        c.rt.runtime_config(cri::RuntimeConfigRequest {})
            .await?
            .into_inner();
    ensure!(cfg.linux.is_some(), "runtime config: {cfg:?}");
    Ok(())
}

async fn sandbox_lifecycle(c: &mut Suite) -> Result<()> {
    let (id, _) = c.run_pod("lifecycle").await?;
    let st = c.sandbox_status(&id).await?;
    ensure!(
        st.state == cri::PodSandboxState::SandboxReady as i32,
        "not ready: {st:?}"
    );
    let listed =
        c.rt.list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: id.clone(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    ensure!(listed.len() == 1, "list by id: {listed:?}");
    c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await?;
    let st = c.sandbox_status(&id).await?;
    ensure!(
        st.state == cri::PodSandboxState::SandboxNotready as i32,
        "stopped sandbox: {st:?}"
    );
    c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await?;
    let gone =
        c.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: false,
        })
        .await;
    ensure!(
        gone.as_ref().err().map(tonic::Status::code) == Some(tonic::Code::NotFound),
        "removed sandbox: {gone:?}"
    );
    Ok(())
}

async fn container_lifecycle(c: &mut Suite) -> Result<()> {
    let (pod, pc) = c.run_pod("containers").await?;
    let config = c.container_config("sleeper", &["sleep", "3600"]);
    let id = c.create(&pod, &pc, config).await?;
    ensure!(
        c.status(&id).await?.state == cri::ContainerState::ContainerCreated as i32,
        "not created"
    );
    c.start(&id).await?;
    c.wait_state(&id, cri::ContainerState::ContainerRunning)
        .await?;
    let running =
        c.rt.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    ensure!(
        running.iter().any(|x| x.id == id),
        "not listed as running: {running:?}"
    );
    c.rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await?;
    let st = c
        .wait_state(&id, cri::ContainerState::ContainerExited)
        .await?;
    ensure!(
        st.exit_code == 137 || st.exit_code == 143,
        "stopped with {}",
        st.exit_code
    );
    // One that ends by itself reports its own code.
    let config = c.container_config("seven", &["sh", "-c", "exit 7"]);
    let seven = c.run(&pod, &pc, config).await?;
    let st = c
        .wait_state(&seven, cri::ContainerState::ContainerExited)
        .await?;
    ensure!(st.exit_code == 7, "exit 7 came back as {}", st.exit_code);
    // A command that does not exist fails at start, saying so.
    let config = c.container_config("missing", &["/no/such/binary"]);
    let missing = c.create(&pod, &pc, config).await?;
    let err = c
        .start(&missing)
        .await
        .expect_err("start of a missing binary");
    ensure!(
        format!("{err:#}").contains("/no/such/binary"),
        "start error: {err:#}"
    );
    for x in [&id, &seven, &missing] {
        c.rt.remove_container(cri::RemoveContainerRequest {
            container_id: x.to_string(),
        })
        .await?;
    }
    let gone = c.status(&id).await;
    ensure!(gone.is_err(), "removed container still has a status");
    c.remove_pod(&pod).await
}

/// GetContainerEvents: each change of a sandbox and of its containers, with their statuses;
/// an exit is reported by the runtime without anyone asking for the container's status.
async fn events(c: &mut Suite) -> Result<()> {
    use cri::ContainerEventType as T;
    let mut events = c
        .events()
        .await?
        .context("GetContainerEvents is not served")?;
    let (pod, pc) = c.run_pod("events").await?;
    next_event(&mut events, &pod, T::ContainerStartedEvent).await?;
    let config = c.container_config("four", &["sh", "-c", "sleep 0.5; exit 4"]);
    let id = c.create(&pod, &pc, config).await?;
    let ev = next_event(&mut events, &id, T::ContainerCreatedEvent).await?;
    let sandbox = ev
        .pod_sandbox_status
        .context("event without the sandbox status")?;
    ensure!(
        sandbox.id == pod,
        "event names sandbox {}, not {pod}",
        sandbox.id
    );
    c.start(&id).await?;
    next_event(&mut events, &id, T::ContainerStartedEvent).await?;
    let ev = next_event(&mut events, &id, T::ContainerStoppedEvent).await?;
    let st = ev
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .context("stop event without the container's status")?;
    ensure!(
        st.state == cri::ContainerState::ContainerExited as i32 && st.exit_code == 4,
        "stop event reports state {} code {}",
        st.state,
        st.exit_code
    );
    c.rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    next_event(&mut events, &id, T::ContainerDeletedEvent).await?;
    c.remove_pod(&pod).await?;
    next_event(&mut events, &pod, T::ContainerDeletedEvent).await?;
    Ok(())
}

async fn exec(c: &mut Suite) -> Result<()> {
    let (pod, _, st) = c.running("exec", "exec sleep 3600").await?;
    let id = st.id;
    let (out, err, code) = c.exec(&id, "echo out; echo err >&2; exit 3").await?;
    ensure!(
        (out.as_str(), err.as_str(), code) == ("out\n", "err\n", 3),
        "exec: {out:?} {err:?} {code}"
    );
    let started = Instant::now();
    let timeout =
        c.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await;
    ensure!(
        timeout.as_ref().err().map(tonic::Status::code) == Some(tonic::Code::DeadlineExceeded)
            && started.elapsed() < Duration::from_secs(10),
        "exec past its timeout: {timeout:?}"
    );
    let url =
        c.rt.exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .url;
    ensure!(url.starts_with("http://"), "exec url {url:?}");
    c.remove_pod(&pod).await
}

async fn logs(c: &mut Suite) -> Result<()> {
    let (pod, pc, st) = c
        .running(
            "logs",
            "echo first; echo to-stderr >&2; printf partial; sleep 2; echo; echo second; sleep 3600",
        )
        .await?;
    let id = st.id.clone();
    let path = std::path::PathBuf::from(&st.log_path);
    ensure!(
        path.starts_with(&pc.log_directory),
        "log {} outside the pod's log directory",
        path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("second") {
            break text;
        }
        ensure!(Instant::now() < deadline, "log so far: {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let records: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    ensure!(
        records
            .iter()
            .all(|r| r.len() == 4 && r[0].ends_with('Z') && (r[2] == "F" || r[2] == "P")),
        "not CRI log records: {text:?}"
    );
    ensure!(
        records
            .iter()
            .any(|r| r[1] == "stdout" && r[2] == "F" && r[3] == "first")
            && records
                .iter()
                .any(|r| r[1] == "stderr" && r[3] == "to-stderr"),
        "streams: {text:?}"
    );
    // ReopenContainerLog: after the file is moved away, new output goes to a new file.
    let moved = path.with_extension("log.old");
    std::fs::rename(&path, &moved)?;
    c.rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await?;
    c.exec(&id, "echo after-reopen > /proc/1/fd/1").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("after-reopen")) {
            break;
        }
        ensure!(Instant::now() < deadline, "nothing in the reopened log");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.remove_pod(&pod).await
}

async fn images(c: &mut Suite) -> Result<()> {
    let image = c.image.clone();
    let pulled = c
        .img
        .pull_image(cri::PullImageRequest {
            image: spec(&image),
            ..Default::default()
        })
        .await?
        .into_inner()
        .image_ref;
    let st = c
        .image_status(&image)
        .await?
        .context("pulled image has no status")?;
    ensure!(
        st.id == pulled && st.size > 0 && st.repo_tags.contains(&image),
        "status: {st:?}"
    );
    ensure!(
        st.repo_digests.iter().any(|d| d.contains("@sha256:")),
        "repo digests: {st:?}"
    );
    let by_digest = st.repo_digests[0].clone();
    let by_digest = c.image_status(&by_digest).await?;
    ensure!(
        by_digest.is_some_and(|i| i.id == pulled),
        "not found by digest"
    );
    let listed = c
        .img
        .list_images(cri::ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    ensure!(listed.iter().any(|i| i.id == pulled), "not listed");
    let fs = c
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await?
        .into_inner();
    ensure!(!fs.image_filesystems.is_empty(), "no image filesystem info");
    let missing = format!(
        "{}-nope",
        image.rsplit_once(':').map_or(image.as_str(), |x| x.0)
    );
    let err = c
        .img
        .pull_image(cri::PullImageRequest {
            image: spec(&format!("{missing}:1")),
            ..Default::default()
        })
        .await
        .expect_err("pull of a missing image");
    ensure!(
        err.message().contains("nope"),
        "pull error names nothing: {err}"
    );
    c.remove_image(&image).await?;
    let gone = c.image_status(&image).await?;
    ensure!(gone.is_none(), "removed image still has a status");
    // Pulled again for the categories after this one.
    c.pull(&image).await?;
    Ok(())
}

async fn security_context(c: &mut Suite) -> Result<()> {
    let out = c
        .output_with("nobody", "id -u; id -g", |sc| {
            sc.run_as_user = Some(cri::Int64Value { value: 65534 });
            sc.run_as_group = Some(cri::Int64Value { value: 65534 });
        })
        .await?;
    ensure!(out == "65534\n65534", "run as 65534: {out:?}");
    let out = c
        .output_with(
            "readonly",
            "touch /x 2>/dev/null && echo writable || echo readonly",
            |sc| {
                sc.readonly_rootfs = true;
            },
        )
        .await?;
    ensure!(out == "readonly", "read-only rootfs: {out:?}");
    let out = c
        .output_with(
            "confined",
            "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status",
            |sc| {
                sc.no_new_privs = true;
                sc.seccomp = Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                });
                sc.capabilities = Some(cri::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                });
            },
        )
        .await?;
    for want in ["NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000000"] {
        ensure!(out.contains(want), "{want} missing from {out:?}");
    }
    Ok(())
}

async fn networking(c: &mut Suite) -> Result<()> {
    let (pod, _, st) = c
        .running(
            "net",
            "mkdir /www; echo from-pod > /www/index.html; httpd -f -p 8080 -h /www",
        )
        .await?;
    let id = st.id;
    let ip = c
        .sandbox_status(&pod)
        .await?
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    ensure!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "pod ip {ip:?}");
    // The host reaches the pod at its IP.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let got = std::net::TcpStream::connect_timeout(
            &format!("{ip}:8080").parse()?,
            Duration::from_secs(2),
        )
        .and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut a = String::new();
            s.read_to_string(&mut a)?;
            Ok(a)
        });
        match got {
            Ok(a) => break a,
            Err(e) if Instant::now() > deadline => bail!("no answer from {ip}:8080: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    ensure!(answer.ends_with("from-pod\n"), "pod answered {answer:?}");
    let (out, _, _) = c
        .exec(&id, "hostname; cat /etc/resolv.conf; cat /etc/hosts")
        .await?;
    for want in [
        "net-host",
        "nameserver 10.96.0.10",
        "search conformance.svc.cluster.local",
        "options ndots:5",
        &ip,
    ] {
        ensure!(out.contains(want), "{want:?} missing from {out:?}");
    }
    c.remove_pod(&pod).await
}

async fn stats(c: &mut Suite) -> Result<()> {
    let (pod, _, st) = c.running("stats", "while :; do :; done").await?;
    let id = st.id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s =
        c.rt.container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await?
        .into_inner()
        .stats
        .context("no stats")?;
    let cpu = s
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    let mem = s.memory.and_then(|m| m.working_set_bytes).map(|v| v.value);
    ensure!(
        cpu.is_some_and(|v| v > 0) && mem.is_some_and(|v| v > 0),
        "container stats: cpu {cpu:?} memory {mem:?}"
    );
    let all =
        c.rt.list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats;
    ensure!(
        all.iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id)),
        "not in ListContainerStats"
    );
    let ps =
        c.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?
        .into_inner()
        .stats
        .context("no pod stats")?;
    ensure!(
        ps.linux.is_some_and(|l| l
            .containers
            .iter()
            .any(|x| x.attributes.as_ref().is_some_and(|a| a.id == id))),
        "pod stats lack the container"
    );
    c.remove_pod(&pod).await
}

#[test]
fn cri_conformance_by_category() -> Result<()> {
    with_cluster(|cluster, work, reg| {
        cluster.start()?;
        let socket = cluster.data.join("runtime/cri.sock");
        let log_root = work.join("cri-logs");
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async move {
            let mut c = Suite {
                cri: Cri::connect(socket).await?,
                image: busybox(reg),
                logs: log_root,
                next: 0,
            };
            let image = c.image.clone();
            c.cri.pull(&image).await?;
            let mut failed = Vec::new();
            macro_rules! category {
                ($name:literal, $f:ident) => {
                    match $f(&mut c).await {
                        Ok(()) => println!("{}: ok", $name),
                        Err(e) => {
                            println!("{}: FAILED: {e:#}", $name);
                            failed.push(format!("{}: {e:#}", $name));
                        }
                    }
                };
            }
            category!("runtime info", runtime_info);
            category!("sandbox lifecycle", sandbox_lifecycle);
            category!("container lifecycle", container_lifecycle);
            category!("events", events);
            category!("exec", exec);
            category!("logs", logs);
            category!("images", images);
            category!("security context", security_context);
            category!("networking", networking);
            category!("stats", stats);
            ensure!(
                failed.is_empty(),
                "failed categories:\n{}",
                failed.join("\n")
            );
            // A graceful stop does not wait for clients' open event streams to end.
            let events = c.cri.events().await?;
            let mut proc = cluster.proc.take().context("skiff up is not running")?;
            let st = proc.terminate(Duration::from_secs(20))?;
            ensure!(st.success(), "skiff up exited with {st} on SIGTERM");
            drop(events);
            Ok(())
        })
    })
}
