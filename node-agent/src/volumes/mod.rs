//! A pod's volumes on the node, as the kubelet's volume manager makes them, and the CRI mounts
//! of each container: emptyDir (a directory under the pod's dir, or a tmpfs for
//! `medium: Memory`), hostPath (with its `type` checked), configMap, secret, downwardAPI and
//! projected volumes (written with the kubelet's atomic `..data` layout, so an update of the
//! object appears in running pods; secrets and projected volumes only ever on a tmpfs), and
//! persistentVolumeClaim (the bound volume's directory). Per container: `subPath` and
//! `subPathExpr` bind-mounted through a handle opened inside the volume (a symlink cannot lead
//! out of it), `readOnly`, `mountPropagation`, and the termination message file.
//!
//! Layout under `<pods_dir>/<uid>/`: `volumes/<plugin>/<name>`, `volume-subpaths/<volume>/
//! <container>/<index>`, `containers/<container>/<id>` (termination messages), `etc-hosts`.

pub mod atomic;
pub mod claims;
pub mod local_path;
pub mod mounter;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIVolumeFile, KeyToPath, Pod, SecretProjection,
    Volume, VolumeMount,
};

use crate::AgentError;
use crate::cri::v1;
use crate::env::Environment;
use crate::fieldref::{self, Addresses, Allocatable};
use crate::objects::ObjectSource;
use atomic::{FileSpec, Owner, Payload};
use mounter::Mounter;

/// Why a volume could not be set up or mounted; the message is the FailedMount event's.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?} : {kind} \"{name}\" not found")]
    ObjectMissing {
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error(
        "MountVolume.SetUp failed for volume {volume:?} : {what} references non-existent {key_kind} key: {key}"
    )]
    KeyMissing {
        volume: String,
        what: &'static str,
        key_kind: &'static str,
        key: String,
    },
    #[error(
        "MountVolume.SetUp failed for volume {volume:?} : hostPath type check failed: {path} is not a {expected}"
    )]
    HostPathType {
        volume: String,
        path: String,
        expected: &'static str,
    },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Io {
        volume: String,
        #[source]
        source: io::Error,
    },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Source {
        volume: String,
        #[source]
        source: Box<AgentError>,
    },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {reason}")]
    Unsupported { volume: String, reason: String },
    #[error(
        "failed to prepare subPath for volumeMount {volume:?} of container {container:?}: {reason}"
    )]
    SubPath {
        volume: String,
        container: String,
        reason: String,
    },
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    NoVolume { volume: String, container: String },
    #[error("remove the volumes of pod {uid}: {reason}")]
    Teardown { uid: String, reason: String },
}

impl VolumeError {
    fn io(volume: &str) -> impl FnOnce(io::Error) -> VolumeError + '_ {
        move |source| VolumeError::Io {
            volume: volume.to_owned(),
            source,
        }
    }
}

/// What a PersistentVolumeClaim volume resolves to on this node.
pub trait ClaimResolver: Send + Sync + 'static {
    /// The host directory of the volume bound to claim `namespace/name`, or why the pod waits.
    fn claim_path<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<PathBuf, String>>;
}

/// A volume ready to be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prepared {
    path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are always mounted read-only.
    read_only: bool,
}

/// What the manager made for one pod, kept by its worker between passes.
#[derive(Debug, Default)]
pub struct PodVolumes {
    prepared: HashMap<String, Prepared>,
    /// A hash of each written volume's payload: a pass whose payload is unchanged writes nothing.
    written: HashMap<String, u64>,
    /// Whether the pod's existing mounts were looked up (after an agent restart, tmpfs volumes
    /// are already mounted).
    scanned: bool,
    tmpfs: Vec<PathBuf>,
}

impl PodVolumes {
    /// Whether every volume of the pod has been set up once.
    pub fn ready(&self, pod: &Pod) -> bool {
        volumes_of(pod)
            .iter()
            .all(|v| self.prepared.contains_key(&v.name))
    }
}

fn volumes_of(pod: &Pod) -> Vec<Volume> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
}

/// Everything volume contents are made from besides the pod.
#[derive(Clone, Copy)]
pub struct VolumeContext<'a> {
    pub objects: &'a dyn ObjectSource,
    pub claims: &'a dyn ClaimResolver,
    pub addresses: &'a Addresses,
    pub allocatable: Allocatable,
}

