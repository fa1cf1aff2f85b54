//! The client commands. They speak plain Kubernetes REST through kube-rs, so they work against
//! skiff or any Kubernetes API server: discovery to map a type name to its resource, GET/POST/
//! PATCH/DELETE for objects, Table responses for `get`, and streamed `pods/log`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{AsyncBufReadExt as _, StreamExt as _};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

const DEFAULT_KUBECONFIG: &str = "/var/lib/skiff/kubeconfig";
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// A client from the kubeconfig the user named, or the one `skiff up` wrote.
pub async fn connect(kubeconfig: Option<PathBuf>) -> Result<(Client, String)> {
    let path = kubeconfig.unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG));
    let kc = read_kubeconfig(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
    let ns = config.default_namespace.clone();
    SERVER.get_or_init(|| config.cluster_url.to_string());
    let client = Client::try_from(config).context("cannot build the API client")?;
    Ok((client, ns))
}

/// Reads and parses the kubeconfig at `path`, saying what is wrong once, in the user's terms
/// (kube's own error would name the path twice and the cause twice).
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                " (is `skiff up` running? --kubeconfig or KUBECONFIG name another)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (skiff writes it for root only: run as root, or name another with --kubeconfig)"
            }
            _ => "",
        };
        anyhow!("cannot read kubeconfig {}: {e}{hint}", path.display())
    })?;
    Kubeconfig::from_yaml(&text).map_err(|e| anyhow!("invalid kubeconfig {}: {e}", path.display()))
}

/// The API server the client talks to, for messages.
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow!("{}", s.message),
        kube::Error::HyperError(_) | kube::Error::Service(_) => anyhow!(
            "cannot reach the API server at {}: {e}",
            SERVER.get().map_or("?", String::as_str)
        ),
        other => anyhow!(other),
    }
}

async fn request_json(client: &Client, req: http::Request<Vec<u8>>) -> Result<Value> {
    client.request::<Value>(req).await.map_err(api_error)
}

/// A served resource, found by discovery.
/// Failures already printed, one line per object as kubectl prints them: the command only has
/// to exit non-zero.
#[derive(Debug)]
pub struct Reported {
    pub count: usize,
    pub verb: &'static str,
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} object(s) could not be {}", self.count, self.verb)
    }
}

impl std::error::Error for Reported {}

/// What kubectl asks for by default (`--validate=strict`): a field the server does not know
/// is an error naming it, not dropped in silence.
const STRICT: &str = "fieldValidation=Strict";

/// A YAML parser's error on one line: its first line without a leading `error:` (the rest is a
/// snippet of the input, and the line and column are in the first line already).
fn yaml_error_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    first
        .strip_prefix("error:")
        .unwrap_or(first)
        .trim()
        .to_string()
}

#[derive(Debug, Clone)]
struct ApiResource {
    /// `/api/v1` or `/apis/<group>/<version>`.
    base: String,
    api_version: String,
    plural: String,
    kind: String,
    namespaced: bool,
    /// Every name a user may type for it: plural, singular, kind, short names.
    names: Vec<String>,
}

impl ApiResource {
    fn collection(&self, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}/namespaces/{ns}/{}", self.base, self.plural),
            _ => format!("{}/{}", self.base, self.plural),
        }
    }
    fn item(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection(ns))
    }
    fn display(&self) -> String {
        let group = self.api_version.split_once('/').map_or("", |(g, _)| g);
        let kind = self.kind.to_lowercase();
        if group.is_empty() {
            kind
        } else {
            format!("{kind}.{group}")
        }
    }
}

