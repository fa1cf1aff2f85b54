//! The host a cluster is made on: the boundary between [`crate::Clusters`] and the kernel and
//! processes. [`LinuxHost`] is the real one: the cluster's bridge (`skc…`, with the nodes'
//! gateway address), IP forwarding and the NAT of the cluster's subnet (nftables table
//! `ip skiff-cluster-NAME`: nodes reach outside, as kind's nodes do), a network namespace per
//! node (`ip netns` names it `skiff-NODE`) joined to the bridge by a veth whose inner end is
//! the node's `eth0`, and the nodes' skiff processes, started in their namespace in a session
//! of their own so they outlive the command that started them.

// `pre_exec` is unsafe: the closures run between fork and exec and make only setns(2) and
// setsid(2) calls.
#![allow(unsafe_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ClusterError;
use crate::spec::{ClusterSpec, Launch, NodeSpec};

/// What [`crate::Clusters`] needs of the host.
pub trait Host: Send + Sync {
    /// The host's IPv4 networks (its links' addresses and its routes), to pick a free subnet.
    fn networks(&self) -> impl Future<Output = Result<Vec<(Ipv4Addr, u8)>, ClusterError>> + Send;
    /// The cluster's bridge with the gateway address, up; forwarding and NAT for its subnet.
    fn ensure_bridge(
        &self,
        spec: &ClusterSpec,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// The node's namespace and its link to the bridge, addressed and routed.
    fn ensure_node(
        &self,
        spec: &ClusterSpec,
        node: &NodeSpec,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Whether the network namespace `name` exists.
    fn has_netns(&self, name: &str) -> bool;
    /// Deletes the node's namespace (its veth goes with it); whether there was one.
    fn remove_node(
        &self,
        node: &NodeSpec,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Deletes the bridge and the NAT table; what it removed.
    fn remove_bridge(
        &self,
        spec: &ClusterSpec,
    ) -> impl Future<Output = Result<Vec<String>, ClusterError>> + Send;
    /// Starts a node's process, detached; its pid.
    fn spawn(&self, launch: &Launch) -> Result<u32, ClusterError>;
    /// Runs skiff with `args` (in the namespace `netns`, if given) and waits; its stdout.
    fn run(
        &self,
        netns: Option<&str>,
        args: &[String],
    ) -> impl Future<Output = Result<String, ClusterError>> + Send;
    /// The pid of the process holding `data_dir` (see `skiff`'s data dir lock), if any.
    fn holder(&self, data_dir: &Path) -> Option<u32>;
    /// SIGTERM to `pid`, then SIGKILL if it still runs after `grace`.
    fn terminate(
        &self,
        pid: u32,
        grace: Duration,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
}

/// The real host: netlink, `/run/netns`, processes of the skiff binary at `exe`.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    pub exe: PathBuf,
}

fn route_conn() -> Result<nlink::Connection<nlink::Route>, ClusterError> {
    nlink::Connection::<nlink::Route>::new().map_err(ClusterError::netlink("cannot open netlink"))
}

/// The NAT table of a cluster.
pub fn nat_table(cluster: &str) -> String {
    format!("skiff-cluster-{cluster}")
}

impl LinuxHost {
    async fn ensure_nat(&self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        use nlink::netlink::nftables::{BaseChain, Chain, Family, NatHook, Priority, Rule};
        let table = nat_table(&spec.name);
        let fail = || ClusterError::netlink(format!("cannot write nftables table ip {table}"));
        let conn = nlink::Connection::<nlink::Nftables>::new().map_err(fail())?;
        let chain = Chain::new(table.as_str(), "postrouting").map_err(fail())?;
        let (net, prefix) = spec.network();
        let exists = conn
            .list_tables_in(Family::Ip)
            .await
            .map_err(fail())?
            .iter()
            .any(|t| t.name == table);
        let mut tx = conn.transaction();
        if exists {
            tx = tx.del_table(&table, Family::Ip);
        }
        let tx = tx
            .add_table(&table, Family::Ip)
            .add_chain(
                chain
                    .family(Family::Ip)
                    .base(BaseChain::nat(NatHook::Postrouting, Priority::SrcNat)),
            )
            .add_rule(
                Rule::new(&table, "postrouting")
                    .family(Family::Ip)
                    .match_saddr_v4(net, prefix)
                    .match_oif_not(&spec.bridge)
                    .masquerade(),
            );
        tx.commit(&conn).await.map_err(fail())?;
        // The nodes' traffic to outside (image pulls, DNS) is forwarded by the host.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(ClusterError::io("/proc/sys/net/ipv4/ip_forward"))
    }
}

impl Host for LinuxHost {
    async fn networks(&self) -> Result<Vec<(Ipv4Addr, u8)>, ClusterError> {
        let conn = route_conn()?;
        let fail = || ClusterError::netlink("cannot list the host's addresses and routes");
        let mut nets: Vec<(Ipv4Addr, u8)> = conn
            .get_addresses()
            .await
            .map_err(fail())?
            .iter()
            .filter_map(|a| match a.address() {
                Some(IpAddr::V4(ip)) if !ip.is_loopback() => Some((*ip, a.prefix_len())),
                _ => None,
            })
            .collect();
        for r in conn.get_routes().await.map_err(fail())? {
            if let Some(IpAddr::V4(dst)) = r.destination()
                && r.dst_len() > 0
                && !dst.is_loopback()
            {
                nets.push((*dst, r.dst_len()));
            }
        }
        Ok(nets)
    }

    async fn ensure_bridge(&self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        let conn = route_conn()?;
        let what = format!("cannot set up the bridge {}", spec.bridge);
        let fail = || ClusterError::netlink(what.clone());
        if conn
            .get_link_by_name(spec.bridge.as_str())
            .await
            .map_err(fail())?
            .is_none()
        {
            conn.add_link(nlink::netlink::link::BridgeLink::new(&spec.bridge))
                .await
                .map_err(fail())?;
        }
        conn.replace_address(nlink::netlink::addr::Ipv4Address::new(
            &spec.bridge,
            spec.gateway(),
            spec.network().1,
        ))
        .await
        .map_err(fail())?;
        conn.set_link_up(spec.bridge.as_str())
            .await
            .map_err(fail())?;
        self.ensure_nat(spec).await
    }

    async fn ensure_node(&self, spec: &ClusterSpec, node: &NodeSpec) -> Result<(), ClusterError> {
        use nlink::netlink::namespace;
        let what = format!("cannot set up the network of node {}", node.name);
        let fail = || ClusterError::netlink(what.clone());
        if !namespace::exists(&node.netns) {
            namespace::create_with(
                &node.netns,
                namespace::CreateOptions::new().reclaim_stale(true),
            )
            .map_err(fail())?;
        }
        let host = route_conn()?;
        let inner =
            nlink::Connection::<nlink::Route>::new_in(node.netns.as_str()).map_err(fail())?;
        if host
            .get_link_by_name(node.veth.as_str())
            .await
            .map_err(fail())?
            .is_none()
        {
            // A veth left from a half-made node: its peer is in no namespace of ours.
            if inner
                .get_link_by_name("eth0")
                .await
                .map_err(fail())?
                .is_some()
            {
                inner.del_link("eth0").await.map_err(fail())?;
            }
            host.add_link(
                nlink::netlink::link::VethLink::new(&node.veth, "eth0")
                    .peer_netns(&node.netns)
                    .map_err(fail())?,
            )
            .await
            .map_err(fail())?;
        }
        host.set_link_master(node.veth.as_str(), spec.bridge.as_str())
            .await
            .map_err(fail())?;
        host.set_link_up(node.veth.as_str()).await.map_err(fail())?;
        inner.set_link_up("lo").await.map_err(fail())?;
        inner
            .replace_address(nlink::netlink::addr::Ipv4Address::new(
                "eth0",
                node.ip,
                spec.network().1,
            ))
            .await
            .map_err(fail())?;
        inner.set_link_up("eth0").await.map_err(fail())?;
        inner
            .replace_route(
                nlink::netlink::route::Ipv4Route::default_route().gateway(spec.gateway()),
            )
            .await
            .map_err(fail())?;
        Ok(())
    }

    fn has_netns(&self, name: &str) -> bool {
        nlink::netlink::namespace::exists(name)
    }

    async fn remove_node(&self, node: &NodeSpec) -> Result<bool, ClusterError> {
        use nlink::netlink::namespace;
        // The veth at once: the kernel would take it only once the namespace is freed, later.
        route_conn()?
            .del_link_if_exists(node.veth.as_str())
            .await
            .map_err(ClusterError::netlink(format!(
                "cannot delete the veth {}",
                node.veth
            )))?;
        if !namespace::exists(&node.netns) {
            return Ok(false);
        }
        namespace::delete(&node.netns).map_err(ClusterError::netlink(format!(
            "cannot delete the network namespace {}",
            node.netns
        )))?;
        Ok(true)
    }

    async fn remove_bridge(&self, spec: &ClusterSpec) -> Result<Vec<String>, ClusterError> {
        let mut removed = Vec::new();
        let conn = route_conn()?;
        if conn
            .del_link_if_exists(spec.bridge.as_str())
            .await
            .map_err(ClusterError::netlink(format!(
                "cannot delete the bridge {}",
                spec.bridge
            )))?
        {
            removed.push(format!("bridge {}", spec.bridge));
        }
        let table = nat_table(&spec.name);
        let nft = nlink::Connection::<nlink::Nftables>::new()
            .map_err(ClusterError::netlink("cannot open nftables"))?;
        if nft
            .del_table_if_exists(table.as_str(), nlink::netlink::nftables::Family::Ip)
            .await
            .map_err(ClusterError::netlink(format!(
                "cannot delete table ip {table}"
            )))?
        {
            removed.push(format!("nftables table ip {table}"));
        }
        Ok(removed)
    }

    fn spawn(&self, launch: &Launch) -> Result<u32, ClusterError> {
        use std::os::unix::process::CommandExt as _;
        let what = || format!("{} of node {}", role_name(launch), launch.node);
        if let Some(dir) = launch.log.parent() {
            std::fs::create_dir_all(dir).map_err(ClusterError::io(dir))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(ClusterError::io(&launch.log))?;
        let err = log.try_clone().map_err(ClusterError::io(&launch.log))?;
        let ns = std::fs::File::open(Path::new("/run/netns").join(&launch.netns)).map_err(
            ClusterError::io(Path::new("/run/netns").join(&launch.netns)),
        )?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(&launch.args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: only async-signal-safe calls between fork and exec: setns(2) and setsid(2).
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            what: what(),
            source,
        })?;
        // Not waited for: it runs on after this command ends, and init reaps it then.
        Ok(child.id())
    }

    async fn run(&self, netns: Option<&str>, args: &[String]) -> Result<String, ClusterError> {
        let what = format!("skiff {}", args.join(" "));
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(args).stdin(std::process::Stdio::null());
        let ns = match netns {
            Some(n) => Some(
                std::fs::File::open(Path::new("/run/netns").join(n))
                    .map_err(ClusterError::io(Path::new("/run/netns").join(n)))?,
            ),
            None => None,
        };
        if let Some(ns) = ns {
            // SAFETY: setns(2) only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    Ok(())
                });
            }
        }
        let out = cmd.output().await.map_err(|source| ClusterError::Spawn {
            what: what.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                what,
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn holder(&self, data_dir: &Path) -> Option<u32> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(data_dir.join("skiff.lock")).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => {
                let mut pid = String::new();
                file.read_to_string(&mut pid).ok()?;
                pid.trim().parse().ok()
            }
        }
    }

    async fn terminate(&self, pid: u32, grace: Duration) -> Result<(), ClusterError> {
        use nix::sys::signal::{Signal, kill};
        let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        match kill(target, Signal::SIGTERM) {
            Err(nix::errno::Errno::ESRCH) => return Ok(()),
            r => r.map_err(ClusterError::os(format!("cannot stop pid {pid}")))?,
        }
        let started = tokio::time::Instant::now();
        while started.elapsed() < grace {
            if kill(target, None).is_err() || is_zombie(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = kill(target, Signal::SIGKILL);
        Ok(())
    }
}

/// A process that ended but was not reaped yet (one this process started).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

fn role_name(launch: &Launch) -> &'static str {
    match launch.role {
        crate::spec::Role::Controller => "the controller",
        crate::spec::Role::Agent => "the agent",
        crate::spec::Role::Balancer => "the API load balancer",
    }
}