/// Sets up and tears down pods' volumes under one root directory.
#[derive(Clone)]
pub struct VolumeManager {
    root: PathBuf,
    mounter: Arc<dyn Mounter>,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

const PLUGIN_EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const PLUGIN_CONFIG_MAP: &str = "kubernetes.io~configmap";
const PLUGIN_SECRET: &str = "kubernetes.io~secret";
const PLUGIN_DOWNWARD: &str = "kubernetes.io~downward-api";
const PLUGIN_PROJECTED: &str = "kubernetes.io~projected";

/// The default file mode of configMap, secret, downwardAPI and projected volumes.
const DEFAULT_MODE: i32 = 0o644;

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn hash_of(p: &Payload) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, f) in p {
        k.hash(&mut h);
        f.data.hash(&mut h);
        f.mode.hash(&mut h);
    }
    h.finish()
}

fn mode_of(item: Option<i32>, default: Option<i32>, fs_group: Option<i64>) -> u32 {
    let m = item.or(default).unwrap_or(DEFAULT_MODE) as u32 & 0o7777;
    // With an fsGroup the group may read what the owner may (SetVolumeOwnership's read-only
    // mask), so a non-root container in that group reads its secrets.
    if fs_group.is_some() { m | 0o440 } else { m }
}

/// A ConfigMap or Secret whose entries a volume projects.
struct Projected<'a> {
    secret: bool,
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    optional: bool,
    default_mode: Option<i32>,
}

/// The entries of a ConfigMap (data and binaryData) or Secret, by key.
type Entries = BTreeMap<String, Vec<u8>>;

/// Adds `entries` (all, or `items`) to `payload`; a missing key is an error unless optional.
fn add_items(
    payload: &mut Payload,
    volume: &str,
    what: &'static str,
    entries: &Entries,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: Option<i32>,
    fs_group: Option<i64>,
) -> Result<(), VolumeError> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match entries.get(&it.key) {
                    Some(d) => {
                        payload.insert(
                            it.path.clone(),
                            FileSpec {
                                data: d.clone(),
                                mode: mode_of(it.mode, default_mode, fs_group),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::KeyMissing {
                            volume: volume.to_owned(),
                            what,
                            key_kind: if what == "secret" { "secret" } else { "config" },
                            key: it.key.clone(),
                        });
                    }
                }
            }
        }
        _ => {
            for (k, d) in entries {
                payload.insert(
                    k.clone(),
                    FileSpec {
                        data: d.clone(),
                        mode: mode_of(None, default_mode, fs_group),
                    },
                );
            }
        }
    }
    Ok(())
}

impl VolumeManager {
    pub fn new(root: PathBuf, mounter: Arc<dyn Mounter>) -> Self {
        VolumeManager { root, mounter }
    }

