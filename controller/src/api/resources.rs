//! The resources the API server serves: group, version, names, scope, verbs, subresources and
//! the strategy that holds the kind's behaviour, and where their objects live in the store.
//! Discovery, routing, admission, tables and OpenAPI all read this table.

use super::kinds::{
    apiservice::ApiServiceStrategy,
    componentstatus::ComponentStatusStrategy,
    configmap::ConfigMapStrategy,
    controllerrevision::ControllerRevisionStrategy,
    cronjob::CronJobStrategy,
    daemonset::DaemonSetStrategy,
    deployment::DeploymentStrategy,
    endpoints::EndpointsStrategy,
    endpointslice::EndpointSliceStrategy,
    event::EventStrategy,
    job::JobStrategy,
    lease::LeaseStrategy,
    limitrange::LimitRangeStrategy,
    namespace::NamespaceStrategy,
    node::NodeStrategy,
    persistentvolume::PersistentVolumeStrategy,
    persistentvolumeclaim::PersistentVolumeClaimStrategy,
    pod::PodStrategy,
    poddisruptionbudget::PodDisruptionBudgetStrategy,
    podtemplate::PodTemplateStrategy,
    priorityclass::PriorityClassStrategy,
    rbac::{CLUSTER_ROLE, CLUSTER_ROLE_BINDING, ROLE, ROLE_BINDING},
    replicaset::ReplicaSetStrategy,
    replicationcontroller::ReplicationControllerStrategy,
    resourcequota::ResourceQuotaStrategy,
    secret::SecretStrategy,
    service::ServiceStrategy,
    serviceaccount::ServiceAccountStrategy,
    statefulset::StatefulSetStrategy,
    storageclass::StorageClassStrategy,
};
use super::strategy::Strategy;

/// One served resource.
#[derive(Clone, Copy)]
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
    /// What this kind does differently from the others.
    pub strategy: &'static dyn Strategy,
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.version, self.plural) == (other.group, other.version, other.plural)
    }
}

impl Eq for Resource {}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("plural", &self.plural)
            .finish_non_exhaustive()
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
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

    /// The group-kind as Kubernetes prints it in messages: `Deployment.apps`, `Pod`.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.strategy.computed().is_some() {
            &["get", "list"]
        } else {
            VERBS
        }
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
    strategy: &'static dyn Strategy,
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
        strategy,
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
        &NamespaceStrategy,
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
        &NodeStrategy,
    ),
    res(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["all"],
        &[
            "status",
            "binding",
            "log",
            "eviction",
            "exec",
            "attach",
            "portforward",
        ],
        &PodStrategy,
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
        &ConfigMapStrategy,
    ),
    res(
        "",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        &[],
        &[],
        &SecretStrategy,
    ),
    res(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &[],
        &ServiceAccountStrategy,
    ),
    res(
        "",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        &[],
        &[],
        &EventStrategy,
    ),
    res(
        "",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        &["all"],
        &["status"],
        &ServiceStrategy,
    ),
    res(
        "",
        "replicationcontrollers",
        "replicationcontroller",
        "ReplicationController",
        true,
        &["rc"],
        &["all"],
        &["status", "scale"],
        &ReplicationControllerStrategy,
    ),
    res(
        "",
        "podtemplates",
        "podtemplate",
        "PodTemplate",
        true,
        &[],
        &[],
        &[],
        &PodTemplateStrategy,
    ),
    res(
        "",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
        &[],
        &[],
        &LimitRangeStrategy,
    ),
    res(
        "",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        &[],
        &["status"],
        &ResourceQuotaStrategy,
    ),
    res(
        "",
        "componentstatuses",
        "componentstatus",
        "ComponentStatus",
        false,
        &["cs"],
        &[],
        &[],
        &ComponentStatusStrategy,
    ),
    res(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        &[],
        &[],
        &EndpointsStrategy,
    ),
    res(
        "",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &[],
        &["status"],
        &PersistentVolumeClaimStrategy,
    ),
    res(
        "",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        &[],
        &["status"],
        &PersistentVolumeStrategy,
    ),
    res(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
        &["status", "scale"],
        &DeploymentStrategy,
    ),
    res(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        &["all"],
        &["status", "scale"],
        &ReplicaSetStrategy,
    ),
    res(
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        &["all"],
        &["status"],
        &DaemonSetStrategy,
    ),
    res(
        "apps",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        &["all"],
        &["status", "scale"],
        &StatefulSetStrategy,
    ),
    res(
        "apps",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        true,
        &[],
        &[],
        &[],
        &ControllerRevisionStrategy,
    ),
    res(
        "batch",
        "jobs",
        "job",
        "Job",
        true,
        &[],
        &["all"],
        &["status"],
        &JobStrategy,
    ),
    res(
        "batch",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        &["all"],
        &["status"],
        &CronJobStrategy,
    ),
    res(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        &[],
        &[],
        &EndpointSliceStrategy,
    ),
    res(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        &[],
        &[],
        &LeaseStrategy,
    ),
    res(
        "storage.k8s.io",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        &[],
        &[],
        &StorageClassStrategy,
    ),
    res(
        "scheduling.k8s.io",
        "priorityclasses",
        "priorityclass",
        "PriorityClass",
        false,
        &["pc"],
        &[],
        &[],
        &PriorityClassStrategy,
    ),
    res(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[],
        &["status"],
        &PodDisruptionBudgetStrategy,
    ),
    res(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[],
        &CLUSTER_ROLE_BINDING,
    ),
    res(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        &[],
        &[],
        &CLUSTER_ROLE,
    ),
    res(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        &[],
        &[],
        &ROLE_BINDING,
    ),
    res(
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        "Role",
        true,
        &[],
        &[],
        &[],
        &ROLE,
    ),
    res(
        "apiregistration.k8s.io",
        "apiservices",
        "apiservice",
        "APIService",
        false,
        &[],
        &["api-extensions"],
        &["status"],
        &ApiServiceStrategy,
    ),
];

