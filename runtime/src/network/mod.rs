//! Pod networking through CNI (spec 1.0): the node's network config list, the [`Cni`]
//! boundary the runtime calls (ADD when a pod sandbox with its own network namespace starts,
//! DEL when it stops or goes), and [`CniPlugins`], which runs the plugin binaries.
//!
//! - **Config**: the first `*.conflist` (or `*.conf`, `*.json`) by file name in the config
//!   directory. When the directory is the runtime's own (`<root>/cni`) and holds no other
//!   config, skiff writes [`DEFAULT_CONFIG_FILE`] there at start: a `bridge` on [`default_bridge`]
//!   (gateway, hairpin) with `host-local` addresses from the pod subnet, then `portmap` for
//!   hostPorts; while that list is the one in use, skiff masquerades the subnet's traffic
//!   leaving the node itself ([`masquerade`]), once, not per pod.
//! - **ADD**: the `loopback` plugin on `lo` (its own one-plugin list, as containerd does), then
//!   the list's plugins in order on `eth0`, each given the previous one's result as
//!   `prevResult` and, if it declares the `portMappings` capability, the pod's hostPorts as
//!   `runtimeConfig`. A failed ADD runs DEL for everything before it returns, so nothing is
//!   left half set up.
//! - **DEL**: the plugins in reverse order with ADD's result as `prevResult` and the same
//!   `runtimeConfig` (portmap finds its rules from it), then loopback. When the namespace is
//!   gone, `CNI_NETNS` is empty and the plugins release what they hold outside it (addresses,
//!   port forwards). DEL is idempotent.
//! - What ADD ran and returned is persisted with the sandbox ([`PodNetwork`]), so DEL undoes
//!   exactly that after a runtime restart or a change of the node's config.

pub mod exec;
pub mod masquerade;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use self::exec::{PluginExec, PluginFailure, ProcessExec};
pub use self::masquerade::{Masquerade, Nft};
use crate::error::{Result, RuntimeError};

/// The config skiff writes when the node has none.
pub const DEFAULT_CONFIG_FILE: &str = "10-skiff.conflist";
/// The network name of the default config (host-local keeps its leases under
/// `/var/lib/cni/networks/<name>`).
pub const DEFAULT_NETWORK: &str = "skiff";
/// The node bridge of the default config for a pod subnet starting at `net`: `skiff` and the
/// subnet's first three octets in hex (`skiff0a5801` for 10.88.1.0/24). One per subnet, since
/// the bridge plugin gives a bridge one IPv4 gateway: two nodes on one host (`skiff up` and a
/// `skiff agent`) each get their own, and the host routes between them.
pub fn default_bridge(net: Ipv4Addr) -> String {
    let o = net.octets();
    format!("skiff{:02x}{:02x}{:02x}", o[0], o[1], o[2])
}
/// The cluster's pod range by default, from which node IPAM gives each node a subnet; clear
/// of the service range (10.96.0.0/12).
pub const DEFAULT_POD_CIDR: &str = "10.88.0.0/16";
/// Where plugins are looked for, in order: Debian's containernetworking-plugins, then the
/// upstream tarball's location.
pub const DEFAULT_BIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// The interface CNI creates in each pod.
pub const POD_IFNAME: &str = "eth0";
/// The CNI version of the configs skiff writes.
const CNI_VERSION: &str = "1.0.0";

/// How the node's pod network is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Where network config lists live; the first by file name is used.
    pub conf_dir: PathBuf,
    /// Write skiff's default list into `conf_dir` when it holds no other config.
    pub write_default: bool,
    /// Directories searched for plugin binaries, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// The pod subnet of the default list, e.g. `10.88.0.0/16` (`--pod-cidr`); `None`: the
    /// node's, from its Node's `spec.podCIDR`, which the node agent passes on through CRI's
    /// UpdateRuntimeConfig (the network is not ready until then).
    pub pod_cidr: Option<String>,
}

impl NetworkOptions {
    /// The defaults for a runtime rooted at `root`: config in `<root>/cni`, written by skiff.
    pub fn under(root: &Path) -> Self {
        NetworkOptions {
            conf_dir: root.join("cni"),
            write_default: true,
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            pod_cidr: None,
        }
    }
}