async fn discover(client: &Client) -> Result<Vec<ApiResource>> {
    let mut out = Vec::new();
    let mut lists = vec![("/api/v1".to_string(), "v1".to_string())];
    let groups = request_json(client, http::Request::get("/apis").body(Vec::new())?).await?;
    for g in groups["groups"].as_array().into_iter().flatten() {
        if let Some(gv) = g["preferredVersion"]["groupVersion"].as_str() {
            lists.push((format!("/apis/{gv}"), gv.to_string()));
        }
    }
    for (base, gv) in lists {
        let list = request_json(client, http::Request::get(&base).body(Vec::new())?).await?;
        for r in list["resources"].as_array().into_iter().flatten() {
            let plural = r["name"].as_str().unwrap_or("");
            if plural.contains('/') {
                continue;
            }
            let mut names = vec![
                plural.to_string(),
                r["singularName"].as_str().unwrap_or("").to_string(),
                r["kind"].as_str().unwrap_or("").to_lowercase(),
            ];
            for s in r["shortNames"].as_array().into_iter().flatten() {
                names.push(s.as_str().unwrap_or("").to_string());
            }
            out.push(ApiResource {
                base: base.clone(),
                api_version: gv.clone(),
                plural: plural.to_string(),
                kind: r["kind"].as_str().unwrap_or("").to_string(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
                names,
            });
        }
    }
    Ok(out)
}

async fn find_by_name(client: &Client, name: &str) -> Result<ApiResource> {
    let want = name.to_lowercase();
    let (plain, group) = want
        .split_once('.')
        .map_or((want.as_str(), None), |(a, b)| (a, Some(b)));
    let all = discover(client).await?;
    let lists = all
        .iter()
        .filter(|r| group.is_none_or(|g| r.api_version.starts_with(&format!("{g}/"))));
    for r in lists {
        if r.names.iter().any(|n| n == plain) {
            return Ok(r.clone());
        }
    }
    bail!("the server doesn't have a resource type \"{name}\"")
}

async fn find_by_kind(client: &Client, api_version: &str, kind: &str) -> Result<ApiResource> {
    discover(client)
        .await?
        .into_iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
        .ok_or_else(|| anyhow!("no matches for kind \"{kind}\" in version \"{api_version}\""))
}

/// One YAML document from a file, with where it came from for error messages.
#[derive(Debug)]
struct Doc {
    source: String,
    index: usize,
    value: Value,
}

fn read_source(f: &str) -> Result<Vec<(String, String)>> {
    if f == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        return Ok(vec![("<stdin>".into(), s)]);
    }
    let p = Path::new(f);
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("cannot read directory {f}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        entries.sort();
        let mut out = Vec::new();
        for e in entries {
            let text = std::fs::read_to_string(&e)
                .with_context(|| format!("cannot read {}", e.display()))?;
            out.push((e.display().to_string(), text));
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {f}"))?;
    Ok(vec![(f.to_string(), text)])
}

/// Reads and checks every document before anything is sent, so bad input changes nothing.
fn load_docs(files: &[String]) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for f in files {
        for (source, text) in read_source(f)? {
            let values: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|e| anyhow!("{source}: invalid YAML: {}", yaml_error_line(&e)))?;
            for (i, value) in values.into_iter().enumerate() {
                if value.is_null() {
                    continue;
                }
                let index = i + 1;
                let what = format!("{source}: document {index}");
                if !value.is_object() {
                    bail!("{what}: expected a Kubernetes object (a mapping), found {value}");
                }
                if let Some(items) = value
                    .get("items")
                    .filter(|_| value["kind"].as_str().is_some_and(|k| k.ends_with("List")))
                {
                    for (j, item) in items.as_array().into_iter().flatten().enumerate() {
                        check_doc(&format!("{what}: items[{j}]"), item)?;
                        docs.push(Doc {
                            source: source.clone(),
                            index,
                            value: item.clone(),
                        });
                    }
                    continue;
                }
                check_doc(&what, &value)?;
                docs.push(Doc {
                    source: source.clone(),
                    index,
                    value,
                });
            }
        }
    }
    if docs.is_empty() {
        bail!("no objects found in {}", files.join(", "));
    }
    Ok(docs)
}

fn check_doc(what: &str, v: &Value) -> Result<()> {
    for field in ["apiVersion", "kind"] {
        if v[field].as_str().is_none_or(str::is_empty) {
            bail!("{what}: field \"{field}\" is missing");
        }
    }
    if v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && v.pointer("/metadata/generateName").is_none()
    {
        bail!(
            "{what}: {} has no metadata.name",
            v["kind"].as_str().unwrap_or("object")
        );
    }
    Ok(())
}

