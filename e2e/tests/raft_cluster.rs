//! A three-member control plane as real processes (`skiff controller`), with writes streaming in
//! through every member's REST API:
//!
//! - on loopback, the leader is killed with SIGKILL and then restarted on the same data dir;
//! - each member in its own network namespace, the leader is cut off from the others (its link
//!   to the peer bridge goes down; its API stays reachable) and then let back in, while watches
//!   follow the writes across the change of leader.
//!
//! Every acknowledged write must be on every member at the end. The leader is found with
//! `GET /skiff/raft` on any member. A third test adds a member with `skiff controller member
//! add` and removes it with `member remove`, as the README shows. The kill and membership tests
//! need no root; the partition test does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::*;
use serde_json::Value;

struct Member {
    name: String,
    api: SocketAddr,
    peer: SocketAddr,
    data: PathBuf,
    proc: Option<Proc>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the raw body.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    // Longer than the server's own request timeout (10 s): the server answers first.
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

fn start(
    bin: &Path,
    m: &mut Member,
    members: &str,
    logs: &Path,
    netns: Option<&Netns>,
) -> Result<()> {
    let cmd = match netns {
        Some(ns) => ns.command(bin),
        None => Command::new(bin),
    };
    spawn_member(cmd, m, members, logs, false)
}

/// Runs `skiff controller` for `m` with `cmd` (the binary, maybe inside a namespace); `join`
/// for a member added to a running cluster.
fn spawn_member(
    mut cmd: Command,
    m: &mut Member,
    members: &str,
    logs: &Path,
    join: bool,
) -> Result<()> {
    cmd.arg("controller")
        .args(["--name", &m.name])
        .arg("--data-dir")
        .arg(&m.data)
        .args(["--listen", &m.api.to_string()])
        .args(["--peer-listen", &m.peer.to_string()])
        .args(["--initial-members", members])
        .env("RUST_LOG", "info");
    if join {
        cmd.arg("--join");
    }
    let log = logs.join(format!("{}.log", m.name));
    // Append: a restarted member's log follows its first life.
    let prev = std::fs::read(&log).unwrap_or_default();
    m.proc = Some(Proc::spawn(&m.name, &mut cmd, &log)?);
    if !prev.is_empty() {
        std::fs::write(logs.join(format!("{}.1.log", m.name)), prev)?;
    }
    Ok(())
}

fn member_list(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",")
}

fn raft(m: &Member) -> Result<Value> {
    let (code, body) = http(m.api, "GET", "/skiff/raft", None)?;
    ensure!(code == 200, "/skiff/raft on {}: {code}", m.name);
    Ok(serde_json::from_str(&body)?)
}

/// The leader's name, once the given members agree on one.
fn leader(members: &[&Member]) -> Result<String> {
    wait_for(
        "the members to agree on a leader",
        Duration::from_secs(30),
        || {
            let mut leader = None;
            let mut name = None;
            for m in members {
                let v = raft(m)?;
                let Some(l) = v["leader"].as_u64() else {
                    return Ok(None);
                };
                if leader.is_some_and(|x| x != l) {
                    return Ok(None);
                }
                leader = Some(l);
                if v["is_leader"] == true {
                    name = v["name"].as_str().map(str::to_string);
                }
            }
            Ok(name)
        },
    )
}

fn create(addr: SocketAddr, name: &str) -> Result<u16> {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"{name}"}}}}"#
    );
    Ok(http(
        addr,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&body),
    )?
    .0)
}

/// Configmaps by name: (resourceVersion, `data.k`).
type Listing = BTreeMap<String, (u64, String)>;

