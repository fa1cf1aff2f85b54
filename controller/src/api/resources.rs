//! The resources the API server serves: group, version, names, scope, verbs and subresources,
//! and where their objects live in the store. Discovery and routing both read this table.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Lower-case plural, as in the URL.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `leases.coordination.k8s.io`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        VERBS
    }

    /// The store key prefix of every object of this resource.
    pub fn prefix(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{g}/{}/", self.plural)
    }

    /// The store key prefix for one namespace (or the whole resource when `ns` is `None`).
    pub fn list_prefix(&self, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.prefix()),
            _ => format!("{}{name}", self.prefix()),
        }
    }
}

const fn res(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories,
        subresources,
    }
}

/// Everything served, in discovery order.
pub static RESOURCES: &[Resource] = &[
    res(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &[],
        &["status"],
    ),
    res(
        "",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        &[],
        &["status"],
    ),
    res(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["all"],
        &["status", "binding", "log"],
    ),
    res(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        &[],
    ),
    res("", "secrets", "secret", "Secret", true, &[], &[], &[]),
    res(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &[],
    ),
    res("", "events", "event", "Event", true, &["ev"], &[], &[]),
    res(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        &[],
        &[],
    ),
];

/// The groups served besides the core group, each with its one version.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// The resource with this plural in this group and version.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of this kind in this group (for `apiVersion`/`kind` in a body).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

pub fn namespaces() -> &'static Resource {
    &RESOURCES[0]
}
pub fn nodes() -> &'static Resource {
    &RESOURCES[1]
}
pub fn pods() -> &'static Resource {
    &RESOURCES[2]
}
