//! Discovery documents: `/api`, `/apis`, the resource lists of each group version, `/version`.

use serde_json::{Value, json};

use super::resources::{RESOURCES, Resource, groups};

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

pub fn group_list() -> Value {
    group_list_with(&[])
}

/// The served groups and, after them, the (group, version) pairs aggregated servers serve.
pub fn group_list_with(aggregated: &[(String, String)]) -> Value {
    let mut groups: Vec<Value> = groups()
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in aggregated {
        if !names.contains(&g.as_str()) {
            names.push(g);
        }
    }
    for name in names {
        let versions: Vec<Value> = aggregated
            .iter()
            .filter(|(g, _)| g == name)
            .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
            .collect();
        let preferred = versions[0].clone();
        groups.push(json!({"name": name, "versions": versions, "preferredVersion": preferred}));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// What subresource `sub` of `r` serves: its kind, its verbs, and its group and version when
/// they are not `r`'s.
pub fn subresource(
    r: &'static Resource,
    sub: &str,
) -> (
    &'static str,
    &'static [&'static str],
    Option<(&'static str, &'static str)>,
) {
    match sub {
        "binding" => ("Binding", &["create"], None),
        "log" => ("Pod", &["get"], None),
        // As the kube-apiserver lists them: kind PodExecOptions etc., get and create.
        "exec" => ("PodExecOptions", &["create", "get"], None),
        "attach" => ("PodAttachOptions", &["create", "get"], None),
        "portforward" => ("PodPortForwardOptions", &["create", "get"], None),
        "eviction" => ("Eviction", &["create"], Some(("policy", "v1"))),
        "scale" => (
            "Scale",
            &["get", "patch", "update"],
            Some(("autoscaling", "v1")),
        ),
        _ => (r.kind, &["get", "patch", "update"], None),
    }
}

/// The APIResourceList of one group version, or `None` if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for sub in r.subresources {
            let (kind, verbs, gv) = subresource(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some((g, v)) = gv {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            out.push(entry);
        }
    }
    if out.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

/// The commit the running binary was built from, set once at start by the binary (whose build
/// script knows it); `/version` says it as `gitCommit`.
pub static GIT_COMMIT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "gitVersion": concat!("v1.35.0-skiff.", env!("CARGO_PKG_VERSION")),
        "gitCommit": GIT_COMMIT.get().copied().unwrap_or_default(),
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}