/// A poisoned lock only means another thread of the test panicked: its data is still good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every configmap in `default` on one member (behind its read barrier), and the list's
/// resourceVersion.
fn list(m: &Member) -> Result<(Listing, u64)> {
    let (code, body) = http(m.api, "GET", "/api/v1/namespaces/default/configmaps", None)?;
    ensure!(code == 200, "list on {}: {code} {body}", m.name);
    let v: Value = serde_json::from_str(&body)?;
    let rv = |o: &Value| {
        o["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .context("no resourceVersion")
    };
    let mut items = BTreeMap::new();
    for item in v["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().context("no name")?;
        let value = item["data"]["k"].as_str().unwrap_or_default().to_string();
        items.insert(name.to_string(), (rv(&item["metadata"])?, value));
    }
    Ok((items, rv(&v["metadata"])?))
}

/// A member on loopback ports, its data under `work`; not started.
fn loopback_member(work: &Path, name: &str) -> Result<Member> {
    Ok(Member {
        name: name.to_string(),
        api: loopback(free_port()?),
        peer: loopback(free_port()?),
        data: work.join(name),
        proc: None,
    })
}

/// Members a, b and c on loopback, started; and their `--initial-members` list.
fn start_three_on_loopback(bin: &Path, work: &Path) -> Result<(Vec<Member>, String)> {
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| loopback_member(work, n))
        .collect::<Result<_>>()?;
    let list_arg = member_list(&members);
    for m in &mut members {
        start(bin, m, &list_arg, work, None)?;
    }
    Ok((members, list_arg))
}

/// Every configmap name `m` lists, once it answers.
fn names_on(m: &Member) -> Option<BTreeSet<String>> {
    list(m).ok().map(|(items, _)| items.into_keys().collect())
}

#[test]
fn members_are_added_and_removed_with_the_cli() -> Result<()> {
    let bin = skiff_bin()?;
    let work = tempfile::tempdir()?;
    let (members, list_arg) = start_three_on_loopback(&bin, work.path())?;
    leader(&members.iter().collect::<Vec<_>>())?;
    let before: BTreeSet<String> = (0..20).map(|i| format!("before-{i}")).collect();
    for (i, name) in before.iter().enumerate() {
        let code = create(members[i % 3].api, name)?;
        ensure!(code == 201, "create {name}: {code}");
    }
    let member_cmd =
        |args: &[&str]| run(Command::new(&bin).args(["controller", "member"]).args(args));
    let via = members[0].peer.to_string();

    let mut d = loopback_member(work.path(), "d")?;
    let out = member_cmd(&["add", "d", &d.peer.to_string(), "--via", &via])?;
    ensure!(out.contains("member d added"), "member add: {out}");
    // Started as the README says: every member listed, itself included, and --join.
    let full = format!("{list_arg},d={}", d.peer);
    spawn_member(Command::new(&bin), &mut d, &full, work.path(), true)?;
    // The new member is caught up (by a snapshot: it starts empty) and serves what was written
    // before it joined.
    wait_for(
        "d to serve the writes made before it joined",
        Duration::from_secs(30),
        || Ok(names_on(&d).filter(|n| before.is_subset(n)).map(|_| ())),
    )?;
    let out = member_cmd(&["list", "--via", &via])?;
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(
        names == ["a", "b", "c", "d"]
            && out.contains(&d.peer.to_string())
            && out.lines().filter(|l| l.ends_with("leader")).count() == 1,
        "member list with d (by name, one leader): {out}"
    );
    // A write through the new member is acknowledged and reaches the others.
    let code = create(d.api, "through-d")?;
    ensure!(code == 201, "create through d: {code}");
    for m in &members {
        wait_for(
            &format!("{} to list through-d", m.name),
            Duration::from_secs(10),
            || Ok(names_on(m).filter(|n| n.contains("through-d")).map(|_| ())),
        )?;
    }

    let out = member_cmd(&["remove", "d", "--via", &members[1].peer.to_string()])?;
    ensure!(out.contains("member d removed"), "member remove: {out}");
    let out = member_cmd(&["list", "--via", &via])?;
    ensure!(
        out.lines().count() == 4 && !out.contains(&d.peer.to_string()),
        "member list after removing d: {out}"
    );
    drop(d.proc.take());
    // The three go on without it.
    let code = create(members[2].api, "after-removal")?;
    ensure!(code == 201, "create after removing d: {code}");
    Ok(())
}