    /// `<root>/<uid>`: everything the agent keeps for one pod.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join(uid)
    }

    fn volume_dir(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes").join(plugin).join(name)
    }

    /// The entries of the ConfigMap (`data` and `binaryData`) or Secret (`data`) `name`,
    /// `None` if it does not exist.
    async fn entries(
        ctx: VolumeContext<'_>,
        uid: &str,
        ns: &str,
        volume: &str,
        name: &str,
        secret: bool,
    ) -> Result<Option<Entries>, VolumeError> {
        let failed = |source| VolumeError::Source {
            volume: volume.to_owned(),
            source: Box::new(source),
        };
        if secret {
            let s = ctx.objects.secret(uid, ns, name).await.map_err(failed)?;
            return Ok(s.map(|s| {
                let data = s.data.clone().unwrap_or_default();
                data.into_iter().map(|(k, v)| (k, v.0)).collect()
            }));
        }
        let cm = ctx
            .objects
            .config_map(uid, ns, name)
            .await
            .map_err(failed)?;
        Ok(cm.map(|cm| {
            let data = cm.data.clone().unwrap_or_default();
            let binary = cm.binary_data.clone().unwrap_or_default();
            data.into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(binary.into_iter().map(|(k, v)| (k, v.0)))
                .collect()
        }))
    }

    fn downward_items(
        pod: &Pod,
        volume: &str,
        items: &[DownwardAPIVolumeFile],
        default_mode: Option<i32>,
        fs_group: Option<i64>,
        ctx: VolumeContext<'_>,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        let source = |source| VolumeError::Source {
            volume: volume.to_owned(),
            source: Box::new(source),
        };
        for it in items {
            let value = if let Some(f) = &it.field_ref {
                fieldref::pod_field(pod, f, ctx.addresses).map_err(source)?
            } else if let Some(r) = &it.resource_field_ref {
                let cname = r.container_name.as_deref().unwrap_or("");
                let c = pod
                    .spec
                    .iter()
                    .flat_map(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                    })
                    .find(|c| c.name == cname)
                    .ok_or_else(|| VolumeError::Unsupported {
                        volume: volume.to_owned(),
                        reason: format!("container {cname:?} of resourceFieldRef not found"),
                    })?;
                fieldref::resource_field(c, r, ctx.allocatable).map_err(source)?
            } else {
                continue;
            };
            payload.insert(
                it.path.clone(),
                FileSpec {
                    data: value.into_bytes(),
                    mode: mode_of(it.mode, default_mode, fs_group),
                },
            );
        }
        Ok(())
    }

    /// Adds the entries of a ConfigMap or Secret a volume projects (all, or its `items`); a
    /// missing object is an error unless it is optional.
    async fn add_object(
        payload: &mut Payload,
        pod: &Pod,
        volume: &str,
        src: Projected<'_>,
        fs_group: Option<i64>,
        ctx: VolumeContext<'_>,
    ) -> Result<(), VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let entries = Self::entries(ctx, uid, ns, volume, src.name, src.secret).await?;
        let kind = if src.secret { "secret" } else { "configmap" };
        match entries {
            Some(e) => add_items(
                payload,
                volume,
                kind,
                &e,
                src.items,
                src.optional,
                src.default_mode,
                fs_group,
            ),
            None if src.optional => Ok(()),
            None => Err(VolumeError::ObjectMissing {
                volume: volume.to_owned(),
                kind,
                name: src.name.to_owned(),
            }),
        }
    }

    /// The files of a configMap, secret, downwardAPI or projected volume.
    async fn payload(
        pod: &Pod,
        v: &Volume,
        fs_group: Option<i64>,
        ctx: VolumeContext<'_>,
    ) -> Result<Payload, VolumeError> {
        let name = v.name.as_str();
        let mut payload = Payload::new();
        if let Some(cm) = &v.config_map {
            let src = Projected {
                secret: false,
                name: &cm.name,
                items: cm.items.as_ref(),
                optional: cm.optional.unwrap_or(false),
                default_mode: cm.default_mode,
            };
            Self::add_object(&mut payload, pod, name, src, fs_group, ctx).await?;
        } else if let Some(s) = &v.secret {
            let src = Projected {
                secret: true,
                name: s.secret_name.as_deref().unwrap_or(""),
                items: s.items.as_ref(),
                optional: s.optional.unwrap_or(false),
                default_mode: s.default_mode,
            };
            Self::add_object(&mut payload, pod, name, src, fs_group, ctx).await?;
        } else if let Some(d) = &v.downward_api {
            Self::downward_items(
                pod,
                name,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode,
                fs_group,
                ctx,
                &mut payload,
            )?;
        } else if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(ConfigMapProjection {
                    name: object,
                    items,
                    optional,
                }) = &src.config_map
                {
                    let src = Projected {
                        secret: false,
                        name: object,
                        items: items.as_ref(),
                        optional: optional.unwrap_or(false),
                        default_mode: p.default_mode,
                    };
                    Self::add_object(&mut payload, pod, name, src, fs_group, ctx).await?;
                }
                if let Some(SecretProjection {
                    name: object,
                    items,
                    optional,
                }) = &src.secret
                {
                    let src = Projected {
                        secret: true,
                        name: object,
                        items: items.as_ref(),
                        optional: optional.unwrap_or(false),
                        default_mode: p.default_mode,
                    };
                    Self::add_object(&mut payload, pod, name, src, fs_group, ctx).await?;
                }
                if let Some(d) = &src.downward_api {
                    Self::downward_items(
                        pod,
                        name,
                        d.items.as_deref().unwrap_or_default(),
                        p.default_mode,
                        fs_group,
                        ctx,
                        &mut payload,
                    )?;
                }
                // serviceAccountToken and clusterTrustBundle sources are named in the pod's
                // warnings (the API server's) and contribute nothing here.
            }
        }
        Ok(payload)
    }

    /// Finds the tmpfs mounts an earlier run of the agent made for this pod.
    fn scan(&self, uid: &str, vols: &mut PodVolumes) {
        if vols.scanned {
            return;
        }
        vols.scanned = true;
        if let Ok(m) = self
            .mounter
            .mounts_under(&self.pod_dir(uid).join("volumes"))
        {
            vols.tmpfs = m;
        }
    }

    fn ensure_tmpfs(
        &self,
        vols: &mut PodVolumes,
        volume: &str,
        dir: &Path,
        size: Option<u64>,
    ) -> Result<(), VolumeError> {
        if vols.tmpfs.iter().any(|t| t == dir) {
            return Ok(());
        }
        mkdir(dir, 0o750).map_err(VolumeError::io(volume))?;
        self.mounter
            .mount_tmpfs(dir, size)
            .map_err(VolumeError::io(volume))?;
        vols.tmpfs.push(dir.to_owned());
        Ok(())
    }

    /// Sets up every volume of the pod, or refreshes the contents of configMap, secret,
    /// downwardAPI and projected volumes. Volumes are set up in order; the first that fails
    /// stops the pass (its error names it), and the next pass tries again.
    pub async fn setup(
        &self,
        pod: &Pod,
        ctx: VolumeContext<'_>,
        vols: &mut PodVolumes,
    ) -> Result<(), VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        self.scan(uid, vols);
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group);
        let owner = Owner {
            gid: fs_group.and_then(|g| u32::try_from(g).ok()),
        };
        for v in volumes_of(pod) {
            let name = v.name.as_str();
            let prepared = if let Some(e) = &v.empty_dir {
                let dir = self.volume_dir(uid, PLUGIN_EMPTY_DIR, name);
                if e.medium.as_deref() == Some("Memory") {
                    let size = e
                        .size_limit
                        .as_ref()
                        .and_then(|q| crate::quantity::to_value(&q.0).ok())
                        .and_then(|b| u64::try_from(b).ok())
                        .filter(|b| *b > 0)
                        .or_else(|| u64::try_from(ctx.allocatable.memory).ok());
                    self.ensure_tmpfs(vols, name, &dir, size)?;
                }
                if !vols.prepared.contains_key(name) {
                    // Any container user may write an emptyDir; with an fsGroup, new files
                    // inherit its group.
                    mkdir(&dir, 0o777).map_err(VolumeError::io(name))?;
                    if let Some(gid) = owner.gid {
                        set_ownership(&dir, gid, false).map_err(VolumeError::io(name))?;
                    }
                }
                Prepared {
                    path: dir,
                    read_only: false,
                }
            } else if let Some(h) = &v.host_path {
                check_host_path(name, &h.path, h.type_.as_deref().unwrap_or(""))?;
                Prepared {
                    path: PathBuf::from(&h.path),
                    read_only: false,
                }
            } else if v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
            {
                let plugin = if v.config_map.is_some() {
                    PLUGIN_CONFIG_MAP
                } else if v.secret.is_some() {
                    PLUGIN_SECRET
                } else if v.downward_api.is_some() {
                    PLUGIN_DOWNWARD
                } else {
                    PLUGIN_PROJECTED
                };
                let dir = self.volume_dir(uid, plugin, name);
                let payload = Self::payload(pod, &v, fs_group, ctx).await?;
                let hash = hash_of(&payload);
                if vols.written.get(name) != Some(&hash) {
                    // Secrets never touch the disk: secret, downwardAPI and projected volumes
                    // live on a tmpfs of their own, as the kubelet keeps them.
                    if plugin == PLUGIN_CONFIG_MAP {
                        mkdir(&dir, 0o777).map_err(VolumeError::io(name))?;
                    } else {
                        let size = u64::try_from(ctx.allocatable.memory).ok();
                        self.ensure_tmpfs(vols, name, &dir, size)?;
                    }
                    let changed =
                        atomic::write(&dir, &payload, owner).map_err(VolumeError::io(name))?;
                    if let Some(gid) = owner.gid {
                        set_ownership(&dir, gid, true).map_err(VolumeError::io(name))?;
                    }
                    if changed && vols.written.contains_key(name) {
                        tracing::info!(pod = %format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or("")), volume = name, "volume contents updated");
                    }
                    vols.written.insert(name.to_owned(), hash);
                }
                Prepared {
                    path: dir,
                    read_only: true,
                }
            } else if let Some(c) = &v.persistent_volume_claim {
                match vols.prepared.get(name) {
                    Some(p) => p.clone(),
                    None => {
                        let path =
                            ctx.claims
                                .claim_path(ns, &c.claim_name)
                                .await
                                .map_err(|reason| VolumeError::Unsupported {
                                    volume: name.to_owned(),
                                    reason,
                                })?;
                        Prepared {
                            path,
                            read_only: c.read_only.unwrap_or(false),
                        }
                    }
                }
            } else {
                return Err(VolumeError::Unsupported {
                    volume: name.to_owned(),
                    reason: "this volume type is not supported by skiff (supported: emptyDir, \
                             hostPath, configMap, secret, downwardAPI, projected, \
                             persistentVolumeClaim)"
                        .to_owned(),
                });
            };
            vols.prepared.insert(name.to_owned(), prepared);
        }
        Ok(())
    }

    /// The CRI mounts of `container`'s volumeMounts (subPaths bind-mounted into place), and its
    /// termination message file when it has a path for one. `env` expands `subPathExpr`.
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        env: &Environment,
        vols: &PodVolumes,
    ) -> Result<(Vec<v1::Mount>, Option<PathBuf>), VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let mut out = Vec::new();
        for (i, m) in container.volume_mounts.iter().flatten().enumerate() {
            let p = vols
                .prepared
                .get(&m.name)
                .ok_or_else(|| VolumeError::NoVolume {
                    volume: m.name.clone(),
                    container: container.name.clone(),
                })?;
            let sub = sub_path(m, env).map_err(|reason| VolumeError::SubPath {
                volume: m.name.clone(),
                container: container.name.clone(),
                reason,
            })?;
            let host = match sub {
                Some(sub) => self.bind_sub_path(uid, container, i, m, &p.path, &sub)?,
                None => p.path.clone(),
            };
            let propagation = match m.mount_propagation.as_deref() {
                Some("HostToContainer") => v1::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => v1::MountPropagation::PropagationBidirectional,
                _ => v1::MountPropagation::PropagationPrivate,
            };
            out.push(v1::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: m.read_only.unwrap_or(false) || p.read_only,
                propagation: propagation.into(),
                ..Default::default()
            });
        }
        let message = self.termination_message_file(uid, container)?;
        if let (Some(file), Some(path)) = (
            &message,
            container
                .termination_message_path
                .as_deref()
                .filter(|p| !p.is_empty()),
        ) && !out.iter().any(|m| m.container_path == path)
        {
            out.push(v1::Mount {
                container_path: path.to_owned(),
                host_path: file.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        Ok((out, message))
    }

    /// A fresh, empty, world-writable file for the container's termination message (the
    /// container may run as any user), or `None` when it has no path for one.
    fn termination_message_file(
        &self,
        uid: &str,
        container: &Container,
    ) -> Result<Option<PathBuf>, VolumeError> {
        if container
            .termination_message_path
            .as_deref()
            .is_none_or(str::is_empty)
        {
            return Ok(None);
        }
        let dir = self.pod_dir(uid).join("containers").join(&container.name);
        let io = VolumeError::io("termination-message");
        let made = (|| {
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!(
                "{:08x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            ));
            std::fs::write(&path, b"")?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
            Ok::<_, io::Error>(path)
        })();
        made.map(Some).map_err(io)
    }

    /// Bind-mounts `sub` inside the volume at `root` to the container's subpath target and
    /// returns the target. A missing subpath is made as a directory, as the kubelet does.
    fn bind_sub_path(
        &self,
        uid: &str,
        container: &Container,
        index: usize,
        m: &VolumeMount,
        root: &Path,
        sub: &str,
    ) -> Result<PathBuf, VolumeError> {
        let fail = |reason: String| VolumeError::SubPath {
            volume: m.name.clone(),
            container: container.name.clone(),
            reason: format!("{sub}: {reason}"),
        };
        let target = self
            .pod_dir(uid)
            .join("volume-subpaths")
            .join(&m.name)
            .join(&container.name)
            .join(index.to_string());
        if self
            .mounter
            .mounts_under(&target)
            .map_err(|e| fail(e.to_string()))?
            .contains(&target)
        {
            return Ok(target);
        }
        let vroot = pathrs::Root::open(root).map_err(|e| fail(e.to_string()))?;
        let handle = match vroot.resolve(sub) {
            Ok(h) => h,
            Err(_) => vroot
                .mkdir_all(sub, &std::fs::Permissions::from_mode(0o755))
                .map_err(|e| fail(e.to_string()))?,
        };
        let meta = {
            use std::os::fd::AsFd;
            let fd = handle.as_fd();
            std::fs::metadata(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ))
            .map_err(|e| fail(e.to_string()))?
        };
        let parent = target.parent().unwrap_or(&target);
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        if meta.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| fail(e.to_string()))?;
        } else if std::fs::symlink_metadata(&target).is_err() {
            std::fs::write(&target, b"").map_err(|e| fail(e.to_string()))?;
        }
        let fd = {
            use std::os::fd::AsFd;
            handle
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| fail(e.to_string()))?
        };
        self.mounter
            .bind_handle(&fd, &target)
            .map_err(|e| fail(e.to_string()))?;
        Ok(target)
    }

    /// Unmounts everything under the pod's directory, then removes it. Refuses to remove
    /// anything while a mount remains (a bind of a host path must never be deleted through).
    pub fn teardown(&self, uid: &str) -> Result<(), VolumeError> {
        let dir = self.pod_dir(uid);
        if !dir.exists() {
            return Ok(());
        }
        let fail = |reason: String| VolumeError::Teardown {
            uid: uid.to_owned(),
            reason,
        };
        for m in self
            .mounter
            .mounts_under(&dir)
            .map_err(|e| fail(e.to_string()))?
        {
            self.mounter
                .unmount(&m)
                .map_err(|e| fail(format!("unmount {}: {e}", m.display())))?;
        }
        let left = self
            .mounter
            .mounts_under(&dir)
            .map_err(|e| fail(e.to_string()))?;
        if let Some(m) = left.first() {
            return Err(fail(format!("{} is still mounted", m.display())));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| fail(e.to_string()))
    }

    /// The UIDs of pods that have a directory here.
    pub fn pod_dirs(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The subpath of a volumeMount: `subPath`, or `subPathExpr` expanded with the container's
/// environment (every variable it names must have a value); refused if it is absolute or climbs
/// out with `..`.
pub fn sub_path(m: &VolumeMount, env: &Environment) -> Result<Option<String>, String> {
    let raw = match (
        m.sub_path.as_deref().filter(|s| !s.is_empty()),
        m.sub_path_expr.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(s), _) => s.to_owned(),
        (None, Some(e)) => {
            let missing = std::cell::RefCell::new(Vec::new());
            let out = crate::env::expand(e, |n: &str| match env.get(n) {
                Some(v) if !v.is_empty() => Some(v.to_owned()),
                _ => {
                    missing.borrow_mut().push(n.to_owned());
                    None
                }
            });
            let mut missing = missing.into_inner();
            if !missing.is_empty() {
                missing.sort();
                return Err(format!("missing value for {}", missing.join(", ")));
            }
            out
        }
        (None, None) => return Ok(None),
    };
    let p = Path::new(&raw);
    if p.is_absolute() {
        return Err(format!(
            "error SubPath `{raw}` must not be an absolute path"
        ));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "unable to provision SubPath `{raw}`: must not contain '..'"
        ));
    }
    Ok(Some(raw))
}

