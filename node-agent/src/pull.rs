//! Image pull credentials, the kubelet's way: a pod's `imagePullSecrets` (Secrets of type
//! `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg`) give registry keys with
//! credentials; the keys that match the image (host with `*` globs per label, the same port, a
//! path prefix of the repository; `docker.io`, `index.docker.io` and `https://index.docker.io/v1/`
//! are one registry) are tried most specific first, and an image with no match is pulled
//! anonymously.
//!
//! It also keeps the record KEP-2535 asks for ([`PullRecords`]): which credentials pulled each
//! image. An image on the node that was pulled with credentials (never anonymously) is only
//! given to a pod that holds one of those credentials; any other pod must pull it again with
//! its own (and fails if it has none that work), whatever its pull policy says. Images the
//! agent never pulled (preloaded) are not checked, as the kubelet's default policy has it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine as _;
use cri_api::v1;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use sha2::Digest as _;

/// One registry key of a docker config and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryKey {
    /// As written in the secret: `host[:port][/path]`, maybe with a scheme.
    pub key: String,
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The registry keys of a pull secret, or why it has none that can be used.
pub fn parse_secret(secret: &Secret) -> Result<Vec<RegistryKey>, String> {
    let data = secret.data.as_ref();
    let (entries, field): (BTreeMap<String, Entry>, &str) =
        if let Some(b) = data.and_then(|d| d.get(".dockerconfigjson")) {
            let c: DockerConfigJson = serde_json::from_slice(&b.0)
                .map_err(|e| format!(".dockerconfigjson is not a docker config: {e}"))?;
            (c.auths, ".dockerconfigjson")
        } else if let Some(b) = data.and_then(|d| d.get(".dockercfg")) {
            let c = serde_json::from_slice(&b.0)
                .map_err(|e| format!(".dockercfg is not a docker config: {e}"))?;
            (c, ".dockercfg")
        } else {
            return Err("it has neither .dockerconfigjson nor .dockercfg".into());
        };
    let mut keys = Vec::new();
    for (key, e) in entries {
        let (mut username, mut password) = (e.username, e.password);
        if !e.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(e.auth.trim())
                .map_err(|err| format!("{field}: auth of {key:?} is not base64: {err}"))?;
            let decoded = String::from_utf8_lossy(&decoded).into_owned();
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| format!("{field}: auth of {key:?} is not user:password"))?;
            (username, password) = (u.to_owned(), p.to_owned());
        }
        keys.push(RegistryKey {
            key,
            username,
            password,
        });
    }
    Ok(keys)
}

/// Docker Hub's names, folded into one.
fn registry_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    }
}

/// (host, port, path) of a secret key or of an image's `registry/repository`.
fn split(location: &str) -> (String, String, String) {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, ""));
    let mut path = path.trim_end_matches('/').to_owned();
    // `/v1/` and `/v2/` name the registry itself, as in the docker client.
    if path == "v1" || path == "v2" {
        path.clear();
    }
    (
        registry_host(&host.to_ascii_lowercase()).to_owned(),
        port.to_owned(),
        path,
    )
}

/// `glob` matches `name` label by label, `*` standing for any one label part.
fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<&str>, Vec<&str>) = (glob.split('.').collect(), name.split('.').collect());
    g.len() == n.len()
        && g.iter().zip(&n).all(|(g, n)| match g.split_once('*') {
            None => g == n,
            Some((pre, post)) => {
                n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
            }
        })
}

/// The image's registry and repository, as the key matching sees them (`docker.io/library/x`
/// for `x`).
fn image_location(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry = first.contains('.') || first.contains(':') || first == "localhost";
    let (registry, repo) = if has_registry {
        (first.to_owned(), rest.to_owned())
    } else if first.is_empty() {
        ("docker.io".to_owned(), format!("library/{rest}"))
    } else {
        ("docker.io".to_owned(), name.to_owned())
    };
    // Drop the tag (a ':' after the last '/').
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r.to_owned(),
        _ => repo,
    };
    format!("{registry}/{repo}")
}

