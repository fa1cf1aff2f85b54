//! What a cluster is made of, decided once at `create` and kept in `<root>/<name>/cluster.json`:
//! its nodes (names as kind gives them, addresses on the cluster's /24 of 172.30.0.0/16), the
//! host bridge and each node's network namespace and veth, and the command line of every skiff
//! process a node runs. Pure data: nothing here touches the host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// The API server's port on each control-plane node.
pub const API_PORT: u16 = 6443;
/// The control plane's peer (raft) port on each control-plane node.
pub const PEER_PORT: u16 = 6444;
/// The clusters' addresses: cluster `i` has `172.30.i.0/24`, its bridge `.1`.
pub const SUBNET_BASE: [u8; 2] = [172, 30];
/// The prefix length of a cluster's subnet.
pub const PREFIX: u8 = 24;
/// The longest cluster name: node names (`NAME-control-plane3`) stay DNS labels.
pub const MAX_NAME: usize = 40;
/// The API load balancer's address in a cluster's subnet (nodes have `.2` to `.201`).
pub const BALANCER_HOST: u8 = 254;
/// The label (and, with workers, the NoSchedule taint) of control-plane nodes, as kubeadm's.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub control_plane: bool,
    pub ip: Ipv4Addr,
    /// Its network namespace, as `ip netns` names it.
    pub netns: String,
    /// The host end of its veth, on the cluster's bridge.
    pub veth: String,
}

/// A cluster, as `cluster.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub name: String,
    /// The third octet of the cluster's subnet.
    pub subnet: u8,
    pub bridge: String,
    pub nodes: Vec<NodeSpec>,
    /// With several control-plane members: the API load balancer's namespace and address,
    /// which the kubeconfigs name (kind's `NAME-external-load-balancer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<NodeSpec>,
}

/// Which skiff process of a node a [`Launch`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `skiff controller`: a member of the control plane.
    Controller,
    /// `skiff agent`: the node agent with skiff's runtime.
    Agent,
    /// `skiff cluster balance`: the API load balancer.
    Balancer,
}

/// One process to start: in which node's namespace, with which arguments, logging where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub node: String,
    pub netns: String,
    pub role: Role,
    /// Its data dir (the process holds its lock while it runs).
    pub data_dir: PathBuf,
    /// The arguments after the skiff binary.
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// Checks a cluster name: a DNS label (lower-case letters, digits, '-') of at most
/// [`MAX_NAME`] characters, since it starts every node's name.
pub fn validate_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ClusterError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// FNV-1a: a short, stable name for interfaces, whose names are at most 15 bytes.
fn short_hash(s: &str) -> String {
    let h = s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{h:08x}")
}

/// The nodes' names, kind's way: `NAME-control-plane`, `NAME-control-plane2`, ...,
/// `NAME-worker`, `NAME-worker2`, ...; with whether each is a control-plane node.
pub fn node_names(name: &str, controllers: usize, workers: usize) -> Vec<(String, bool)> {
    let numbered = |role: &str, i: usize| {
        if i == 0 {
            format!("{name}-{role}")
        } else {
            format!("{name}-{role}{}", i + 1)
        }
    };
    (0..controllers)
        .map(|i| (numbered("control-plane", i), true))
        .chain((0..workers).map(|i| (numbered("worker", i), false)))
        .collect()
}

/// The lowest subnet octet that no other cluster has and that overlaps none of the host's
/// networks (`(address, prefix)` of its links and routes; a default route, prefix 0, is none).
pub fn pick_subnet(taken: &[u8], host: &[(Ipv4Addr, u8)]) -> Option<u8> {
    (1..=254u8).find(|i| {
        let net = u32::from(Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], *i, 0));
        !taken.contains(i)
            && !host.iter().filter(|(_, p)| *p > 0).any(|&(a, p)| {
                // Two networks overlap when the shorter prefix's network holds the other.
                let mask = u32::MAX << (32 - u32::from(p.min(PREFIX)));
                (u32::from(a) & mask) == (net & mask)
            })
    })
}

