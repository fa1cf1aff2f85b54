//! Masquerade for the default pod network: traffic from the pod subnet to anywhere outside it
//! leaves the node with the node's address. One rule for the whole subnet, set once when the
//! network is first used, as k3s' flannel and kind's kindnet do, instead of the bridge plugin's
//! `ipMasq`, which adds a chain and two rules per pod through `iptables` and makes every pod's
//! ADD and DEL pay for reading all the other pods' rules (most of a 100-pod rollout's CPU).
//!
//! The rule lives in skiff's own nftables table, `ip skiff`: a set of pod subnets and a
//! postrouting chain masquerading packets from a subnet in the set to a destination that is in
//! none of them and is not multicast, so pod-to-pod traffic keeps its source address; traffic
//! to another node's pods, which the node agent routes there and marks with
//! [`cri_api::KEEP_SOURCE_MARK`], keeps it too. The
//! script only adds (the table, the set, the subnet, the chain) and replaces the chain's rule in
//! one transaction, so several skiff nodes on one host with different subnets can each run it.
//! [`Masquerade`] is the boundary; [`Nft`] runs the `nft` binary.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// skiff's nftables table (family `ip`).
pub const TABLE: &str = "skiff";
/// The set of pod subnets in [`TABLE`].
pub const SUBNETS: &str = "pod-subnets";
/// The postrouting chain in [`TABLE`] that masquerades them.
pub const CHAIN: &str = "pod-masquerade";

/// Sets up the host for a pod subnet: its masquerade, and the bridge's gateway address.
pub trait Masquerade: Send + Sync {
    /// Makes traffic from `subnet` (`a.b.c.d/n`) to outside every pod subnet leave with the
    /// node's address; idempotent. The error says what failed, for the node's NetworkReady.
    fn ensure(&self, subnet: &str) -> Result<(), String>;
    /// Makes room for `bridge` to get `gateway/prefix` from the bridge plugin: removes its
    /// addresses that hold the gateway with another prefix, left by an earlier subnet of this
    /// node (the plugin refuses "an IP address different from" it), and other skiff bridges
    /// without pods whose subnets overlap (left by nodes that are gone: their routes would
    /// take this subnet's traffic). A bridge with pods in an overlapping subnet is an error.
    fn free_gateway(&self, bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), String>;
}

/// Of `addrs` (`(link, address, prefix)` of the host), the other skiff bridges whose subnet
/// overlaps `gateway/prefix`'s: left by a node that is gone (a subnet is one node's), they
/// would take its traffic with their more specific route.
pub fn overlapping_bridges(
    addrs: &[(String, Ipv4Addr, u8)],
    bridge: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Vec<String> {
    let net =
        |a: Ipv4Addr, p: u8| u32::from(a) & u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
    let mut out: Vec<String> = addrs
        .iter()
        .filter(|(link, _, _)| link != bridge && link.starts_with("skiff") && link != "skiff-dns0")
        .filter(|&&(_, a, p)| {
            let shorter = p.min(prefix);
            net(a, shorter) == net(gateway, shorter)
        })
        .map(|(link, _, _)| link.clone())
        .collect();
    out.dedup();
    out
}

/// Of `addrs` (a bridge's addresses), those in the way of `gateway/prefix`.
pub fn in_the_way(addrs: &[(Ipv4Addr, u8)], gateway: Ipv4Addr, prefix: u8) -> Vec<(Ipv4Addr, u8)> {
    let net =
        |a: Ipv4Addr, p: u8| u32::from(a) & u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
    addrs
        .iter()
        .copied()
        .filter(|&(a, p)| net(gateway, p) == net(a, p) && (a, p) != (gateway, prefix))
        .collect()
}

/// The nftables script [`Nft`] runs for `subnet`.
pub fn script(subnet: &str) -> String {
    format!(
        "add table ip {TABLE}\n\
         add set ip {TABLE} {SUBNETS} {{ type ipv4_addr; flags interval; auto-merge; }}\n\
         add element ip {TABLE} {SUBNETS} {{ {subnet} }}\n\
         add chain ip {TABLE} {CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip {TABLE} {CHAIN}\n\
         add rule ip {TABLE} {CHAIN} ip saddr @{SUBNETS} ip daddr != @{SUBNETS} meta mark & {KEEP:#x} == 0 ip daddr != 224.0.0.0/4 masquerade\n",
        KEEP = cri_api::KEEP_SOURCE_MARK,
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
        self.find("nft")
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
    }

    /// Runs `ip` or `nft` with `args` and no input; its output, or an error naming the
    /// command and what it said.
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let package = if program == "ip" {
            "iproute2"
        } else {
            "nftables"
        };
        let path = self
            .find(program)
            .ok_or_else(|| format!("{program} not found (install {package})"))?;
        let mut cmd = Command::new(&path);
        cmd.args(args);
        super::exec::run(cmd, b"", self.timeout)
            .map(|out| String::from_utf8_lossy(&out).into_owned())
            .map_err(|f| {
                format!(
                    "{} {}: {}: {}",
                    path.display(),
                    args.join(" "),
                    f.status,
                    f.stderr
                )
            })
    }

    /// Whether this network namespace has the link `name`. Asked of `ip`, not read from
    /// /sys/class/net, which shows the namespace sysfs was mounted in: not this one on a node
    /// of `skiff cluster`.
    fn has_link(&self, name: &str) -> Result<bool, String> {
        let links = self.run("ip", &["-o", "link", "show"])?;
        Ok(link_names(&links).iter().any(|l| l == name))
    }

    /// Undoes [`Masquerade::ensure`] and the bridge plugin's work for one node's subnet, once
    /// its pods are gone (`skiff down`): deletes `bridge`, and the whole table when `alone`
    /// (no other skiff node on this host still uses it), else only `subnet`'s element when the
    /// set holds it as such (auto-merge may have joined it with a neighbour's, which `nft`
    /// cannot split). Returns what it removed; a part already gone is not an error.
    pub fn release(&self, subnet: &str, bridge: &str, alone: bool) -> Result<Vec<String>, String> {
        let mut removed = Vec::new();
        if self.has_link(bridge)? {
            self.run("ip", &["link", "del", bridge])?;
            removed.push(format!("bridge {bridge}"));
        }
        let Ok(listing) = self.run("nft", &["list", "set", "ip", TABLE, SUBNETS]) else {
            // No table (or no nft): nothing of ours there.
            return Ok(removed);
        };
        if alone {
            self.run("nft", &["delete", "table", "ip", TABLE])?;
            removed.push(format!("nftables table ip {TABLE}"));
        } else if set_holds(&listing, subnet) {
            let element = format!("{{ {subnet} }}");
            self.run(
                "nft",
                &["delete", "element", "ip", TABLE, SUBNETS, &element],
            )?;
            removed.push(format!("masquerade of {subnet}"));
        }
        Ok(removed)
    }
}

