//! Where a registry's content is fetched from, and how: the node's registries file (k3s's
//! `registries.yaml`, `skiff up --registries-config`) plus `--insecure-registry`.
//!
//! ```yaml
//! mirrors:
//!   docker.io:                       # or "*" for every registry without its own entry
//!     endpoint: ["http://127.0.0.1:5000", "https://mirror.example"]
//! configs:
//!   "mirror.example":
//!     auth: {username: u, password: p}   # or auth: base64(user:password)
//!     tls: {insecure_skip_verify: true, ca_file: /etc/ssl/mirror-ca.pem}
//! ```
//!
//! A pull tries the registry's mirrors in order and then the registry itself, as containerd
//! and k3s do. An endpoint written with `http://` is reached over plain HTTP; without a scheme
//! it is HTTPS unless it is a loopback address or listed with `--insecure-registry`.
//! Credentials for a host come from the pull's CRI AuthConfig when it is for that host, else
//! from `configs`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::reference::allows_plain_http;
use super::registry::Credentials;
use crate::error::{Result, RuntimeError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorSection>,
    #[serde(default)]
    configs: BTreeMap<String, ConfigSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorSection {
    #[serde(default)]
    endpoint: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSection {
    #[serde(default)]
    auth: Option<AuthSection>,
    #[serde(default)]
    tls: Option<TlsSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    ca_file: Option<String>,
}

/// One place to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    pub plain_http: bool,
    /// Credentials from the registries file.
    pub credentials: Option<Credentials>,
    pub accept_invalid_certs: bool,
    /// Extra CA certificates (PEM) to trust for this host.
    pub ca_pem: Option<Vec<u8>>,
}

/// The node's registry settings.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    insecure: Vec<String>,
    /// Mirror endpoints by registry, `*` for the rest: `host[:port]`, and whether the file said
    /// plain HTTP (`Some(true)`), HTTPS (`Some(false)`) or nothing.
    mirrors: BTreeMap<String, Vec<(String, Option<bool>)>>,
    hosts: BTreeMap<String, HostSettings>,
}

#[derive(Debug, Clone, Default)]
struct HostSettings {
    credentials: Option<Credentials>,
    accept_invalid_certs: bool,
    ca_pem: Option<Vec<u8>>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::InvalidArgument(format!("registries file {}: {msg}", path.display()))
}

