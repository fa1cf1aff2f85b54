//! The pod's PersistentVolumeClaims, as Kubernetes' VolumeBinding plugin sees them: a claim that
//! is missing, being deleted, or unbound with Immediate binding keeps the pod pending; a bound
//! claim's volume may pin the pod to the nodes its `nodeAffinity` names; an unbound claim of a
//! WaitForFirstConsumer class is bound on the node chosen for the pod (the scheduler names the
//! node on the claim, `volume.kubernetes.io/selected-node`, the storage controller provisions
//! there, and the pod is bound once its claims are).

use serde_json::Value;

use super::nodes::selector_matches;
use crate::api::kinds::storageclass::LOCAL_PATH;
use crate::api::strategy::{annotation_at as annotation, str_at as s};

/// The node the scheduler chose for a WaitForFirstConsumer claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a Node: where its agent keeps local-path volumes (set by the node agent).
pub const ROOT_ANNOTATION: &str = "skiff.io/local-path-root";

/// An unbound claim that binds on the pod's node.
#[derive(Debug, Clone, PartialEq)]
pub struct Delayed {
    pub namespace: String,
    pub name: String,
    /// The node already chosen, if any.
    pub selected: Option<String>,
    /// Whether skiff's local-path provisioner makes its volume (then only nodes announcing a
    /// storage root can take it).
    pub local_path: bool,
}

/// What the pod's claims require.
#[derive(Debug, Default)]
pub struct Claims<'a> {
    /// The `nodeAffinity.required` of each bound claim's volume.
    pub pinned: Vec<&'a Value>,
    pub delayed: Vec<Delayed>,
}

/// Everything the volume checks read.
pub struct Storage<'a> {
    pub claims: &'a [Value],
    pub volumes: &'a [Value],
    pub classes: &'a [Value],
}

impl<'a> Storage<'a> {
    /// The pod's claims, or why it cannot be scheduled on any node.
    pub fn claims_of(&self, pod: &Value) -> Result<Claims<'a>, String> {
        let ns = s(pod, "/metadata/namespace");
        let mut out = Claims::default();
        let vols = pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for v in vols {
            let claim_name = s(v, "/persistentVolumeClaim/claimName");
            if claim_name.is_empty() {
                continue;
            }
            let Some(claim) = self.claims.iter().find(|c| {
                s(c, "/metadata/namespace") == ns && s(c, "/metadata/name") == claim_name
            }) else {
                return Err(format!("persistentvolumeclaim \"{claim_name}\" not found"));
            };
            if claim
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|d| !d.is_null())
            {
                return Err(format!(
                    "persistentvolumeclaim \"{claim_name}\" is being deleted"
                ));
            }
            let volume = s(claim, "/spec/volumeName");
            if !volume.is_empty() && s(claim, "/status/phase") == "Bound" {
                let Some(pv) = self
                    .volumes
                    .iter()
                    .find(|p| s(p, "/metadata/name") == volume)
                else {
                    return Err(format!(
                        "persistentvolumeclaim \"{claim_name}\" bound to non-existent persistentvolume \"{volume}\""
                    ));
                };
                if let Some(req) = pv.pointer("/spec/nodeAffinity/required") {
                    out.pinned.push(req);
                }
                continue;
            }
            let class_name = s(claim, "/spec/storageClassName");
            let class = self
                .classes
                .iter()
                .find(|c| s(c, "/metadata/name") == class_name);
            match class {
                Some(c) if s(c, "/volumeBindingMode") == "WaitForFirstConsumer" => {
                    let selected = annotation(claim, SELECTED_NODE);
                    out.delayed.push(Delayed {
                        namespace: ns.to_string(),
                        name: claim_name.to_string(),
                        selected: (!selected.is_empty()).then(|| selected.to_string()),
                        local_path: s(c, "/provisioner") == LOCAL_PATH,
                    });
                }
                _ => return Err("pod has unbound immediate PersistentVolumeClaims".to_string()),
            }
        }
        Ok(out)
    }
}

impl Claims<'_> {
    /// Why the claims rule out `node`, in the scheduler's words.
    pub fn problem(&self, node: &Value) -> Option<&'static str> {
        if self.pinned.iter().any(|req| !selector_matches(req, node)) {
            return Some("node(s) had volume node affinity conflict");
        }
        if self.delayed.iter().any(|d| d.local_path) && annotation(node, ROOT_ANNOTATION).is_empty()
        {
            return Some("node(s) didn't find available persistent volumes to bind");
        }
        None
    }

    /// The node chosen earlier for claims still being provisioned, if the pod waits for them.
    pub fn waiting_on(&self) -> Option<&str> {
        self.delayed.iter().find_map(|d| d.selected.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, class: &str, bound_to: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": class}, "status": {"phase": "Pending"}});
        if let Some(v) = bound_to {
            c["spec"]["volumeName"] = json!(v);
            c["status"]["phase"] = json!("Bound");
        }
        c
    }

    fn pod(claims: &[&str]) -> Value {
        let vols: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"volumes": vols}})
    }

    #[test]
    fn claims_decide_where_and_whether() {
        let claims = [
            claim("bound", "local-path", Some("pv1")),
            claim("later", "local-path", None),
            claim("now", "fast", None),
        ];
        let volumes = [
            json!({"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}}),
        ];
        let classes = [
            json!({"metadata": {"name": "local-path"}, "provisioner": LOCAL_PATH, "volumeBindingMode": "WaitForFirstConsumer"}),
            json!({"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "Immediate"}),
        ];
        let st = Storage {
            claims: &claims,
            volumes: &volumes,
            classes: &classes,
        };
        assert_eq!(
            st.claims_of(&pod(&["gone"])).unwrap_err(),
            "persistentvolumeclaim \"gone\" not found"
        );
        assert_eq!(
            st.claims_of(&pod(&["now"])).unwrap_err(),
            "pod has unbound immediate PersistentVolumeClaims"
        );
        let c = st.claims_of(&pod(&["bound", "later"])).unwrap();
        let a = json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"},
            "annotations": {ROOT_ANNOTATION: "/x"}}});
        let b = json!({"metadata": {"name": "b", "labels": {"kubernetes.io/hostname": "b"},
            "annotations": {ROOT_ANNOTATION: "/x"}}});
        let bare = json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"}}});
        assert_eq!(c.problem(&a), None);
        assert_eq!(
            c.problem(&b),
            Some("node(s) had volume node affinity conflict")
        );
        assert_eq!(
            c.problem(&bare),
            Some("node(s) didn't find available persistent volumes to bind")
        );
        assert_eq!(c.waiting_on(), None);
        assert_eq!(c.delayed[0].name, "later");
    }
}
