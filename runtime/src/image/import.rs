//! `skiff image import`: images from an archive instead of a registry, for air-gapped nodes.
//! Two formats, told apart by what the tar holds: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/...`; `skopeo copy ... oci-archive:`, `ctr export`) and a
//! `docker save` archive (`manifest.json` naming a config and layer tars per image); either may
//! be gzip-compressed. The archive is staged in a temp dir, then served as a [`Registry`] to the
//! same code that pulls, so every blob is verified against its digest, layers are unpacked once
//! into shared snapshots, and a bad archive stores nothing.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::content::{digest_hex, sha256_digest};
use super::reference::ImageRef;
use super::registry::{BlobStream, Credentials, Registry};
use crate::error::{Result, RuntimeError};

fn bad(path: &Path, msg: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::InvalidArgument(format!("image archive {}: {msg}", path.display()))
}

/// Unpacks the archive's regular files under `into`, refusing paths that leave it.
pub fn stage(archive: &Path, into: &Path) -> Result<()> {
    let mut file = std::fs::File::open(archive).map_err(RuntimeError::io("open", archive))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(RuntimeError::io("read", archive))?;
    let file = std::fs::File::open(archive).map_err(RuntimeError::io("open", archive))?;
    let reader: Box<dyn std::io::Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .map_err(|e| bad(archive, format!("not a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(archive, format!("bad tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .map_err(|e| bad(archive, format!("bad tar path: {e}")))?
            .into_owned();
        if !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad(
                archive,
                format!("entry {} leaves the archive", rel.display()),
            ));
        }
        let dest = into.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(RuntimeError::io("create dir", parent))?;
        }
        let mut out = std::fs::File::create(&dest).map_err(RuntimeError::io("create", &dest))?;
        std::io::copy(&mut entry, &mut out).map_err(RuntimeError::io("write", &dest))?;
    }
    Ok(())
}

/// `sha256:<hex>` and size of a file, read in pieces (layers may be gigabytes).
fn file_digest(path: &Path) -> Result<(String, u64)> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(RuntimeError::io("open", path))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(RuntimeError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// One image the archive holds: the name to record and the manifest to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: ImageRef,
    pub manifest: String,
    /// Whether the manifest came from a registry (OCI layouts) and so names the image by
    /// digest; a manifest made up for a docker archive does not.
    pub from_registry: bool,
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciEntry>,
}

#[derive(Deserialize)]
struct OciEntry {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A staged archive, served as a registry: blobs from its files, plus the manifests made up
/// for docker archives.
pub struct Staged {
    archive: PathBuf,
    blobs: HashMap<String, PathBuf>,
    manifests: HashMap<String, Bytes>,
}

/// `name` as a full reference: names with a `/` or `:` are whole; a bare tag joins `base`.
fn full_name(archive: &Path, name: &str, base: &str) -> Result<ImageRef> {
    let full = if name.contains('/') || name.contains(':') {
        name.to_owned()
    } else if !base.is_empty() {
        format!("{base}:{name}")
    } else {
        return Err(bad(
            archive,
            format!("an image is named only by the tag {name:?}: give a base name for it"),
        ));
    };
    ImageRef::parse(&full)
}

impl Staged {
    /// Reads what the staged archive in `dir` holds.
    pub fn open(archive: &Path, dir: &Path, base_name: &str) -> Result<(Staged, Vec<Found>)> {
        let mut staged = Staged {
            archive: archive.to_owned(),
            blobs: HashMap::new(),
            manifests: HashMap::new(),
        };
        if dir.join("index.json").is_file() {
            let found = staged.open_oci(dir, base_name)?;
            return Ok((staged, found));
        }
        if dir.join("manifest.json").is_file() {
            let found = staged.open_docker(dir, base_name)?;
            return Ok((staged, found));
        }
        Err(bad(
            archive,
            "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
        ))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T> {
        let raw = std::fs::read(path).map_err(RuntimeError::io("read", path))?;
        serde_json::from_slice(&raw).map_err(|e| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            bad(&self.archive, format!("{name}: {e}"))
        })
    }

