//! Node IPAM (kube-controller-manager's `--allocate-node-cidrs`): every Node gets a pod subnet
//! of `--node-cidr-mask-size` bits from `--cluster-cidr` in `spec.podCIDR` and
//! `spec.podCIDRs`, the lowest free one, once; its node's runtime takes its pods' addresses
//! from it (the node agent passes it on through CRI's UpdateRuntimeConfig). A subnet is free
//! again when its Node is gone. A Node for which none is left gets a `CIDRNotAvailable` Event.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Objects, Part, patch::PatchType, resources};
use crate::reconcile::events::{EventType, record};
use crate::reconcile::{Interest, Wake, wait_for_change};

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    /// Parses `a.b.c.d/n` with no host bits set.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a subnet of the form a.b.c.d/n"))?;
        let net: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        let c = Cidr { net, prefix };
        if u32::from(net) & !c.mask() != 0 {
            let fixed = Ipv4Addr::from(u32::from(net) & c.mask());
            return Err(format!(
                "{s:?} has host bits set (did you mean {fixed}/{prefix}?)"
            ));
        }
        Ok(c)
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The `i`th subnet of `bits` bits inside this one.
    fn subnet(self, bits: u8, i: u32) -> Cidr {
        let step = 1u32 << (32 - u32::from(bits));
        Cidr {
            net: Ipv4Addr::from(u32::from(self.net) + i * step),
            prefix: bits,
        }
    }

    fn contains(self, other: Cidr) -> bool {
        other.prefix >= self.prefix && u32::from(other.net) & self.mask() == u32::from(self.net)
    }

    /// Whether the two share an address.
    pub fn overlaps(self, other: Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

/// Where node subnets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIpam {
    pub cluster_cidr: Cidr,
    /// The prefix length of each node's subnet.
    pub node_mask: u8,
}

impl NodeIpam {
    /// 10.88.0.0/16 in /24s: 256 nodes of up to 254 pods (skiff's pod range, clear of the
    /// service range).
    pub const DEFAULT: NodeIpam = NodeIpam {
        cluster_cidr: Cidr {
            net: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
        },
        node_mask: 24,
    };

    /// Checks that a node subnet fits in the cluster's, with room for pods.
    pub fn new(cluster_cidr: Cidr, node_mask: u8) -> Result<Self, String> {
        if node_mask < cluster_cidr.prefix || node_mask > 30 {
            return Err(format!(
                "--node-cidr-mask-size {node_mask} must be between the cluster CIDR's prefix ({}) and 30",
                cluster_cidr.prefix
            ));
        }
        Ok(Self {
            cluster_cidr,
            node_mask,
        })
    }

    fn count(self) -> u32 {
        1u32.checked_shl(u32::from(self.node_mask - self.cluster_cidr.prefix))
            .unwrap_or(u32::MAX)
    }
}

fn pod_cidr(node: &Value) -> Option<&str> {
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// What to give each node without a subnet: `(node name, subnet or None when none is left)`.
pub fn plan(nodes: &[Value], ipam: NodeIpam) -> Vec<(String, Option<Cidr>)> {
    let mut used: HashSet<u32> = nodes
        .iter()
        .filter_map(pod_cidr)
        .filter_map(|s| Cidr::parse(s).ok())
        .filter(|c| ipam.cluster_cidr.contains(*c))
        .map(|c| u32::from(c.net))
        .collect();
    let mut waiting: Vec<&str> = nodes
        .iter()
        .filter(|n| pod_cidr(n).is_none())
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    waiting.sort_unstable();
    let mut next = 0u32;
    waiting
        .into_iter()
        .map(|name| {
            let free = (next..ipam.count())
                .map(|i| ipam.cluster_cidr.subnet(ipam.node_mask, i))
                .find(|c| !used.contains(&u32::from(c.net)));
            if let Some(c) = free {
                used.insert(u32::from(c.net));
                next = (u32::from(c.net) - u32::from(ipam.cluster_cidr.net))
                    >> (32 - u32::from(ipam.node_mask));
            }
            (name.to_string(), free)
        })
        .collect()
}

/// One pass: gives the nodes without a subnet one.
pub async fn reconcile(objects: &Objects, ipam: NodeIpam) -> Result<(), ApiError> {
    let (nodes, _) = objects.list(resources::nodes(), None)?;
    for (name, cidr) in plan(&nodes, ipam) {
        match cidr {
            Some(c) => {
                let body = json!({"spec": {"podCIDR": c.to_string(), "podCIDRs": [c.to_string()]}});
                objects
                    .patch(
                        resources::nodes(),
                        None,
                        &name,
                        PatchType::Merge,
                        &body,
                        Part::Main,
                        false,
                    )
                    .await?;
                tracing::info!(node = %name, pod_cidr = %c, "node subnet allocated");
            }
            None => {
                if let Some(node) = nodes
                    .iter()
                    .find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(&name))
                {
                    let message = format!(
                        "Node {name} status is now: CIDRNotAvailable (no /{} left in {})",
                        ipam.node_mask, ipam.cluster_cidr
                    );
                    record(
                        objects,
                        node,
                        EventType::Warning,
                        "CIDRNotAvailable",
                        &message,
                        "cidrAllocator",
                    )
                    .await;
                }
            }
        }
    }
    Ok(())
}

