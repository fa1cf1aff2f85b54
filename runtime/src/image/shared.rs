//! A blob cache shared by the nodes of a `skiff cluster` on one machine, so that a layer is
//! fetched from its registry once however many nodes pull it: a registry in front of the real
//! one whose blobs come from `<dir>/content/sha256/<hex>` when some node has fetched them, and
//! are fetched into it (verified, renamed into place whole) under a per-digest file lock
//! otherwise, so nodes pulling at once wait for one download instead of each making their own.
//!
//! Manifests are not cached: every node asks the registry for them with its own credentials,
//! so the registry still decides who may pull an image (a blob is only reached through a
//! manifest naming it), and tags are resolved afresh. Each node's own store verifies every
//! blob it takes from here again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::content::{ContentStore, digest_hex};
use super::reference::ImageRef;
use super::registry::{BlobStream, Credentials, Registry};
use crate::error::{Result, RuntimeError};

/// The shared cache in front of `inner`.
pub struct SharedBlobs {
    inner: Arc<dyn Registry>,
    store: ContentStore,
    locks: PathBuf,
}

impl SharedBlobs {
    pub fn new(dir: &Path, inner: Arc<dyn Registry>) -> Self {
        SharedBlobs {
            inner,
            store: ContentStore::new(dir),
            locks: dir.join("locks"),
        }
    }

    /// Holds the digest's lock (another process may hold it while it downloads the blob).
    async fn lock(&self, digest: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let path = self.locks.join(format!("{}.lock", digest_hex(digest)?));
        let dir = self.locks.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(RuntimeError::io("create dir", &dir))?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(RuntimeError::io("open", &path))?;
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| RuntimeError::io("lock", &path)(std::io::Error::from(e)))
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("blob cache lock task: {e}")))?
    }

    async fn read(&self, digest: &str) -> Result<BlobStream> {
        let path = self.store.path(digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(RuntimeError::io("open blob", &path))?;
        Ok(super::registry::file_stream(file))
    }
}

impl Registry for SharedBlobs {
    fn manifest<'a>(
        &'a self,
        image: &'a ImageRef,
        reference: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<Bytes>> {
        self.inner.manifest(image, reference, creds)
    }

    fn blob<'a>(
        &'a self,
        image: &'a ImageRef,
        digest: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<BlobStream>> {
        Box::pin(async move {
            if !self.store.contains(digest) {
                let _held = self.lock(digest).await?;
                // Whoever held the lock before may have fetched it meanwhile.
                if !self.store.contains(digest) {
                    let stream = self.inner.blob(image, digest, creds).await?;
                    self.store.ingest(digest, stream).await?;
                    tracing::debug!(image = %image, digest, "blob fetched into the shared cache");
                }
            }
            self.read(digest).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::image::tests::FakeRegistry;

    /// Counts the blob requests that reach the registry behind it.
    struct Counting {
        inner: FakeRegistry,
        blobs: AtomicUsize,
        manifests: AtomicUsize,
    }

    impl Registry for Counting {
        fn manifest<'a>(
            &'a self,
            image: &'a ImageRef,
            reference: &'a str,
            creds: Option<&'a Credentials>,
        ) -> BoxFuture<'a, Result<Bytes>> {
            self.manifests.fetch_add(1, Ordering::SeqCst);
            self.inner.manifest(image, reference, creds)
        }

        fn blob<'a>(
            &'a self,
            image: &'a ImageRef,
            digest: &'a str,
            creds: Option<&'a Credentials>,
        ) -> BoxFuture<'a, Result<BlobStream>> {
            self.blobs.fetch_add(1, Ordering::SeqCst);
            self.inner.blob(image, digest, creds)
        }
    }

    #[tokio::test]
    async fn nodes_pulling_at_once_fetch_each_blob_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(Counting {
            inner: FakeRegistry::default(),
            blobs: AtomicUsize::new(0),
            manifests: AtomicUsize::new(0),
        });
        let layer = crate::image::tests::busybox_like_tar();
        registry.inner.publish(
            "registry.example/app:1",
            layer,
            serde_json::json!({"Cmd": ["/hello"]}),
        );
        let cache = dir.path().join("cache");
        let stores: Vec<_> = (0..3)
            .map(|i| {
                let shared: Arc<dyn Registry> =
                    Arc::new(SharedBlobs::new(&cache, registry.clone()));
                crate::image::ImageStore::open(
                    &dir.path().join(format!("node{i}")),
                    shared,
                    Arc::new(crate::image::tests::NoWhiteouts),
                )
                .expect("store")
            })
            .collect();
        let pulls = stores
            .iter()
            .map(|s| s.pull("registry.example/app:1", None));
        let ids = futures::future::try_join_all(pulls).await.expect("pulls");
        assert!(ids.iter().all(|id| *id == ids[0]));
        // The config and the layer, once each; the index and manifest by every node.
        assert_eq!(registry.blobs.load(Ordering::SeqCst), 2);
        assert_eq!(registry.manifests.load(Ordering::SeqCst), 6);
        for s in &stores {
            assert!(s.get("registry.example/app:1").is_some());
        }
    }

    #[tokio::test]
    async fn a_corrupt_blob_is_not_kept_and_the_next_pull_fetches_it_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(FakeRegistry::default());
        let layer = crate::image::tests::busybox_like_tar();
        let (_, layer_digest) =
            registry.publish("registry.example/c:1", layer, serde_json::json!({}));
        registry
            .corrupt
            .lock()
            .expect("lock")
            .insert(layer_digest.clone());
        let shared: Arc<dyn Registry> = Arc::new(SharedBlobs::new(
            &dir.path().join("cache"),
            registry.clone(),
        ));
        let store = crate::image::ImageStore::open(
            &dir.path().join("node"),
            shared,
            Arc::new(crate::image::tests::NoWhiteouts),
        )
        .expect("store");
        let err = store
            .pull("registry.example/c:1", None)
            .await
            .expect_err("corrupt");
        assert!(matches!(err, RuntimeError::DigestMismatch { .. }), "{err}");
        registry.corrupt.lock().expect("lock").clear();
        store
            .pull("registry.example/c:1", None)
            .await
            .expect("pulled once the registry serves it whole");
    }
}
