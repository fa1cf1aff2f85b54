//! The node's side of skiff's local-path storage (the control plane's storage controller makes
//! the PersistentVolumes): the root directory the agent announces on its Node, the volume
//! directories made under it when a pod first mounts one (mode 0777, as Rancher's local-path
//! provisioner makes them, so a container running as any user can write), and the reclaimer that
//! removes a Released volume's directory and then the volume, when its policy is Delete.
//!
//! Only paths inside the root are ever made or removed: a PersistentVolume is an API object,
//! and the agent will not delete an arbitrary host path because one names it.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use tokio_util::sync::CancellationToken;

/// On the Node: where its agent keeps local-path volumes (read by the storage controller).
pub const ROOT_ANNOTATION: &str = "skiff.io/local-path-root";
/// On a volume: the node that holds its directory.
pub const NODE_ANNOTATION: &str = "skiff.io/local-path-node";
/// On a volume: who made it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// skiff's provisioner name.
pub const PROVISIONER: &str = "skiff.io/local-path";
/// How often Released volumes are looked for.
const RECLAIM_EVERY: Duration = Duration::from_secs(5);

/// This node's local-path root.
#[derive(Debug, Clone)]
pub struct LocalPath {
    pub root: PathBuf,
    pub node: String,
}

/// Why a local-path directory could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum LocalPathError {
    #[error("{path} is not inside this node's local-path root {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LocalPathError + 'a {
    move |source| LocalPathError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The host path of a volume skiff provisioned on `node`, if `pv` is one.
pub fn provisioned_path<'a>(pv: &'a PersistentVolume, node: &str) -> Option<&'a str> {
    let ann = pv.metadata.annotations.as_ref()?;
    if ann.get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER)
        || ann.get(NODE_ANNOTATION).map(String::as_str) != Some(node)
    {
        return None;
    }
    pv.spec
        .as_ref()?
        .host_path
        .as_ref()
        .map(|h| h.path.as_str())
}

impl LocalPath {
    /// Makes the root (0755, owned by root) if it is missing.
    pub fn create_root(&self) -> Result<(), LocalPathError> {
        std::fs::create_dir_all(&self.root).map_err(io("create", &self.root))
    }

    /// `path` if it is a directory directly or deeper inside the root, with no `..` on the way.
    fn inside(&self, path: &str) -> Result<PathBuf, LocalPathError> {
        let p = PathBuf::from(path);
        let ok = p.starts_with(&self.root)
            && p != self.root
            && p.components().all(|c| !matches!(c, Component::ParentDir));
        if ok {
            Ok(p)
        } else {
            Err(LocalPathError::Outside {
                path: p,
                root: self.root.clone(),
            })
        }
    }

    /// Makes a volume's directory (mode 0777) if it is missing.
    pub fn ensure(&self, path: &str) -> Result<PathBuf, LocalPathError> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.inside(path)?;
        match std::fs::create_dir(&p) {
            Ok(()) => std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                .map_err(io("chmod", &p))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &p)(e)),
        }
        Ok(p)
    }

    /// Removes a volume's directory and everything in it.
    pub fn remove(&self, path: &str) -> Result<(), LocalPathError> {
        let p = self.inside(path)?;
        match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &p)(e)),
        }
    }

    /// The volumes to reclaim now: provisioned here, Released, with reclaim policy Delete.
    pub fn reclaimable<'a>(&self, pvs: &'a [PersistentVolume]) -> Vec<(&'a str, &'a str)> {
        pvs.iter()
            .filter(|pv| pv.metadata.deletion_timestamp.is_none())
            .filter(|pv| {
                pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
                    && pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                        == Some("Delete")
            })
            .filter_map(|pv| {
                let name = pv.metadata.name.as_deref()?;
                Some((name, provisioned_path(pv, &self.node)?))
            })
            .collect()
    }

    /// Reclaims Released volumes until `cancel`: the directory first, then the volume, so a
    /// failure leaves the volume to say what is left.
    pub async fn run_reclaimer(self, client: kube::Client, cancel: CancellationToken) {
        let api: Api<PersistentVolume> = Api::all(client);
        loop {
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    for (name, path) in self.reclaimable(&list.items) {
                        match self.remove(path) {
                            Ok(()) => {
                                tracing::info!(volume = name, path, "local-path volume reclaimed");
                                if let Err(e) = api.delete(name, &DeleteParams::default()).await {
                                    tracing::warn!(volume = name, error = %e, "delete volume");
                                }
                            }
                            Err(e) => tracing::warn!(volume = name, error = %e, "reclaim volume"),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "list persistentvolumes"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RECLAIM_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, PersistentVolumeSpec, PersistentVolumeStatus,
    };
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    fn pv(name: &str, node: &str, path: &str, phase: &str, policy: &str) -> PersistentVolume {
        let mut pv = PersistentVolume::default();
        pv.metadata.name = Some(name.into());
        pv.metadata.annotations = Some(BTreeMap::from([
            (PROVISIONED_BY.to_string(), PROVISIONER.to_string()),
            (NODE_ANNOTATION.to_string(), node.to_string()),
        ]));
        pv.spec = Some(PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: path.into(),
                type_: None,
            }),
            persistent_volume_reclaim_policy: Some(policy.into()),
            ..Default::default()
        });
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        pv
    }

    #[test]
    fn directories_are_made_writable_and_only_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let lp = LocalPath {
            root: dir.path().join("storage"),
            node: "n1".into(),
        };
        lp.create_root().unwrap();
        let v = format!("{}/pvc-1_default_data", lp.root.display());
        let p = lp.ensure(&v).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
        std::fs::write(p.join("f"), "x").unwrap();
        lp.ensure(&v).unwrap();
        assert!(p.join("f").exists(), "an existing volume is kept");
        for bad in [
            "/etc".to_string(),
            lp.root.display().to_string(),
            format!("{}/../escape", lp.root.display()),
        ] {
            let e = lp.ensure(&bad).unwrap_err();
            assert!(e.to_string().contains("not inside"), "{bad}: {e}");
            assert!(lp.remove(&bad).is_err());
        }
        lp.remove(&v).unwrap();
        assert!(!p.exists());
        lp.remove(&v).unwrap();
    }

    #[test]
    fn only_released_deletable_volumes_of_this_node_are_reclaimed() {
        let lp = LocalPath {
            root: "/var/lib/skiff/storage".into(),
            node: "n1".into(),
        };
        let pvs = [
            pv("a", "n1", "/var/lib/skiff/storage/a", "Released", "Delete"),
            pv("b", "n2", "/var/lib/skiff/storage/b", "Released", "Delete"),
            pv("c", "n1", "/var/lib/skiff/storage/c", "Bound", "Delete"),
            pv("d", "n1", "/var/lib/skiff/storage/d", "Released", "Retain"),
        ];
        let mut other = pv("e", "n1", "/srv/e", "Released", "Delete");
        other
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PROVISIONED_BY.into(), "example.com/nfs".into());
        let mut all = pvs.to_vec();
        all.push(other);
        assert_eq!(lp.reclaimable(&all), [("a", "/var/lib/skiff/storage/a")]);
    }
}
