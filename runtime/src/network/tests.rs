//! The CNI chain against a fake plugin runner: what each plugin is given (env, stdin), in what
//! order, and what the runtime makes of its answers. No plugin binaries, no root.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use super::*;

/// One plugin run as the fake saw it.
#[derive(Debug, Clone)]
struct Call {
    plugin: String,
    env: BTreeMap<String, String>,
    conf: Value,
}

impl Call {
    fn cmd(&self) -> &str {
        &self.env["CNI_COMMAND"]
    }
    fn tag(&self) -> String {
        format!("{} {} {}", self.cmd(), self.plugin, self.env["CNI_IFNAME"])
    }
}

/// Plugins that exist under `/cni/bin`. ADD echoes `prevResult` (bridge makes a result with an
/// address); failures are scripted per (command, plugin).
struct FakeExec {
    present: Mutex<HashSet<String>>,
    calls: Mutex<Vec<Call>>,
    fail: Mutex<BTreeMap<(String, String), PluginFailure>>,
    netns_alive: Mutex<bool>,
}

impl FakeExec {
    fn new() -> Arc<Self> {
        Arc::new(FakeExec {
            present: Mutex::new(
                ["bridge", "host-local", "portmap", "loopback"]
                    .map(String::from)
                    .into(),
            ),
            calls: Mutex::default(),
            fail: Mutex::default(),
            netns_alive: Mutex::new(true),
        })
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
    fn tags(&self) -> Vec<String> {
        self.calls().iter().map(Call::tag).collect()
    }
    fn fail(&self, cmd: &str, plugin: &str, f: PluginFailure) {
        self.fail
            .lock()
            .expect("lock")
            .insert((cmd.into(), plugin.into()), f);
    }
}

fn bridge_result(netns: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "skiff0", "mac": "aa:aa:aa:aa:aa:aa"},
            {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
            {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": netns}
        ],
        "ips": [{"interface": 2, "address": "10.88.0.7/16", "gateway": "10.88.0.1"}]
    })
}

impl PluginExec for FakeExec {
    fn is_plugin(&self, path: &Path) -> bool {
        path.parent() == Some(Path::new("/cni/bin"))
            && path.file_name().is_some_and(|n| {
                self.present
                    .lock()
                    .expect("lock")
                    .contains(&*n.to_string_lossy())
            })
    }

    fn exec(
        &self,
        binary: &Path,
        env: &[(&'static str, String)],
        stdin: &[u8],
    ) -> std::result::Result<Vec<u8>, PluginFailure> {
        let plugin = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let call = Call {
            plugin: plugin.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            conf: serde_json::from_slice(stdin).expect("stdin is JSON"),
        };
        self.calls.lock().expect("lock").push(call.clone());
        if let Some(f) = self
            .fail
            .lock()
            .expect("lock")
            .get(&(call.cmd().to_string(), plugin.clone()))
        {
            return Err(f.clone());
        }
        if call.cmd() != "ADD" {
            return Ok(vec![]);
        }
        let result = match plugin.as_str() {
            "bridge" => bridge_result(&call.env["CNI_NETNS"]),
            "loopback" => json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo"}]}),
            _ => call.conf["prevResult"].clone(),
        };
        Ok(serde_json::to_vec(&result).expect("json"))
    }

    fn netns_alive(&self, _path: &Path) -> bool {
        *self.netns_alive.lock().expect("lock")
    }
}

/// Records the subnets it was asked to masquerade; fails while `fail` holds a message.
#[derive(Default)]
struct FakeMasquerade {
    ensured: Mutex<Vec<String>>,
    fail: Mutex<Option<String>>,
    gateways: Mutex<Vec<String>>,
}

impl Masquerade for FakeMasquerade {
    fn ensure(&self, subnet: &str) -> std::result::Result<(), String> {
        if let Some(m) = self.fail.lock().expect("lock").clone() {
            return Err(m);
        }
        self.ensured.lock().expect("lock").push(subnet.to_string());
        Ok(())
    }

    fn free_gateway(
        &self,
        bridge: &str,
        gateway: std::net::Ipv4Addr,
        prefix: u8,
    ) -> std::result::Result<(), String> {
        self.gateways
            .lock()
            .expect("lock")
            .push(format!("{bridge} {gateway}/{prefix}"));
        Ok(())
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    opts: NetworkOptions,
    exec: Arc<FakeExec>,
    masq: Arc<FakeMasquerade>,
    cni: CniPlugins,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = NetworkOptions {
        conf_dir: dir.path().join("cni"),
        write_default: true,
        bin_dirs: vec!["/cni/bin".into(), "/other/bin".into()],
        pod_cidr: Some("10.88.0.0/16".into()),
    };
    let exec = FakeExec::new();
    let masq = Arc::new(FakeMasquerade::default());
    let cni = CniPlugins::new(&opts, exec.clone(), masq.clone()).expect("new");
    Setup {
        _dir: dir,
        opts,
        exec,
        masq,
        cni,
    }
}

fn attachment() -> Attachment {
    Attachment {
        container_id: "sb1".into(),
        netns: "/run/skiff/sb1/ns/net".into(),
        ifname: POD_IFNAME.into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), "web".into()),
        ],
        port_mappings: vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }],
    }
}