/// Parses an IPv4 subnet `a.b.c.d/n` with no host bits set and room for pods (n at most 30).
pub fn parse_pod_cidr(s: &str) -> std::result::Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("pod subnet {s:?} is not of the form a.b.c.d/n"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("pod subnet {s:?}: {addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=30).contains(p))
        .ok_or_else(|| format!("pod subnet {s:?}: the prefix length must be 1 to 30"))?;
    let mask = u32::MAX << (32 - prefix);
    if u32::from(addr) & !mask != 0 {
        let net = Ipv4Addr::from(u32::from(addr) & mask);
        return Err(format!(
            "pod subnet {s:?} has host bits set (did you mean {net}/{prefix}?)"
        ));
    }
    Ok((addr, prefix))
}

/// skiff's default network config list for `pod_cidr`.
pub fn default_list(pod_cidr: &str) -> std::result::Result<Value, String> {
    let (addr, prefix) = parse_pod_cidr(pod_cidr)?;
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": DEFAULT_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": default_bridge(addr),
                "isGateway": true,
                // Masquerade is one rule for the subnet (`masquerade`), not a chain per pod.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("{addr}/{prefix}") }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    }))
}

/// Removes the host side of skiff's default network for the runtime set up with `opts` (its
/// bridge and masquerade; `skiff down`, once the node's pods are gone), read from the default
/// list the runtime last wrote. Nothing when skiff wrote none (another config, or no subnet
/// yet). `alone`: no other skiff node on this host uses the masquerade table. Returns what it
/// removed.
pub fn remove_default_network(
    opts: &NetworkOptions,
    alone: bool,
) -> std::result::Result<Vec<String>, String> {
    let path = opts.conf_dir.join(DEFAULT_CONFIG_FILE);
    let Ok(text) = std::fs::read(&path) else {
        return Ok(Vec::new());
    };
    let list: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(bridge) = list["plugins"][0]["bridge"].as_str() else {
        return Ok(Vec::new());
    };
    let Some(subnet) = list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].as_str() else {
        return Ok(Vec::new());
    };
    masquerade::Nft::default().release(subnet, bridge, alone)
}

/// A parsed network config list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// The list asks runtimes never to run CHECK.
    pub disable_check: bool,
    /// The plugins' configs in order, each an object with a `type`.
    pub plugins: Vec<Value>,
}

fn not_ready(reason: &'static str, message: String) -> RuntimeError {
    RuntimeError::NetworkNotReady { reason, message }
}

/// A plugin type is a file name in the plugin directories: nothing that could climb out.
fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty()
        && !t.starts_with('.')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The spec's rule for network names.
fn valid_network_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl NetworkList {
    /// The one-plugin list that brings up `lo` in a pod.
    pub fn loopback() -> Self {
        NetworkList {
            name: "cni-loopback".into(),
            cni_version: CNI_VERSION.into(),
            disable_check: false,
            plugins: vec![json!({ "type": "loopback" })],
        }
    }

    /// Parses a config list, or a single plugin config (a `.conf`) as a list of one.
    pub fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
        let cni_version = text("cniVersion").to_string();
        if cni_version.is_empty() {
            return Err("no cniVersion".into());
        }
        let name = text("name").to_string();
        if !valid_network_name(&name) {
            return Err(format!("bad network name {name:?}"));
        }
        let plugins = match obj.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(_) => return Err("plugins is not a non-empty list".into()),
            None if obj.contains_key("type") => vec![v.clone()],
            None => return Err("no plugins".into()),
        };
        for (i, p) in plugins.iter().enumerate() {
            let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
            if !p.is_object() || !valid_plugin_type(t) {
                return Err(format!("plugins[{i}] has no valid type (got {t:?})"));
            }
            if let Some(ipam) = p.get("ipam").and_then(|i| i.get("type"))
                && !ipam.as_str().is_some_and(valid_plugin_type)
            {
                return Err(format!("plugins[{i}].ipam has no valid type (got {ipam})"));
            }
        }
        let disable_check = match obj.get("disableCheck") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(NetworkList {
            name,
            cni_version,
            disable_check,
            plugins,
        })
    }

    /// The config files in `dir`, by name.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
            })
            .collect();
        files.sort();
        files
    }

    /// Loads the first config in `dir` by file name.
    pub fn load(dir: &Path) -> Result<(PathBuf, Self)> {
        let Some(path) = Self::files(dir).into_iter().next() else {
            return Err(not_ready(
                "NoNetworkConfig",
                format!("no network config in {}", dir.display()),
            ));
        };
        let data = std::fs::read(&path).map_err(|e| {
            not_ready(
                "InvalidNetworkConfig",
                format!("read {}: {e}", path.display()),
            )
        })?;
        let list = Self::parse(&data)
            .map_err(|m| not_ready("InvalidNetworkConfig", format!("{}: {m}", path.display())))?;
        Ok((path, list))
    }

    /// Every binary the list runs: each plugin's type and its IPAM plugin's.
    pub fn binaries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.plugins {
            for t in [&p["type"], &p["ipam"]["type"]] {
                if let Some(t) = t.as_str()
                    && !out.iter().any(|o| o == t)
                {
                    out.push(t.to_string());
                }
            }
        }
        out
    }
}

