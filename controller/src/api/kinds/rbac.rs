//! rbac.authorization.k8s.io/v1: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings,
//! validated and printed as Kubernetes does (rules need verbs, and API groups and resources or,
//! cluster-wide only, non-resource URLs; a binding's roleRef names a Role or ClusterRole of
//! this group and never changes; subjects are users, groups or service accounts).
//!
//! skiff does not authenticate or authorize requests yet: the objects are stored and served so
//! manifests, charts and clients that carry them work, and every write of one says, in a
//! `Warning`, that nothing enforces it.

use std::marker::PhantomData;

use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::schemars::JsonSchema;
use serde_json::{Value, json};

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, CREATED_AT, Column, NAME, Strategy, TypeOps, age_cell, created_at_cells, str_at,
};

pub const GROUP: &str = "rbac.authorization.k8s.io";

const NOT_ENFORCED: &str = "skiff does not authenticate or authorize requests yet: this object is stored, but nothing enforces it";

/// Roles and ClusterRoles: rules, scoped to a namespace or not.
pub struct Rules<T> {
    namespaced: bool,
    kind: PhantomData<fn() -> T>,
}

/// RoleBindings and ClusterRoleBindings.
pub struct Binding<T> {
    namespaced: bool,
    kind: PhantomData<fn() -> T>,
}

pub static ROLE: Rules<rbac::Role> = Rules {
    namespaced: true,
    kind: PhantomData,
};
pub static CLUSTER_ROLE: Rules<rbac::ClusterRole> = Rules {
    namespaced: false,
    kind: PhantomData,
};
pub static ROLE_BINDING: Binding<rbac::RoleBinding> = Binding {
    namespaced: true,
    kind: PhantomData,
};
pub static CLUSTER_ROLE_BINDING: Binding<rbac::ClusterRoleBinding> = Binding {
    namespaced: false,
    kind: PhantomData,
};

const BINDING_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Role", "string", 0, "The role this binding grants."),
    AGE,
    Column::new("Users", "string", 1, "Users bound."),
    Column::new("Groups", "string", 1, "Groups bound."),
    Column::new("ServiceAccounts", "string", 1, "Service accounts bound."),
];