/// The credentials to try for `image`, most specific key first.
pub fn credentials_for(image: &str, keys: &[RegistryKey]) -> Vec<v1::AuthConfig> {
    let (host, port, path) = split(&image_location(image));
    let mut matches: Vec<(&RegistryKey, String)> = keys
        .iter()
        .filter_map(|k| {
            let (kh, kp, kpath) = split(&k.key);
            let path_ok =
                kpath.is_empty() || path == kpath || path.starts_with(&format!("{kpath}/"));
            (kp == port && glob_match(&kh, &host) && path_ok).then_some((k, kpath))
        })
        .collect();
    // Longer paths are more specific; a stable sort keeps the secrets' order otherwise.
    matches.sort_by_key(|(_, p)| std::cmp::Reverse(p.len()));
    let mut out: Vec<v1::AuthConfig> = Vec::new();
    for (k, _) in matches {
        let auth = v1::AuthConfig {
            username: k.username.clone(),
            password: k.password.clone(),
            server_address: k.key.clone(),
            ..Default::default()
        };
        if !out
            .iter()
            .any(|a| a.username == auth.username && a.password == auth.password)
        {
            out.push(auth);
        }
    }
    out
}

/// Reads pull secrets from the API server.
pub trait PullSecrets: Send + Sync {
    /// The registry keys of the named Secrets of `namespace`. A secret that is missing or
    /// unusable is skipped with a warning, as the kubelet does: the pull may still work without.
    fn keys<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> BoxFuture<'a, Vec<RegistryKey>>;
}

/// [`PullSecrets`] over the Kubernetes API.
pub struct KubeSecrets(pub kube::Client);

impl PullSecrets for KubeSecrets {
    fn keys<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> BoxFuture<'a, Vec<RegistryKey>> {
        Box::pin(async move {
            let api: kube::Api<Secret> = kube::Api::namespaced(self.0.clone(), namespace);
            let mut keys = Vec::new();
            for name in names {
                match api.get(name).await {
                    Ok(s) => match parse_secret(&s) {
                        Ok(k) => keys.extend(k),
                        Err(e) => tracing::warn!(
                            secret = %format!("{namespace}/{name}"),
                            "pull secret is unusable: {e}"
                        ),
                    },
                    Err(e) => tracing::warn!(
                        secret = %format!("{namespace}/{name}"),
                        error = %e,
                        "pull secret not read; pulling without it"
                    ),
                }
            }
            keys
        })
    }
}

/// What pulled each image: the hashes of the credentials that did, `""` for an anonymous pull.
/// Kept in a JSON file so it survives the agent's restarts.
pub struct PullRecords {
    path: Option<PathBuf>,
    map: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// The record's name for a credential (never the credential itself).
fn credential_hash(a: &v1::AuthConfig) -> String {
    let mut h = sha2::Sha256::new();
    for part in [&a.server_address, &a.username, &a.password] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl PullRecords {
    /// Records in `path` (loaded if it exists), or in memory only with `None`.
    pub fn open(path: Option<PathBuf>) -> Self {
        let map = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        PullRecords {
            path,
            map: Mutex::new(map),
        }
    }

    /// Notes that `image_id` was pulled with `auth` (`None`: anonymously).
    pub fn record(&self, image_id: &str, auth: Option<&v1::AuthConfig>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(image_id.to_owned()).or_default();
        if !entry.insert(auth.map(credential_hash).unwrap_or_default()) {
            return;
        }
        if let Some(path) = &self.path {
            let tmp = path.with_extension("tmp");
            let written = serde_json::to_vec(&*map)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "image pull records not saved");
            }
        }
    }

    /// Whether only some pods may use `image_id`: it was pulled here, and never anonymously.
    /// Only then are a pod's credentials worth reading to decide.
    pub fn is_private(&self, image_id: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(image_id).is_some_and(|p| !p.contains(""))
    }

