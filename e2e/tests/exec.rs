//! `kubectl exec` (with stdin, with a tty, exit codes), `kubectl attach`, `kubectl port-forward`
//! and CRI ExecSync against a real `skiff up`, through the API server, the node agent and the
//! runtime's streaming server into busybox containers: kubectl 1.33 and 1.35 over WebSocket
//! (`v5.channel.k8s.io`, and SPDY tunnelled through WebSocket for port-forward), kubectl 1.27
//! over SPDY/3.1 (`v4.channel.k8s.io`, `portforward.k8s.io`), the Python client's exec and
//! channel-based WebSocket port-forward, and every remote command subprotocol on a raw
//! WebSocket (`e2e/clients/python_streams.py`).

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use cri_api::v1 as cri;
use e2e::*;

#[test]
fn exec_attach_and_port_forward() -> Result<()> {
    with_cluster(scenario)
}

fn apply(c: &Cluster, work: &Path, name: &str, yaml: &str) -> Result<()> {
    let file = work.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml)?;
    c.skiff(&["apply", "-f", file.to_str().unwrap_or_default()])?;
    Ok(())
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    apply(
        c,
        work,
        "shell",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shell\nspec:\n  hostAliases:\n  - ip: 1.2.3.4\n    hostnames: [foo.local, bar.local]\n  containers:\n  - name: main\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"echo attached-$((1+1)); exec sleep 3600\"]\n    env:\n    - {{name: GREETING, value: hello-env}}\n"
        ),
    )?;
    apply(
        c,
        work,
        "done",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: done\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {reg}/busybox:1.36\n    command: [\"true\"]\n"
        ),
    )?;
    apply(
        c,
        work,
        "web",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: main\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n"
        ),
    )?;
    let pod = wait_for("pod shell to be Running", Duration::from_secs(120), || {
        let p = c.pod("shell")?;
        Ok((p["status"]["phase"] == "Running").then_some(p))
    })?;
    wait_for("pod done to succeed", Duration::from_secs(60), || {
        Ok((c.pod("done")?["status"]["phase"] == "Succeeded").then_some(()))
    })?;

    let k = Kubectl {
        bin: kubectl_path("1.33"),
        kubeconfig: c.kubeconfig(),
    };
    let old = Kubectl {
        bin: kubectl_path("1.27"),
        kubeconfig: c.kubeconfig(),
    };

    // Discovery lists the subresources kubectl looks for.
    let resources = k.ok(&["get", "--raw", "/api/v1"], None)?;
    for sub in ["pods/exec", "pods/attach", "pods/portforward"] {
        ensure!(
            resources.contains(sub),
            "discovery lacks {sub}: {resources}"
        );
    }

    // A command, its output, and the container's environment.
    let out = k.ok(&["exec", "shell", "--", "echo", "hi"], None)?;
    ensure!(out == "hi\n", "exec echo said {out:?}");
    let out = k.ok(
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo oops >&2",
        ],
        None,
    )?;
    ensure!(out == "hello-env\n", "exec env said {out:?}");

    // It runs inside the container: its pid namespace, its root, its cgroup.
    let out = k.ok(
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup",
        ],
        None,
    )?;
    ensure!(
        out.starts_with("sleep 3600"),
        "pid 1 in the exec is not the container's: {out:?}"
    );
    let container_id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|s| s.split("://").nth(1))
        .context("no containerID")?
        .to_string();
    ensure!(
        out.contains(&container_id),
        "exec is not in the container's cgroup: {out:?}"
    );
    // With the container's identity and confinement: ids, groups, capabilities,
    // no_new_privs and its seccomp filter, as its own process has them.
    let out = k.ok(
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "f='^(Uid|Gid|Groups|Cap...|NoNewPrivs|Seccomp):'; \
             grep -E \"$f\" /proc/1/status; echo ---; grep -E \"$f\" /proc/self/status",
        ],
        None,
    )?;
    let (init, exec) = out.split_once("---\n").context("no separator")?;
    ensure!(
        init.trim() == exec.trim()
            && init.contains("Seccomp:\t2")
            && init.contains("NoNewPrivs:\t1"),
        "the exec's identity differs from the container's:\n{out}"
    );

    // Exit codes come back as kubectl's own.
    let out = k.output(&["exec", "shell", "--", "sh", "-c", "exit 3"], None)?;
    ensure!(
        out.status.code() == Some(3),
        "exit 3 came back as {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // stdin, closed by v5's close signal so `cat` ends.
    let out = k.ok(
        &["exec", "-i", "shell", "--", "cat"],
        Some("data through stdin\n"),
    )?;
    ensure!(out == "data through stdin\n", "cat said {out:?}");

    // A tty: kubectl -it under `script`, which gives kubectl a terminal of its own, 91x33; the
    // size reaches the container's pty through resize messages. As with runc, the pty exists
    // only once the command runs, so the first resize lands just after it started: the
    // command waits a moment before asking.
    let cmd = format!(
        "stty cols 91 rows 33; {} --kubeconfig {} exec -it shell -- sh -c 'sleep 1; tty; stty size; exit 0'",
        k.bin.display(),
        k.kubeconfig.display()
    );
    let out = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]))?;
    ensure!(out.contains("/dev/pts/"), "tty said {out:?}");
    ensure!(out.contains("33 91"), "stty size said {out:?}");

    // A terminal whose client goes away is hung up, as a closed terminal is: the command does
    // not linger in the container. The terminal closes when `script` is killed, which hangs
    // up kubectl in turn; only once the command is seen running, so a slow start is no race.
    let cmd = format!(
        "{} --kubeconfig {} exec -it shell -- sh -c 'exec sleep 777'",
        k.bin.display(),
        k.kubeconfig.display()
    );
    // script's stdin stays open (a pipe nobody writes to): at end-of-file script would close
    // the terminal itself, possibly before the exec has started.
    let mut hung = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let running = |k: &Kubectl| -> Result<bool> {
        Ok(k.ok(&["exec", "shell", "--", "ps", "-o", "args"], None)?
            .contains("sleep 777"))
    };
    let seen = wait_for(
        "the exec'd sleep 777 to run",
        Duration::from_secs(30),
        || Ok(running(&k)?.then_some(())),
    );
    let _ = hung.kill();
    hung.wait()?;
    seen?;
    wait_for(
        "the exec'd sleep 777 to be hung up",
        Duration::from_secs(15),
        || Ok((!running(&k)?).then_some(())),
    )?;

    // A command that does not exist, and a container that is not running.
    let out = k.output(&["exec", "shell", "--", "/no/such/binary"], None)?;
    ensure!(!out.status.success(), "exec of a missing binary succeeded");
    // /etc/hosts: the kubelet's managed file, with the pod's own name and its hostAliases.
    let hosts = k.ok(&["exec", "shell", "--", "cat", "/etc/hosts"], None)?;
    let pod_ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    ensure!(
        hosts.contains(&format!("{pod_ip}\tshell\n"))
            && hosts.contains("1.2.3.4\tfoo.local\tbar.local\n"),
        "/etc/hosts: {hosts}"
    );
    // The same while kubectl is still sending stdin: it gets the reason, not a reset connection.
    let stdin = "x".repeat(8 << 20);
    for kubectl in [&k, &old] {
        let out = kubectl.output(
            &["exec", "-i", "shell", "--", "/no/such/binary"],
            Some(&stdin),
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("/no/such/binary"),
            "{} exec -i of a missing binary: {err}",
            kubectl.bin.display()
        );
    }
    let out = k.output(&["exec", "done", "--", "echo", "hi"], None)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("completed pod"),
        "exec into a finished pod: {err}"
    );

    // attach: the container's output as it is written.
    attach_sees(&k, "via-attach")?;

    wait_for("pod web to be Running", Duration::from_secs(60), || {
        Ok((c.pod("web")?["status"]["phase"] == "Running").then_some(()))
    })?;
    // kubectl 1.35 from the npm package e2e/run-tests.sh fetches (`SKIFF_HELM_DIR`).
    let newest = Kubectl {
        bin: std::env::var_os("SKIFF_HELM_DIR")
            .map(std::path::PathBuf::from)
            .context(
                "SKIFF_HELM_DIR is not set: e2e/run-tests.sh fetches kubectl 1.35 and sets it",
            )?
            .join("kubectl"),
        kubeconfig: c.kubeconfig(),
    };
    port_forward(&k, &old, &newest)?;
    exec_with(&old, "1.27")?;
    exec_with(&newest, "1.35")?;

    // The Python client: exec, and port-forward over its WebSocket channel protocol.
    let python = std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run(Command::new(&python)
        .arg(workspace().join("e2e/clients/python_streams.py"))
        .arg(c.kubeconfig()))
    .context("python client exec and port-forward")?;
    ensure!(
        out.contains("all steps passed"),
        "python client said: {out}"
    );

    exec_sync(c, &container_id)?;
    Ok(())
}