impl ClusterSpec {
    /// A cluster of `controllers` control-plane nodes (1, 3 or 5) and `workers` workers on
    /// subnet `172.30.<subnet>.0/24`.
    pub fn new(
        name: &str,
        controllers: usize,
        workers: usize,
        subnet: u8,
    ) -> Result<Self, ClusterError> {
        validate_name(name)?;
        if ![1, 3, 5].contains(&controllers) {
            return Err(ClusterError::Controllers { count: controllers });
        }
        let names = node_names(name, controllers, workers);
        if names.len() > 200 {
            return Err(ClusterError::TooManyNodes { count: names.len() });
        }
        let node = |node: String, control_plane: bool, host: u8| NodeSpec {
            ip: Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], subnet, host),
            netns: format!("skiff-{node}"),
            veth: format!("skv{}", short_hash(&node)),
            name: node,
            control_plane,
        };
        let nodes = names
            .into_iter()
            .enumerate()
            .map(|(i, (name, cp))| node(name, cp, u8::try_from(i + 2).unwrap_or(u8::MAX)))
            .collect();
        Ok(Self {
            name: name.to_owned(),
            subnet,
            bridge: format!("skc{}", short_hash(name)),
            nodes,
            balancer: (controllers > 1).then(|| {
                node(
                    format!("{name}-external-load-balancer"),
                    false,
                    BALANCER_HOST,
                )
            }),
        })
    }

    /// The bridge's address, every node's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], self.subnet, 1)
    }

    /// The cluster's subnet, `172.30.i.0/24`.
    pub fn network(&self) -> (Ipv4Addr, u8) {
        (
            Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], self.subnet, 0),
            PREFIX,
        )
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| n.control_plane)
    }

    pub fn has_workers(&self) -> bool {
        self.nodes.iter().any(|n| !n.control_plane)
    }

    /// The API server clients and agents use: the load balancer's with several members, else
    /// the control-plane node's.
    pub fn server(&self) -> String {
        let ip = self
            .balancer
            .as_ref()
            .or_else(|| self.control_planes().next())
            .map_or(Ipv4Addr::LOCALHOST, |n| n.ip);
        format!("http://{ip}:{API_PORT}")
    }

    /// Every network namespace of the cluster: its nodes' and the load balancer's.
    pub fn namespaces(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().chain(self.balancer.iter())
    }

    /// The kubeconfig context name, as kind's `kind-NAME`.
    pub fn context(&self) -> String {
        format!("skiff-{}", self.name)
    }

    /// The cluster's directory under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.name)
    }

    /// A node's directory: its processes' data dirs and logs.
    pub fn node_dir(&self, root: &Path, node: &str) -> PathBuf {
        self.dir(root).join("nodes").join(node)
    }

    /// The image blobs the cluster's nodes share, so each is fetched from outside once.
    pub fn image_cache(&self, root: &Path) -> PathBuf {
        self.dir(root).join("image-cache")
    }

    /// The kubeconfig the nodes' agents use.
    pub fn kubeconfig(&self, root: &Path) -> PathBuf {
        self.dir(root).join("kubeconfig")
    }

    /// Every process of the cluster: a controller on each control-plane node, the API load
    /// balancer if there are several, then an agent on every node.
    pub fn launches(&self, root: &Path) -> Vec<Launch> {
        let members = self
            .control_planes()
            .map(|n| format!("{}={}:{PEER_PORT}", n.name, n.ip))
            .collect::<Vec<_>>()
            .join(",");
        let kubeconfig = self.kubeconfig(root).display().to_string();
        let mut out = Vec::new();
        for n in self.control_planes() {
            let dir = self.node_dir(root, &n.name);
            let data_dir = dir.join("controller");
            out.push(Launch {
                node: n.name.clone(),
                netns: n.netns.clone(),
                role: Role::Controller,
                args: vec![
                    "controller".into(),
                    "--name".into(),
                    n.name.clone(),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--listen".into(),
                    format!("{}:{API_PORT}", n.ip),
                    "--peer-listen".into(),
                    format!("{}:{PEER_PORT}", n.ip),
                    "--initial-members".into(),
                    members.clone(),
                ],
                data_dir,
                log: dir.join("controller.log"),
            });
        }
        if let Some(b) = &self.balancer {
            let dir = self.node_dir(root, &b.name);
            let data_dir = dir.join("balancer");
            let mut args = vec![
                "cluster".into(),
                "balance".into(),
                "--listen".into(),
                format!("{}:{API_PORT}", b.ip),
                "--data-dir".into(),
                data_dir.display().to_string(),
            ];
            for n in self.control_planes() {
                args.extend(["--member".into(), format!("{}:{API_PORT}", n.ip)]);
            }
            out.push(Launch {
                node: b.name.clone(),
                netns: b.netns.clone(),
                role: Role::Balancer,
                args,
                data_dir,
                log: dir.join("balancer.log"),
            });
        }
        for n in &self.nodes {
            let dir = self.node_dir(root, &n.name);
            let data_dir = dir.join("agent");
            let mut args = vec![
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "agent".into(),
                "--node-name".into(),
                n.name.clone(),
                "--node-ip".into(),
                n.ip.to_string(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--image-cache".into(),
                self.image_cache(root).display().to_string(),
                // A registry on the host's end of the cluster's bridge is as local as a
                // loopback one (no other machine reaches the bridge): plain HTTP, as kind's
                // local-registry recipe sets up.
                "--insecure-registry".into(),
                format!("{}/32", self.gateway()),
            ];
            if n.control_plane {
                args.extend(["--node-labels".into(), format!("{CONTROL_PLANE_ROLE}=")]);
                // As kind: workloads go to the workers when there are any.
                if self.has_workers() {
                    args.extend([
                        "--register-with-taints".into(),
                        format!("{CONTROL_PLANE_ROLE}:NoSchedule"),
                    ]);
                }
            }
            out.push(Launch {
                node: n.name.clone(),
                netns: n.netns.clone(),
                role: Role::Agent,
                args,
                data_dir,
                log: dir.join("agent.log"),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_and_addressed_as_kind_names_them() {
        let c = ClusterSpec::new("dev", 1, 3, 7).expect("spec");
        let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev-control-plane",
                "dev-worker",
                "dev-worker2",
                "dev-worker3"
            ]
        );
        assert_eq!(c.nodes[0].ip, Ipv4Addr::new(172, 30, 7, 2));
        assert_eq!(c.nodes[3].ip, Ipv4Addr::new(172, 30, 7, 5));
        assert_eq!(c.gateway(), Ipv4Addr::new(172, 30, 7, 1));
        assert_eq!(c.server(), "http://172.30.7.2:6443");
        assert_eq!(c.context(), "skiff-dev");
        assert_eq!(c.nodes[1].netns, "skiff-dev-worker");
        for n in &c.nodes {
            assert!(n.veth.len() <= 15 && c.bridge.len() <= 15, "{n:?}");
        }
        let three = ClusterSpec::new("ha", 3, 0, 1).expect("spec");
        let names: Vec<_> = three.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["ha-control-plane", "ha-control-plane2", "ha-control-plane3"]
        );
    }

    #[test]
    fn bad_names_and_member_counts_are_refused() {
        for bad in ["", "Dev", "-dev", "dev-", "dev_1", &"a".repeat(41)] {
            assert!(
                matches!(validate_name(bad), Err(ClusterError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        validate_name("dev-1").expect("a good name");
        assert!(matches!(
            ClusterSpec::new("dev", 2, 1, 1),
            Err(ClusterError::Controllers { count: 2 })
        ));
        assert!(matches!(
            ClusterSpec::new("dev", 1, 250, 1),
            Err(ClusterError::TooManyNodes { .. })
        ));
    }

    #[test]
    fn a_subnet_is_picked_clear_of_other_clusters_and_the_hosts_networks() {
        assert_eq!(pick_subnet(&[], &[]), Some(1));
        assert_eq!(pick_subnet(&[1, 2], &[]), Some(3));
        let host = [
            (Ipv4Addr::new(172, 30, 1, 9), 24),
            (Ipv4Addr::new(10, 0, 0, 1), 8),
        ];
        assert_eq!(pick_subnet(&[2], &host), Some(3));
        // A wider host network covering all of them leaves none.
        assert_eq!(
            pick_subnet(&[], &[(Ipv4Addr::new(172, 16, 0, 0), 12)]),
            None
        );
        // The default route (0.0.0.0/0) is no network of the host's.
        assert_eq!(pick_subnet(&[], &[(Ipv4Addr::UNSPECIFIED, 0)]), Some(1));
    }

    #[test]
    fn every_node_runs_an_agent_and_control_planes_a_controller() {
        let c = ClusterSpec::new("dev", 1, 2, 7).expect("spec");
        let root = Path::new("/r");
        let l = c.launches(root);
        assert_eq!(l.len(), 4);
        assert_eq!(l[0].role, Role::Controller);
        assert_eq!(
            l[0].data_dir,
            PathBuf::from("/r/dev/nodes/dev-control-plane/controller")
        );
        assert!(
            l[0].args
                .windows(2)
                .any(|w| w == ["--listen", "172.30.7.2:6443"])
        );
        assert!(
            l[0].args
                .windows(2)
                .any(|w| w == ["--initial-members", "dev-control-plane=172.30.7.2:6444"])
        );
        let cp_agent = &l[1];
        assert_eq!(cp_agent.role, Role::Agent);
        assert_eq!(
            &cp_agent.args[..3],
            ["--kubeconfig", "/r/dev/kubeconfig", "agent"]
        );
        assert!(cp_agent.args.windows(2).any(|w| w
            == [
                "--register-with-taints",
                "node-role.kubernetes.io/control-plane:NoSchedule"
            ]));
        let worker = &l[3];
        assert_eq!(worker.node, "dev-worker2");
        assert_eq!(worker.netns, "skiff-dev-worker2");
        assert!(
            worker
                .args
                .windows(2)
                .any(|w| w == ["--node-ip", "172.30.7.4"])
        );
        assert!(!worker.args.iter().any(|a| a.contains("control-plane")));
        // Every node's runtime shares the cluster's blob cache and may pull from a registry
        // on the bridge over plain HTTP.
        for agent in &l[1..] {
            assert!(
                agent
                    .args
                    .windows(2)
                    .any(|w| w == ["--image-cache", "/r/dev/image-cache"])
            );
            assert!(
                agent
                    .args
                    .windows(2)
                    .any(|w| w == ["--insecure-registry", "172.30.7.1/32"])
            );
        }
        assert!(c.balancer.is_none(), "one member needs no load balancer");
        assert_eq!(c.server(), "http://172.30.7.2:6443");
        // Several members: a load balancer in front of them, which the kubeconfigs name.
        let ha = ClusterSpec::new("ha", 3, 1, 7).expect("spec");
        let b = ha.balancer.as_ref().expect("a balancer");
        assert_eq!(
            (b.name.as_str(), b.ip, b.netns.as_str()),
            (
                "ha-external-load-balancer",
                Ipv4Addr::new(172, 30, 7, 254),
                "skiff-ha-external-load-balancer"
            )
        );
        assert_eq!(ha.server(), "http://172.30.7.254:6443");
        assert_eq!(ha.namespaces().count(), 5);
        let l = ha.launches(root);
        assert_eq!(
            l.iter().map(|l| l.role).collect::<Vec<_>>(),
            [
                Role::Controller,
                Role::Controller,
                Role::Controller,
                Role::Balancer,
                Role::Agent,
                Role::Agent,
                Role::Agent,
                Role::Agent
            ]
        );
        assert_eq!(
            l[3].args,
            [
                "cluster",
                "balance",
                "--listen",
                "172.30.7.254:6443",
                "--data-dir",
                "/r/ha/nodes/ha-external-load-balancer/balancer",
                "--member",
                "172.30.7.2:6443",
                "--member",
                "172.30.7.3:6443",
                "--member",
                "172.30.7.4:6443"
            ]
        );
        // A record written before load balancers existed still reads.
        let old: ClusterSpec =
            serde_json::from_str(r#"{"name": "o", "subnet": 2, "bridge": "skcx", "nodes": []}"#)
                .expect("old record");
        assert!(old.balancer.is_none());
        // A lone control plane takes the workloads.
        let alone = ClusterSpec::new("one", 1, 0, 7).expect("spec");
        assert!(
            !alone
                .launches(root)
                .iter()
                .any(|l| l.args.iter().any(|a| a == "--register-with-taints"))
        );
    }
}