#[test]
fn acknowledged_writes_survive_killing_the_leader() -> Result<()> {
    let bin = skiff_bin()?;
    let work = tempfile::tempdir()?;
    let (mut members, list_arg) = start_three_on_loopback(&bin, work.path())?;
    let first = leader(&members.iter().collect::<Vec<_>>())?;
    println!("leader: {first}");

    let mut acked = Vec::new();
    let mut failed = 0;
    let mut n = 0;
    let mut write = |members: &[Member], acked: &mut Vec<String>, rounds: usize| {
        for _ in 0..rounds {
            n += 1;
            let name = format!("cm-{n}");
            // Round robin over the members that are up, as a load balancer would.
            let up: Vec<&Member> = members.iter().filter(|m| m.proc.is_some()).collect();
            let m = up[n % up.len()];
            match create(m.api, &name) {
                Ok(201) => acked.push(name),
                Ok(_) | Err(_) => failed += 1,
            }
        }
    };
    write(&members, &mut acked, 40);
    let victim = members
        .iter_mut()
        .find(|m| m.name == first)
        .context("leader is a member")?;
    if let Some(mut p) = victim.proc.take() {
        p.child.kill()?; // SIGKILL: no drain, no flush beyond what raft already fsynced
        p.child.wait()?;
    }
    write(&members, &mut acked, 40);
    let survivors: Vec<&Member> = members.iter().filter(|m| m.proc.is_some()).collect();
    let second = leader(&survivors)?;
    ensure!(second != first, "the killed member still leads");
    println!("new leader: {second}");
    let victim = members
        .iter_mut()
        .find(|m| m.name == first)
        .context("leader is a member")?;
    start(&bin, victim, &list_arg, work.path(), None)?;
    let addr = victim.api;
    wait_for(
        "the restarted member's API",
        Duration::from_secs(30),
        || Ok(http(addr, "GET", "/skiff/raft", None).ok().map(|_| ())),
    )?;
    write(&members, &mut acked, 40);
    println!("{} writes acknowledged, {failed} failed", acked.len());
    ensure!(
        acked.len() >= 60,
        "too few writes acknowledged: {}",
        acked.len()
    );

    // Every acknowledged write on every member (each list is behind a read barrier).
    for m in &members {
        wait_for(
            &format!("member {} to list every acknowledged configmap", m.name),
            Duration::from_secs(30),
            || {
                let (items, _) = list(m)?;
                let missing: Vec<&String> =
                    acked.iter().filter(|n| !items.contains_key(*n)).collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    bail!("missing on {}: {missing:?}", m.name)
                }
            },
        )?;
    }
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            let st = p.terminate(Duration::from_secs(10))?;
            ensure!(st.success(), "{} exited with {st}", m.name);
        }
    }
    Ok(())
}

/// Three members' network namespaces on two bridges in a hub namespace: `api`, which the host
/// also reaches through a veth so the test can call every member's API, and `peer`, which
/// carries raft traffic only. Cutting a member's port on `peer` isolates it from the other
/// members while its API still answers the test. Everything is in namespaces this test made,
/// on a private /24 (10.251.x.0: .0/25 for the API, .128/25 for peers); dropping the namespaces
/// removes every interface, the host's veth included.
struct PartitionNet {
    members: Vec<Netns>,
    hub: Netns,
    subnet: u8,
    /// The host's end of the veth to the hub.
    host_if: String,
}

