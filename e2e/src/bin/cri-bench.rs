//! `cri-bench`: times CRI operations against any CRI runtime's socket, so skiff's runtime and
//! containerd are measured by the same client (`e2e/bench/runtime.sh` runs it against both).
//!
//! `cri-bench <socket> <image> <mode> <runs>`, modes:
//! - `container`: in one running pod, CreateContainer + StartContainer + wait for the exit +
//!   RemoveContainer of `true` (after one untimed run); the exit is awaited on
//!   GetContainerEvents, or by polling ContainerStatus every 2 ms if the runtime has no events;
//! - `pod`: RunPodSandbox + CreateContainer + StartContainer (image cached), torn down untimed;
//! - `exec`: ExecSync of `true` in a running container (what an exec probe costs), after one
//!   untimed call;
//! - `pull`: PullImage after an untimed RemoveImage, or after `$CRI_BENCH_REMOVE` (a shell
//!   command, `{}` standing for every name of the image: tag, repo digest, id) when the
//!   runtime's RemoveImage keeps the content (containerd collects it later: the benchmark
//!   removes it with `ctr ... rm --sync` instead).
//!
//! Prints one line: `<mode> runs=<n> mean_ms=<x> p50_ms=<y> min_ms=<z>`; with
//! `$CRI_BENCH_PHASES` set, `container` also prints each run's create, start, exit and remove
//! times on stderr.
//!
//! Two more modes leave a pod for measuring memory: `hold` starts one pod running `sleep` and
//! prints `pod=<id>`; `release` (with the pod id in place of the runs) removes it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cri_api::v1 as cri;
use e2e::cri::{Cri, container_config, next_event, sandbox_config};

const LOG_ROOT: &str = "/tmp/cri-bench";

async fn run_pod(c: &mut Cri, name: &str) -> Result<(String, cri::PodSandboxConfig)> {
    let uid = format!("bench-{name}-{}", std::process::id());
    let config = sandbox_config(name, &uid, "bench", Path::new(LOG_ROOT));
    let id = c.run_pod_with(&config).await?;
    Ok((id, config))
}

async fn bench(c: &mut Cri, image: &str, mode: &str, runs: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(runs);
    match mode {
        "container" => {
            c.pull(image).await?;
            let (pod, pod_config) = run_pod(c, "lifecycle").await?;
            let phases = std::env::var_os("CRI_BENCH_PHASES").is_some();
            // The exit is awaited as a kubelet with evented PLEG does, on the runtime's
            // events, or by polling the status every 2 ms where there are none.
            let mut events = c.events().await?;
            // Run 0 warms up (first use of the pod's cgroup, caches) and is not counted, as
            // the benchmark script does for `runc run`.
            for i in 0..=runs {
                let config = container_config(&format!("true{i}"), image, &["true"]);
                let t = Instant::now();
                let id = c.create(&pod, &pod_config, config).await?;
                let created = t.elapsed();
                c.start(&id).await?;
                let started = t.elapsed();
                match events.as_mut() {
                    Some(ev) => {
                        next_event(ev, &id, cri::ContainerEventType::ContainerStoppedEvent).await?;
                    }
                    None => {
                        c.wait_state(
                            &id,
                            cri::ContainerState::ContainerExited,
                            Duration::from_millis(2),
                        )
                        .await?;
                    }
                }
                let exited = t.elapsed();
                c.rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                    .await?;
                if i == 0 {
                    continue;
                }
                times.push(t.elapsed());
                if phases {
                    let ms = |d: Duration| d.as_secs_f64() * 1e3;
                    eprintln!(
                        "create {:.1} start {:.1} exit {:.1} remove {:.1}",
                        ms(created),
                        ms(started - created),
                        ms(exited - started),
                        ms(t.elapsed() - exited)
                    );
                }
            }
            c.remove_pod(&pod).await?;
        }
        "pod" => {
            c.pull(image).await?;
            for i in 0..runs {
                let t = Instant::now();
                let (pod, pod_config) = run_pod(c, &format!("pod{i}")).await?;
                let config = container_config("sleep", image, &["sleep", "3600"]);
                c.run(&pod, &pod_config, config).await?;
                times.push(t.elapsed());
                c.remove_pod(&pod).await?;
            }
        }
        "exec" => {
            c.pull(image).await?;
            let (pod, pod_config) = run_pod(c, "exec").await?;
            let config = container_config("sleep", image, &["sleep", "3600"]);
            let id = c.run(&pod, &pod_config, config).await?;
            for i in 0..=runs {
                let t = Instant::now();
                let r =
                    c.rt.exec_sync(cri::ExecSyncRequest {
                        container_id: id.clone(),
                        cmd: vec!["true".into()],
                        timeout: 10,
                    })
                    .await?
                    .into_inner();
                if r.exit_code != 0 {
                    bail!("ExecSync of true exited {}", r.exit_code);
                }
                if i > 0 {
                    times.push(t.elapsed());
                }
            }
            c.remove_pod(&pod).await?;
        }
        "pull" => {
            let remove = std::env::var("CRI_BENCH_REMOVE").ok();
            c.pull(image).await?;
            let st = c
                .image_status(image)
                .await?
                .context("no image after a pull")?;
            let mut names = vec![image.to_owned(), st.id];
            names.extend(st.repo_digests);
            for _ in 0..runs {
                match &remove {
                    Some(cmd) => {
                        let cmd = cmd.replace("{}", &names.join(" "));
                        let st = std::process::Command::new("sh")
                            .args(["-c", &cmd])
                            .status()?;
                        if !st.success() {
                            bail!("{cmd}: {st}");
                        }
                    }
                    None => c.remove_image(image).await?,
                }
                let t = Instant::now();
                c.pull(image).await?;
                times.push(t.elapsed());
            }
        }
        other => bail!("unknown mode {other:?}: container, pod, exec, pull, hold or release"),
    }
    Ok(times)
}

async fn main_async(args: &[String]) -> Result<()> {
    let [socket, image, mode, arg] = args else {
        bail!(
            "usage: cri-bench <socket> <image> <container|pod|exec|pull|hold> <runs>\n       \
             cri-bench <socket> <image> release <pod-id>"
        );
    };
    let mut c = Cri::connect(PathBuf::from(socket)).await?;
    match mode.as_str() {
        "release" => c.remove_pod(arg).await,
        "hold" => {
            c.pull(image).await?;
            let (id, config) = run_pod(&mut c, "hold").await?;
            c.run(
                &id,
                &config,
                container_config("sleep", image, &["sleep", "3600"]),
            )
            .await?;
            println!("pod={id}");
            Ok(())
        }
        _ => {
            let runs: usize = arg
                .parse()
                .with_context(|| format!("runs must be a number, not {arg:?}"))?;
            let mut times = bench(&mut c, image, mode, runs.max(1)).await?;
            times.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
            println!(
                "{mode} runs={} mean_ms={mean:.1} p50_ms={:.1} min_ms={:.1}",
                times.len(),
                ms(times[times.len() / 2]),
                ms(times[0])
            );
            Ok(())
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(main_async(&args))
}