pub async fn apply(kc: Option<PathBuf>, files: &[String], ns: Option<&str>) -> Result<()> {
    let docs = load_docs(files)?;
    let (client, default_ns) = connect(kc).await?;
    let mut failed = 0;
    for doc in docs {
        let kind = doc.value["kind"].as_str().unwrap_or("").to_string();
        let av = doc.value["apiVersion"].as_str().unwrap_or("").to_string();
        let name = doc.value["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let what = format!("{}: document {} ({kind} {name})", doc.source, doc.index);
        let res = match find_by_kind(&client, &av, &kind).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {what}: {e}");
                failed += 1;
                continue;
            }
        };
        let ns = res.namespaced.then(|| {
            doc.value["metadata"]["namespace"]
                .as_str()
                .or(ns)
                .unwrap_or(&default_ns)
                .to_string()
        });
        match apply_one(&client, &res, ns.as_deref(), &name, &doc.value).await {
            Ok(verb) => println!("{}/{name} {verb}", res.display()),
            Err(e) => {
                eprintln!("error: {what}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Reported {
            count: failed,
            verb: "applied",
        }
        .into());
    }
    Ok(())
}

async fn apply_one(
    client: &Client,
    res: &ApiResource,
    ns: Option<&str>,
    name: &str,
    obj: &Value,
) -> Result<&'static str> {
    let url = res.item(ns, name);
    let current = client
        .request::<Value>(http::Request::get(&url).body(Vec::new())?)
        .await;
    match current {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let body = serde_json::to_vec(obj)?;
            let req = http::Request::post(format!("{}?{STRICT}", res.collection(ns)))
                .header("content-type", "application/json")
                .body(body)?;
            request_json(client, req).await?;
            Ok("created")
        }
        Err(e) => Err(api_error(e)),
        Ok(cur) => {
            let mut patch = obj.clone();
            if let Some(m) = patch["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let req = http::Request::patch(format!("{url}?{STRICT}"))
                .header("content-type", "application/strategic-merge-patch+json")
                .body(serde_json::to_vec(&patch)?)?;
            let after = request_json(client, req).await?;
            if after["metadata"]["resourceVersion"] == cur["metadata"]["resourceVersion"] {
                Ok("unchanged")
            } else {
                Ok("configured")
            }
        }
    }
}

/// Arguments of `skiff get`.
#[derive(Debug)]
pub struct GetArgs {
    pub resource: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub output: Option<String>,
    pub watch: bool,
    pub selector: Option<String>,
}