    fn open_oci(&mut self, dir: &Path, base: &str) -> Result<Vec<Found>> {
        let blobs = dir.join("blobs").join("sha256");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for e in entries.flatten() {
                let digest = format!("sha256:{}", e.file_name().to_string_lossy());
                if digest_hex(&digest).is_ok() {
                    self.blobs.insert(digest, e.path());
                }
            }
        }
        let index: OciIndex = self.read_json(&dir.join("index.json"))?;
        let mut found = Vec::new();
        for m in index.manifests {
            digest_hex(&m.digest)?;
            let name = m
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| m.annotations.get("org.opencontainers.image.ref.name"))
                .ok_or_else(|| {
                    bad(
                        &self.archive,
                        format!(
                            "index.json entry {} has no name (annotation io.containerd.image.name \
                             or org.opencontainers.image.ref.name)",
                            m.digest
                        ),
                    )
                })?;
            found.push(Found {
                name: full_name(&self.archive, name, base)?,
                manifest: m.digest,
                from_registry: true,
            });
        }
        if found.is_empty() {
            return Err(bad(&self.archive, "index.json lists no images"));
        }
        Ok(found)
    }

    fn open_docker(&mut self, dir: &Path, base: &str) -> Result<Vec<Found>> {
        let entries: Vec<DockerEntry> = self.read_json(&dir.join("manifest.json"))?;
        let mut found = Vec::new();
        for e in entries {
            let mut blob = |rel: &str| -> Result<(String, u64)> {
                let path = dir.join(rel);
                if !Path::new(rel)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
                    || !path.is_file()
                {
                    return Err(bad(
                        &self.archive,
                        format!("manifest.json names {rel:?}, which the archive lacks"),
                    ));
                }
                let (digest, size) = file_digest(&path)?;
                self.blobs.insert(digest.clone(), path);
                Ok((digest, size))
            };
            let (config, config_size) = blob(&e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (digest, size) = blob(l)?;
                layers.push(json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": size,
                }));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config,
                    "size": config_size,
                },
                "layers": layers,
            });
            let body = Bytes::from(manifest.to_string());
            let digest = sha256_digest(&body);
            self.manifests.insert(digest.clone(), body);
            let tags = e.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                if base.is_empty() {
                    return Err(bad(
                        &self.archive,
                        format!("image {config} has no RepoTags: give a base name for it"),
                    ));
                }
                found.push(Found {
                    name: ImageRef::parse(base)?,
                    manifest: digest.clone(),
                    from_registry: false,
                });
            }
            for tag in tags {
                found.push(Found {
                    name: full_name(&self.archive, &tag, base)?,
                    manifest: digest.clone(),
                    from_registry: false,
                });
            }
        }
        Ok(found)
    }

    fn missing(&self, digest: &str) -> RuntimeError {
        bad(&self.archive, format!("it lacks blob {digest}"))
    }
}

impl Registry for Staged {
    fn manifest<'a>(
        &'a self,
        _: &'a ImageRef,
        reference: &'a str,
        _: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            if let Some(b) = self.manifests.get(reference) {
                return Ok(b.clone());
            }
            let path = self
                .blobs
                .get(reference)
                .ok_or_else(|| self.missing(reference))?;
            let data = tokio::fs::read(path)
                .await
                .map_err(RuntimeError::io("read", path))?;
            Ok(Bytes::from(data))
        })
    }

    fn blob<'a>(
        &'a self,
        _: &'a ImageRef,
        digest: &'a str,
        _: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<BlobStream>> {
        Box::pin(async move {
            let path = self.blobs.get(digest).ok_or_else(|| self.missing(digest))?;
            let file = tokio::fs::File::open(path)
                .await
                .map_err(RuntimeError::io("open", path))?;
            Ok(super::registry::file_stream(file))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // The tar crate refuses to write `..`; a hostile archive has it anyway.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn names_are_whole_or_join_the_base() {
        let a = Path::new("a.tar");
        assert_eq!(
            full_name(a, "busybox:1.36", "").expect("name").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            full_name(a, "1.36", "reg.example/bb")
                .expect("name")
                .to_string(),
            "reg.example/bb:1.36"
        );
        let err = full_name(a, "1.36", "").expect_err("bare tag");
        assert!(err.to_string().contains("base name"), "{err}");
    }

    #[test]
    fn docker_archives_get_a_made_up_manifest_per_tag() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = dir.path().join("save.tar");
        let layer = tar_of(&[("hello", b"hi")]);
        let config = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
        std::fs::write(
            &archive,
            tar_of(&[
                (
                    "manifest.json",
                    br#"[{"Config":"c.json","RepoTags":["a/b:1","a/b:2"],"Layers":["l/layer.tar"]}]"#,
                ),
                ("c.json", config),
                ("l/layer.tar", &layer),
            ]),
        )
        .expect("write");
        let staged_dir = dir.path().join("staged");
        stage(&archive, &staged_dir).expect("stage");
        let (staged, found) = Staged::open(&archive, &staged_dir, "").expect("open");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name.to_string(), "docker.io/a/b:1");
        assert!(!found[0].from_registry);
        let m = staged.manifests.get(&found[0].manifest).expect("manifest");
        let m: serde_json::Value = serde_json::from_slice(m).expect("json");
        assert_eq!(m["layers"][0]["digest"], sha256_digest(&layer));
        assert_eq!(m["config"]["digest"], sha256_digest(config));
    }

    #[test]
    fn bad_archives_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = dir.path().join("x.tar");
        for (files, want) in [
            (vec![("readme", &b"x"[..])], "neither an OCI image layout"),
            (
                vec![("manifest.json", &br#"[{"Config":"c.json","Layers":[]}]"#[..])],
                "lacks",
            ),
            (
                vec![("index.json", &br#"{"manifests":[{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#[..])],
                "has no name",
            ),
            (vec![("../evil", &b"x"[..])], "leaves the archive"),
        ] {
            std::fs::write(&archive, tar_of(&files)).expect("write");
            let staged_dir = dir.path().join(format!("s-{}", uuid::Uuid::new_v4().simple()));
            let err = stage(&archive, &staged_dir)
                .and_then(|()| Staged::open(&archive, &staged_dir, "").map(|_| ()))
                .expect_err(want)
                .to_string();
            assert!(err.contains(want) && err.contains("x.tar"), "{want}: {err}");
        }
    }
}
