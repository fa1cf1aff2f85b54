//! PersistentVolumeClaim volumes: the claim must be bound, and its PersistentVolume must be one
//! this node can mount (`hostPath` or `local`, as the built-in local-path provisioner makes).

use std::path::PathBuf;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;

use super::ClaimResolver;

/// Reads claims and volumes from the API server.
#[derive(Clone)]
pub struct ApiClaims(pub kube::Client);

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
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.0.clone(), namespace);
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
            let volumes: Api<PersistentVolume> = Api::all(self.0.clone());
            let pv = volumes
                .get_opt(&volume)
                .await
                .map_err(|e| format!("cannot read persistentvolume \"{volume}\": {e}"))?
                .ok_or_else(|| format!("persistentvolume \"{volume}\" not found"))?;
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