/// Every served resource.
pub fn all() -> &'static [Resource] {
    RESOURCES
}

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

fn must(group: &str, plural: &str) -> &'static Resource {
    match find(group, "v1", plural) {
        Some(r) => r,
        // The table above is static; a missing row is a programming error caught by tests.
        None => unreachable!("resource {plural} is not in RESOURCES"),
    }
}

pub fn events() -> &'static Resource {
    must("", "events")
}
pub fn leases() -> &'static Resource {
    must("coordination.k8s.io", "leases")
}
pub fn services() -> &'static Resource {
    must("", "services")
}
pub fn endpoints() -> &'static Resource {
    must("", "endpoints")
}
pub fn endpoint_slices() -> &'static Resource {
    must("discovery.k8s.io", "endpointslices")
}
pub fn deployments() -> &'static Resource {
    must("apps", "deployments")
}
pub fn replica_sets() -> &'static Resource {
    must("apps", "replicasets")
}
pub fn replication_controllers() -> &'static Resource {
    must("", "replicationcontrollers")
}
pub fn api_services() -> &'static Resource {
    must("apiregistration.k8s.io", "apiservices")
}
pub fn daemon_sets() -> &'static Resource {
    must("apps", "daemonsets")
}
pub fn jobs() -> &'static Resource {
    must("batch", "jobs")
}
pub fn cron_jobs() -> &'static Resource {
    must("batch", "cronjobs")
}
pub fn stateful_sets() -> &'static Resource {
    must("apps", "statefulsets")
}
pub fn controller_revisions() -> &'static Resource {
    must("apps", "controllerrevisions")
}
pub fn persistent_volume_claims() -> &'static Resource {
    must("", "persistentvolumeclaims")
}
pub fn persistent_volumes() -> &'static Resource {
    must("", "persistentvolumes")
}
pub fn storage_classes() -> &'static Resource {
    must("storage.k8s.io", "storageclasses")
}
pub fn pod_disruption_budgets() -> &'static Resource {
    must("policy", "poddisruptionbudgets")
}
pub fn priority_classes() -> &'static Resource {
    must("scheduling.k8s.io", "priorityclasses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_resource_is_served() {
        for r in [
            events(),
            services(),
            endpoints(),
            endpoint_slices(),
            deployments(),
            replica_sets(),
            daemon_sets(),
            jobs(),
            cron_jobs(),
            stateful_sets(),
            controller_revisions(),
            persistent_volume_claims(),
            persistent_volumes(),
            storage_classes(),
            pod_disruption_budgets(),
            priority_classes(),
        ] {
            assert!(by_kind(r.group, r.kind).is_some());
        }
        assert_eq!(namespaces().kind, "Namespace");
        assert_eq!(nodes().kind, "Node");
        assert_eq!(pods().kind, "Pod");
    }

    #[test]
    fn every_kind_has_its_type() {
        for r in RESOURCES {
            let name = r.strategy.types().schema_name();
            assert!(
                name.ends_with(&format!(".{}", r.kind)),
                "{}: {name}",
                r.kind
            );
            assert_eq!(
                r.strategy.columns().len(),
                r.strategy.cells(&serde_json::json!({})).len(),
                "{}",
                r.kind
            );
        }
    }
}