impl PartitionNet {
    fn new(n: usize) -> Result<Self> {
        // A third octet nothing on the host uses yet, starting from one derived from the pid so
        // that tests in other worktrees rarely even try the same one.
        let used = ip(&["-4", "-o", "addr"])? + &ip(&["-4", "route"])?;
        let first = std::process::id() % 200;
        let subnet = (0..200)
            .map(|i| 20 + (first + i) % 200)
            .find(|x| !used.contains(&format!("10.251.{x}.")))
            .and_then(|x| u8::try_from(x).ok())
            .context("no free 10.251.x.0/24 on this host")?;
        let hub = Netns::for_test("hub")?;
        let mut net = Self {
            members: Vec::new(),
            hub,
            subnet,
            host_if: format!("skiff{}", std::process::id()),
        };
        for bridge in ["api", "peer"] {
            net.hub.ip(&["link", "add", bridge, "type", "bridge"])?;
            net.hub.ip(&["link", "set", bridge, "up"])?;
        }
        let host_if = net.host_if.clone();
        ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            &net.hub.name,
        ])?;
        net.hub
            .ip(&["link", "set", "host", "master", "api", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.251.{subnet}.1/25"),
            "dev",
            &host_if,
        ])?;
        ip(&["link", "set", &host_if, "up"])?;
        for i in 0..n {
            let ns = Netns::for_test(&i.to_string())?;
            for (link, addr) in [("api", net.api_ip(i)), ("peer", net.peer_ip(i))] {
                let port = format!("{link}{i}");
                net.hub.ip(&[
                    "link", "add", &port, "type", "veth", "peer", "name", link, "netns", &ns.name,
                ])?;
                net.hub.ip(&["link", "set", &port, "master", link, "up"])?;
                ns.ip(&["addr", "add", &format!("{addr}/25"), "dev", link])?;
                ns.ip(&["link", "set", link, "up"])?;
            }
            net.members.push(ns);
        }
        Ok(net)
    }

    fn api_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 251, self.subnet, 11 + i as u8))
    }

    fn peer_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 251, self.subnet, 139 + i as u8))
    }

    /// Takes member `i`'s port on the peer bridge down (`true`) or up again.
    fn cut(&self, i: usize, cut: bool) -> Result<()> {
        let state = if cut { "down" } else { "up" };
        self.hub
            .ip(&["link", "set", &format!("peer{i}"), state])
            .map(|_| ())
    }
}

