//! The image service: pulls images from registries into the content store, unpacks their layers
//! into shared snapshots (`<root>/snapshots/<diff-id hex>/fs`, overlay lowerdirs), and keeps the
//! index of pulled images (`<root>/images/<config hex>.json`).

pub mod content;
pub mod hosts;
pub mod import;
pub mod reference;
pub mod registry;
pub mod shared;
pub mod unpack;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use self::content::{ContentStore, digest_hex, sha256_digest};
use self::reference::ImageRef;
use self::registry::{Credentials, Registry};
use self::unpack::WhiteoutWriter;
use crate::error::{Result, RuntimeError};
use crate::state;

/// The parts of an image's config that running a container needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    /// The signal that asks the container to stop (`STOPSIGNAL`); empty for SIGTERM.
    #[serde(default)]
    pub stop_signal: String,
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    /// Digest of the blob as stored in the registry (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar; names the snapshot.
    pub diff_id: String,
    pub size: u64,
}

/// A pulled image, as persisted in the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The config digest, `sha256:<hex>`: the image id, as containerd reports it.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer sizes plus the config.
    pub size: u64,
    pub config: ImageConfig,
    /// Bottom layer first, as in the manifest.
    pub layers: Vec<LayerRecord>,
}

impl ImageRecord {
    /// Whether `name` (an id, a full id hex, a repo tag or a repo digest) names this image.
    fn matches(&self, name: &str) -> bool {
        self.id == name
            || self.id.strip_prefix("sha256:") == Some(name)
            || self.repo_tags.iter().any(|t| t == name)
            || self.repo_digests.iter().any(|d| d == name)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: String,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawIndexEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
}

#[derive(Deserialize)]
struct RawIndexEntry {
    digest: String,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawContainerConfig {
    user: Option<String>,
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawRootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawImageConfig {
    #[serde(default)]
    config: Option<RawContainerConfig>,
    rootfs: RawRootFs,
}

/// The node's platform, which index entries are matched against.
const PLATFORM_OS: &str = "linux";
const PLATFORM_ARCH: &str = "amd64";

/// Picks the linux/amd64 entry of an image index.
fn pick_platform(entries: &[RawIndexEntry]) -> Option<&str> {
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCH)
        })
        .map(|e| e.digest.as_str())
}

/// How many layers of one image are fetched and unpacked at once (containerd's default).
const CONCURRENT_LAYERS: usize = 3;

/// The counters of one pull in progress.
#[derive(Debug, Default)]
pub struct PullCounters {
    pub layers_total: AtomicU32,
    pub layers_done: AtomicU32,
    /// Compressed bytes of the layers that must be downloaded.
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

/// One pull in progress, as [`ImageStore::progress`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    pub layers_total: u32,
    pub layers_done: u32,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

/// The pulls in progress; each removes itself when it ends, however it ends.
#[derive(Debug, Default)]
struct Pulls {
    next: std::sync::atomic::AtomicU64,
    running: Mutex<HashMap<u64, (String, Arc<PullCounters>)>>,
}

struct PullGuard<'a> {
    pulls: &'a Pulls,
    id: u64,
    counters: Arc<PullCounters>,
}

impl Drop for PullGuard<'_> {
    fn drop(&mut self) {
        let mut running = self.pulls.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.id);
    }
}

impl Pulls {
    fn start(&self, image: &str) -> PullGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(PullCounters::default());
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(id, (image.to_owned(), counters.clone()));
        PullGuard {
            pulls: self,
            id,
            counters,
        }
    }
}

/// Pulled images and the stores behind them.
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    registry: Arc<dyn Registry>,
    whiteouts: Arc<dyn WhiteoutWriter>,
    index: Mutex<HashMap<String, ImageRecord>>,
    pulls: Pulls,
}

