//! The node's heartbeat Lease: `coordination.k8s.io/v1` Lease `<node>` in `kube-node-lease`,
//! renewed every [`RENEW`] by `replace` with the resourceVersion last read, re-read on 409.

use crate::AgentError;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "kube-node-lease";
pub const DURATION_SECONDS: i32 = 40;
pub const RENEW: Duration = Duration::from_secs(10);

/// The Lease as the agent wants it, renewed now; keeps the metadata (resourceVersion) of
/// `current` so `replace` is a compare-and-swap.
pub fn renewed(current: Option<Lease>, node_name: &str, owner: Option<&Node>) -> Lease {
    let mut lease = current.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..Default::default()
        },
        spec: None,
    });
    if lease.metadata.owner_references.is_none()
        && let Some(node) = owner
        && let Some(uid) = node.metadata.uid.clone()
    {
        lease.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            name: node_name.to_owned(),
            uid,
            ..Default::default()
        }]);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_owned());
    spec.lease_duration_seconds = Some(DURATION_SECONDS);
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    lease
}

/// One renewal: replace the cached Lease (or read / create it), retrying once after a 409.
async fn renew_once(
    api: &Api<Lease>,
    cached: &mut Option<Lease>,
    node_name: &str,
    owner: Option<&Node>,
) -> Result<(), AgentError> {
    for _ in 0..2 {
        if cached.is_none() {
            *cached = api
                .get_opt(node_name)
                .await
                .map_err(|e| AgentError::kube("get", "lease", node_name, e))?;
        }
        let result = match cached.take() {
            Some(current) => {
                let want = renewed(Some(current), node_name, owner);
                api.replace(node_name, &PostParams::default(), &want)
                    .await
                    .map_err(|e| AgentError::kube("replace", "lease", node_name, e))
            }
            None => {
                let want = renewed(None, node_name, owner);
                api.create(&PostParams::default(), &want)
                    .await
                    .map_err(|e| AgentError::kube("create", "lease", node_name, e))
            }
        };
        match result {
            Ok(lease) => {
                *cached = Some(lease);
                return Ok(());
            }
            // Someone else wrote it (or created it first): re-read and try again.
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AgentError::kube(
        "replace",
        "lease",
        node_name,
        kube::Error::Api(Box::new(
            kube::core::Status::failure("lease kept changing under us", "Conflict").with_code(409),
        )),
    ))
}

/// Renews the Lease now and every [`RENEW`] until `cancel`.
pub async fn run(
    api: Api<Lease>,
    node_name: String,
    owner: Option<Node>,
    cancel: CancellationToken,
) {
    let mut cached: Option<Lease> = None;
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match renew_once(&api, &mut cached, &node_name, owner.as_ref()).await {
            Ok(()) => {
                if !healthy {
                    tracing::info!(node = %node_name, "node lease renewed");
                }
                healthy = true;
            }
            Err(e) => {
                healthy = false;
                tracing::warn!(node = %node_name, error = %e, "renew node lease failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_keeps_resource_version_and_sets_holder() {
        let mut node = Node::default();
        node.metadata.uid = Some("node-uid".to_owned());
        let fresh = renewed(None, "n1", Some(&node));
        assert_eq!(fresh.metadata.namespace.as_deref(), Some(NAMESPACE));
        let spec = fresh.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert!(spec.renew_time.is_some());
        let owner = &fresh.metadata.owner_references.clone().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Node", "node-uid")
        );

        let mut stored = fresh;
        stored.metadata.resource_version = Some("42".to_owned());
        let again = renewed(Some(stored), "n1", None);
        assert_eq!(again.metadata.resource_version.as_deref(), Some("42"));
    }
}
