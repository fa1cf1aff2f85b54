//! The registry boundary: fetch a manifest or a blob. [`OciRegistry`] is the real one over
//! oci-client; tests use an in-memory fake.

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::hosts::{Endpoint, Registries};
use super::reference::ImageRef;
use crate::error::{Result, RuntimeError};

/// Media types we accept for manifests, in preference order.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Credentials for one pull, from the CRI `AuthConfig` or the registries file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The `host[:port]` of the AuthConfig's `server_address`, when it names one: the
    /// credentials are for that host.
    pub server_host: Option<String>,
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

/// A blob stored in a file, as a stream (ends at the first read error).
pub fn file_stream(file: tokio::fs::File) -> BlobStream {
    Box::pin(futures::stream::try_unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), f)))
    }))
}

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

/// The real registry client: each pull tries the registry's endpoints ([`Registries`]) in
/// order, over HTTPS or plain HTTP as each endpoint says.
pub struct OciRegistry {
    registries: Registries,
    /// Clients kept for reuse: building one loads the system's root certificates, and a kept
    /// one reuses its connections and tokens. One per endpoint and credentials, since a
    /// client caches the bearer tokens it obtained per repository whoever asked.
    clients: std::sync::Mutex<std::collections::HashMap<ClientKey, oci_client::Client>>,
}

/// What a kept client was made for.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    host: String,
    plain_http: bool,
    accept_invalid_certs: bool,
    ca_pem: Option<Vec<u8>>,
    /// Username and password of the pull's credentials; `None` for anonymous pulls.
    auth: Option<(String, String)>,
}

/// Clients kept at most; past it the cache starts over (credentials come and go with pods).
const MAX_CLIENTS: usize = 64;

impl OciRegistry {
    pub fn new(registries: Registries) -> Self {
        OciRegistry {
            registries,
            clients: std::sync::Mutex::default(),
        }
    }

    /// The kept client for `ep` and `auth`, made on first use.
    fn client_for(&self, ep: &Endpoint, auth: &RegistryAuth) -> oci_client::Client {
        let key = ClientKey {
            host: ep.host.clone(),
            plain_http: ep.plain_http,
            accept_invalid_certs: ep.accept_invalid_certs,
            ca_pem: ep.ca_pem.clone(),
            auth: match auth {
                RegistryAuth::Basic(u, p) => Some((u.clone(), p.clone())),
                RegistryAuth::Bearer(t) => Some((String::new(), t.clone())),
                RegistryAuth::Anonymous => None,
            },
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&key) {
            clients.clear();
        }
        clients
            .entry(key)
            .or_insert_with(|| Self::client(ep))
            .clone()
    }

    fn client(ep: &Endpoint) -> oci_client::Client {
        let protocol = if ep.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let extra_root_certificates = ep
            .ca_pem
            .iter()
            .map(|pem| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect();
        oci_client::Client::new(ClientConfig {
            protocol,
            accept_invalid_certificates: ep.accept_invalid_certs,
            extra_root_certificates,
            // We resolve indexes ourselves (linux/amd64) so the choice is visible and tested.
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        })
    }

    fn reference(host: &str, image: &ImageRef, reference: &str) -> oci_client::Reference {
        if reference.starts_with("sha256:") {
            oci_client::Reference::with_digest(
                host.to_owned(),
                image.repository.clone(),
                reference.to_string(),
            )
        } else {
            oci_client::Reference::with_tag(
                host.to_owned(),
                image.repository.clone(),
                reference.to_string(),
            )
        }
    }

    /// The pull's own credentials are for the image's registry (or the host they name); other
    /// endpoints use the registries file's.
    fn auth(image: &ImageRef, ep: &Endpoint, creds: Option<&Credentials>) -> RegistryAuth {
        let pulls = creds.filter(|c| {
            !c.username.is_empty()
                && (ep.host == image.registry || c.server_host.as_deref() == Some(&ep.host))
        });
        match pulls.or(ep.credentials.as_ref()) {
            Some(c) if !c.username.is_empty() => {
                RegistryAuth::Basic(c.username.clone(), c.password.clone())
            }
            _ => RegistryAuth::Anonymous,
        }
    }

    fn pull_error(image: &ImageRef, failures: &[String]) -> RuntimeError {
        RuntimeError::Pull {
            image: image.to_string(),
            registry: image.registry.clone(),
            message: failures.join("; "),
        }
    }

    /// `what` from each endpoint in turn until one answers.
    async fn first_answer<'a, T, F, Fut>(&'a self, image: &'a ImageRef, what: F) -> Result<T>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, String>>,
    {
        let endpoints = self.registries.endpoints(&image.registry);
        let many = endpoints.len() > 1;
        let mut failures = Vec::new();
        for ep in endpoints {
            let host = ep.host.clone();
            match what(ep).await {
                Ok(v) => return Ok(v),
                Err(e) if many => failures.push(format!("{host}: {e}")),
                Err(e) => failures.push(e),
            }
        }
        Err(Self::pull_error(image, &failures))
    }
}

impl Registry for OciRegistry {
    fn manifest<'a>(
        &'a self,
        image: &'a ImageRef,
        reference: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(self.first_answer(image, move |ep| async move {
            let auth = Self::auth(image, &ep, creds);
            let client = self.client_for(&ep, &auth);
            let r = Self::reference(&ep.host, image, reference);
            let (body, _digest) = client
                .pull_manifest_raw(&r, &auth, MANIFEST_TYPES)
                .await
                .map_err(|e| e.to_string())?;
            Ok(body)
        }))
    }

    fn blob<'a>(
        &'a self,
        image: &'a ImageRef,
        digest: &'a str,
        creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<BlobStream>> {
        Box::pin(self.first_answer(image, move |ep| async move {
            let auth = Self::auth(image, &ep, creds);
            let client = self.client_for(&ep, &auth);
            let r = Self::reference(&ep.host, image, digest);
            // Authenticate for this repository first; pull_blob_stream uses the cached token.
            client
                .auth(&r, &auth, oci_client::RegistryOperation::Pull)
                .await
                .map_err(|e| e.to_string())?;
            let sized = client
                .pull_blob_stream(&r, digest)
                .await
                .map_err(|e| e.to_string())?;
            // The client stream is tied to the client's lifetime only through owned state.
            let stream: BlobStream = sized.stream.boxed();
            Ok(stream)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            plain_http: true,
            credentials: None,
            accept_invalid_certs: false,
            ca_pem: None,
        }
    }

    #[test]
    fn clients_are_kept_per_endpoint_and_credentials() {
        // As the binary does at start.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reg = OciRegistry::new(Registries::default());
        let anon = RegistryAuth::Anonymous;
        let alice = RegistryAuth::Basic("alice".into(), "a".into());
        let bob = RegistryAuth::Basic("bob".into(), "b".into());
        reg.client_for(&endpoint("r:5000"), &anon);
        reg.client_for(&endpoint("r:5000"), &anon);
        assert_eq!(reg.clients.lock().expect("lock").len(), 1, "reused");
        reg.client_for(&endpoint("r:5000"), &alice);
        reg.client_for(&endpoint("r:5000"), &bob);
        reg.client_for(&endpoint("s:5000"), &alice);
        assert_eq!(
            reg.clients.lock().expect("lock").len(),
            4,
            "tokens one pull's credentials earned never serve another's"
        );
    }
}