fn binding_cells(obj: &Value) -> Vec<Value> {
    let subjects: Vec<&Value> = obj
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let of = |kind: &str| {
        subjects
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| {
                let name = str_at(s, "/name");
                match (kind, str_at(s, "/namespace")) {
                    ("ServiceAccount", ns) => format!("{ns}/{name}"),
                    _ => name.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(str_at(obj, "/metadata/name")),
        json!(format!(
            "{}/{}",
            str_at(obj, "/roleRef/kind"),
            str_at(obj, "/roleRef/name")
        )),
        age_cell(obj),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}

fn non_empty(v: &Value, key: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// RBAC names are path segments (`system:aggregate-to-view` is one), not DNS names.
fn path_segment_problem(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    ["/", "%"]
        .iter()
        .find(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
}

/// Each rule as Kubernetes' `ValidatePolicyRule` checks it.
fn validate_rules(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rules = obj.get("rules").and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if !non_empty(rule, "verbs") {
            errs.push(FieldError::required_because(
                at("verbs"),
                "verbs must contain at least one value",
            ));
        }
        if non_empty(rule, "nonResourceURLs") {
            if namespaced {
                errs.push(FieldError::invalid(
                    at("nonResourceURLs"),
                    &rule["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if non_empty(rule, "apiGroups") || non_empty(rule, "resources") {
                errs.push(FieldError::invalid(
                    at("nonResourceURLs"),
                    &rule["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if !non_empty(rule, "apiGroups") {
            errs.push(FieldError::required_because(
                at("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if !non_empty(rule, "resources") {
            errs.push(FieldError::required_because(
                at("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

/// A binding's roleRef and subjects, as `ValidateRoleBinding` and `ValidateClusterRoleBinding`.
fn validate_binding(obj: &Value, old: Option<&Value>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    if str_at(role_ref, "/apiGroup") != GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &role_ref["apiGroup"],
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&str_at(role_ref, "/kind")) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            &role_ref["kind"],
            kinds,
        ));
    }
    if str_at(role_ref, "/name").is_empty() {
        errs.push(FieldError::required("roleRef.name"));
    }
    if let Some(old) = old
        && old.get("roleRef") != obj.get("roleRef")
    {
        errs.push(FieldError::invalid(
            "roleRef",
            role_ref,
            "cannot change roleRef",
        ));
    }
    let subjects = obj.get("subjects").and_then(Value::as_array);
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if str_at(s, "/name").is_empty() {
            errs.push(FieldError::required(at("name")));
        }
        match str_at(s, "/kind") {
            "ServiceAccount" => {
                if !str_at(s, "/apiGroup").is_empty() {
                    errs.push(FieldError::not_supported(
                        at("apiGroup"),
                        &s["apiGroup"],
                        &[""],
                    ));
                }
                if !namespaced && str_at(s, "/namespace").is_empty() {
                    errs.push(FieldError::required(at("namespace")));
                }
            }
            "User" | "Group" => {
                if str_at(s, "/apiGroup") != GROUP {
                    errs.push(FieldError::not_supported(
                        at("apiGroup"),
                        &s["apiGroup"],
                        &[GROUP],
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                at("kind"),
                &s["kind"],
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// Kubernetes' `SetDefaults_Subject`: users and groups are of the RBAC group.
fn default_subjects(obj: &mut Value) {
    let subjects = obj.get_mut("subjects").and_then(Value::as_array_mut);
    for s in subjects.into_iter().flatten() {
        let kind = s["kind"].as_str().unwrap_or_default();
        if (kind == "User" || kind == "Group")
            && s.get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            && let Some(m) = s.as_object_mut()
        {
            m.insert("apiGroup".into(), json!(GROUP));
        }
    }
}

/// The type bounds `TypeOps::of` needs.
pub trait Kind: JsonSchema + 'static {}
impl<T: JsonSchema + 'static> Kind for T {}

impl<T: Kind> Strategy for Rules<T> {
    fn types(&self) -> TypeOps {
        TypeOps::of::<T>()
    }
    fn name_problem(&self, name: &str) -> Option<String> {
        path_segment_problem(name)
    }
    fn validate(&self, obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        validate_rules(obj, self.namespaced)
    }
    fn warnings(&self, obj: &Value) -> Vec<String> {
        let mut w = vec![NOT_ENFORCED.to_owned()];
        if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
            w.push("skiff does not aggregate ClusterRoles yet: aggregationRule is stored, but the rules of the ClusterRoles it selects are not copied into this one".into());
        }
        w
    }
    fn columns(&self) -> &'static [Column] {
        &[NAME, CREATED_AT]
    }
    fn cells(&self, obj: &Value) -> Vec<Value> {
        created_at_cells(obj)
    }
}

impl<T: Kind> Strategy for Binding<T> {
    fn types(&self) -> TypeOps {
        TypeOps::of::<T>()
    }
    fn name_problem(&self, name: &str) -> Option<String> {
        path_segment_problem(name)
    }
    fn default(&self, obj: &mut Value) {
        default_subjects(obj);
    }
    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        validate_binding(obj, old, self.namespaced)
    }
    fn warnings(&self, _obj: &Value) -> Vec<String> {
        vec![NOT_ENFORCED.into()]
    }
    fn columns(&self) -> &'static [Column] {
        BINDING_COLUMNS
    }
    fn cells(&self, obj: &Value) -> Vec<Value> {
        binding_cells(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn rules_need_verbs_and_resources_or_urls() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ]});
        let errs = ROLE.validate(&role, None, Part::Main);
        assert_eq!(
            fields(&errs),
            [
                "rules[1].verbs",
                "rules[2].apiGroups",
                "rules[2].resources",
                "rules[3].nonResourceURLs"
            ]
        );
        // Cluster-wide, non-resource URLs are fine.
        let errs = CLUSTER_ROLE.validate(
            &json!({"rules": [role["rules"][3].clone()]}),
            None,
            Part::Main,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn bindings_name_a_role_of_the_group_and_keep_it() {
        let mut b = json!({
            "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "default"}],
        });
        ROLE_BINDING.default(&mut b);
        assert_eq!(b["subjects"][0]["apiGroup"], GROUP);
        assert!(ROLE_BINDING.validate(&b, None, Part::Main).is_empty());
        // A ClusterRoleBinding binds only ClusterRoles, and its service accounts need a namespace.
        let errs = CLUSTER_ROLE_BINDING.validate(&b, None, Part::Main);
        assert_eq!(fields(&errs), ["roleRef.kind", "subjects[1].namespace"]);
        let mut changed = b.clone();
        changed["roleRef"]["name"] = json!("other");
        let errs = ROLE_BINDING.validate(&changed, Some(&b), Part::Main);
        assert_eq!(fields(&errs), ["roleRef"]);
        assert_eq!(binding_cells(&b)[1], json!("Role/pod-reader"));
        assert_eq!(CLUSTER_ROLE.name_problem("system:aggregate-to-view"), None);
        assert!(CLUSTER_ROLE.name_problem("a/b").is_some());
    }
}