/// Starts `kubectl port-forward pod/web <free port>:<remote>` and waits until it listens.
fn forward(k: &Kubectl, env: &[(&str, &str)], remote: u16) -> Result<(Child, u16)> {
    let local = free_port()?;
    let mut child = k
        .command(&["port-forward", "pod/web", &format!("{local}:{remote}")])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
    stdout.read_line(&mut line)?;
    // kubectl writes a line per connection: a closed pipe would kill it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    if !line.starts_with("Forwarding from") {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        anyhow::bail!(
            "kubectl port-forward said {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((child, local))
}

/// One HTTP/1.0 GET of `/` through `port`; the whole answer.
fn get(port: u16) -> Result<String> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `kubectl port-forward` to busybox's httpd in pod web: kubectl 1.33 and 1.35 tunnel SPDY
/// through WebSocket (1.33 speaks plain SPDY when told not to use WebSocket), kubectl 1.27
/// speaks SPDY;
/// every connection is a new pair of streams on the same tunnel. A port nobody listens on is
/// reported to kubectl with the reason.
fn port_forward(k: &Kubectl, old: &Kubectl, newest: &Kubectl) -> Result<()> {
    let no_ws = [("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")];
    for (name, kubectl, env) in [
        ("1.33 over WebSocket", k, &[][..]),
        ("1.33 over SPDY", k, &no_ws[..]),
        ("1.27 over SPDY", old, &[][..]),
        ("1.35 over WebSocket", newest, &[][..]),
    ] {
        let (mut child, port) = forward(kubectl, env, 8080)?;
        let answers = (0..3).map(|_| get(port)).collect::<Result<Vec<_>>>();
        let _ = child.kill();
        let _ = child.wait();
        for answer in answers.with_context(|| format!("port-forward with kubectl {name}"))? {
            ensure!(
                answer.starts_with("HTTP/1.") && answer.ends_with("hello-from-pod\n"),
                "port-forward with kubectl {name} got {answer:?}"
            );
        }
    }

    let (mut child, port) = forward(k, &[], 9)?;
    let answer = get(port);
    let exited = wait_for(
        "kubectl to give up on port 9",
        Duration::from_secs(20),
        || Ok(child.try_wait()?),
    );
    let _ = child.kill();
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        answer.is_ok_and(|a| a.is_empty()) && exited.is_ok() && err.contains("localhost:9"),
        "port-forward to a closed port: kubectl said {err}"
    );
    Ok(())
}