/// The link names in `ip -o link show` output (`2: eth0@if5: <...>` gives `eth0`).
pub fn link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Whether `nft list set` output holds `subnet` as an element (`10.88.0.0/24`, separated by
/// spaces, commas or braces).
pub fn set_holds(listing: &str, subnet: &str) -> bool {
    listing
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .any(|w| w == subnet)
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

    fn free_gateway(&self, bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), String> {
        let run = |args: &[&str]| self.run("ip", args);
        if !self.has_link(bridge)? {
            return Ok(());
        }
        let out = run(&["-4", "-o", "addr", "show"])?;
        let all: Vec<(String, Ipv4Addr, u8)> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let link = w.nth(1)?.to_string();
                let cidr = w.skip_while(|x| *x != "inet").nth(1)?;
                let (a, p) = cidr.split_once('/')?;
                Some((link, a.parse().ok()?, p.parse().ok()?))
            })
            .collect();
        for other in overlapping_bridges(&all, bridge, gateway, prefix) {
            let ports = run(&["-o", "link", "show", "master", &other])
                .map(|out| link_names(&out).len())
                .unwrap_or(0);
            if ports > 0 {
                return Err(format!(
                    "bridge {other} has pods in a subnet overlapping {gateway}/{prefix}: another node on this host uses it"
                ));
            }
            tracing::info!(bridge = %other, "removing a stale pod bridge whose subnet overlaps this node's");
            run(&["link", "del", &other])?;
        }
        let addrs: Vec<(Ipv4Addr, u8)> = all
            .iter()
            .filter(|(link, _, _)| link == bridge)
            .map(|&(_, a, p)| (a, p))
            .collect();
        for (a, p) in in_the_way(&addrs, gateway, prefix) {
            tracing::info!(bridge, address = %format!("{a}/{p}"), "removing a stale gateway address");
            run(&["addr", "del", &format!("{a}/{p}"), "dev", bridge])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_address_holding_the_gateway_with_another_prefix_is_in_the_way() {
        let a = |s: &str| -> (Ipv4Addr, u8) {
            let (ip, p) = s.split_once('/').expect("cidr");
            (ip.parse().expect("ip"), p.parse().expect("prefix"))
        };
        let addrs = [
            a("10.88.0.1/16"),
            a("10.88.1.1/24"),
            a("10.88.2.1/24"),
            a("192.0.2.1/24"),
        ];
        let gw = Ipv4Addr::new(10, 88, 2, 1);
        assert_eq!(in_the_way(&addrs, gw, 24), vec![a("10.88.0.1/16")]);
        assert!(in_the_way(&[a("10.88.2.1/24")], gw, 24).is_empty());
    }

    #[test]
    fn stale_bridges_are_those_of_overlapping_subnets() {
        let l = |link: &str, ip: [u8; 4], p: u8| (link.to_string(), Ipv4Addr::from(ip), p);
        let addrs = [
            l("skiff0a5800", [10, 88, 0, 1], 24),
            l("skiff0a5801", [10, 88, 1, 1], 24),
            l("skiff0a4d00", [10, 77, 0, 1], 16),
            l("eth0", [10, 88, 5, 1], 24),
        ];
        // A /16 over the /24s: every skiff bridge in it but its own.
        let got = overlapping_bridges(&addrs, "skiff0a5800", Ipv4Addr::new(10, 88, 0, 1), 16);
        assert_eq!(got, vec!["skiff0a5801".to_string()]);
        // A /24 of its own: nothing else in the way.
        let got = overlapping_bridges(&addrs, "skiff0a5802", Ipv4Addr::new(10, 88, 2, 1), 24);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn link_names_are_read_from_ip_output() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\n2: eth0@if9: <BROADCAST> mtu 1500\n7: skiff0a5800: <BROADCAST,MULTICAST,UP> mtu 1500\n";
        assert_eq!(link_names(out), ["lo", "eth0", "skiff0a5800"]);
        assert!(link_names("").is_empty());
    }

    #[test]
    fn a_subnet_is_found_among_the_elements_of_a_listing() {
        let listing = "table ip skiff {\n\tset pod-subnets {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = { 10.88.0.0/24, 10.88.10.0/24 }\n\t}\n}\n";
        assert!(set_holds(listing, "10.88.0.0/24"));
        assert!(set_holds(listing, "10.88.10.0/24"));
        assert!(!set_holds(listing, "10.88.1.0/24"));
        assert!(!set_holds("", "10.88.0.0/24"));
    }

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
            "ip saddr @pod-subnets ip daddr != @pod-subnets meta mark & 0x20000 == 0 ip daddr != 224.0.0.0/4 masquerade"
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
