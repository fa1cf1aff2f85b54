//! Masquerade for the default pod network: traffic from the pod subnet to anywhere outside it
//! leaves the node with the node's address. One rule for the whole subnet, set once when the
//! network is first used, as k3s' flannel and kind's kindnet do, instead of the bridge plugin's
//! `ipMasq`, which adds a chain and two rules per pod through `iptables` and makes every pod's
//! ADD and DEL pay for reading all the other pods' rules (most of a 100-pod rollout's CPU).
//!
//! The rule lives in skiff's own nftables table, `ip skiff`: a set of pod subnets and a
//! postrouting chain masquerading packets from a subnet in the set to a destination that is in
//! none of them and is not multicast, so pod-to-pod traffic keeps its source address. The
//! script only adds (the table, the set, the subnet, the chain) and replaces the chain's rule in
//! one transaction, so several skiff nodes on one host with different subnets can each run it.
//! [`Masquerade`] is the boundary; [`Nft`] runs the `nft` binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// skiff's nftables table (family `ip`).
pub const TABLE: &str = "skiff";
/// The set of pod subnets in [`TABLE`].
pub const SUBNETS: &str = "pod-subnets";
/// The postrouting chain in [`TABLE`] that masquerades them.
pub const CHAIN: &str = "pod-masquerade";

/// Sets up masquerading for a pod subnet on the host.
pub trait Masquerade: Send + Sync {
    /// Makes traffic from `subnet` (`a.b.c.d/n`) to outside every pod subnet leave with the
    /// node's address; idempotent. The error says what failed, for the node's NetworkReady.
    fn ensure(&self, subnet: &str) -> Result<(), String>;
}

/// The nftables script [`Nft`] runs for `subnet`.
pub fn script(subnet: &str) -> String {
    format!(
        "add table ip {TABLE}\n\
         add set ip {TABLE} {SUBNETS} {{ type ipv4_addr; flags interval; auto-merge; }}\n\
         add element ip {TABLE} {SUBNETS} {{ {subnet} }}\n\
         add chain ip {TABLE} {CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip {TABLE} {CHAIN}\n\
         add rule ip {TABLE} {CHAIN} ip saddr @{SUBNETS} ip daddr != @{SUBNETS} ip daddr != 224.0.0.0/4 masquerade\n"
    )
}

/// The real one: `nft -f -` with [`script`] on its stdin.
#[derive(Debug, Clone)]
pub struct Nft {
    /// Where `nft` is looked for, in order.
    pub dirs: Vec<PathBuf>,
    /// How long `nft` may run.
    pub timeout: Duration,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            dirs: ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Nft {
    fn binary(&self) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join("nft"))
            .find(|p| p.is_file())
    }
}

impl Masquerade for Nft {
    fn ensure(&self, subnet: &str) -> Result<(), String> {
        let Some(nft) = self.binary() else {
            return Err(format!(
                "nft not found in {} (install nftables): the pod network masquerades \
                 traffic leaving the node with it",
                self.dirs
                    .iter()
                    .map(|d| d.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(":")
            ));
        };
        let mut cmd = Command::new(&nft);
        cmd.args(["-f", "-"]);
        super::exec::run(cmd, script(subnet).as_bytes(), self.timeout)
            .map(|_| ())
            .map_err(|f| {
                format!(
                    "{} -f - (masquerade for {subnet}): {}: {}",
                    nft.display(),
                    f.status,
                    f.stderr
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_adds_and_replaces_only_its_own_rule() {
        let s = script("10.88.0.0/16");
        assert!(s.contains("add element ip skiff pod-subnets { 10.88.0.0/16 }"));
        assert!(s.contains("type nat hook postrouting priority srcnat"));
        // Nothing that would remove another node's subnet or another table.
        for line in s.lines() {
            assert!(
                line.starts_with("add ") || line == "flush chain ip skiff pod-masquerade",
                "{line}"
            );
        }
        let rule = s.lines().last().expect("rule");
        assert!(rule.ends_with(
            "ip saddr @pod-subnets ip daddr != @pod-subnets ip daddr != 224.0.0.0/4 masquerade"
        ));
    }

    #[test]
    fn a_missing_nft_is_named() {
        let nft = Nft {
            dirs: vec![PathBuf::from("/nonexistent-skiff-test")],
            ..Nft::default()
        };
        let err = nft.ensure("10.88.0.0/16").expect_err("no nft");
        assert!(
            err.contains("nft not found in /nonexistent-skiff-test"),
            "{err}"
        );
        assert!(err.contains("install nftables"), "{err}");
    }
}
