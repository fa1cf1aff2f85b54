use std::net::Ipv4Addr;

use super::model::{Endpoint, Protocol, ServicePort};
use super::rules::{Op, Options, Programmed, plan};

fn port(id: &str, endpoints: &[(u8, bool)]) -> ServicePort {
    ServicePort {
        id: id.into(),
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ip: Ipv4Addr::new(10, 96, 0, 20),
        external_ips: Vec::new(),
        node_port: None,
        affinity_seconds: None,
        external_local: false,
        internal_local: false,
        endpoints: endpoints
            .iter()
            .map(|(last, local)| Endpoint {
                ip: Ipv4Addr::new(10, 88, 0, *last),
                port: 8080,
                local: *local,
            })
            .collect(),
    }
}

/// The operations of a plan, one line each; element operations list their elements.
fn render(old: Option<&Programmed>, ports: &[ServicePort], opts: Options) -> Vec<String> {
    plan(old, &Programmed::of(ports, opts), false)
        .iter()
        .map(|op| match op {
            Op::AddElements(set, e) | Op::DeleteElements(set, e) => format!(
                "{} {}: {:?}",
                if matches!(op, Op::AddElements(..)) {
                    "add"
                } else {
                    "delete"
                },
                set.name(),
                e
            ),
            op => op.describe(),
        })
        .collect()
}

fn full(ports: &[ServicePort], opts: Options) -> Vec<String> {
    render(None, ports, opts)
}

fn index_of(ops: &[String], f: impl Fn(&str) -> bool) -> usize {
    ops.iter().position(|l| f(l)).unwrap_or(usize::MAX)
}

#[test]
fn a_cluster_ip_balances_over_its_endpoints_and_marks_hairpin_traffic() {
    let r = full(
        &[port("shop/web:http/tcp", &[(5, true), (6, false)])],
        Options::default(),
    );
    assert_eq!(r[0], "add table", "{r:#?}");
    let balance: Vec<&String> = r.iter().filter(|l| l.contains("numgen random")).collect();
    assert_eq!(balance.len(), 1, "{r:#?}");
    assert!(
        balance[0].contains("numgen random mod 2 vmap @svc-"),
        "{r:#?}"
    );
    assert!(
        r.iter()
            .any(|l| l.ends_with("meta l4proto tcp dnat to 10.88.0.5:8080"))
    );
    assert!(
        r.iter()
            .any(|l| l.ends_with("ip saddr 10.88.0.6 jump mark-for-masquerade"))
    );
    // The cluster IP's element sends port 80/tcp to the service chain; no node port, no
    // external chain, no affinity.
    let ips = r
        .iter()
        .find(|l| l.starts_with("add service-ips:"))
        .unwrap();
    assert!(
        ips.contains("key: [10, 96, 0, 20, 6, 0, 0, 0, 0, 80, 0, 0]"),
        "{ips}"
    );
    assert!(ips.contains("ChainName(\"svc-"), "{ips}");
    assert!(!r.iter().any(|l| l.starts_with("add service-nodeports")));
    assert!(!r.iter().any(|l| l.contains("ext-") || l.contains("aff-")));
    // The numgen map's keys are 0 and 1 in host byte order, as numgen writes them.
    let eps = r.iter().find(|l| l.contains("-endpoints:")).unwrap();
    assert!(
        eps.contains(&format!("key: {:?}", 1u32.to_ne_bytes())),
        "{eps}"
    );
    // What is referred to comes before its referrers.
    let map = index_of(&r, |l| l.starts_with("add set svc-"));
    let rule = index_of(&r, |l| l.contains("numgen random"));
    let ep = index_of(&r, |l| l.starts_with("add chain ep-"));
    let element = index_of(&r, |l| l.starts_with("add service-ips"));
    assert!(ep < map && map < rule && rule < element, "{r:#?}");
}

#[test]
fn no_endpoints_rejects_and_the_rules_pass_through_masquerading() {
    let r = full(&[port("shop/web:http/tcp", &[])], Options::default());
    let ips = r
        .iter()
        .find(|l| l.starts_with("add service-ips:"))
        .unwrap();
    assert!(ips.contains("ChainName(\"reject\")"), "{r:#?}");
    assert!(
        r.iter()
            .any(|l| l == "add rule reject: reject with tcp reset"),
        "{r:#?}"
    );
    assert!(!r.iter().any(|l| l.contains("numgen")));
    assert!(
        r.iter().any(
            |l| l.starts_with("add rule nat-postrouting: meta mark & 0x00004000 == 0x00004000")
        )
    );
}

#[test]
fn node_ports_and_external_ips_go_through_the_external_chain() {
    let mut p = port("shop/web:http/tcp", &[(5, true), (6, false)]);
    p.node_port = Some(30080);
    p.external_ips = vec![Ipv4Addr::new(192, 0, 2, 9)];
    let r = full(&[p.clone()], Options::default());
    let ext: Vec<&String> = r
        .iter()
        .filter(|l| l.starts_with("add rule ext-"))
        .collect();
    assert_eq!(ext.len(), 2, "{r:#?}");
    assert!(
        ext[0].ends_with("jump mark-for-masquerade comment \"shop/web:http/tcp\""),
        "{ext:?}"
    );
    assert!(ext[1].contains("goto svc-"), "{ext:?}");
    let np = r
        .iter()
        .find(|l| l.starts_with("add service-nodeports:"))
        .unwrap();
    assert!(
        np.contains("key: [6, 0, 0, 0, 117, 128, 0, 0]") && np.contains("ChainName(\"ext-"),
        "{np}"
    );
    let ips = r
        .iter()
        .find(|l| l.starts_with("add service-ips:"))
        .unwrap();
    assert!(ips.contains("key: [192, 0, 2, 9, 6, 0, 0, 0, 0, 80, 0, 0]"));
    // Local policy: this node's endpoints only, the node's own connections anywhere; none
    // here: dropped.
    p.external_local = true;
    let r = full(&[p.clone()], Options::default());
    let ext: Vec<&String> = r
        .iter()
        .filter(|l| l.starts_with("add rule ext-"))
        .collect();
    assert!(
        ext[0].contains("fib saddr type local jump mark-for-masquerade"),
        "{ext:?}"
    );
    assert!(ext[2].contains("goto lcl-"), "{ext:?}");
    assert!(
        r.iter()
            .any(|l| l.starts_with("add rule lcl-") && l.contains("numgen random mod 1"))
    );
    for e in &mut p.endpoints {
        e.local = false;
    }
    let r = full(&[p], Options::default());
    let ext: Vec<&String> = r
        .iter()
        .filter(|l| l.starts_with("add rule ext-"))
        .collect();
    assert!(ext[2].ends_with("drop"), "{r:#?}");
}