impl ImageStore {
    /// Opens the store under `root`, loading the persisted index.
    pub fn open(
        root: &Path,
        registry: Arc<dyn Registry>,
        whiteouts: Arc<dyn WhiteoutWriter>,
    ) -> Result<Self> {
        let images_dir = root.join("images");
        std::fs::create_dir_all(&images_dir)
            .map_err(RuntimeError::io("create dir", &images_dir))?;
        std::fs::create_dir_all(root.join("snapshots"))
            .map_err(RuntimeError::io("create dir", root.join("snapshots")))?;
        let mut index = HashMap::new();
        for entry in
            std::fs::read_dir(&images_dir).map_err(RuntimeError::io("read dir", &images_dir))?
        {
            let entry = entry.map_err(RuntimeError::io("read dir", &images_dir))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                match state::read_json::<ImageRecord>(&path) {
                    Ok(Some(rec)) => {
                        index.insert(rec.id.clone(), rec);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping image record")
                    }
                }
            }
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            content: ContentStore::new(root),
            registry,
            whiteouts,
            index: Mutex::new(index),
            pulls: Pulls::default(),
        })
    }

    /// The pulls in progress, of `image` (as PullImage was given it) or all.
    pub fn progress(&self, image: Option<&str>) -> Vec<PullProgress> {
        let running = self.pulls.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<PullProgress> = running
            .values()
            .filter(|(name, _)| image.is_none_or(|i| i == name))
            .map(|(name, c)| PullProgress {
                image: name.clone(),
                layers_total: c.layers_total.load(Ordering::Relaxed),
                layers_done: c.layers_done.load(Ordering::Relaxed),
                bytes_total: c.bytes_total.load(Ordering::Relaxed),
                bytes_done: c.bytes_done.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.image.cmp(&b.image));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ImageRecord>> {
        // A panic while holding the lock leaves a consistent map (we only insert/remove whole
        // records), so poisoning is safe to ignore.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The snapshot directory for a diff id.
    pub fn snapshot_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("snapshots").join(digest_hex(diff_id)?))
    }

    /// Finds an image by id, repo tag, repo digest, or a reference that normalises to one.
    pub fn get(&self, name: &str) -> Option<ImageRecord> {
        let index = self.lock();
        if let Some(r) = index.values().find(|r| r.matches(name)) {
            return Some(r.clone());
        }
        let parsed = ImageRef::parse(name).ok()?;
        let tag = parsed.repo_tag();
        let digest = parsed.digest.as_ref().map(|d| parsed.repo_digest(d));
        index
            .values()
            .find(|r| {
                digest.as_ref().map_or_else(
                    || tag.as_ref().is_some_and(|t| r.matches(t)),
                    |d| r.matches(d),
                )
            })
            .cloned()
    }

    /// All images.
    pub fn list(&self) -> Vec<ImageRecord> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Lower directories for an image's rootfs, top layer first (overlayfs order).
    pub fn lowerdirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| Ok(self.snapshot_dir(&l.diff_id)?.join("fs")))
            .collect()
    }

    /// Pulls `image` and returns its id (the config digest).
    pub async fn pull(&self, image: &str, creds: Option<&Credentials>) -> Result<String> {
        let r = ImageRef::parse(image)?;
        let reference = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_else(|| "latest".to_string());
        self.pull_from(self.registry.as_ref(), image, &r, &reference, creds, true)
            .await
    }

    /// Imports every image of an OCI-layout or docker-save archive (see [`import`]); returns
    /// each image's id with the names the archive gave it. Nothing of a bad archive is kept but
    /// blobs that verified.
    pub async fn import(
        &self,
        archive: &Path,
        base_name: &str,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let staging = self
            .root
            .join("import")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let result = async {
            let (a, s) = (archive.to_owned(), staging.clone());
            tokio::task::spawn_blocking(move || import::stage(&a, &s))
                .await
                .map_err(|e| RuntimeError::Internal(format!("import task: {e}")))??;
            let (staged, found) = import::Staged::open(archive, &staging, base_name)?;
            let mut imported: Vec<(String, Vec<String>)> = Vec::new();
            for f in found {
                let name = f.name.to_string();
                let id = self
                    .pull_from(&staged, &name, &f.name, &f.manifest, None, f.from_registry)
                    .await?;
                match imported.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, names)) => names.push(name),
                    None => imported.push((id, vec![name])),
                }
            }
            Ok(imported)
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    /// Fetches `r` at `reference` from `registry` and records it. `from_registry`: the manifest
    /// is the registry's, so `repo@digest` names the image.
    async fn pull_from(
        &self,
        registry: &dyn Registry,
        progress_name: &str,
        r: &ImageRef,
        reference: &str,
        creds: Option<&Credentials>,
        from_registry: bool,
    ) -> Result<String> {
        let guard = self.pulls.start(progress_name);
        let counters = guard.counters.clone();
        tracing::info!(image = %r, "pulling image");
        let unsupported = |message: String| RuntimeError::UnsupportedImage {
            image: r.to_string(),
            message,
        };
        let reference = reference.to_owned();
        let mut body = registry.manifest(r, &reference, creds).await?;
        let mut manifest_digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && manifest_digest != reference {
            return Err(RuntimeError::DigestMismatch {
                expected: reference,
                actual: manifest_digest,
            });
        }
        let mut manifest: RawManifest = serde_json::from_slice(&body)
            .map_err(|e| unsupported(format!("parse manifest: {e}")))?;
        if let Some(entries) = &manifest.manifests {
            let chosen = pick_platform(entries)
                .ok_or_else(|| {
                    unsupported(format!(
                        "no {PLATFORM_OS}/{PLATFORM_ARCH} manifest in index"
                    ))
                })?
                .to_string();
            digest_hex(&chosen)?;
            body = registry.manifest(r, &chosen, creds).await?;
            manifest_digest = sha256_digest(&body);
            if manifest_digest != chosen {
                return Err(RuntimeError::DigestMismatch {
                    expected: chosen,
                    actual: manifest_digest,
                });
            }
            manifest = serde_json::from_slice(&body)
                .map_err(|e| unsupported(format!("parse manifest: {e}")))?;
        }
        if manifest.media_type.contains("manifest.v1") && manifest.media_type.contains("docker") {
            return Err(unsupported(
                "docker schema 1 manifests are not supported".into(),
            ));
        }
        let (Some(config_desc), Some(layers)) = (manifest.config, manifest.layers) else {
            return Err(unsupported("manifest has no config or layers".into()));
        };
        self.content
            .ingest_bytes(&manifest_digest, Bytes::from(body.to_vec()))
            .await?;

        // Config: small, fetched whole and verified.
        if !self.content.contains(&config_desc.digest) {
            let stream = registry.blob(r, &config_desc.digest, creds).await?;
            self.content.ingest(&config_desc.digest, stream).await?;
        }
        let config_raw = self.content.read(&config_desc.digest).await?;
        let config: RawImageConfig = serde_json::from_slice(&config_raw)
            .map_err(|e| unsupported(format!("parse config {}: {e}", config_desc.digest)))?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(unsupported(format!(
                "config lists {} diff ids for {} layers",
                config.rootfs.diff_ids.len(),
                layers.len()
            )));
        }

        if let Some(layer) = layers.iter().find(|l| !unpackable_layer(&l.media_type)) {
            return Err(unsupported(format!(
                "layer {} has media type {:?}, which is not a tar, tar+gzip or tar+zstd layer",
                layer.digest, layer.media_type
            )));
        }
        counters.layers_total.store(
            u32::try_from(layers.len()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        for (layer, diff_id) in layers.iter().zip(&config.rootfs.diff_ids) {
            if !self.snapshot_dir(diff_id)?.join("fs").is_dir()
                && !self.content.contains(&layer.digest)
            {
                let size = u64::try_from(layer.size).unwrap_or(0);
                counters.bytes_total.fetch_add(size, Ordering::Relaxed);
            }
        }
        // Layers are fetched into verified temp files and unpacked a few at a time; each is
        // stored and unpacked once, whichever image asks for it.
        let fetches: Vec<_> = layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| {
                self.fetch_layer(registry, r, layer, diff_id, creds, counters.clone())
            })
            .collect();
        let records: Vec<LayerRecord> = futures::stream::iter(fetches)
            .buffered(CONCURRENT_LAYERS)
            .try_collect()
            .await?;

        let c = config.config.unwrap_or_default();
        let record = ImageRecord {
            id: config_desc.digest.clone(),
            repo_tags: r.repo_tag().into_iter().collect(),
            repo_digests: if from_registry {
                vec![r.repo_digest(&manifest_digest)]
            } else {
                Vec::new()
            },
            size: records.iter().map(|l| l.size).sum::<u64>()
                + u64::try_from(config_desc.size).unwrap_or(0),
            config: ImageConfig {
                user: c.user.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                stop_signal: c.stop_signal.unwrap_or_default(),
            },
            layers: records,
        };
        let id = record.id.clone();
        self.record(record)?;
        tracing::info!(image = %r, id = %id, "pulled image");
        Ok(id)
    }

    /// Makes sure one layer is stored and unpacked, counting its bytes as they arrive.
    async fn fetch_layer(
        &self,
        registry: &dyn Registry,
        r: &ImageRef,
        layer: &RawDescriptor,
        diff_id: &str,
        creds: Option<&Credentials>,
        counters: Arc<PullCounters>,
    ) -> Result<LayerRecord> {
        if !self.snapshot_dir(diff_id)?.join("fs").is_dir() {
            if !self.content.contains(&layer.digest) {
                let stream = registry.blob(r, &layer.digest, creds).await?;
                let seen = counters.clone();
                let stream = stream
                    .inspect(move |chunk| {
                        if let Ok(b) = chunk {
                            seen.bytes_done.fetch_add(b.len() as u64, Ordering::Relaxed);
                        }
                    })
                    .boxed();
                self.content.ingest(&layer.digest, stream).await?;
            }
            self.unpack(&layer.digest, diff_id).await?;
        }
        counters.layers_done.fetch_add(1, Ordering::Relaxed);
        Ok(LayerRecord {
            digest: layer.digest.clone(),
            diff_id: diff_id.to_owned(),
            size: u64::try_from(layer.size).unwrap_or(0),
        })
    }

    /// Unpacks a stored layer blob into its snapshot, off the async runtime.
    async fn unpack(&self, digest: &str, diff_id: &str) -> Result<()> {
        let blob = self.content.path(digest)?;
        let snap = self.snapshot_dir(diff_id)?;
        let tmp = self
            .root
            .join("snapshots")
            .join(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let whiteouts = self.whiteouts.clone();
        let digest = digest.to_string();
        let diff_id = diff_id.to_string();
        tokio::task::spawn_blocking(move || {
            let result = (|| {
                let fs_dir = tmp.join("fs");
                std::fs::create_dir_all(&fs_dir)
                    .map_err(RuntimeError::io("create dir", &fs_dir))?;
                let file = std::fs::File::open(&blob).map_err(RuntimeError::io("open", &blob))?;
                let out = unpack::unpack_layer(file, &fs_dir, &digest, whiteouts.as_ref())?;
                if out.diff_id != diff_id {
                    return Err(RuntimeError::DigestMismatch {
                        expected: diff_id.clone(),
                        actual: out.diff_id,
                    });
                }
                match std::fs::rename(&tmp, &snap) {
                    Ok(()) => Ok(()),
                    // Another pull unpacked the same layer meanwhile: theirs is as good as ours.
                    Err(_) if snap.join("fs").is_dir() => {
                        let _ = std::fs::remove_dir_all(&tmp);
                        Ok(())
                    }
                    Err(e) => Err(RuntimeError::io("rename snapshot", &snap)(e)),
                }
            })();
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            result
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("unpack task: {e}")))?
    }

    /// Adds or merges a record; a repo tag moves from any other image to this one.
    fn record(&self, mut record: ImageRecord) -> Result<()> {
        let mut index = self.lock();
        let mut changed = Vec::new();
        for other in index.values_mut() {
            if other.id == record.id {
                continue;
            }
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                changed.push(other.clone());
            }
        }
        if let Some(existing) = index.get(&record.id) {
            for t in &existing.repo_tags {
                if !record.repo_tags.contains(t) {
                    record.repo_tags.push(t.clone());
                }
            }
            for d in &existing.repo_digests {
                if !record.repo_digests.contains(d) {
                    record.repo_digests.push(d.clone());
                }
            }
        }
        changed.push(record.clone());
        for rec in &changed {
            state::write_json(&self.record_path(&rec.id)?, rec)?;
        }
        index.insert(record.id.clone(), record);
        Ok(())
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("images")
            .join(format!("{}.json", digest_hex(id)?)))
    }

    /// Deletes what no image record and no container (`in_use`: snapshot diff ids) refers to:
    /// the temp files of pulls and imports a crash interrupted, blobs and snapshots of images
    /// that were never recorded or half-removed. Run before the store serves anything: a pull
    /// in progress holds blobs no record names yet. Returns (blobs, snapshots) removed.
    pub fn sweep(&self, in_use: &HashSet<String>) -> Result<(usize, usize)> {
        let entries = |dir: &Path| -> Vec<std::fs::DirEntry> {
            std::fs::read_dir(dir)
                .map(|d| d.flatten().collect())
                .unwrap_or_default()
        };
        let remove = |path: &Path| -> Result<()> {
            let r = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(RuntimeError::io("sweep", path)(e))
                }
                _ => Ok(()),
            }
        };
        for dir in [
            self.root.join("content").join("tmp"),
            self.root.join("import"),
        ] {
            for e in entries(&dir) {
                remove(&e.path())?;
            }
        }
        let (blobs, diff_ids): (HashSet<String>, HashSet<String>) = {
            let index = self.lock();
            let blobs = index
                .values()
                .flat_map(|r| {
                    let manifests = r
                        .repo_digests
                        .iter()
                        .filter_map(|d| d.split_once('@').map(|(_, d)| d.to_owned()));
                    r.layers
                        .iter()
                        .map(|l| l.digest.clone())
                        .chain([r.id.clone()])
                        .chain(manifests)
                        .collect::<Vec<_>>()
                })
                .collect();
            let diff_ids = index
                .values()
                .flat_map(|r| r.layers.iter().map(|l| l.diff_id.clone()))
                .chain(in_use.iter().cloned())
                .collect();
            (blobs, diff_ids)
        };
        let mut removed = (0, 0);
        for e in entries(&self.root.join("content").join("sha256")) {
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            if !blobs.contains(&digest) {
                remove(&e.path())?;
                removed.0 += 1;
            }
        }
        for e in entries(&self.root.join("snapshots")) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !diff_ids.contains(&format!("sha256:{name}")) {
                remove(&e.path())?;
                if !name.starts_with("tmp-") {
                    removed.1 += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes an image and whatever of its blobs and snapshots no other image uses and no
    /// container has mounted (`in_use` holds snapshot diff ids). Removing an absent image is
    /// not an error (CRI semantics).
    pub fn remove(&self, name: &str, in_use: &HashSet<String>) -> Result<()> {
        let Some(image) = self.get(name) else {
            return Ok(());
        };
        let mut index = self.lock();
        index.remove(&image.id);
        let path = self.record_path(&image.id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::io("remove", path)(e));
            }
            _ => {}
        }
        let still_used: HashSet<&str> = index
            .values()
            .flat_map(|r| r.layers.iter().map(|l| l.diff_id.as_str()))
            .collect();
        let blobs_used: HashSet<&str> = index
            .values()
            .flat_map(|r| {
                r.layers
                    .iter()
                    .map(|l| l.digest.as_str())
                    .chain([r.id.as_str()])
            })
            .collect();
        for layer in &image.layers {
            if !blobs_used.contains(layer.digest.as_str()) {
                self.content.remove(&layer.digest)?;
            }
            if !still_used.contains(layer.diff_id.as_str()) && !in_use.contains(&layer.diff_id) {
                let snap = self.snapshot_dir(&layer.diff_id)?;
                if snap.exists() {
                    std::fs::remove_dir_all(&snap)
                        .map_err(RuntimeError::io("remove snapshot", &snap))?;
                }
            }
        }
        if !blobs_used.contains(image.id.as_str()) {
            self.content.remove(&image.id)?;
        }
        tracing::info!(id = %image.id, "removed image");
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex as StdMutex;

    use futures::StreamExt;
    use futures::future::BoxFuture;

    use super::registry::BlobStream;
    use super::*;

    /// An in-memory registry: blobs and manifests by digest, tags to digests.
    #[derive(Default)]
    pub struct FakeRegistry {
        pub blobs: StdMutex<HashMap<String, Bytes>>,
        pub tags: StdMutex<HashMap<String, String>>,
        /// Digests served with wrong content.
        pub corrupt: StdMutex<HashSet<String>>,
        /// Digests served half at once, the rest once notified.
        pub held: StdMutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    }

    impl FakeRegistry {
        pub fn put(&self, data: Vec<u8>) -> String {
            let d = sha256_digest(&data);
            self.blobs
                .lock()
                .expect("lock")
                .insert(d.clone(), Bytes::from(data));
            d
        }

        /// Publishes a one-layer image under `repo:tag`; returns (config digest, layer digest).
        pub fn publish(
            &self,
            repo_tag: &str,
            layer_tar: Vec<u8>,
            cfg: serde_json::Value,
        ) -> (String, String) {
            let diff_id = sha256_digest(&layer_tar);
            let layer_size = layer_tar.len();
            let layer = self.put(layer_tar);
            let config = serde_json::json!({
                "architecture": "amd64", "os": "linux", "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            });
            let config_bytes = serde_json::to_vec(&config).expect("json");
            let config_size = config_bytes.len();
            let config_digest = self.put(config_bytes);
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
            });
            let md = self.put(serde_json::to_vec(&manifest).expect("json"));
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256_digest(b"arm"), "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
                ],
            });
            let id = self.put(serde_json::to_vec(&index).expect("json"));
            self.tags
                .lock()
                .expect("lock")
                .insert(repo_tag.to_string(), id);
            (config_digest, layer)
        }
    }

    impl Registry for FakeRegistry {
        fn manifest<'a>(
            &'a self,
            image: &'a ImageRef,
            reference: &'a str,
            _creds: Option<&'a Credentials>,
        ) -> BoxFuture<'a, Result<Bytes>> {
            Box::pin(async move {
                let digest = if reference.starts_with("sha256:") {
                    reference.to_string()
                } else {
                    let key = format!("{}:{reference}", image.name());
                    self.tags
                        .lock()
                        .expect("lock")
                        .get(&key)
                        .cloned()
                        .ok_or_else(|| RuntimeError::Pull {
                            image: image.to_string(),
                            registry: image.registry.clone(),
                            message: "manifest unknown".into(),
                        })?
                };
                self.blobs
                    .lock()
                    .expect("lock")
                    .get(&digest)
                    .cloned()
                    .ok_or_else(|| RuntimeError::Pull {
                        image: image.to_string(),
                        registry: image.registry.clone(),
                        message: format!("manifest {digest} unknown"),
                    })
            })
        }

        fn blob<'a>(
            &'a self,
            image: &'a ImageRef,
            digest: &'a str,
            _creds: Option<&'a Credentials>,
        ) -> BoxFuture<'a, Result<BlobStream>> {
            Box::pin(async move {
                let mut data = self
                    .blobs
                    .lock()
                    .expect("lock")
                    .get(digest)
                    .cloned()
                    .ok_or_else(|| RuntimeError::Pull {
                        image: image.to_string(),
                        registry: image.registry.clone(),
                        message: format!("blob {digest} unknown"),
                    })?;
                if self.corrupt.lock().expect("lock").contains(digest) {
                    data = Bytes::from_static(b"corrupted");
                }
                if let Some(gate) = self.held.lock().expect("lock").get(digest).cloned() {
                    let rest = data.split_off(data.len() / 2);
                    let first = futures::stream::iter([Ok(data)]);
                    let second = futures::stream::once(async move {
                        gate.notified().await;
                        Ok(rest)
                    });
                    return Ok(first.chain(second).boxed());
                }
                Ok(futures::stream::iter([Ok(data)]).boxed())
            })
        }
    }

    /// Whiteouts that do nothing (the layers used here have none).
    pub struct NoWhiteouts;
    impl WhiteoutWriter for NoWhiteouts {
        fn whiteout(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn opaque(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A tar with /etc/passwd and /bin/sh.
    pub fn busybox_like_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            (
                "etc/passwd",
                &b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"[..],
            ),
            ("etc/group", &b"root:x:0:\nnogroup:x:65534:\n"[..]),
            ("bin/sh", &b"ELF"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, path, data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    pub fn store(dir: &Path, reg: Arc<FakeRegistry>) -> ImageStore {
        ImageStore::open(dir, reg, Arc::new(NoWhiteouts)).expect("open")
    }

    #[tokio::test]
    async fn pull_resolves_index_unpacks_and_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Arc::new(FakeRegistry::default());
        let (config, _) = reg.publish(
            "127.0.0.1:5055/busybox:1",
            busybox_like_tar(),
            serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "User": "nobody"}),
        );
        let images = store(dir.path(), reg.clone());
        let id = images
            .pull("127.0.0.1:5055/busybox:1", None)
            .await
            .expect("pull");
        assert_eq!(id, config);
        let rec = images.get("127.0.0.1:5055/busybox:1").expect("by tag");
        assert_eq!(rec.config.cmd, vec!["sh"]);
        assert_eq!(rec.config.user, "nobody");
        assert!(images.get(&id).is_some(), "by id");
        assert!(images.get(&rec.repo_digests[0]).is_some(), "by repo digest");
        let lower = images.lowerdirs(&rec).expect("lowerdirs");
        assert!(lower[0].join("etc/passwd").is_file());

        // The index survives a reopen.
        let reopened = store(dir.path(), reg);
        assert_eq!(reopened.get(&id), Some(rec.clone()));

        // Removal drops record, blobs and snapshots.
        reopened.remove(&id, &HashSet::new()).expect("remove");
        assert!(reopened.get(&id).is_none());
        assert!(!lower[0].exists());
        assert!(
            store(dir.path(), Arc::new(FakeRegistry::default()))
                .get(&id)
                .is_none()
        );
    }

    #[tokio::test]
    async fn corrupt_layer_fails_pull_and_stores_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Arc::new(FakeRegistry::default());
        let (_, layer) = reg.publish(
            "docker.io/library/bad:latest",
            busybox_like_tar(),
            serde_json::json!({}),
        );
        reg.corrupt.lock().expect("lock").insert(layer.clone());
        let images = store(dir.path(), reg);
        let err = images.pull("bad", None).await.expect_err("must fail");
        assert!(matches!(err, RuntimeError::DigestMismatch { .. }), "{err}");
        assert!(images.list().is_empty());
        assert!(!ContentStore::new(dir.path()).contains(&layer));
    }

    #[tokio::test]
    async fn a_sweep_keeps_what_images_and_containers_use_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Arc::new(FakeRegistry::default());
        reg.publish(
            "docker.io/library/kept:1",
            busybox_like_tar(),
            serde_json::json!({}),
        );
        let images = store(dir.path(), reg);
        images.pull("kept:1", None).await.expect("pull");
        let root = dir.path();
        let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let orphans = [
            root.join("content/tmp/interrupted"),
            root.join("content/sha256").join(hex('a')),
            root.join("snapshots").join(hex('b')).join("fs/file"),
            root.join("snapshots/tmp-0123/fs/file"),
            root.join("import/9f/index.json"),
        ];
        let used = root.join("snapshots").join(hex('c')).join("fs/file");
        for f in orphans.iter().chain([&used]) {
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(f, b"x").expect("write");
        }
        let in_use: HashSet<String> = [format!("sha256:{}", hex('c'))].into();
        assert_eq!(images.sweep(&in_use).expect("sweep"), (1, 1));
        for f in &orphans {
            assert!(!f.exists(), "{} is left", f.display());
        }
        assert!(used.exists(), "a container's snapshot is kept");
        // The pulled image is whole: its blobs and snapshot are there.
        let kept = images.get("kept:1").expect("image");
        for l in &kept.layers {
            assert!(ContentStore::new(root).contains(&l.digest));
            assert!(
                images
                    .snapshot_dir(&l.diff_id)
                    .expect("dir")
                    .join("fs")
                    .is_dir()
            );
        }
        assert!(ContentStore::new(root).contains(&kept.id));
        let manifest = kept.repo_digests[0].split_once('@').expect("digest").1;
        assert!(ContentStore::new(root).contains(manifest));
    }

    #[tokio::test]
    async fn a_pull_reports_its_progress_until_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Arc::new(FakeRegistry::default());
        let tar = busybox_like_tar();
        let size = tar.len() as u64;
        let (_, layer) = reg.publish("docker.io/library/slow:1", tar, serde_json::json!({}));
        let gate = Arc::new(tokio::sync::Notify::new());
        reg.held.lock().expect("lock").insert(layer, gate.clone());
        let images = Arc::new(store(dir.path(), reg));
        let pulling = tokio::spawn({
            let images = images.clone();
            async move { images.pull("slow:1", None).await }
        });
        let half = loop {
            let p = images.progress(Some("slow:1"));
            if p.first().is_some_and(|p| p.bytes_done > 0) {
                break p[0].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(
            half,
            PullProgress {
                image: "slow:1".into(),
                layers_total: 1,
                layers_done: 0,
                bytes_total: size,
                bytes_done: size / 2,
            }
        );
        assert!(images.progress(Some("other:1")).is_empty());
        gate.notify_one();
        pulling.await.expect("task").expect("pull");
        assert!(images.progress(None).is_empty(), "a finished pull is gone");
    }

    #[tokio::test]
    async fn missing_image_is_a_pull_error_naming_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = store(dir.path(), Arc::new(FakeRegistry::default()));
        let err = images
            .pull("127.0.0.1:5055/nope:1", None)
            .await
            .expect_err("fail");
        let status: tonic::Status = err.into();
        assert!(
            status.message().contains("127.0.0.1:5055"),
            "{}",
            status.message()
        );
    }
}

/// Whether a layer's media type is one `unpack` reads (it tells gzip and zstd apart by their magic
/// bytes): OCI and Docker layers, distributable or not, uncompressed, gzip or zstd. Encrypted
/// and other foreign types are refused by name rather than unpacked as garbage.
fn unpackable_layer(media_type: &str) -> bool {
    let oci = media_type
        .strip_prefix("application/vnd.oci.image.layer.")
        .map(|t| t.strip_prefix("nondistributable.").unwrap_or(t));
    let docker = media_type.strip_prefix("application/vnd.docker.image.rootfs.");
    media_type.is_empty()
        || oci.is_some_and(|t| matches!(t, "v1.tar" | "v1.tar+gzip" | "v1.tar+zstd"))
        || docker.is_some_and(|t| matches!(t, "diff.tar.gzip" | "foreign.diff.tar.gzip"))
}

#[cfg(test)]
mod media_type_tests {
    use super::unpackable_layer;

    #[test]
    fn layer_media_types() {
        for ok in [
            "",
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            assert!(unpackable_layer(ok), "{ok}");
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.oci.image.config.v1+json",
            "application/octet-stream",
        ] {
            assert!(!unpackable_layer(bad), "{bad}");
        }
    }
}