/// Allocates node subnets as nodes come, until cancelled: woken by a node without a subnet
/// (a node that has one changes nothing here, and on a large cluster every such write would
/// otherwise cost a pass over every node), and every 30 s.
pub async fn run(objects: Objects, ipam: NodeIpam, cancel: CancellationToken) {
    const NODES: Interest = Interest::Resources(&["nodes"]);
    let without_subnet = |e: &crate::store::state::Event| {
        NODES.matches(e)
            && e.record
                .as_ref()
                .is_some_and(|r| memchr::memmem::find(&r.value, b"\"podCIDR\"").is_none())
    };
    loop {
        let after = objects.store.revision();
        if let Err(e) = reconcile(&objects, ipam).await {
            tracing::warn!(error = %e, "node IPAM pass failed");
        }
        let wake = wait_for_change(
            &objects.store,
            after,
            Duration::from_secs(30),
            &cancel,
            without_subnet,
        )
        .await;
        if matches!(wake, Wake::Cancelled) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"name": name}, "spec": {}});
        if let Some(c) = cidr {
            n["spec"]["podCIDR"] = json!(c);
        }
        n
    }

    fn ipam(s: &str, mask: u8) -> NodeIpam {
        NodeIpam::new(Cidr::parse(s).expect("cidr"), mask).expect("ipam")
    }

    #[test]
    fn nodes_get_the_lowest_free_subnets_in_name_order() {
        let nodes = [
            node("b", None),
            node("a", Some("10.88.0.0/24")),
            node("c", None),
        ];
        let p = plan(&nodes, ipam("10.88.0.0/16", 24));
        let got: Vec<(String, String)> = p
            .into_iter()
            .map(|(n, c)| (n, c.map(|c| c.to_string()).unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b".into(), "10.88.1.0/24".into()),
                ("c".into(), "10.88.2.0/24".into())
            ]
        );
    }

    #[test]
    fn a_full_range_says_so_and_gone_nodes_free_theirs() {
        let tiny = ipam("10.88.0.0/23", 24);
        let nodes = [
            node("a", Some("10.88.0.0/24")),
            node("b", Some("10.88.1.0/24")),
            node("c", None),
        ];
        assert_eq!(plan(&nodes, tiny), vec![("c".into(), None)]);
        let nodes = [node("b", Some("10.88.1.0/24")), node("c", None)];
        assert_eq!(
            plan(&nodes, tiny),
            vec![("c".into(), Some(Cidr::parse("10.88.0.0/24").expect("cidr")))]
        );
    }

    #[test]
    fn bad_ranges_are_refused_with_the_reason() {
        assert!(
            Cidr::parse("10.88.0.1/16")
                .unwrap_err()
                .contains("did you mean 10.88.0.0/16")
        );
        assert!(Cidr::parse("10.88.0.0").unwrap_err().contains("a.b.c.d/n"));
        let err = NodeIpam::new(Cidr::parse("10.88.0.0/16").expect("cidr"), 8).unwrap_err();
        assert!(err.contains("--node-cidr-mask-size 8"), "{err}");
    }
}