impl Drop for PartitionNet {
    fn drop(&mut self) {
        // Deleting the hub would take the host's veth with it, but only once the kernel gets
        // round to it: delete it now, so nothing is left when the test returns.
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// One POST and what came of it.
#[derive(Debug, Clone)]
struct Attempt {
    member: usize,
    name: String,
    sent: Instant,
    done: Instant,
    /// The HTTP status, or the client-side error (connection refused, timed out).
    outcome: Result<u16, String>,
}

impl Attempt {
    fn acked(&self) -> bool {
        matches!(self.outcome, Ok(201))
    }
}

/// Sets the flag when dropped, so threads stop even when the test fails half-way.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Creates configmaps `w<member>-<n>` through one member's API, one after another, until told
/// to stop, recording every attempt.
fn writer(
    member: usize,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let name = format!("w{member}-{n}");
            let sent = Instant::now();
            let outcome = create(addr, &name).map_err(|e| format!("{e:#}"));
            let failed = !matches!(outcome, Ok(201));
            lock(&log).push(Attempt {
                member,
                name,
                sent,
                done: Instant::now(),
                outcome,
            });
            if failed {
                // A refused connection fails at once: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// One event of a watch: its type, the object's name, resourceVersion and `data.k`.
type WatchEvent = (String, String, u64, String);

/// A watch on configmaps in `default`, read by a thread into `events` until stopped.
struct Watch {
    after: u64,
    what: String,
    events: Arc<Mutex<Vec<WatchEvent>>>,
    /// Why the stream ended early, if it did.
    ended: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    fn start(what: &str, addr: SocketAddr, after: u64, stop: Arc<AtomicBool>) -> Result<Self> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        write!(
            s,
            "GET /api/v1/namespaces/default/configmaps?watch=1&resourceVersion={after} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        // Short reads so the thread notices `stop`.
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let events: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
        let ended: Arc<Mutex<Option<String>>> = Arc::default();
        let (ev, end, halt) = (events.clone(), ended.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let why = match read_watch(&mut s, &ev, &halt) {
                Ok(()) if halt.load(Ordering::SeqCst) => return,
                Ok(()) => "the server closed the watch".to_string(),
                Err(e) => format!("{e:#}"),
            };
            *lock(&end) = Some(why);
        });
        Ok(Self {
            after,
            what: what.to_string(),
            events,
            ended,
            stop,
            thread: Some(thread),
        })
    }

    fn events(&self) -> Vec<WatchEvent> {
        lock(&self.events).clone()
    }

    fn last_rv(&self) -> u64 {
        self.events().last().map_or(self.after, |e| e.2)
    }

    fn ended(&self) -> Option<String> {
        lock(&self.ended).clone()
    }

    /// Checks the events against the final list: resourceVersions strictly increase, and the
    /// events are exactly the list's objects created after the watch's start, up to the last
    /// event (only creates happen here, so each object's resourceVersion is its ADDED event's).
    fn check(&self, items: &Listing) -> Result<usize> {
        let events = self.events();
        let mut last = self.after;
        for (ty, name, rv, _) in &events {
            ensure!(
                *rv > last,
                "{}: {ty} {name} at resourceVersion {rv} after {last}",
                self.what
            );
            ensure!(ty == "ADDED", "{}: unexpected {ty} of {name}", self.what);
            last = *rv;
        }
        let seen: BTreeSet<(u64, &str, &str)> = events
            .iter()
            .map(|(_, n, rv, v)| (*rv, n.as_str(), v.as_str()))
            .collect();
        let want: BTreeSet<(u64, &str, &str)> = items
            .iter()
            .filter(|(_, (rv, _))| *rv > self.after && *rv <= last)
            .map(|(n, (rv, v))| (*rv, n.as_str(), v.as_str()))
            .collect();
        let skipped: Vec<_> = want.difference(&seen).collect();
        let extra: Vec<_> = seen.difference(&want).collect();
        ensure!(
            skipped.is_empty() && extra.is_empty(),
            "{}: skipped {skipped:?}; not in the final list: {extra:?}",
            self.what
        );
        Ok(events.len())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // A watch dropped early (the test failed) stops its fellow watches too.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a chunked watch response, parsing each complete line into `events`.
fn read_watch(s: &mut TcpStream, events: &Mutex<Vec<WatchEvent>>, stop: &AtomicBool) -> Result<()> {
    let mut raw = Vec::new();
    let mut body = Vec::new();
    let mut headers_done = false;
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        raw.extend_from_slice(&buf[..n]);
        if !headers_done {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            ensure!(head.starts_with("http/1.1 200"), "watch refused: {head}");
            ensure!(
                head.contains("transfer-encoding: chunked"),
                "watch not chunked: {head}"
            );
            raw.drain(..end + 4);
            headers_done = true;
        }
        // Whole chunks: "<hex size>\r\n<data>\r\n".
        while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16)
                .context("bad chunk size")?;
            if size == 0 {
                return Ok(());
            }
            if raw.len() < eol + 2 + size + 2 {
                break;
            }
            body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
            raw.drain(..eol + 2 + size + 2);
        }
        while let Some(nl) = body.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = body.drain(..=nl).collect();
            let v: Value = serde_json::from_slice(&line)?;
            let ty = v["type"].as_str().unwrap_or_default().to_string();
            ensure!(ty != "ERROR", "watch error: {v}");
            let meta = &v["object"]["metadata"];
            let rv = meta["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .context("event without resourceVersion")?;
            let name = meta["name"].as_str().unwrap_or_default().to_string();
            let value = v["object"]["data"]["k"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            lock(events).push((ty, name, rv, value));
        }
    }
    Ok(())
}

/// The attempts matching `f`, for counting and for failure messages.
fn attempts(all: &[Attempt], f: impl Fn(&Attempt) -> bool) -> Vec<&Attempt> {
    all.iter().filter(|a| f(a)).collect()
}

fn describe(a: &[&Attempt]) -> String {
    a.iter()
        .take(10)
        .map(|a| {
            let took = (a.done - a.sent).as_secs_f64();
            format!(
                "{} via member {}: {:?} in {took:.1}s",
                a.name, a.member, a.outcome
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Issue 3: the leader is cut off from the other two members while writes stream in through
/// all three. The two elect a new leader and go on acknowledging writes, through either of
/// them; the old leader acknowledges nothing while cut off; once let back in it follows the new
/// leader and catches up. Every acknowledged write is then on every member, and two watches —
/// one open across the change of leader, one resumed on the new leader from a resourceVersion
/// from before the cut — saw every write in order, none skipped.
#[test]
fn a_partitioned_leader_acknowledges_nothing_and_rejoins() -> Result<()> {
    require_root()?;
    Netns::sweep_stale()?;
    let bin = skiff_bin()?;
    let work = tempfile::tempdir()?;
    let net = PartitionNet::new(3)?;
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| Member {
            name: n.to_string(),
            api: SocketAddr::new(net.api_ip(i), 6443),
            peer: SocketAddr::new(net.peer_ip(i), 2380),
            data: work.path().join(n),
            proc: None,
        })
        .collect();
    let list_arg = member_list(&members);
    for (i, m) in members.iter_mut().enumerate() {
        start(&bin, m, &list_arg, work.path(), Some(&net.members[i]))?;
    }
    let all: Vec<&Member> = members.iter().collect();
    let first = leader(&all)?;
    let old = members
        .iter()
        .position(|m| m.name == first)
        .context("leader")?;
    let majority: Vec<usize> = (0..members.len()).filter(|i| *i != old).collect();
    let ids: Vec<u64> = members
        .iter()
        .map(|m| raft(m)?["id"].as_u64().context("no raft id"))
        .collect::<Result<_>>()?;
    println!("leader: {first}");

    // Writers stop before the final checks, watches after them.
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let stop_watches = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let (_, rv0) = list(&members[majority[0]])?;
    let watch_a = Watch::start(
        "the watch across the change of leader",
        members[majority[0]].api,
        rv0,
        stop_watches.0.clone(),
    )?;
    let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let writers: Vec<JoinHandle<()>> = members
        .iter()
        .enumerate()
        .map(|(i, m)| writer(i, m.api, log.clone(), stop.0.clone()))
        .collect();
    let count = |f: &dyn Fn(&Attempt) -> bool| lock(&log).iter().filter(|a| f(a)).count();

    wait_for(
        "writes through every member before the cut",
        Duration::from_secs(60),
        || {
            Ok((0..3)
                .all(|i| count(&|a| a.member == i && a.acked()) >= 10)
                .then_some(()))
        },
    )?;
    let resume_from = watch_a.last_rv();
    ensure!(resume_from > rv0, "the watch saw none of the first writes");

    // The cut takes effect when `ip` returns, not when it is started: writes sent in between
    // may rightly commit, so only those sent after it count as sent to a cut-off member.
    net.cut(old, true)?;
    let cut_at = Instant::now();
    let second = leader(&majority.iter().map(|i| &members[*i]).collect::<Vec<_>>())?;
    let elected_at = Instant::now();
    ensure!(second != first, "the cut-off member still leads the others");
    let new = members
        .iter()
        .position(|m| m.name == second)
        .context("leader")?;
    println!(
        "new leader: {second}, {:.1}s after the cut",
        (elected_at - cut_at).as_secs_f64()
    );
    // check_quorum: a leader that hears from no majority steps down.
    wait_for(
        "the cut-off leader to step down",
        Duration::from_secs(20),
        || Ok((raft(&members[old])?["is_leader"] == false).then_some(())),
    )?;
    let watch_b = Watch::start(
        "the watch resumed on the new leader",
        members[new].api,
        resume_from,
        stop_watches.0.clone(),
    )?;
    // The majority goes on, through both of its members; the cut-off member answers writes
    // sent after the cut (not with 201, checked below) — the oldest may wait out the server's
    // 10 s request timeout.
    wait_for(
        "writes through the majority, and answers from the cut-off member",
        Duration::from_secs(60),
        || {
            let majority_acked = majority
                .iter()
                .all(|i| count(&|a| a.member == *i && a.sent > elected_at && a.acked()) >= 10);
            // The first may have been proposed before the leader stepped down (it waits out
            // the request timeout), the next ones find no leader.
            let isolated_answered = count(&|a| a.member == old && a.sent > cut_at) >= 2;
            Ok((majority_acked && isolated_answered).then_some(()))
        },
    )?;

    let healed_at = Instant::now();
    net.cut(old, false)?;
    let new_id = ids[new];
    wait_for(
        "the old leader to follow the new one",
        Duration::from_secs(30),
        || {
            let v = raft(&members[old])?;
            Ok((v["is_leader"] == false && v["leader"].as_u64() == Some(new_id)).then_some(()))
        },
    )?;
    let rejoined_at = Instant::now();
    wait_for(
        "writes through the old leader after it rejoined",
        Duration::from_secs(30),
        || {
            Ok(
                (count(&|a| a.member == old && a.sent > rejoined_at && a.acked()) >= 5)
                    .then_some(()),
            )
        },
    )?;
    stop.0.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
    }
    let log = lock(&log).clone();

    // Every acknowledged write on every member, with the same resourceVersion and value.
    let acked: Vec<&Attempt> = attempts(&log, Attempt::acked);
    let mut lists = Vec::new();
    for m in &members {
        let (items, _) = wait_for(
            &format!("member {} to list every acknowledged configmap", m.name),
            Duration::from_secs(30),
            || {
                let (items, rv) = list(m)?;
                let missing: Vec<&str> = acked
                    .iter()
                    .filter(|a| !items.contains_key(&a.name))
                    .map(|a| a.name.as_str())
                    .collect();
                if missing.is_empty() {
                    Ok(Some((items, rv)))
                } else {
                    bail!(
                        "{} acknowledged writes missing on {}: {missing:?}",
                        missing.len(),
                        m.name
                    )
                }
            },
        )?;
        lists.push(items);
    }
    for (m, items) in members.iter().zip(&lists).skip(1) {
        ensure!(
            *items == lists[0],
            "members {} and {} list different configmaps",
            members[0].name,
            m.name
        );
    }
    let items = &lists[0];
    for a in &acked {
        ensure!(items[&a.name].1 == a.name, "{} has another value", a.name);
    }

    // The isolated member acknowledged nothing while cut off (a write sent before the cut may
    // still have committed through the others: only those sent after it count).
    let isolated = attempts(&log, |a| {
        a.member == old && a.sent > cut_at && a.done < healed_at
    });
    ensure!(
        !isolated.is_empty(),
        "no write through the cut-off member was answered"
    );
    let wrong = attempts(&log, |a| {
        a.member == old && a.sent > cut_at && a.done < healed_at && a.acked()
    });
    ensure!(
        wrong.is_empty(),
        "the cut-off member acknowledged writes: {}",
        describe(&wrong)
    );
    // Writes through the majority fail only while it has no leader: those answered before the
    // cut and those sent after the election all succeed; so do writes through the old leader
    // once it follows the new one.
    let before = attempts(&log, |a| a.done < cut_at && !a.acked());
    ensure!(
        before.is_empty(),
        "writes failed before the cut: {}",
        describe(&before)
    );
    let after = attempts(&log, |a| {
        a.member != old && a.sent > elected_at && !a.acked()
    });
    ensure!(
        after.is_empty(),
        "writes through the majority failed after the election: {}",
        describe(&after)
    );
    let rejoined = attempts(&log, |a| {
        a.member == old && a.sent > rejoined_at && !a.acked()
    });
    ensure!(
        rejoined.is_empty(),
        "writes through the rejoined member failed: {}",
        describe(&rejoined)
    );
    ensure!(
        elected_at - cut_at < Duration::from_secs(10),
        "the majority took {:?} to elect a leader",
        elected_at - cut_at
    );
    let window = attempts(&log, |a| {
        a.member != old && a.done >= cut_at && a.sent <= elected_at && !a.acked()
    });

    // Both watches reach the last write and saw every write since they started, in order.
    let last = items.values().map(|(rv, _)| *rv).max().unwrap_or(0);
    let mut seen = Vec::new();
    for w in [&watch_a, &watch_b] {
        wait_for(
            &format!("{} to reach {last}", w.what),
            Duration::from_secs(30),
            || {
                if let Some(why) = w.ended() {
                    bail!("{} ended: {why}", w.what);
                }
                Ok((w.last_rv() >= last).then_some(()))
            },
        )?;
        seen.push(w.check(items)?);
    }
    println!(
        "{} writes acknowledged, 0 missing on {} members; {} failed in the {:.1}s without a leader \
         ({}); the cut-off member answered {} ({}); watches saw {} and {} events",
        acked.len(),
        members.len(),
        window.len(),
        (elected_at - cut_at).as_secs_f64(),
        describe(&window),
        isolated.len(),
        describe(&isolated),
        seen[0],
        seen[1],
    );

    drop(stop_watches);
    drop(watch_a);
    drop(watch_b);
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            let st = p.terminate(Duration::from_secs(10))?;
            ensure!(st.success(), "{} exited with {st}", m.name);
        }
    }
    Ok(())
}
