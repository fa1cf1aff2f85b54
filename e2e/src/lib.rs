//! Helpers for the end-to-end tests: the real `skiff` binary, Debian's registry, a busybox image
//! built and pushed for real, and polling with deadlines that say what they waited for.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

pub mod cri;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `skiff` binary: `$SKIFF_BIN`, or the one cargo built next to this test.
pub fn skiff_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SKIFF_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory")?;
    let bin = dir.join("skiff");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it first (cargo build --bin skiff) or set SKIFF_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Fails unless the test runs as root: e2e tests mount, make namespaces and write cgroups.
pub fn require_root() -> Result<()> {
    let uid = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    if uid != "0" {
        bail!("the e2e tests need root (they mount overlays, create namespaces and cgroups)");
    }
    Ok(())
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    // Below the kernel's ephemeral range (32768 and up by default): a port the kernel handed
    // out here could be taken again by any outgoing connection of the processes under test
    // before they bind it ("Address already in use" at start). Below NodePorts' 30000 too.
    // A port handed out but not yet bound by its user is still free to `bind`: remember every
    // one so two callers (a cluster's API and agent ports) never get the same.
    use std::hash::{BuildHasher as _, Hasher as _};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..500 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20000 + (h.finish() % 10000) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    given.push(port);
    Ok(port)
}

/// Polls `f` until it returns `Some`, or fails after `timeout` saying what it waited for and
/// what it saw last.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("gave up after {timeout:?} waiting for {what}; last error: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command and returns its stdout, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian's docker-registry on a free loopback port, storing into `dir`.
pub fn start_registry(dir: &Path) -> Result<(Proc, String)> {
    start_registry_with(dir, "registry", "")
}

/// Like [`start_registry`], with files named after `name` and `extra` appended to its
/// configuration (an `auth:` section, say).
pub fn start_registry_with(dir: &Path, name: &str, extra: &str) -> Result<(Proc, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let p = start_registry_at(dir, name, &addr, extra)?;
    Ok((p, addr))
}

/// Debian's docker-registry listening on `addr`, its files and log named after `name` in `dir`.
pub fn start_registry_at(dir: &Path, name: &str, addr: &str, extra: &str) -> Result<Proc> {
    let data = dir.join(format!("{name}-data"));
    std::fs::create_dir_all(&data)?;
    let cfg = dir.join(format!("{name}.yml"));
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{extra}",
            data.display()
        ),
    )?;
    let p = Proc::spawn(
        "docker-registry",
        Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg),
        &dir.join(format!("{name}.log")),
    )?;
    wait_for("the registry to listen", Duration::from_secs(20), || {
        Ok(std::net::TcpStream::connect(addr).ok().map(|_| ()))
    })?;
    Ok(p)
}

/// Builds the busybox-static test image and pushes it as `<registry>/<image>`.
pub fn push_busybox(work: &Path, registry: &str, image: &str) -> Result<()> {
    let script = workspace().join("e2e/scripts/make-busybox-image.sh");
    run(Command::new("sh")
        .arg(&script)
        .arg(work)
        .arg(registry)
        .arg(image))?;
    Ok(())
}

/// Removes what a test's cluster left on the host: container processes and their monitors,
/// mounts under `work`, and the containers' cgroups. Containers outlive `skiff up` by design, so
/// a test that stops half-way must clear them itself.
pub fn cleanup_host(work: &Path) {
    // `skiff up`'s runtime (`data/`), and those of nodes that tests start beside it.
    let ids: Vec<String> = std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path().join("runtime/containers")).into_iter())
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let work_s = work.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        // Monitors and shims name their task state, under /run/skiff, by container id.
        let cmdline = String::from_utf8_lossy(&cmdline);
        let monitor =
            cmdline.contains(&work_s) || ids.iter().any(|id| cmdline.contains(id.as_str()));
        let contained = ids.iter().any(|id| cgroup.contains(id.as_str()));
        if monitor || contained {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&work_s))
        .collect();
    points.reverse();
    for m in points {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let skiff = ctrl.path().join("skiff");
        for pod in std::fs::read_dir(&skiff).into_iter().flatten().flatten() {
            let mut emptied = true;
            for c in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if c.path().is_dir() {
                    if ids.contains(&c.file_name().to_string_lossy().into_owned()) {
                        let _ = std::fs::remove_dir(c.path());
                    } else {
                        emptied = false;
                    }
                }
            }
            if emptied {
                let _ = std::fs::remove_dir(pod.path());
            }
        }
    }
    // The runtime's volatile task state for these containers.
    for run in std::fs::read_dir(RUN_BASE).into_iter().flatten().flatten() {
        if ids
            .iter()
            .any(|id| run.path().join("containers").join(id).exists())
        {
            let _ = std::fs::remove_dir_all(run.path());
        }
    }
    release_cni(work);
}

