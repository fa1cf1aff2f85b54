//! A three-member control plane as real processes (`skiff controller` on loopback ports): writes
//! stream in through every member's REST API while the leader is killed with SIGKILL and then
//! restarted on the same data dir; every acknowledged write must be on every member at the end.
//! The leader is found with `GET /skiff/raft` on any member. Needs no root.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::*;
use serde_json::Value;

struct Member {
    name: String,
    api: u16,
    peer: u16,
    data: PathBuf,
    proc: Option<Proc>,
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the raw body.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

fn start(bin: &Path, m: &mut Member, members: &str, logs: &Path) -> Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("controller")
        .args(["--name", &m.name])
        .arg("--data-dir")
        .arg(&m.data)
        .args(["--listen", &format!("127.0.0.1:{}", m.api)])
        .args(["--peer-listen", &format!("127.0.0.1:{}", m.peer)])
        .args(["--initial-members", members])
        .env("RUST_LOG", "info");
    let log = logs.join(format!("{}.log", m.name));
    // Append: a restarted member's log follows its first life.
    let prev = std::fs::read(&log).unwrap_or_default();
    m.proc = Some(Proc::spawn(&m.name, &mut cmd, &log)?);
    if !prev.is_empty() {
        std::fs::write(logs.join(format!("{}.1.log", m.name)), prev)?;
    }
    Ok(())
}

/// The leader's name, once the given members agree on one.
fn leader(members: &[&Member]) -> Result<String> {
    wait_for(
        "the members to agree on a leader",
        Duration::from_secs(30),
        || {
            let mut leader = None;
            for m in members {
                let (code, body) = http(m.api, "GET", "/skiff/raft", None)?;
                ensure!(code == 200, "/skiff/raft on {}: {code}", m.name);
                let v: Value = serde_json::from_str(&body)?;
                let Some(l) = v["leader"].as_u64() else {
                    return Ok(None);
                };
                if leader.is_some_and(|x| x != l) {
                    return Ok(None);
                }
                leader = Some(l);
                if v["is_leader"] == true {
                    return Ok(v["name"].as_str().map(str::to_string));
                }
            }
            Ok(None)
        },
    )
}

fn create(port: u16, name: &str) -> Result<u16> {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"{name}"}}}}"#
    );
    Ok(http(
        port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&body),
    )?
    .0)
}

#[test]
fn acknowledged_writes_survive_killing_the_leader() -> Result<()> {
    let bin = skiff_bin()?;
    let work = tempfile::tempdir()?;
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            Ok(Member {
                name: n.to_string(),
                api: free_port()?,
                peer: free_port()?,
                data: work.path().join(n),
                proc: None,
            })
        })
        .collect::<Result<_>>()?;
    let list = members
        .iter()
        .map(|m| format!("{}=127.0.0.1:{}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",");
    for m in &mut members {
        start(&bin, m, &list, work.path())?;
    }
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
    start(&bin, victim, &list, work.path())?;
    let port = victim.api;
    wait_for(
        "the restarted member's API",
        Duration::from_secs(30),
        || Ok(http(port, "GET", "/skiff/raft", None).ok().map(|_| ())),
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
        let missing = wait_for(
            &format!("member {} to list every acknowledged configmap", m.name),
            Duration::from_secs(30),
            || {
                let (code, body) =
                    http(m.api, "GET", "/api/v1/namespaces/default/configmaps", None)?;
                ensure!(code == 200, "list on {}: {code}", m.name);
                let missing: Vec<&String> = acked
                    .iter()
                    .filter(|n| !body.contains(&format!("\"name\":\"{n}\"")))
                    .collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    bail!("missing on {}: {missing:?}", m.name)
                }
            },
        );
        missing?;
    }
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            let st = p.terminate(Duration::from_secs(10))?;
            ensure!(st.success(), "{} exited with {st}", m.name);
        }
    }
    Ok(())
}