/// `scheme://host[:port]` → (host[:port], Some(plain http?)); no scheme → (host, None).
fn split_endpoint(endpoint: &str) -> std::result::Result<(String, Option<bool>), String> {
    let (rest, plain) = if let Some(r) = endpoint.strip_prefix("http://") {
        (r, Some(true))
    } else if let Some(r) = endpoint.strip_prefix("https://") {
        (r, Some(false))
    } else if endpoint.contains("://") {
        return Err(format!("endpoint {endpoint:?}: only http and https"));
    } else {
        (endpoint, None)
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_end_matches('/');
    if host.is_empty() {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    if !path.is_empty() && path != "v2" {
        return Err(format!(
            "endpoint {endpoint:?}: a path other than /v2 is not supported"
        ));
    }
    Ok((host.to_owned(), plain))
}

/// The `host[:port]` a CRI AuthConfig's `server_address` names (`https://index.docker.io/v1/`
/// is `docker.io`); `None` when it names none.
pub fn server_host(address: &str) -> Option<String> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = rest.split('/').next().unwrap_or_default();
    match host {
        "" => None,
        "index.docker.io" | "registry-1.docker.io" => Some("docker.io".to_owned()),
        h => Some(h.to_owned()),
    }
}

impl Registries {
    /// Only the plain-HTTP list (no registries file).
    pub fn new(insecure: Vec<String>) -> Self {
        Registries {
            insecure,
            ..Default::default()
        }
    }

    /// Reads the registries file at `path`; every mistake is an error naming the file and what
    /// is wrong in it.
    pub fn load(path: &Path, insecure: Vec<String>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(RuntimeError::io("read", path))?;
        Self::parse(path, &text, insecure)
    }

    fn parse(path: &Path, text: &str, insecure: Vec<String>) -> Result<Self> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| bad(path, e))?
        };
        let mut mirrors = BTreeMap::new();
        for (registry, m) in file.mirrors {
            let endpoints = m
                .endpoint
                .iter()
                .map(|e| split_endpoint(e))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|msg| bad(path, format!("mirrors.{registry}: {msg}")))?;
            mirrors.insert(registry, endpoints);
        }
        let mut hosts = BTreeMap::new();
        for (host, c) in file.configs {
            let (host, _) =
                split_endpoint(&host).map_err(|msg| bad(path, format!("configs: {msg}")))?;
            let credentials = match c.auth {
                None => None,
                Some(a) if !a.auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(a.auth.trim())
                        .map_err(|e| {
                            bad(path, format!("configs.{host}.auth.auth is not base64: {e}"))
                        })?;
                    let decoded = String::from_utf8_lossy(&decoded).into_owned();
                    let (u, p) = decoded.split_once(':').ok_or_else(|| {
                        bad(
                            path,
                            format!("configs.{host}.auth.auth is not user:password"),
                        )
                    })?;
                    Some(Credentials {
                        username: u.to_owned(),
                        password: p.to_owned(),
                        server_host: None,
                    })
                }
                Some(a) if !a.username.is_empty() => Some(Credentials {
                    username: a.username,
                    password: a.password,
                    server_host: None,
                }),
                Some(_) => {
                    return Err(bad(
                        path,
                        format!("configs.{host}.auth needs username and password, or auth"),
                    ));
                }
            };
            let tls = c.tls.unwrap_or_default();
            let ca_pem = match tls.ca_file {
                Some(f) => Some(
                    std::fs::read(&f)
                        .map_err(|e| bad(path, format!("configs.{host}.tls.ca_file {f}: {e}")))?,
                ),
                None => None,
            };
            hosts.insert(
                host,
                HostSettings {
                    credentials,
                    accept_invalid_certs: tls.insecure_skip_verify,
                    ca_pem,
                },
            );
        }
        Ok(Registries {
            insecure,
            mirrors,
            hosts,
        })
    }

    fn endpoint(&self, host: String, plain: Option<bool>) -> Endpoint {
        let settings = self.hosts.get(&host).cloned().unwrap_or_default();
        let plain_http = plain.unwrap_or_else(|| allows_plain_http(&host, &self.insecure));
        Endpoint {
            host,
            plain_http,
            credentials: settings.credentials,
            accept_invalid_certs: settings.accept_invalid_certs,
            ca_pem: settings.ca_pem,
        }
    }

    /// Where to fetch `registry`'s content from, in order: its mirrors (or those of `*`), then
    /// the registry itself.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .into_iter()
            .flatten()
            .map(|(host, plain)| self.endpoint(host.clone(), *plain))
            .collect();
        if !out.iter().any(|e| e.host == registry) {
            out.push(self.endpoint(registry.to_owned(), None));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registries> {
        Registries::parse(
            Path::new("/etc/skiff/registries.yaml"),
            text,
            vec!["lan:5000".into()],
        )
    }

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let r = parse(
            "mirrors:\n  docker.io:\n    endpoint:\n      - http://127.0.0.1:5000\n      - https://mirror.example/v2/\n  \"*\":\n    endpoint: [\"http://cache.lan:80\"]\nconfigs:\n  mirror.example:\n    auth:\n      username: u\n      password: p\n    tls:\n      insecure_skip_verify: true\n",
        )
        .expect("parse");
        let eps = r.endpoints("docker.io");
        let hosts: Vec<(&str, bool)> = eps
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("127.0.0.1:5000", true),
                ("mirror.example", false),
                ("docker.io", false)
            ]
        );
        assert_eq!(
            eps[1].credentials.as_ref().map(|c| c.username.as_str()),
            Some("u")
        );
        assert!(eps[1].accept_invalid_certs && !eps[0].accept_invalid_certs);
        let hosts: Vec<String> = r.endpoints("quay.io").into_iter().map(|e| e.host).collect();
        assert_eq!(hosts, vec!["cache.lan:80", "quay.io"]);
        // --insecure-registry still applies to the registry itself.
        assert!(r.endpoints("lan:5000")[1].plain_http);
    }

    #[test]
    fn no_file_means_the_registry_alone() {
        let r = Registries::new(Vec::new());
        let eps = r.endpoints("127.0.0.1:5000");
        assert_eq!(eps.len(), 1);
        assert!(eps[0].plain_http, "loopback is plain HTTP");
        assert!(!r.endpoints("docker.io")[0].plain_http);
        assert!(parse("").expect("empty file").endpoints("x.io").len() == 1);
    }

    #[test]
    fn base64_auth_is_decoded() {
        let r = parse("configs:\n  reg.example:\n    auth:\n      auth: YWxpY2U6czNjcmV0\n")
            .expect("parse");
        let c = r.endpoints("reg.example")[0]
            .credentials
            .clone()
            .expect("creds");
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
    }

    #[test]
    fn mistakes_name_the_file_and_the_field() {
        for (text, want) in [
            ("mirrors:\n  docker.io:\n    endpoints: [x]\n", "endpoints"),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
                "only http and https",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"https://m/prefix\"]\n",
                "path",
            ),
            (
                "configs:\n  r:\n    auth:\n      auth: \"!!\"\n",
                "not base64",
            ),
            ("configs:\n  r:\n    auth: {}\n", "needs username"),
            (
                "configs:\n  r:\n    tls:\n      ca_file: /nonexistent/ca.pem\n",
                "ca_file",
            ),
            ("rewrite: {}\n", "rewrite"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains("/etc/skiff/registries.yaml") && err.contains(want),
                "{text}: {err}"
            );
        }
    }
}
