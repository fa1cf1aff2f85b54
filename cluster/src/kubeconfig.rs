//! The cluster's kubeconfigs: its own (`<root>/<name>/kubeconfig`, which the nodes' agents use
//! too) and its entries in the user's (`$KUBECONFIG`'s first file, else `~/.kube/config`):
//! a cluster, a user and a context all named `skiff-NAME`, made current, as kind adds
//! `kind-NAME`. Other entries and fields of the user's file are kept as they are.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::ClusterError;

/// The user's kubeconfig: the first file of `$KUBECONFIG`, else `$HOME/.kube/config`.
pub fn user_path(kubeconfig_env: Option<&str>, home: Option<&Path>) -> PathBuf {
    if let Some(first) = kubeconfig_env
        .and_then(|v| v.split(':').find(|p| !p.is_empty()))
        .map(PathBuf::from)
    {
        return first;
    }
    home.unwrap_or(Path::new("/root")).join(".kube/config")
}

/// A kubeconfig holding only the cluster's context.
pub fn own(context: &str, server: &str) -> Result<String, ClusterError> {
    merge(None, context, server, Path::new("kubeconfig"))
}

fn entry(name: &str, key: &str, body: Value) -> Value {
    json!({ "name": name, key: body })
}

/// Replaces (or adds) the entry named `name` in the list `list` of `doc`.
fn upsert(doc: &mut Value, list: &str, name: &str, item: Value) {
    let items = doc[list].as_array_mut();
    match items {
        Some(items) => {
            items.retain(|i| i["name"] != name);
            items.push(item);
        }
        None => doc[list] = json!([item]),
    }
}

fn parse(text: Option<&str>, path: &Path) -> Result<Value, ClusterError> {
    let doc = match text.filter(|t| !t.trim().is_empty()) {
        Some(t) => {
            serde_saphyr::from_str::<Value>(t).map_err(|source| ClusterError::Kubeconfig {
                path: path.to_owned(),
                source: Box::new(source),
            })?
        }
        None => json!({ "apiVersion": "v1", "kind": "Config", "preferences": {} }),
    };
    if !doc.is_object() {
        return Err(ClusterError::KubeconfigShape {
            path: path.to_owned(),
        });
    }
    Ok(doc)
}

fn write(doc: &Value, path: &Path) -> Result<String, ClusterError> {
    serde_saphyr::to_string(doc).map_err(|source| ClusterError::KubeconfigWrite {
        path: path.to_owned(),
        source,
    })
}

/// `existing` (the text of the user's kubeconfig at `path`, if any) with the context
/// `context` for `server` added or replaced and made current.
pub fn merge(
    existing: Option<&str>,
    context: &str,
    server: &str,
    path: &Path,
) -> Result<String, ClusterError> {
    let mut doc = parse(existing, path)?;
    upsert(
        &mut doc,
        "clusters",
        context,
        // HTTP until the API has TLS; the JavaScript client needs this to talk HTTP at all.
        entry(
            context,
            "cluster",
            json!({ "server": server, "insecure-skip-tls-verify": true }),
        ),
    );
    upsert(
        &mut doc,
        "users",
        context,
        entry(context, "user", json!({})),
    );
    upsert(
        &mut doc,
        "contexts",
        context,
        entry(
            context,
            "context",
            json!({ "cluster": context, "user": context, "namespace": "default" }),
        ),
    );
    doc["current-context"] = json!(context);
    write(&doc, path)
}

/// `existing` without the context `context` and its cluster and user; the current context
/// is unset if it was that one. `None` when nothing of it was there.
pub fn remove(existing: &str, context: &str, path: &Path) -> Result<Option<String>, ClusterError> {
    let mut doc = parse(Some(existing), path)?;
    let mut found = false;
    for list in ["clusters", "users", "contexts"] {
        if let Some(items) = doc[list].as_array_mut() {
            let before = items.len();
            items.retain(|i| i["name"] != context);
            found |= items.len() != before;
        }
    }
    if doc["current-context"] == context {
        doc["current-context"] = json!("");
        found = true;
    }
    if !found {
        return Ok(None);
    }
    write(&doc, path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THEIRS: &str = "apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: QUJD
users:
- name: admin
  user:
    token: secret
contexts:
- name: prod
  context:
    cluster: prod
    user: admin
current-context: prod
";

    #[test]
    fn the_users_file_is_found_as_kubectl_finds_it() {
        assert_eq!(
            user_path(Some("/a/one:/b/two"), Some(Path::new("/home/u"))),
            PathBuf::from("/a/one")
        );
        assert_eq!(
            user_path(Some(""), Some(Path::new("/home/u"))),
            PathBuf::from("/home/u/.kube/config")
        );
        assert_eq!(user_path(None, None), PathBuf::from("/root/.kube/config"));
    }

    #[test]
    fn a_context_is_added_beside_the_users_own_and_made_current() {
        let p = Path::new("/k");
        let text = merge(Some(THEIRS), "skiff-dev", "http://172.30.1.2:6443", p).expect("merge");
        let doc: Value = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(doc["current-context"], "skiff-dev");
        assert_eq!(doc["clusters"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "QUJD"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "secret");
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "http://172.30.1.2:6443"
        );
        assert_eq!(doc["contexts"][1]["context"]["cluster"], "skiff-dev");
        // Again with another address: replaced, not doubled.
        let again = merge(Some(&text), "skiff-dev", "http://172.30.2.2:6443", p).expect("merge");
        let doc: Value = serde_saphyr::from_str(&again).expect("yaml");
        assert_eq!(doc["clusters"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "http://172.30.2.2:6443"
        );

        let removed = remove(&again, "skiff-dev", p)
            .expect("remove")
            .expect("found");
        let doc: Value = serde_saphyr::from_str(&removed).expect("yaml");
        assert_eq!(doc["current-context"], "");
        assert_eq!(doc["clusters"].as_array().map(Vec::len), Some(1));
        assert_eq!(doc["contexts"][0]["name"], "prod");
        assert_eq!(remove(&removed, "skiff-dev", p).expect("remove"), None);
    }

    #[test]
    fn a_cluster_kubeconfig_stands_alone_and_a_broken_one_is_named() {
        let text = own("skiff-dev", "http://172.30.1.2:6443").expect("own");
        let doc: Value = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "skiff-dev");
        let err = merge(
            Some("- just\n- a list\n"),
            "skiff-dev",
            "http://x",
            Path::new("/u/k"),
        )
        .expect_err("not a mapping");
        assert!(
            err.to_string().starts_with("/u/k: not a kubeconfig"),
            "{err}"
        );
        let err = merge(Some("a: [\n"), "skiff-dev", "http://x", Path::new("/u/k"))
            .expect_err("not yaml");
        assert!(
            err.to_string().starts_with("/u/k: not a kubeconfig"),
            "{err}"
        );
    }
}
