use std::net::Ipv4Addr;

use super::model::{Endpoint, Protocol, ServicePort};
use super::rules::{Options, ruleset};

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

/// Every rule as `chain [key]: nft syntax`, and every set with its element count.
fn render(ports: &[ServicePort], opts: Options) -> Vec<String> {
    let cfg = ruleset(ports, opts);
    let table = &cfg.tables()[0];
    let mut out: Vec<String> = table
        .rules()
        .iter()
        .map(|r| {
            format!(
                "{} [{}]: {}",
                r.chain(),
                r.handle_key().unwrap_or(""),
                r.body().nft_syntax().unwrap_or_else(|| "?".into())
            )
        })
        .collect();
    for s in table.sets() {
        out.push(format!("set {}: {:?}", s.name(), s.elements()));
    }
    out
}

fn lines_of<'a>(rendered: &'a [String], prefix: &str) -> Vec<&'a str> {
    rendered
        .iter()
        .filter(|l| l.starts_with(prefix))
        .map(String::as_str)
        .collect()
}

fn set_of<'a>(rendered: &'a [String], name: &str) -> &'a str {
    rendered
        .iter()
        .find(|l| l.starts_with(&format!("set {name}:")))
        .map_or("", String::as_str)
}

#[test]
fn a_cluster_ip_balances_over_its_endpoints_and_marks_hairpin_traffic() {
    let r = render(
        &[port("shop/web:http/tcp", &[(5, true), (6, false)])],
        Options::default(),
    );
    let balance: Vec<&String> = r.iter().filter(|l| l.contains("[balance]")).collect();
    assert_eq!(balance.len(), 1, "{r:#?}");
    assert!(
        balance[0].contains("numgen random mod 2 vmap @svc-"),
        "{r:#?}"
    );
    let dnats = r.iter().filter(|l| l.contains("[dnat]")).count();
    assert_eq!(dnats, 2);
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
    let ips = set_of(&r, "service-ips");
    assert!(
        ips.contains("key: [10, 96, 0, 20, 6, 0, 0, 0, 0, 80, 0, 0]"),
        "{ips}"
    );
    assert!(ips.contains("ChainName(\"svc-"), "{ips}");
    assert!(set_of(&r, "service-nodeports").ends_with("[]"));
    assert!(lines_of(&r, "ext-").is_empty() && !r.iter().any(|l| l.contains("aff-")));
    // The numgen map's keys are 0 and 1 in host byte order, as numgen writes them.
    let eps = r.iter().find(|l| l.contains("-endpoints:")).unwrap();
    assert!(
        eps.contains(&format!("key: {:?}", 1u32.to_ne_bytes())),
        "{eps}"
    );
}

#[test]
fn no_endpoints_rejects_and_the_rules_pass_through_masquerading() {
    let r = render(&[port("shop/web:http/tcp", &[])], Options::default());
    assert!(
        set_of(&r, "service-ips").contains("ChainName(\"reject\")"),
        "{r:#?}"
    );
    assert!(
        r.iter().any(|l| l == "reject [tcp]: reject with tcp reset"),
        "{r:#?}"
    );
    assert!(!r.iter().any(|l| l.contains("[balance]")));
    assert!(r.iter().any(|l| {
        l.starts_with("nat-postrouting [masquerade]: meta mark & 0x00004000 == 0x00004000")
    }));
}

#[test]
fn node_ports_and_external_ips_go_through_the_external_chain() {
    let mut p = port("shop/web:http/tcp", &[(5, true), (6, false)]);
    p.node_port = Some(30080);
    p.external_ips = vec![Ipv4Addr::new(192, 0, 2, 9)];
    let r = render(&[p.clone()], Options::default());
    let ext = lines_of(&r, "ext-");
    assert_eq!(ext.len(), 2, "{r:#?}");
    assert!(
        ext[0].ends_with("jump mark-for-masquerade comment \"shop/web:http/tcp\""),
        "{ext:?}"
    );
    assert!(ext[1].contains("goto svc-"), "{ext:?}");
    let np = set_of(&r, "service-nodeports");
    assert!(
        np.contains("key: [6, 0, 0, 0, 117, 128, 0, 0]") && np.contains("ChainName(\"ext-"),
        "{np}"
    );
    assert!(set_of(&r, "service-ips").contains("key: [192, 0, 2, 9, 6, 0, 0, 0, 0, 80, 0, 0]"));
    // Local policy: this node's endpoints only, the node's own connections anywhere; none
    // here: dropped.
    p.external_local = true;
    let r = render(&[p.clone()], Options::default());
    let ext = lines_of(&r, "ext-");
    assert!(
        ext[0].contains("fib saddr type local jump mark-for-masquerade"),
        "{ext:?}"
    );
    assert!(ext[2].contains("goto lcl-"), "{ext:?}");
    assert!(
        r.iter()
            .any(|l| l.starts_with("lcl-") && l.contains("numgen random mod 1"))
    );
    for e in &mut p.endpoints {
        e.local = false;
    }
    let r = render(&[p], Options::default());
    assert!(lines_of(&r, "ext-")[2].ends_with("drop"), "{r:#?}");
}

#[test]
fn internal_local_policy_and_affinity_and_masquerade_all() {
    let mut p = port("shop/web:http/tcp", &[(5, true), (6, false)]);
    p.internal_local = true;
    p.affinity_seconds = Some(60);
    let r = render(
        &[p],
        Options {
            masquerade_all: true,
        },
    );
    assert!(
        set_of(&r, "service-ips").contains("ChainName(\"lcl-"),
        "{r:#?}"
    );
    let lcl = lines_of(&r, "lcl-");
    assert_eq!(lcl.len(), 3, "{lcl:?}");
    assert!(
        lcl[0].ends_with("[masquerade-all]: jump mark-for-masquerade"),
        "{lcl:?}"
    );
    assert!(
        lcl[1].contains("ip saddr @aff-") && lcl[1].contains("goto ep-"),
        "{lcl:?}"
    );
    assert!(r.iter().any(|l| l.contains("[affinity]: update @aff-")));
}

#[test]
fn names_are_stable_and_distinct() {
    let a = render(&[port("a/web:http/tcp", &[(5, true)])], Options::default());
    let b = render(&[port("a/web:http/tcp", &[(5, true)])], Options::default());
    let c = render(&[port("b/web:http/tcp", &[(5, true)])], Options::default());
    assert_eq!(a, b);
    assert_ne!(a, c);
}