#[test]
fn internal_local_policy_and_affinity_and_masquerade_all() {
    let mut p = port("shop/web:http/tcp", &[(5, true), (6, false)]);
    p.internal_local = true;
    p.affinity_seconds = Some(60);
    let r = full(
        &[p],
        Options {
            masquerade_all: true,
        },
    );
    let ips = r
        .iter()
        .find(|l| l.starts_with("add service-ips:"))
        .unwrap();
    assert!(ips.contains("ChainName(\"lcl-"), "{r:#?}");
    let lcl: Vec<&String> = r
        .iter()
        .filter(|l| l.starts_with("add rule lcl-"))
        .collect();
    assert_eq!(lcl.len(), 3, "{lcl:?}");
    assert!(lcl[0].ends_with(": jump mark-for-masquerade"), "{lcl:?}");
    assert!(
        lcl[1].contains("ip saddr @aff-") && lcl[1].contains("goto ep-"),
        "{lcl:?}"
    );
    assert!(r.iter().any(|l| l.contains(": update @aff-")));
}

#[test]
fn a_change_touches_only_its_service_and_nothing_changed_is_nothing() {
    let a = port("a/web:http/tcp", &[(5, true), (6, false)]);
    let mut b = port("b/web:http/tcp", &[(7, true)]);
    b.cluster_ip = Ipv4Addr::new(10, 96, 0, 21);
    let old = Programmed::of(&[a.clone(), b.clone()], Options::default());
    assert!(render(Some(&old), &[a.clone(), b.clone()], Options::default()).is_empty());
    // b's pod was replaced: its chains are rebuilt, a's are not touched, and the cluster IP's
    // element (still the same chain) stays.
    let mut b2 = b.clone();
    b2.endpoints[0].ip = Ipv4Addr::new(10, 88, 0, 8);
    let r = render(Some(&old), &[a.clone(), b2], Options::default());
    let a_chains: Vec<String> = full(std::slice::from_ref(&a), Options::default())
        .iter()
        .filter_map(|l| l.strip_prefix("add chain ").map(str::to_string))
        .filter(|c| c.starts_with("svc-") || c.starts_with("ep-"))
        .collect();
    assert!(!a_chains.is_empty());
    assert!(
        r.iter()
            .all(|l| a_chains.iter().all(|c| !l.contains(c.as_str()))),
        "{r:#?}"
    );
    assert!(
        r.iter().any(|l| l.ends_with("dnat to 10.88.0.8:8080")),
        "{r:#?}"
    );
    assert!(!r.iter().any(|l| l.contains("service-ips")), "{r:#?}");
    assert!(!r.iter().any(|l| l.contains("table")), "{r:#?}");
    // b goes: its element first, then its chains.
    let r = render(Some(&old), &[a], Options::default());
    let element = index_of(&r, |l| l.starts_with("delete service-ips"));
    let chain = index_of(&r, |l| l.starts_with("delete chain svc-"));
    let ep = index_of(&r, |l| l.starts_with("delete chain ep-"));
    assert!(element < chain && chain < ep && ep < r.len(), "{r:#?}");
}

#[test]
fn affinity_outlives_changes_for_the_endpoints_that_stay() {
    let mut p = port("a/web:http/tcp", &[(5, true)]);
    p.affinity_seconds = Some(60);
    let old = Programmed::of(std::slice::from_ref(&p), Options::default());
    let mut grown = p.clone();
    grown.endpoints.push(Endpoint {
        ip: Ipv4Addr::new(10, 88, 0, 6),
        port: 8080,
        local: false,
    });
    let r = render(Some(&old), &[grown], Options::default());
    assert_eq!(
        r.iter().filter(|l| l.starts_with("add set aff-")).count(),
        1,
        "{r:#?}"
    );
    assert!(
        !r.iter().any(|l| l.starts_with("delete set aff-")),
        "{r:#?}"
    );
}

#[test]
fn new_options_or_an_unknown_table_replace_everything() {
    let p = port("a/web:http/tcp", &[(5, true)]);
    let old = Programmed::of(std::slice::from_ref(&p), Options::default());
    let ops = plan(
        Some(&old),
        &Programmed::of(
            &[p],
            Options {
                masquerade_all: true,
            },
        ),
        true,
    );
    assert_eq!(ops[0].describe(), "delete table");
    assert_eq!(ops[1].describe(), "add table");
}

#[test]
fn names_are_stable_and_distinct() {
    let a = full(&[port("a/web:http/tcp", &[(5, true)])], Options::default());
    let b = full(&[port("a/web:http/tcp", &[(5, true)])], Options::default());
    let c = full(&[port("b/web:http/tcp", &[(5, true)])], Options::default());
    assert_eq!(a, b);
    assert_ne!(a, c);
}
