//! The content-addressed blob store: `<root>/content/sha256/<hex>`. Blobs are written to a temp
//! file while hashed and renamed into place only when the digest matches, so a reader never sees a
//! partial or corrupt blob and a failed pull leaves nothing behind.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Result, RuntimeError};

/// Validates `sha256:<64 lower hex>` and returns the hex part. Digests come from registries and
/// become file names, so nothing else may pass.
pub fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| RuntimeError::InvalidArgument(format!("unsupported digest {digest:?}")))?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(RuntimeError::InvalidArgument(format!(
            "malformed digest {digest:?}"
        )))
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The blob store under `<root>/content`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// A store rooted at `<root>/content`; directories are created on first write.
    pub fn new(root: &Path) -> Self {
        ContentStore {
            dir: root.join("content"),
        }
    }

    /// Where a blob with this digest lives (whether or not it exists).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("sha256").join(digest_hex(digest)?))
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// Reads a whole blob (manifests and configs; layers are streamed from the file).
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        tokio::fs::read(&path)
            .await
            .map_err(RuntimeError::io("read blob", path))
    }

    /// Deletes a blob if present.
    pub fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(digest)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::io("remove blob", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Writes a stream into the store under `digest`, verifying it. On any error (stream failure,
    /// digest mismatch) the temp file is removed and nothing is stored. Returns the byte count.
    pub async fn ingest<S>(&self, digest: &str, mut stream: S) -> Result<u64>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let final_path = self.path(digest)?;
        let tmp_dir = self.dir.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(RuntimeError::io("create dir", &tmp_dir))?;
        if let Some(parent) = final_path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(RuntimeError::io("create dir", parent))?;
        }
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(RuntimeError::io("create", &tmp))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(RuntimeError::io("download blob", &tmp))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(RuntimeError::io("write", &tmp))?;
            }
            file.sync_all()
                .await
                .map_err(RuntimeError::io("sync", &tmp))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(RuntimeError::DigestMismatch {
                    expected: digest.to_string(),
                    actual,
                });
            }
            tokio::fs::rename(&tmp, &final_path)
                .await
                .map_err(RuntimeError::io("rename blob", &final_path))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Stores bytes already in memory (a manifest fetched whole).
    pub async fn ingest_bytes(&self, digest: &str, data: Bytes) -> Result<u64> {
        self.ingest(digest, futures::stream::iter([Ok(data)])).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn good_blob_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::new(dir.path());
        let data = Bytes::from_static(b"hello");
        let digest = sha256_digest(&data);
        store.ingest_bytes(&digest, data).await.expect("ingest");
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).await.expect("read"), b"hello");
    }

    #[tokio::test]
    async fn digest_mismatch_leaves_nothing_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::new(dir.path());
        let digest = sha256_digest(b"expected");
        let chunks = vec![
            Ok(Bytes::from_static(b"not ")),
            Ok(Bytes::from_static(b"it")),
        ];
        let err = store
            .ingest(&digest, futures::stream::iter(chunks))
            .await
            .expect_err("must fail");
        assert!(matches!(err, RuntimeError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&digest));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("content/tmp"))
            .expect("tmp dir")
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn digests_are_validated_before_becoming_paths() {
        let store = ContentStore::new(Path::new("/x"));
        assert!(store.path("sha256:../../etc/passwd").is_err());
        assert!(store.path("md5:abc").is_err());
        assert!(store.path(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(store.path(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