    /// Whether a pod holding `creds` may use `image_id` as it is on the node.
    pub fn may_use(&self, image_id: &str, creds: &[v1::AuthConfig]) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(image_id) {
            None => true,
            Some(pulled_with) => {
                pulled_with.contains("")
                    || creds
                        .iter()
                        .any(|c| pulled_with.contains(&credential_hash(c)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(field: &str, json: &str) -> Secret {
        Secret {
            data: Some([(field.to_owned(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    fn key(k: &str, user: &str) -> RegistryKey {
        RegistryKey {
            key: k.into(),
            username: user.into(),
            password: "pw".into(),
        }
    }

    #[test]
    fn secrets_of_both_types_are_read() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let s = secret(
            ".dockerconfigjson",
            &format!(r#"{{"auths":{{"reg.example:5000":{{"auth":"{b64}"}}}}}}"#),
        );
        assert_eq!(
            parse_secret(&s),
            Ok(vec![RegistryKey {
                key: "reg.example:5000".into(),
                username: "alice".into(),
                password: "s3cret".into()
            }])
        );
        let s = secret(
            ".dockercfg",
            r#"{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}"#,
        );
        assert_eq!(parse_secret(&s).expect("dockercfg")[0].username, "bob");
        let err = parse_secret(&secret(
            ".dockerconfigjson",
            r#"{"auths":{"r":{"auth":"!"}}}"#,
        ))
        .expect_err("bad base64");
        assert!(err.contains("auth of \"r\" is not base64"), "{err}");
        assert!(parse_secret(&secret("token", "x")).is_err());
    }

    #[test]
    fn keys_match_host_port_and_path_most_specific_first() {
        let keys = [
            key("reg.example:5000", "host"),
            key("reg.example:5000/team/app", "exact"),
            key("https://reg.example:5000/team", "prefix"),
            key("reg.example", "no-port"),
            key("*.example:5000", "glob"),
            key("reg.example:5000/other", "other-path"),
        ];
        let users = |image: &str| -> Vec<String> {
            credentials_for(image, &keys)
                .into_iter()
                .map(|a| a.username)
                .collect()
        };
        assert_eq!(
            users("reg.example:5000/team/app:v1"),
            vec!["exact", "prefix", "host", "glob"]
        );
        assert_eq!(users("reg.example/x"), vec!["no-port"]);
        assert_eq!(users("other.example/x"), Vec::<String>::new());
        assert_eq!(users("reg.example:5000/teamster/x"), vec!["host", "glob"]);
    }

    #[test]
    fn docker_hub_has_one_name() {
        let keys = [key("https://index.docker.io/v1/", "hub")];
        for image in [
            "busybox",
            "library/busybox:1.36",
            "docker.io/library/busybox",
        ] {
            assert_eq!(credentials_for(image, &keys).len(), 1, "{image}");
        }
        assert!(credentials_for("quay.io/busybox", &keys).is_empty());
    }

    #[test]
    fn private_images_are_kept_from_pods_without_their_credentials() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pulled.json");
        let alice = credentials_for("r.example/app", &[key("r.example", "alice")]);
        let mallory = credentials_for("r.example/app", &[key("r.example", "mallory")]);
        let records = PullRecords::open(Some(path.clone()));
        assert!(records.may_use("sha256:private", &[]), "never pulled here");
        records.record("sha256:private", alice.first());
        records.record("sha256:public", None);
        assert!(records.may_use("sha256:private", &alice));
        assert!(!records.may_use("sha256:private", &mallory));
        assert!(!records.may_use("sha256:private", &[]));
        assert!(records.may_use("sha256:public", &[]));
        assert!(records.is_private("sha256:private"));
        assert!(!records.is_private("sha256:public") && !records.is_private("sha256:unknown"));
        // The record survives a restart, and holds no credential.
        let saved = std::fs::read_to_string(&path).expect("saved");
        assert!(!saved.contains("alice") && !saved.contains("pw"), "{saved}");
        let again = PullRecords::open(Some(path));
        assert!(!again.may_use("sha256:private", &mallory));
        assert!(again.may_use("sha256:private", &alice));
    }
}