/// Exec with stdin, exit codes, a tty's size and attach with another kubectl: 1.27 speaks
/// SPDY/3.1 (`v4.channel.k8s.io`), 1.35 WebSocket (`v5.channel.k8s.io`).
fn exec_with(old: &Kubectl, version: &str) -> Result<()> {
    let out = old.ok(&["exec", "shell", "--", "echo", "hi"], None)?;
    ensure!(out == "hi\n", "kubectl {version} exec echo said {out:?}");
    let out = old.ok(&["exec", "-i", "shell", "--", "cat"], Some("old stdin\n"))?;
    ensure!(out == "old stdin\n", "kubectl {version} cat said {out:?}");
    let out = old.output(
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    )?;
    ensure!(
        out.status.code() == Some(3)
            && out.stdout == b"out\n"
            && String::from_utf8_lossy(&out.stderr).starts_with("err\n"),
        "kubectl {version} exit 3: {out:?}"
    );
    let cmd = format!(
        "stty cols 91 rows 33; {} --kubeconfig {} exec -it shell -- sh -c 'sleep 1; stty size'",
        old.bin.display(),
        old.kubeconfig.display()
    );
    let out = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]))?;
    ensure!(
        out.contains("33 91"),
        "kubectl {version} stty size said {out:?}"
    );

    attach_sees(old, &format!("attach-{version}"))
}

/// `kubectl attach shell` prints what the container writes to its stdout while attached.
fn attach_sees(k: &Kubectl, marker: &str) -> Result<()> {
    let mut attach = k
        .command(&["attach", "shell"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    let write = format!("echo {marker} > /proc/1/fd/1");
    let wrote = k.ok(&["exec", "shell", "--", "sh", "-c", &write], None);
    std::thread::sleep(Duration::from_secs(1));
    let _ = attach.kill();
    let out = attach.wait_with_output()?;
    wrote?;
    let attached = String::from_utf8_lossy(&out.stdout);
    ensure!(
        attached.contains(marker),
        "{} attach saw {attached:?}",
        k.bin.display()
    );
    Ok(())
}

/// ExecSync over CRI, as the kubelet runs exec probes.
fn exec_sync(c: &Cluster, container_id: &str) -> Result<()> {
    let socket = c.data.join("runtime/cri.sock");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut client = e2e::cri::Cri::connect(socket).await?.rt;
        let resp = client
            .exec_sync(cri::ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out; echo err >&2; exit 7".into(),
                ],
                timeout: 10,
            })
            .await?
            .into_inner();
        ensure!(resp.stdout == b"out\n", "stdout {:?}", resp.stdout);
        ensure!(resp.stderr == b"err\n", "stderr {:?}", resp.stderr);
        ensure!(resp.exit_code == 7, "exit code {}", resp.exit_code);

        let started = std::time::Instant::now();
        let err = client
            .exec_sync(cri::ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd: vec!["sleep".into(), "60".into()],
                timeout: 1,
            })
            .await
            .err()
            .context("a 60 s sleep with a 1 s timeout succeeded")?;
        ensure!(
            err.code() == tonic::Code::DeadlineExceeded,
            "timeout answered {err:?}"
        );
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the timeout took {:?}",
            started.elapsed()
        );
        Ok(())
    })
}