/// Where skiff's runtime keeps volatile task state, one directory per data dir.
const RUN_BASE: &str = "/run/skiff";

/// What CNI DEL would have released for the sandboxes of a `skiff up` that was killed: their
/// host-local leases (host-wide, under /var/lib/cni/networks) and any masquerade rules a
/// bridge plugin with `ipMasq` made (tagged with the sandbox id; skiff's default list masquerades
/// the subnet once instead). Their veths went with their network namespaces.
fn release_cni(work: &Path) {
    let sandboxes: Vec<String> = std::fs::read_dir(work.join("data/runtime/sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if sandboxes.is_empty() {
        return;
    }
    for net in std::fs::read_dir("/var/lib/cni/networks")
        .into_iter()
        .flatten()
        .flatten()
    {
        for lease in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let owner = std::fs::read_to_string(lease.path()).unwrap_or_default();
            if owner
                .lines()
                .next()
                .is_some_and(|id| sandboxes.iter().any(|s| s == id.trim()))
            {
                let _ = std::fs::remove_file(lease.path());
            }
        }
    }
    // Rule specs carry quoted comments; deleting by line number avoids re-quoting them.
    for _ in 0..1000 {
        let listing = Command::new("iptables")
            .args(["-t", "nat", "-L", "POSTROUTING", "-n", "--line-numbers"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let Some(line) = listing
            .lines()
            .find(|l| sandboxes.iter().any(|s| l.contains(s.as_str())))
        else {
            break;
        };
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(num), Some(target)) = (cols.first(), cols.get(1)) else {
            break;
        };
        let deleted = Command::new("iptables")
            .args(["-t", "nat", "-D", "POSTROUTING", num])
            .status()
            .is_ok_and(|s| s.success());
        if target.starts_with("CNI-") {
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-F", target])
                .status();
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-X", target])
                .status();
        }
        if !deleted {
            break;
        }
    }
}

/// A `skiff up` cluster on a temporary data dir, driven through the `skiff` CLI.
pub struct Cluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub api_port: u16,
    pub agent_port: u16,
    pub proc: Option<Proc>,
    pub log: PathBuf,
    /// More `skiff up` flags (e.g. `--pod-cidr`, a small log rotation size).
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// A cluster whose state lives under `work/data`, on free loopback ports; not started.
    pub fn new(work: &Path) -> Result<Self> {
        Ok(Self {
            bin: skiff_bin()?,
            data: work.join("data"),
            api_port: free_port()?,
            agent_port: free_port()?,
            proc: None,
            log: work.join("skiff-up.log"),
            extra_args: Vec::new(),
        })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    /// Starts `skiff up` and waits for the node to be Ready.
    pub fn start(&mut self) -> Result<()> {
        self.spawn()?;
        wait_for("node e2e-node to be Ready", Duration::from_secs(60), || {
            if let Some(p) = self.proc.as_mut()
                && let Some(st) = p.child.try_wait()?
            {
                bail!("skiff up exited with {st}: {}", tail(&self.log));
            }
            let out = self.skiff(&["get", "node", "e2e-node", "-o", "json"])?;
            let node: Value = serde_json::from_str(&out)?;
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Ok(ready.then_some(()))
        })
    }

    /// Starts `skiff up` without waiting for anything.
    pub fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .arg("--agent-port")
            .arg(self.agent_port.to_string())
            .arg("--node-name")
            .arg("e2e-node")
            .args(&self.extra_args)
            .env("RUST_LOG", "info");
        self.proc = Some(Proc::spawn("skiff up", &mut cmd, &self.log)?);
        Ok(())
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            let st = p.terminate(Duration::from_secs(30))?;
            ensure!(
                st.success(),
                "skiff up exited with {st} on SIGTERM: {}",
                tail(&self.log)
            );
        }
        Ok(())
    }

    pub fn skiff(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args))
    }

    pub fn skiff_fails(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()?;
        ensure!(!out.status.success(), "skiff {args:?} should have failed");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Writes `yaml` to `<work>/<name>.yaml` and `skiff apply`s it.
    pub fn apply_yaml(&self, work: &Path, name: &str, yaml: &str) -> Result<()> {
        let file = work.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml)?;
        self.skiff(&["apply", "-f", file.to_str().unwrap_or_default()])?;
        Ok(())
    }

    pub fn pod(&self, name: &str) -> Result<Value> {
        Ok(serde_json::from_str(
            &self.skiff(&["get", "pod", name, "-o", "json"])?,
        )?)
    }
}