/// Gives everything under `dir` to group `gid` and lets the group read (and, unless
/// `read_only`, write) it, directories with the setgid bit so new files inherit the group:
/// the kubelet's `SetVolumeOwnership` for an fsGroup. Symlinks change owner, never mode.
fn set_ownership(dir: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { 0o440 } else { 0o660 };
    if meta.is_dir() {
        mask |= 0o2110;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | mask))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(dir)? {
            set_ownership(&e?.path(), gid, read_only)?;
        }
    }
    Ok(())
}

/// The kubelet's hostPath `type` checks; `DirectoryOrCreate` and `FileOrCreate` make what is
/// missing (a directory 0755 with its parents; an empty file 0644 in an existing directory).
fn check_host_path(volume: &str, path: &str, ty: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let wrong = |expected| VolumeError::HostPathType {
        volume: volume.to_owned(),
        path: path.to_owned(),
        expected,
    };
    let meta = std::fs::metadata(path);
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(wrong("directory")),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(VolumeError::io(volume))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(VolumeError::io(volume))
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(wrong("directory")),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(wrong("file")),
            Err(_) => std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o644)))
                .map_err(VolumeError::io(volume)),
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(wrong("file")),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(wrong("socket file")),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(wrong("character device")),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(wrong("block device")),
        },
        other => Err(VolumeError::Unsupported {
            volume: volume.to_owned(),
            reason: format!("{other} is an invalid volume type"),
        }),
    }
}

#[cfg(test)]
mod tests;
