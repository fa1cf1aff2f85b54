//! The `kubernetes` Service in `default`, which pods reach the API through (10.96.0.1:443, the
//! `KUBERNETES_SERVICE_HOST`/`_PORT` every pod gets): every control-plane member that listens
//! on an address others can reach renews an identity Lease `kube-system/apiserver-<name>`
//! (labelled `apiserver.kubernetes.io/identity: kube-apiserver`, as kube-apiserver's, with its
//! address in an annotation) every [`RENEW`]; the leader keeps the Service's Endpoints and
//! EndpointSlice listing the addresses of the Leases renewed within [`EXPIRY`], so a member
//! that stops drops out. A member listening on loopback (`skiff up`'s default) is no
//! endpoint: the Service then has none.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Objects, Part, resources};

/// The Service's cluster IP: the first of the service range, as Kubernetes gives it.
pub const CLUSTER_IP: &str = "10.96.0.1";
/// How often a member renews its identity Lease.
pub const RENEW: Duration = Duration::from_secs(10);
/// How long a Lease counts after its last renewal.
pub const EXPIRY: Duration = Duration::from_secs(45);
const LEASE_NAMESPACE: &str = "kube-system";
const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const ADDRESS_ANNOTATION: &str = "skiff.io/apiserver-address";

/// The Service, created at bootstrap when absent; `port` is the API servers' port.
pub fn service(port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}
        },
        "spec": {
            "clusterIP": CLUSTER_IP,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]
        }
    })
}

/// The address a member is reached at, if others can reach it: its listen address unless that
/// is loopback or unspecified.
pub fn advertised(listen: SocketAddr) -> Option<SocketAddr> {
    let ip = listen.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(listen)
}

fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Creates or renews this member's identity Lease.
pub async fn renew(objects: &Objects, member: &str, addr: SocketAddr) -> Result<(), ApiError> {
    let lease_name = format!("apiserver-{member}");
    let now = micro_now();
    let r = objects
        .modify(
            resources::leases(),
            Some(LEASE_NAMESPACE),
            &lease_name,
            Part::Main,
            |l| {
                l["spec"]["renewTime"] = json!(now);
                l["metadata"]["annotations"][ADDRESS_ANNOTATION] = json!(addr.to_string());
                Ok(())
            },
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound { .. }) => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": lease_name,
                    "namespace": LEASE_NAMESPACE,
                    "labels": {IDENTITY_LABEL: "kube-apiserver"},
                    "annotations": {ADDRESS_ANNOTATION: addr.to_string()}
                },
                "spec": {
                    "holderIdentity": member,
                    "leaseDurationSeconds": EXPIRY.as_secs(),
                    "renewTime": now
                }
            });
            match objects
                .create(resources::leases(), Some(LEASE_NAMESPACE), lease, false)
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The live members' addresses, from their Leases at `now`, sorted.
pub fn live_addresses(leases: &[Value], now: jiff::Timestamp) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = leases
        .iter()
        .filter(|l| {
            l.pointer("/metadata/labels")
                .and_then(|m| m.get(IDENTITY_LABEL))
                .is_some()
        })
        .filter(|l| {
            l.pointer("/spec/renewTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| {
                    now.duration_since(t)
                        <= jiff::SignedDuration::try_from(EXPIRY).unwrap_or_default()
                })
        })
        .filter_map(|l| {
            l.pointer("/metadata/annotations")
                .and_then(|a| a.get(ADDRESS_ANNOTATION))
                .and_then(Value::as_str)?
                .parse()
                .ok()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Endpoints and EndpointSlice bodies for these addresses.
pub fn endpoints(addrs: &[SocketAddr]) -> (Value, Value) {
    let port = addrs.first().map_or(6443, SocketAddr::port);
    let subsets = if addrs.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": addrs.iter().map(|a| json!({"ip": a.ip().to_string()})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
        }])
    };
    let eps = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"}},
        "addressType": "IPv4",
        "endpoints": addrs.iter().map(|a| json!({
            "addresses": [a.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false}
        })).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    });
    (eps, slice)
}

