//! PersistentVolumeClaim volumes: the claim must be bound, and its PersistentVolume must be one
//! this node can mount (`hostPath` or `local`, as the built-in local-path provisioner makes; a
//! local-path volume's directory is made on first use, and only on the node that holds it).

use std::path::PathBuf;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;

use super::ClaimResolver;
use super::local_path::{LocalPath, NODE_ANNOTATION, PROVISIONED_BY, PROVISIONER};

/// Reads claims and volumes from the API server.
#[derive(Clone)]
pub struct ApiClaims {
    pub client: kube::Client,
    pub local: LocalPath,
}

impl std::fmt::Debug for ApiClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClaims")
    }
}

impl ClaimResolver for ApiClaims {
    fn claim_path<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), namespace);
            let claim = claims
                .get_opt(name)
                .await
                .map_err(|e| format!("cannot read persistentvolumeclaim \"{name}\": {e}"))?
                .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
            let volume = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty())
                .filter(|_| claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" is not bound"))?;
            let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
            let pv = volumes
                .get_opt(&volume)
                .await
                .map_err(|e| format!("cannot read persistentvolume \"{volume}\": {e}"))?
                .ok_or_else(|| format!("persistentvolume \"{volume}\" not found"))?;
            let ann = pv.metadata.annotations.clone().unwrap_or_default();
            if ann.get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER) {
                let holder = ann.get(NODE_ANNOTATION).map_or("", String::as_str);
                if holder != self.local.node {
                    return Err(format!(
                        "persistentvolume \"{volume}\" is a local-path volume on node \
                         \"{holder}\", not on this node \"{}\" (volume node affinity conflict)",
                        self.local.node
                    ));
                }
                let path = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_path.as_ref())
                    .map(|h| h.path.clone())
                    .unwrap_or_default();
                return self.local.ensure(&path).map_err(|e| e.to_string());
            }
            let spec = pv.spec.unwrap_or_default();
            spec.host_path
                .map(|h| h.path)
                .or_else(|| spec.local.map(|l| l.path))
                .map(PathBuf::from)
                .ok_or_else(|| {
                    format!(
                        "persistentvolume \"{volume}\" is neither a hostPath nor a local volume, \
                         the kinds skiff can mount"
                    )
                })
        })
    }
}