/// A hostPort for portmap's `runtimeConfig.portMappings`, in its JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Who is attached where: the same for a pod's ADD, CHECK and DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the sandbox id.
    pub container_id: String,
    /// `CNI_NETNS`: the sandbox's network namespace file.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` pairs: the pod's name, namespace, uid and sandbox id, as the kubelet passes.
    pub args: Vec<(String, String)>,
    /// The pod's hostPorts.
    pub port_mappings: Vec<PortMapping>,
}

/// A pod's network as the sandbox record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodNetwork {
    pub attachment: Attachment,
    /// The list ADD ran: DEL undoes exactly that, even if the node's config changed since.
    pub config: NetworkList,
    /// ADD's result (the last plugin's); `None` while ADD has not finished.
    pub result: Option<Value>,
}

impl PodNetwork {
    /// The pod's addresses (without prefix length) from ADD's result: those on the pod's
    /// interface, or all when the result does not say which interface they are on.
    pub fn ips(&self) -> Vec<String> {
        let Some(r) = &self.result else {
            return vec![];
        };
        let ifaces = r["interfaces"].as_array();
        r["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|ip| {
                let iface = ip["interface"]
                    .as_u64()
                    .and_then(|i| ifaces.and_then(|f| f.get(usize::try_from(i).ok()?)));
                iface.is_none_or(|f| f["name"] == self.attachment.ifname.as_str())
            })
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .collect()
    }
}

/// The runtime's view of CNI.
pub trait Cni: Send + Sync {
    /// The node's network list as configured now, every plugin it needs present;
    /// [`RuntimeError::NetworkNotReady`] says why not.
    fn network(&self) -> Result<NetworkList>;
    /// ADD: loopback on `lo`, then `net` on `a.ifname`; the last plugin's result. A failure
    /// has run DEL for everything before it returns.
    fn add(&self, net: &NetworkList, a: &Attachment) -> Result<Value>;
    /// CHECK: asks each plugin whether the pod's network is still as ADD left it.
    fn check(&self, net: &NetworkList, a: &Attachment, result: &Value) -> Result<()>;
    /// DEL, in reverse order; idempotent, and fine when the namespace is gone.
    fn del(&self, net: &NetworkList, a: &Attachment, result: Option<&Value>) -> Result<()>;
    /// The node's pod subnet (CRI UpdateRuntimeConfig): the default list's from now on,
    /// unless `--pod-cidr` pinned one.
    fn set_pod_cidr(&self, cidr: &str) -> Result<()>;
}

/// The CNI operations, as `CNI_COMMAND` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Check,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
        }
    }
}

/// The error object a failing plugin prints on stdout.
#[derive(Deserialize)]
struct PluginError {
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// What a failed plugin said: its CNI error, else how it ended; and its stderr.
fn failure_message(f: &PluginFailure) -> String {
    let mut m = match serde_json::from_slice::<PluginError>(&f.stdout) {
        Ok(e) if !e.msg.is_empty() && !e.details.is_empty() => format!("{}: {}", e.msg, e.details),
        Ok(e) if !e.msg.is_empty() => e.msg,
        _ => f.status.clone(),
    };
    if !f.stderr.is_empty() {
        m.push_str(&format!(" (stderr: {})", f.stderr));
    }
    m
}

/// The real CNI: runs plugin binaries found in the configured directories.
pub struct CniPlugins {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    exec: Arc<dyn PluginExec>,
    /// Whether skiff writes the default list (into its own config directory).
    write_default: bool,
    /// The default list's subnet: `--pod-cidr`'s, or the node's once the agent has told it.
    default_subnet: std::sync::RwLock<Option<String>>,
    /// The subnet is `--pod-cidr`'s: the node's is not taken.
    pinned: bool,
    masquerade: Arc<dyn Masquerade>,
    /// The subnet's masquerade is in place (set once it succeeded).
    masqueraded: std::sync::atomic::AtomicBool,
}

impl CniPlugins {
    /// Validates the options and, when asked, the directory holds no other config and the
    /// subnet is known, writes the default list (rewritten at every start, so a changed pod
    /// subnet takes effect).
    pub fn new(
        opts: &NetworkOptions,
        exec: Arc<dyn PluginExec>,
        masquerade: Arc<dyn Masquerade>,
    ) -> Result<Self> {
        let cni = CniPlugins {
            conf_dir: opts.conf_dir.clone(),
            bin_dirs: opts.bin_dirs.clone(),
            exec,
            write_default: opts.write_default,
            default_subnet: std::sync::RwLock::new(None),
            pinned: opts.pod_cidr.is_some(),
            masquerade,
            masqueraded: std::sync::atomic::AtomicBool::new(false),
        };
        if let Some(cidr) = &opts.pod_cidr {
            cni.write_default_list(cidr)?;
        }
        Ok(cni)
    }