#[test]
fn pod_cidr_must_be_an_ipv4_subnet_with_room() {
    assert_eq!(
        parse_pod_cidr("10.88.0.0/16"),
        Ok((Ipv4Addr::new(10, 88, 0, 0), 16))
    );
    for (bad, says) in [
        ("10.88.0.0", "a.b.c.d/n"),
        ("10.88.0.1/16", "did you mean 10.88.0.0/16"),
        ("10.88.0.0/31", "1 to 30"),
        ("10.88.0.0/x", "1 to 30"),
        ("fd00::/64", "not an IPv4 address"),
    ] {
        let err = parse_pod_cidr(bad).expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn the_default_list_is_written_and_loads() {
    let s = setup();
    let path = s.opts.conf_dir.join(DEFAULT_CONFIG_FILE);
    let written: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("written")).expect("json");
    assert_eq!(written["name"], "skiff");
    let bridge = &written["plugins"][0];
    assert_eq!(bridge["bridge"], "skiff0a5800");
    for k in ["isGateway", "hairpinMode"] {
        assert_eq!(bridge[k], true, "{k}");
    }
    assert_eq!(
        bridge["ipMasq"], false,
        "masquerade is skiff's one rule, not per pod"
    );
    assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
    assert_eq!(written["plugins"][1]["capabilities"]["portMappings"], true);

    let net = s.cni.network().expect("ready");
    assert_eq!(net.name, "skiff");
    assert_eq!(net.binaries(), ["bridge", "host-local", "portmap"]);
    s.cni.network().expect("ready again");
    assert_eq!(
        *s.masq.ensured.lock().expect("lock"),
        ["10.88.0.0/16"],
        "masqueraded once, on first use"
    );
    assert_eq!(
        *s.masq.gateways.lock().expect("lock"),
        ["skiff0a5800 10.88.0.1/16"],
        "the bridge's gateway made room for once"
    );
}

#[test]
fn a_failed_masquerade_keeps_the_network_not_ready_until_it_succeeds() {
    let s = setup();
    *s.masq.fail.lock().expect("lock") = Some("nft not found in /usr/sbin".into());
    let err = s.cni.network().expect_err("no masquerade");
    let RuntimeError::NetworkNotReady { reason, message } = &err else {
        panic!("{err}");
    };
    assert_eq!(*reason, "MasqueradeFailed");
    assert!(message.contains("nft not found"), "{message}");
    *s.masq.fail.lock().expect("lock") = None;
    s.cni.network().expect("ready once nft works");
    assert_eq!(s.masq.ensured.lock().expect("lock").len(), 1);
}

#[test]
fn a_users_config_gets_no_masquerade_from_skiff() {
    let s = setup();
    let user = json!({"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]});
    std::fs::write(s.opts.conf_dir.join("05-mine.conflist"), user.to_string()).expect("write");
    assert_eq!(s.cni.network().expect("ready").name, "mine");
    assert!(s.masq.ensured.lock().expect("lock").is_empty());
}

#[test]
fn the_default_follows_the_flag_but_never_overrides_a_users_config() {
    let s = setup();
    let ours = s.opts.conf_dir.join(DEFAULT_CONFIG_FILE);
    let changed = NetworkOptions {
        pod_cidr: Some("10.77.0.0/16".into()),
        ..s.opts.clone()
    };
    CniPlugins::new(&changed, s.exec.clone(), s.masq.clone()).expect("new");
    assert!(
        std::fs::read_to_string(&ours)
            .expect("read")
            .contains("10.77.0.0/16")
    );

    let user = json!({"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]});
    std::fs::write(s.opts.conf_dir.join("05-mine.conflist"), user.to_string()).expect("write");
    CniPlugins::new(&s.opts, s.exec.clone(), s.masq.clone()).expect("new");
    assert!(
        std::fs::read_to_string(&ours)
            .expect("read")
            .contains("10.77.0.0/16"),
        "our file is left as it was"
    );
    assert_eq!(s.cni.network().expect("ready").name, "mine");

    let err = CniPlugins::new(
        &NetworkOptions {
            pod_cidr: Some("10.1.2.3/8".into()),
            ..s.opts.clone()
        },
        s.exec.clone(),
        s.masq.clone(),
    )
    .err()
    .expect("bad subnet");
    assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err}");
}

#[test]
fn network_not_ready_says_why() {
    let s = setup();
    s.exec.present.lock().expect("lock").remove("portmap");
    let err = s.cni.network().expect_err("portmap missing");
    let RuntimeError::NetworkNotReady { reason, message } = &err else {
        panic!("{err}");
    };
    assert_eq!(*reason, "PluginNotFound");
    assert!(
        message.contains("plugin portmap") && message.contains("/cni/bin:/other/bin"),
        "{message}"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let user_dir = NetworkOptions {
        conf_dir: empty.path().to_path_buf(),
        write_default: false,
        ..s.opts.clone()
    };
    let cni = CniPlugins::new(&user_dir, s.exec.clone(), s.masq.clone()).expect("new");
    let err = cni.network().expect_err("no config");
    assert!(
        matches!(
            err,
            RuntimeError::NetworkNotReady {
                reason: "NoNetworkConfig",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&empty.path().display().to_string())
    );

    std::fs::write(empty.path().join("10-x.conflist"), "{not json").expect("write");
    let err = cni.network().expect_err("bad config");
    assert!(
        matches!(
            err,
            RuntimeError::NetworkNotReady {
                reason: "InvalidNetworkConfig",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("10-x.conflist"), "{err}");
}

#[test]
fn config_lists_are_validated() {
    let ok = NetworkList::parse(
        br#"{"cniVersion":"0.4.0","name":"one","type":"bridge","ipam":{"type":"host-local"}}"#,
    )
    .expect("a single .conf is a list of one");
    assert_eq!(ok.plugins.len(), 1);
    let ok = NetworkList::parse(
        br#"{"cniVersion":"1.0.0","name":"n","disableCheck":true,"plugins":[{"type":"bridge"}]}"#,
    )
    .expect("list");
    assert!(ok.disable_check);
    for (bad, says) in [
        (
            r#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
            "cniVersion",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"-n","plugins":[{"type":"bridge"}]}"#,
            "network name",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            "plugins",
        ),
        (r#"{"cniVersion":"1.0.0","name":"n"}"#, "no plugins"),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
            "plugins[0]",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"/bin/sh"}}]}"#,
            "plugins[0].ipam",
        ),
    ] {
        let err = NetworkList::parse(bad.as_bytes()).expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn add_runs_loopback_then_the_chain_with_prev_result_and_port_mappings() {
    let s = setup();
    let net = s.cni.network().expect("ready");
    let a = attachment();
    let result = s.cni.add(&net, &a).expect("add");
    assert_eq!(
        s.exec.tags(),
        ["ADD loopback lo", "ADD bridge eth0", "ADD portmap eth0"]
    );
    let calls = s.exec.calls();
    for c in &calls {
        assert_eq!(c.env["CNI_CONTAINERID"], "sb1");
        assert_eq!(c.env["CNI_NETNS"], "/run/skiff/sb1/ns/net");
        assert_eq!(c.env["CNI_PATH"], "/cni/bin:/other/bin");
        assert_eq!(
            c.env["CNI_ARGS"],
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
        );
    }
    let (lo, bridge, portmap) = (&calls[0].conf, &calls[1].conf, &calls[2].conf);
    assert_eq!(lo["name"], "cni-loopback");
    assert_eq!(bridge["name"], "skiff");
    assert_eq!(bridge["cniVersion"], "1.0.0");
    assert!(bridge.get("prevResult").is_none(), "first plugin has none");
    assert!(
        bridge.get("runtimeConfig").is_none(),
        "bridge asked for no capabilities"
    );
    assert_eq!(
        portmap["prevResult"],
        bridge_result("/run/skiff/sb1/ns/net")
    );
    assert_eq!(
        portmap["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    assert_eq!(result, bridge_result("/run/skiff/sb1/ns/net"));

    let pn = PodNetwork {
        attachment: a,
        config: net,
        result: Some(result),
    };
    assert_eq!(pn.ips(), ["10.88.0.7"]);
}

#[test]
fn a_failed_add_names_the_plugin_and_undoes_everything() {
    let s = setup();
    let net = s.cni.network().expect("ready");
    s.exec.fail(
        "ADD",
        "portmap",
        PluginFailure {
            status: "exit status: 1".into(),
            stdout:
                br#"{"cniVersion":"1.0.0","code":999,"msg":"iptables failed","details":"exit 4"}"#
                    .to_vec(),
            stderr: "Another app is holding the xtables lock".into(),
        },
    );
    let err = s.cni.add(&net, &attachment()).expect_err("fails");
    let text = err.to_string();
    assert!(
        matches!(err, RuntimeError::Cni { command: "ADD", .. }),
        "{text}"
    );
    assert!(
        text.contains("plugin portmap")
            && text.contains("iptables failed: exit 4")
            && text.contains("xtables lock"),
        "{text}"
    );
    assert_eq!(
        s.exec.tags(),
        [
            "ADD loopback lo",
            "ADD bridge eth0",
            "ADD portmap eth0",
            "DEL portmap eth0",
            "DEL bridge eth0",
            "DEL loopback lo",
        ]
    );
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::Unknown);
}

#[test]
fn a_missing_plugin_or_garbage_result_fails_add() {
    let s = setup();
    let net = s.cni.network().expect("ready");
    s.exec.present.lock().expect("lock").remove("bridge");
    let err = s.cni.add(&net, &attachment()).expect_err("no bridge");
    assert!(
        err.to_string().contains("plugin bridge")
            && err.to_string().contains("not found in /cni/bin:/other/bin"),
        "{err}"
    );

    let s = setup();
    s.exec.fail(
        "ADD",
        "bridge",
        PluginFailure {
            status: "exit status: 2".into(),
            stdout: b"panic: oops".to_vec(),
            stderr: String::new(),
        },
    );
    let err = s.cni.add(&net, &attachment()).expect_err("garbage");
    assert!(err.to_string().ends_with("exit status: 2"), "{err}");
}

#[test]
fn del_runs_in_reverse_with_the_add_result_and_survives_a_gone_netns() {
    let s = setup();
    let net = s.cni.network().expect("ready");
    let a = attachment();
    let result = bridge_result("/run/skiff/sb1/ns/net");
    s.cni.del(&net, &a, Some(&result)).expect("del");
    assert_eq!(
        s.exec.tags(),
        ["DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]
    );
    let calls = s.exec.calls();
    assert_eq!(calls[0].env["CNI_NETNS"], "/run/skiff/sb1/ns/net");
    assert_eq!(calls[0].conf["prevResult"], result);
    assert_eq!(
        calls[0].conf["runtimeConfig"]["portMappings"][0]["hostPort"], 8080,
        "portmap needs the mappings to find its rules"
    );

    *s.exec.netns_alive.lock().expect("lock") = false;
    s.exec.calls.lock().expect("lock").clear();
    s.cni.del(&net, &a, None).expect("del again");
    let calls = s.exec.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.env["CNI_NETNS"].is_empty()));
    assert!(calls.iter().all(|c| c.conf.get("prevResult").is_none()));

    s.exec.fail(
        "DEL",
        "bridge",
        PluginFailure {
            status: "exit status: 1".into(),
            stdout: br#"{"code":11,"msg":"try again"}"#.to_vec(),
            stderr: String::new(),
        },
    );
    let err = s.cni.del(&net, &a, None).expect_err("fails");
    assert!(
        err.to_string().contains("DEL of plugin bridge") && err.to_string().contains("try again"),
        "{err}"
    );
}

#[test]
fn check_passes_the_result_and_honours_disable_check() {
    let s = setup();
    let mut net = s.cni.network().expect("ready");
    let result = bridge_result("/x");
    s.cni.check(&net, &attachment(), &result).expect("check");
    assert_eq!(s.exec.tags(), ["CHECK bridge eth0", "CHECK portmap eth0"]);
    assert!(
        s.exec
            .calls()
            .iter()
            .all(|c| c.conf["prevResult"] == result)
    );
    net.disable_check = true;
    s.exec.calls.lock().expect("lock").clear();
    s.cni.check(&net, &attachment(), &result).expect("check");
    assert!(s.exec.calls().is_empty());
}

#[test]
fn ips_are_those_on_the_pod_interface() {
    let pn = PodNetwork {
        attachment: attachment(),
        config: NetworkList::loopback(),
        result: Some(json!({
            "interfaces": [{"name": "eth0", "sandbox": "/x"}, {"name": "net1", "sandbox": "/x"}],
            "ips": [
                {"interface": 0, "address": "10.88.0.9/16"},
                {"interface": 1, "address": "192.168.5.5/24"},
                {"address": "fd00::9/64"}
            ]
        })),
    };
    assert_eq!(pn.ips(), ["10.88.0.9", "fd00::9"]);
    let none = PodNetwork { result: None, ..pn };
    assert!(none.ips().is_empty());
}

#[test]
fn without_a_flag_the_subnet_comes_from_the_node() {
    let s = setup();
    let opts = NetworkOptions {
        conf_dir: s.opts.conf_dir.parent().expect("parent").join("cni-node"),
        pod_cidr: None,
        ..s.opts.clone()
    };
    let cni = CniPlugins::new(&opts, s.exec.clone(), s.masq.clone()).expect("new");
    let err = cni.network().expect_err("no subnet yet");
    assert!(
        matches!(&err, RuntimeError::NetworkNotReady { reason, .. } if *reason == "NoPodCIDR"),
        "{err}"
    );
    assert!(cni.set_pod_cidr("10.88.3.1/24").is_err(), "host bits set");
    cni.set_pod_cidr("10.88.3.0/24").expect("the node's subnet");
    let ours = opts.conf_dir.join(DEFAULT_CONFIG_FILE);
    assert!(
        std::fs::read_to_string(&ours)
            .expect("read")
            .contains("10.88.3.0/24")
    );
    // The flag wins over the node.
    s.cni.set_pod_cidr("10.88.4.0/24").expect("ignored");
    let flagged = s.opts.conf_dir.join(DEFAULT_CONFIG_FILE);
    assert!(
        std::fs::read_to_string(&flagged)
            .expect("read")
            .contains("10.88.0.0/16")
    );
}