fn print_table(table: &Value, wide: bool, with_ns: bool, header: bool) {
    let cols: Vec<(usize, &Value)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    if header {
        let mut h: Vec<String> = cols
            .iter()
            .map(|(_, c)| c["name"].as_str().unwrap_or("").to_uppercase())
            .collect();
        if with_ns {
            h.insert(0, "NAMESPACE".into());
        }
        rows.push(h);
    }
    for r in table["rows"].as_array().into_iter().flatten() {
        let mut line: Vec<String> = cols
            .iter()
            .map(|(i, _)| match &r["cells"][*i] {
                Value::String(s) => s.clone(),
                Value::Null => "<none>".into(),
                other => other.to_string(),
            })
            .collect();
        if with_ns {
            line.insert(
                0,
                r["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        rows.push(line);
    }
    if rows.len() == usize::from(header) && header {
        return;
    }
    let _ = write!(std::io::stdout().lock(), "{}", aligned(&rows));
}

/// Rows as kubectl prints them: columns padded to their widest cell, three spaces apart.
pub fn aligned(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn print_object(v: &Value, output: &str) -> Result<()> {
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "yaml" => print!("{}", serde_saphyr::to_string(v)?),
        "name" => println!("{}", v["metadata"]["name"].as_str().unwrap_or("")),
        other => bail!("unknown output format {other:?}: use wide, yaml, json or name"),
    }
    Ok(())
}

pub async fn get(kc: Option<PathBuf>, a: GetArgs) -> Result<()> {
    let (client, default_ns) = connect(kc).await?;
    let res = find_by_name(&client, &a.resource).await?;
    let ns = if a.all_namespaces {
        None
    } else {
        Some(a.namespace.clone().unwrap_or(default_ns))
    };
    let with_ns = a.all_namespaces && res.namespaced;
    let wide = a.output.as_deref() == Some("wide");
    let structured = a.output.as_deref().filter(|o| *o != "wide");
    let mut query = Vec::new();
    if let Some(s) = &a.selector {
        query.push(format!("labelSelector={}", urlencode(s)));
    }
    let base_url = match &a.name {
        Some(n) if !a.watch => res.item(ns.as_deref(), n),
        Some(n) => {
            query.push(format!("fieldSelector=metadata.name%3D{}", urlencode(n)));
            res.collection(ns.as_deref())
        }
        None => res.collection(ns.as_deref()),
    };
    let url = if query.is_empty() {
        base_url.clone()
    } else {
        format!("{base_url}?{}", query.join("&"))
    };
    let accept = if structured.is_some() {
        "application/json"
    } else {
        TABLE_ACCEPT
    };
    let req = http::Request::get(&url)
        .header("accept", accept)
        .body(Vec::new())?;
    let v = request_json(&client, req).await?;
    let mut rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    match structured {
        Some(o) => {
            if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) && a.name.is_some() {
                for item in v["items"].as_array().into_iter().flatten() {
                    print_object(item, o)?;
                }
            } else if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
                let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": v["items"]});
                print_object(&list, o)?;
            } else {
                print_object(&v, o)?;
            }
        }
        None => {
            if v["rows"].as_array().is_some_and(|r| r.is_empty()) && !a.watch {
                match &ns {
                    Some(ns) if res.namespaced => {
                        eprintln!("No resources found in {ns} namespace.")
                    }
                    _ => eprintln!("No resources found"),
                }
            }
            print_table(&v, wide, with_ns, true);
        }
    }
    if !a.watch {
        return Ok(());
    }
    loop {
        let mut q = query.clone();
        q.push("watch=true".into());
        q.push(format!("resourceVersion={rv}"));
        q.push("allowWatchBookmarks=true".into());
        let url = format!("{}?{}", res.collection(ns.as_deref()), q.join("&"));
        let req = http::Request::get(&url)
            .header("accept", accept)
            .body(Vec::new())?;
        let mut lines = client.request_stream(req).await.map_err(api_error)?.lines();
        while let Some(line) = lines.next().await {
            let line = line.context("watch stream broke")?;
            let ev: Value = serde_json::from_str(&line)
                .with_context(|| format!("undecodable watch event: {line}"))?;
            let obj = &ev["object"];
            match ev["type"].as_str() {
                Some("ERROR") => bail!("{}", obj["message"].as_str().unwrap_or("watch failed")),
                Some("BOOKMARK") => {}
                _ => match structured {
                    Some(o) => print_object(obj, o)?,
                    None => print_table(obj, wide, with_ns, false),
                },
            }
            if let Some(r) = obj["metadata"]["resourceVersion"]
                .as_str()
                .or_else(|| obj["rows"][0]["object"]["metadata"]["resourceVersion"].as_str())
            {
                rv = r.to_string();
            }
            let _ = std::io::stdout().flush();
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One object to delete: named by type, or by the apiVersion and kind of a file's document.
struct DeleteTarget {
    res: Option<ApiResource>,
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
}

/// How long `skiff delete` waits when `--timeout` is 0s, as kubectl's "a long time".
const WAIT_FOREVER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Deletes the objects; with `wait`, then waits (up to that long; zero: without a limit) until
/// each is gone or replaced by a new object of the same name, as `kubectl delete` does.
pub async fn delete(
    kc: Option<PathBuf>,
    resource: Option<String>,
    names: Vec<String>,
    files: &[String],
    ns: Option<&str>,
    grace: Option<i64>,
    wait: Option<std::time::Duration>,
) -> Result<()> {
    let by_type = resource
        .as_ref()
        .is_some_and(|r| !names.is_empty() || r.contains('/'));
    if by_type != files.is_empty() {
        bail!("give a type and names (skiff delete pod web) or files (skiff delete -f pod.yaml)");
    }
    let mut targets = Vec::new();
    let docs = if files.is_empty() {
        Vec::new()
    } else {
        load_docs(files)?
    };
    for d in docs {
        targets.push(DeleteTarget {
            res: None,
            api_version: d.value["apiVersion"].as_str().unwrap_or("").to_string(),
            kind: d.value["kind"].as_str().unwrap_or("").to_string(),
            name: d.value["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            namespace: d.value["metadata"]["namespace"]
                .as_str()
                .map(str::to_string),
        });
    }
    let (client, default_ns) = connect(kc).await?;
    if let Some(r) = resource.filter(|_| by_type) {
        let (ty, first) = match r.split_once('/') {
            Some((t, n)) => (t.to_string(), Some(n.to_string())),
            None => (r.clone(), None),
        };
        let res = find_by_name(&client, &ty).await?;
        for name in first.into_iter().chain(names) {
            targets.push(DeleteTarget {
                res: Some(res.clone()),
                api_version: String::new(),
                kind: String::new(),
                name,
                namespace: None,
            });
        }
    }
    let mut failed = 0;
    let mut deleted = Vec::new();
    for t in targets {
        let res = match t.res {
            Some(r) => r,
            None => match find_by_kind(&client, &t.api_version, &t.kind).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    failed += 1;
                    continue;
                }
            },
        };
        let ns = res.namespaced.then(|| {
            t.namespace
                .as_deref()
                .or(ns)
                .unwrap_or(&default_ns)
                .to_string()
        });
        let mut body =
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
        if let Some(g) = grace {
            body["gracePeriodSeconds"] = json!(g);
        }
        let req = http::Request::delete(res.item(ns.as_deref(), &t.name))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)?;
        match request_json(&client, req).await {
            Ok(obj) => {
                println!("{} \"{}\" deleted", res.display(), t.name);
                let uid = obj["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                deleted.push((res.item(ns.as_deref(), &t.name), res.display(), t.name, uid));
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if let Some(timeout) = wait {
        let deadline = tokio::time::Instant::now()
            + if timeout.is_zero() {
                WAIT_FOREVER
            } else {
                timeout
            };
        for (path, kind, name, uid) in deleted {
            if !wait_gone(&client, &path, &uid, deadline).await? {
                eprintln!("error: timed out waiting for {kind} \"{name}\" to be deleted");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Reported {
            count: failed,
            verb: "deleted",
        }
        .into());
    }
    Ok(())
}

/// Whether the object at `path` went (or a new one with another uid took its name) before
/// `deadline`.
async fn wait_gone(
    client: &Client,
    path: &str,
    uid: &str,
    deadline: tokio::time::Instant,
) -> Result<bool> {
    loop {
        let req = http::Request::get(path).body(Vec::new())?;
        match client.request::<Value>(req).await {
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(true),
            Err(e) => return Err(api_error(e)),
            Ok(obj) if !uid.is_empty() && obj["metadata"]["uid"] != uid => return Ok(true),
            Ok(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

pub async fn logs(
    kc: Option<PathBuf>,
    pod: &str,
    container: Option<&str>,
    ns: Option<&str>,
    follow: bool,
    tail: Option<i64>,
    previous: bool,
) -> Result<()> {
    let (client, default_ns) = connect(kc).await?;
    let ns = ns.unwrap_or(&default_ns);
    let pod = pod.strip_prefix("pod/").unwrap_or(pod);
    let mut q = Vec::new();
    if let Some(c) = container {
        q.push(format!("container={}", urlencode(c)));
    }
    if follow {
        q.push("follow=true".into());
    }
    if previous {
        q.push("previous=true".into());
    }
    if let Some(t) = tail {
        q.push(format!("tailLines={t}"));
    }
    let url = format!("/api/v1/namespaces/{ns}/pods/{pod}/log?{}", q.join("&"));
    let req = http::Request::get(&url).body(Vec::new())?;
    let mut stream = client.request_stream(req).await.map_err(api_error)?;
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = futures::AsyncReadExt::read(&mut stream, &mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        if out.is_terminal() || follow {
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::read_kubeconfig;

    #[test]
    fn bad_yaml_is_one_line_naming_the_file_and_the_place() {
        let dir = std::env::temp_dir().join(format!("skiff-yaml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.yaml");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: a: b\n",
        )
        .unwrap();
        let name = f.display().to_string();
        let msg = super::load_docs(std::slice::from_ref(&name))
            .unwrap_err()
            .to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with(&format!("{name}: invalid YAML: line 5 column ")),
            "{msg}"
        );
        assert!(!msg.contains("error:"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kubeconfig_errors_name_the_file_and_the_cause_once() {
        let dir = std::env::temp_dir().join(format!("skiff-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let msg = read_kubeconfig(&missing).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "cannot read kubeconfig {}: No such file or directory (os error 2) (is `skiff up` running? --kubeconfig or KUBECONFIG name another)",
                missing.display()
            )
        );
        let bad = dir.join("bad");
        std::fs::write(&bad, "clusters: [\n").unwrap();
        let msg = read_kubeconfig(&bad).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("invalid kubeconfig {}: ", bad.display()))
                && msg.matches(&bad.display().to_string()).count() == 1,
            "{msg}"
        );
        let good = dir.join("good");
        std::fs::write(
            &good,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:6443'}\n",
        )
        .unwrap();
        assert_eq!(read_kubeconfig(&good).unwrap().clusters.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