/// An installed kubectl of this minor version (`1.27` … `1.33`).
pub fn kubectl_path(version: &str) -> PathBuf {
    PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"))
}

/// kubectl against one cluster.
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    /// Runs kubectl with `input` on stdin (or none) and returns everything it did.
    pub fn output(&self, args: &[&str], input: Option<&str>) -> Result<Output> {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(input) = input {
            let mut stdin = child.stdin.take().context("no stdin")?;
            // kubectl may stop reading its stdin (the command failed at once): not an error.
            let _ = stdin.write_all(input.as_bytes());
        }
        Ok(child.wait_with_output()?)
    }

    pub fn ok(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let out = self.output(args, input)?;
        ensure!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Cluster {
    /// kubectl `version` (`1.33`) against this cluster.
    pub fn kubectl(&self, version: &str) -> Kubectl {
        Kubectl {
            bin: kubectl_path(version),
            kubeconfig: self.kubeconfig(),
        }
    }
}

/// Whether `obj`'s status has condition `kind` with status True (a Node's or a Pod's Ready).
pub fn condition_true(obj: &serde_json::Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|x| x["type"] == kind && x["status"] == "True")
}

/// Waits up to a minute for Node `node` to be Ready; the failure carries the tail of `log`
/// (the node's own log).
pub fn wait_node_ready(k: &Kubectl, node: &str, log: &Path) -> Result<()> {
    wait_for(
        &format!("node {node} to be Ready"),
        Duration::from_secs(60),
        || {
            let n: serde_json::Value =
                serde_json::from_str(&k.ok(&["get", "node", node, "-o", "json"], None)?)?;
            Ok(condition_true(&n, "Ready").then_some(()))
        },
    )
    .with_context(|| tail(log))
}

/// The last lines of a log file, for failure messages.
pub fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `ip <args>` in the test's own network namespace.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A network namespace the test created (`ip netns add`), deleted when dropped. Deleting it
/// destroys the interfaces inside it, and with each veth its other end wherever that is; the
/// processes started in it must have exited first (a namespace lives as long as they do).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Names made by `Netns::for_test` start with this, then the test process's pid.
    const PREFIX: &'static str = "skiff-e2e-";

    /// A namespace named after this test process (`skiff-e2e-<pid>-<suffix>`), with its
    /// loopback up.
    pub fn for_test(suffix: &str) -> Result<Self> {
        let name = format!("{}{}-{suffix}", Self::PREFIX, std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Deletes namespaces that earlier test processes made and could not delete (they were
    /// killed): those whose pid is gone.
    pub fn sweep_stale() -> Result<()> {
        for line in ip(&["netns", "list"])?.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix(Self::PREFIX)
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
        Ok(())
    }

    /// `ip -n <namespace> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `program` to be run in this namespace (`ip netns exec` execs it: the child's pid is
    /// the program's own).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete network namespace {}: {e:#}", self.name);
        }
    }
}

/// `GET /` over plain HTTP/1.0 to `addr` (`ip:port`); the whole answer, headers and body.
pub fn http_get(addr: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().with_context(|| format!("address {addr}"))?,
        Duration::from_secs(3),
    )
    .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The busybox image `with_cluster` pushes, as pods name it.
pub fn busybox(registry: &str) -> String {
    format!("{registry}/busybox:1.36")
}

/// Runs `scenario` with a `skiff up` cluster on a temporary work dir (not started: scenarios
/// start, and may restart, it themselves) and a registry holding [`busybox`]. Whatever the
/// outcome, the cluster is stopped and the host cleared; on failure the tail of its log is
/// printed.
pub fn with_cluster(scenario: impl FnOnce(&mut Cluster, &Path, &str) -> Result<()>) -> Result<()> {
    require_root()?;
    let tmp = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
    let work = tmp.path();
    let (_registry, reg) = start_registry(work)?;
    push_busybox(&work.join("image"), &reg, "busybox:1.36")?;
    let mut c = Cluster::new(work)?;
    let result = scenario(&mut c, work, &reg);
    if result.is_err() {
        eprintln!("--- skiff up log (tail) ---\n{}", tail(&c.log));
    }
    let _ = c.stop();
    cleanup_host(work);
    result
}