    fn subnet(&self) -> Option<String> {
        self.default_subnet.read().ok().and_then(|s| s.clone())
    }

    /// Whether the config directory holds a list other than skiff's default.
    fn has_other_config(&self) -> bool {
        let ours = self.conf_dir.join(DEFAULT_CONFIG_FILE);
        NetworkList::files(&self.conf_dir)
            .into_iter()
            .any(|p| p != ours)
    }

    /// Writes the default list for `cidr` (unless the directory holds another config) and
    /// makes it the subnet the masquerade is for.
    fn write_default_list(&self, cidr: &str) -> Result<()> {
        let default = default_list(cidr).map_err(RuntimeError::InvalidArgument)?;
        if !self.write_default {
            return Ok(());
        }
        if !self.has_other_config() {
            let ours = self.conf_dir.join(DEFAULT_CONFIG_FILE);
            let text =
                serde_json::to_vec_pretty(&default).map_err(|source| RuntimeError::State {
                    path: ours.clone(),
                    source,
                })?;
            crate::state::write_atomic(&ours, &text)?;
        }
        if let Ok(mut s) = self.default_subnet.write() {
            *s = Some(cidr.to_string());
        }
        self.masqueraded
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn find(&self, plugin: &str) -> Option<PathBuf> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| self.exec.is_plugin(p))
    }

    /// The stdin of one plugin: its config with the list's name and version, the
    /// capabilities it declares as `runtimeConfig`, and `prevResult`.
    fn plugin_config(
        net: &NetworkList,
        plugin: &Value,
        a: &Attachment,
        prev: Option<&Value>,
    ) -> Vec<u8> {
        let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("cniVersion".into(), json!(net.cni_version));
        conf.insert("name".into(), json!(net.name));
        let mut runtime = Map::new();
        if plugin["capabilities"]["portMappings"] == true && !a.port_mappings.is_empty() {
            runtime.insert("portMappings".into(), json!(a.port_mappings));
        }
        // Only the runtime fills runtimeConfig, and only with what the plugin asked for.
        conf.remove("runtimeConfig");
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        serde_json::to_vec(&conf).unwrap_or_default()
    }

