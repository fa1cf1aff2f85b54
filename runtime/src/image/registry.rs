//! The registry boundary: fetch a manifest or a blob. [`OciRegistry`] is the real one over
//! oci-client; tests use an in-memory fake.

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::reference::{ImageRef, allows_plain_http};
use crate::error::{Result, RuntimeError};

/// Media types we accept for manifests, in preference order.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Credentials for one pull, from the CRI `AuthConfig`.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A stream of blob bytes.
pub type BlobStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Something that serves manifests and blobs for image references.
pub trait Registry: Send + Sync {
    /// Fetches the manifest `reference` (a tag or a digest) of `image`'s repository, raw.
    fn manifest<'a>(
        &'a self,
        image: &'a ImageRef,
        reference: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<Bytes>>;

    /// Streams the blob `digest` of `image`'s repository. The caller verifies the digest.
    fn blob<'a>(
        &'a self,
        image: &'a ImageRef,
        digest: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<BlobStream>>;
}

/// The real registry client: HTTPS, or plain HTTP for loopback and listed insecure hosts.
pub struct OciRegistry {
    insecure: Vec<String>,
}

impl OciRegistry {
    /// `insecure` lists `host[:port]` entries allowed over plain HTTP besides loopback.
    pub fn new(insecure: Vec<String>) -> Self {
        OciRegistry { insecure }
    }

    fn client(&self, image: &ImageRef) -> oci_client::Client {
        let protocol = if allows_plain_http(&image.registry, &self.insecure) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        oci_client::Client::new(ClientConfig {
            protocol,
            // We resolve indexes ourselves (linux/amd64) so the choice is visible and tested.
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        })
    }

    fn reference(image: &ImageRef, reference: &str) -> oci_client::Reference {
        if reference.starts_with("sha256:") {
            oci_client::Reference::with_digest(
                image.registry.clone(),
                image.repository.clone(),
                reference.to_string(),
            )
        } else {
            oci_client::Reference::with_tag(
                image.registry.clone(),
                image.repository.clone(),
                reference.to_string(),
            )
        }
    }

    fn auth(creds: Option<&Credentials>) -> RegistryAuth {
        match creds {
            Some(c) if !c.username.is_empty() => {
                RegistryAuth::Basic(c.username.clone(), c.password.clone())
            }
            _ => RegistryAuth::Anonymous,
        }
    }

    fn pull_error(image: &ImageRef, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Pull {
            image: image.to_string(),
            registry: image.registry.clone(),
            message: e.to_string(),
        }
    }
}

impl Registry for OciRegistry {
    fn manifest<'a>(
        &'a self,
        image: &'a ImageRef,
        reference: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let client = self.client(image);
            let r = Self::reference(image, reference);
            let (body, _digest) = client
                .pull_manifest_raw(&r, &Self::auth(creds), MANIFEST_TYPES)
                .await
                .map_err(|e| Self::pull_error(image, e))?;
            Ok(body)
        })
    }

    fn blob<'a>(
        &'a self,
        image: &'a ImageRef,
        digest: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<BlobStream>> {
        Box::pin(async move {
            let client = self.client(image);
            let r = Self::reference(image, digest);
            // Authenticate for this repository first; pull_blob_stream uses the cached token.
            client
                .auth(&r, &Self::auth(creds), oci_client::RegistryOperation::Pull)
                .await
                .map_err(|e| Self::pull_error(image, e))?;
            let sized = client
                .pull_blob_stream(&r, digest)
                .await
                .map_err(|e| Self::pull_error(image, e))?;
            // The client stream is tied to the client's lifetime only through owned state.
            Ok(sized.stream.boxed())
        })
    }
}