/// Writes `body` as the object `kubernetes` of `res` in `default` when it differs in the
/// fields that matter (`subsets`, or `endpoints` and `ports`).
async fn put(
    objects: &Objects,
    res: &resources::Resource,
    body: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    match objects.get(res, Some("default"), "kubernetes") {
        Ok(cur) if fields.iter().all(|f| cur.get(*f) == body.get(*f)) => Ok(()),
        Ok(_) => objects
            .modify(res, Some("default"), "kubernetes", Part::Main, |o| {
                for f in fields {
                    o[*f] = body[*f].clone();
                }
                Ok(())
            })
            .await
            .map(|_| ()),
        Err(ApiError::NotFound { .. }) => objects
            .create(res, Some("default"), body, false)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// One leader pass: the Service's endpoints are the live members'.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    if objects
        .get(resources::services(), Some("default"), "kubernetes")
        .is_err()
    {
        return Ok(());
    }
    let (leases, _) = objects.list(resources::leases(), Some(LEASE_NAMESPACE))?;
    let addrs = live_addresses(&leases, jiff::Timestamp::now());
    let (eps, slice) = endpoints(&addrs);
    put(objects, resources::endpoints(), eps, &["subsets"]).await?;
    put(
        objects,
        resources::endpoint_slices(),
        slice,
        &["endpoints", "ports"],
    )
    .await?;
    tracing::debug!(endpoints = ?addrs, "kubernetes service endpoints");
    Ok(())
}

/// Renews this member's Lease every [`RENEW`] until cancelled (on every member).
pub async fn run_member(
    objects: Objects,
    member: String,
    addr: SocketAddr,
    cancel: CancellationToken,
) {
    loop {
        if let Err(e) = renew(&objects, &member, addr).await {
            tracing::debug!(error = %e, "cannot renew the API server's identity lease");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RENEW) => {}
        }
    }
}

/// Keeps the Service's endpoints while this member leads, every [`RENEW`] and when a Lease
/// changes.
pub async fn run_leader(objects: Objects, cancel: CancellationToken) {
    use crate::reconcile::{Interest, Wake, wait_for_change};
    const LEASES: Interest = Interest::Resources(&["leases"]);
    loop {
        let after = objects.store.revision();
        if let Err(e) = reconcile(&objects).await {
            tracing::warn!(error = %e, "kubernetes service endpoints pass failed");
        }
        let wake =
            wait_for_change(&objects.store, after, RENEW, &cancel, |e| LEASES.matches(e)).await;
        if matches!(wake, Wake::Cancelled) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(member: &str, addr: &str, renewed: &str) -> Value {
        json!({"metadata": {"name": format!("apiserver-{member}"),
            "labels": {IDENTITY_LABEL: "kube-apiserver"},
            "annotations": {ADDRESS_ANNOTATION: addr}},
            "spec": {"renewTime": renewed}})
    }

    #[test]
    fn only_reachable_listen_addresses_are_advertised() {
        assert_eq!(advertised("127.0.0.1:6443".parse().unwrap()), None);
        assert_eq!(advertised("0.0.0.0:6443".parse().unwrap()), None);
        let a: SocketAddr = "172.30.1.2:6443".parse().unwrap();
        assert_eq!(advertised(a), Some(a));
    }

    #[test]
    fn the_endpoints_are_the_members_renewed_lately() {
        let now: jiff::Timestamp = "2026-12-07T10:01:00Z".parse().unwrap();
        let leases = [
            lease("b", "172.30.1.3:6443", "2026-12-07T10:00:50.000000Z"),
            lease("a", "172.30.1.2:6443", "2026-12-07T10:00:55.000000Z"),
            lease("gone", "172.30.1.4:6443", "2026-12-07T09:59:00.000000Z"),
            json!({"metadata": {"name": "node-lease"}, "spec": {"renewTime": "2026-12-07T10:00:59.000000Z"}}),
        ];
        let addrs = live_addresses(&leases, now);
        assert_eq!(
            addrs,
            [
                "172.30.1.2:6443".parse::<SocketAddr>().unwrap(),
                "172.30.1.3:6443".parse().unwrap()
            ]
        );
        let (eps, slice) = endpoints(&addrs);
        assert_eq!(eps["subsets"][0]["addresses"][1]["ip"], "172.30.1.3");
        assert_eq!(eps["subsets"][0]["ports"][0]["port"], 6443);
        assert_eq!(slice["endpoints"][0]["addresses"][0], "172.30.1.2");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kubernetes"
        );
        let (none, _) = endpoints(&[]);
        assert_eq!(none["subsets"], json!([]));
    }

    #[test]
    fn the_service_is_the_first_address_on_443() {
        let s = service(6443);
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(s["spec"]["ports"][0]["port"], 443);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 6443);
    }
}