    fn invoke(
        &self,
        cmd: Command,
        net: &NetworkList,
        plugin: &Value,
        a: &Attachment,
        netns: &str,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>> {
        let kind = plugin["type"].as_str().unwrap_or_default();
        let err = |message: String| RuntimeError::Cni {
            command: cmd.as_str(),
            plugin: kind.to_string(),
            network: net.name.clone(),
            message,
        };
        let binary = self
            .find(kind)
            .ok_or_else(|| err(format!("plugin not found in {}", self.cni_path())))?;
        let args = if a.args.is_empty() {
            String::new()
        } else {
            // Plugins that parse CNI_ARGS reject keys they do not know unless told not to.
            std::iter::once("IgnoreUnknown=1".to_string())
                .chain(a.args.iter().map(|(k, v)| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(";")
        };
        let env = [
            ("CNI_COMMAND", cmd.as_str().to_string()),
            ("CNI_CONTAINERID", a.container_id.clone()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", a.ifname.clone()),
            ("CNI_ARGS", args),
            ("CNI_PATH", self.cni_path()),
        ];
        let stdin = Self::plugin_config(net, plugin, a, prev);
        tracing::debug!(command = cmd.as_str(), plugin = kind, network = %net.name, container = %a.container_id, "cni plugin");
        self.exec
            .exec(&binary, &env, &stdin)
            .map_err(|f| err(failure_message(&f)))
    }

    fn add_list(&self, net: &NetworkList, a: &Attachment, netns: &str) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let out = self.invoke(Command::Add, net, plugin, a, netns, prev.as_ref())?;
            let result = serde_json::from_slice::<Value>(&out)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| RuntimeError::Cni {
                    command: "ADD",
                    plugin: plugin["type"].as_str().unwrap_or_default().to_string(),
                    network: net.name.clone(),
                    message: format!(
                        "result is not a JSON object: {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                })?;
            prev = Some(result);
        }
        prev.ok_or_else(|| RuntimeError::Internal(format!("network {} has no plugins", net.name)))
    }

    fn del_list(
        &self,
        net: &NetworkList,
        a: &Attachment,
        netns: &str,
        result: Option<&Value>,
    ) -> Result<()> {
        for plugin in net.plugins.iter().rev() {
            self.invoke(Command::Del, net, plugin, a, netns, result)?;
        }
        Ok(())
    }

    fn loopback(a: &Attachment) -> Attachment {
        Attachment {
            ifname: "lo".into(),
            port_mappings: vec![],
            ..a.clone()
        }
    }
}

impl Cni for CniPlugins {
    fn network(&self) -> Result<NetworkList> {
        if self.write_default && self.subnet().is_none() && !self.has_other_config() {
            return Err(not_ready(
                "NoPodCIDR",
                "waiting for this node's pod subnet (its Node's spec.podCIDR, from the control plane's node IPAM; or set --pod-cidr)".to_string(),
            ));
        }
        let (path, list) = NetworkList::load(&self.conf_dir)?;
        for b in list.binaries().into_iter().chain(["loopback".to_string()]) {
            if self.find(&b).is_none() {
                return Err(not_ready(
                    "PluginNotFound",
                    format!(
                        "plugin {b} (network {} in {}) not found in {}",
                        list.name,
                        path.display(),
                        self.cni_path()
                    ),
                ));
            }
        }
        if let Some(subnet) = &self.subnet()
            && path == self.conf_dir.join(DEFAULT_CONFIG_FILE)
            && !self.masqueraded.load(std::sync::atomic::Ordering::Acquire)
        {
            let (net, prefix) = parse_pod_cidr(subnet).map_err(RuntimeError::InvalidArgument)?;
            let gateway = Ipv4Addr::from(u32::from(net) + 1);
            self.masquerade
                .free_gateway(&default_bridge(net), gateway, prefix)
                .map_err(|m| not_ready("BridgeAddressConflict", m))?;
            self.masquerade
                .ensure(subnet)
                .map_err(|m| not_ready("MasqueradeFailed", m))?;
            self.masqueraded
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(list)
    }

    fn add(&self, net: &NetworkList, a: &Attachment) -> Result<Value> {
        let netns = a.netns.to_string_lossy();
        let added = self
            .add_list(&NetworkList::loopback(), &Self::loopback(a), &netns)
            .and_then(|_| self.add_list(net, a, &netns));
        if let Err(e) = &added {
            tracing::warn!(container = %a.container_id, network = %net.name, error = %e, "cni add failed, undoing it");
            if let Err(d) = self.del(net, a, None) {
                tracing::warn!(container = %a.container_id, network = %net.name, error = %d, "cni del after a failed add failed");
            }
        }
        added
    }

    fn check(&self, net: &NetworkList, a: &Attachment, result: &Value) -> Result<()> {
        if net.disable_check {
            return Ok(());
        }
        let netns = a.netns.to_string_lossy();
        for plugin in &net.plugins {
            self.invoke(Command::Check, net, plugin, a, &netns, Some(result))?;
        }
        Ok(())
    }

    fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        parse_pod_cidr(cidr).map_err(RuntimeError::InvalidArgument)?;
        let current = self.subnet();
        if current.as_deref() == Some(cidr) {
            return Ok(());
        }
        if self.pinned {
            tracing::warn!(node_pod_cidr = cidr, pod_cidr = ?current, "the node's pod subnet differs from --pod-cidr, which is kept");
            return Ok(());
        }
        tracing::info!(pod_cidr = cidr, "pod subnet set from the node");
        self.write_default_list(cidr)
    }

    fn del(&self, net: &NetworkList, a: &Attachment, result: Option<&Value>) -> Result<()> {
        let netns = if self.exec.netns_alive(&a.netns) {
            a.netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        self.del_list(net, a, &netns, result)?;
        self.del_list(&NetworkList::loopback(), &Self::loopback(a), &netns, None)
    }
}

#[cfg(test)]
mod tests;
