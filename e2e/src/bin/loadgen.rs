//! A write load generator for the store benchmark: N concurrent clients each send sequential
//! writes of a fixed-size value over HTTP/1.1 keep-alive, and the run prints throughput and
//! latency percentiles. Two targets speak the same way so they can be compared in one run:
//! skiff's Kubernetes API (POST a ConfigMap) and etcd's v3 JSON gateway (`POST /v3/kv/put`).
//!
//! usage: loadgen (k8s|etcd) URL[,URL...] CLIENTS TOTAL VALUE_BYTES
//! Each client sends its writes to the URLs in turn, starting at a different one, so every
//! member (the leader and the followers alike) takes the same share at any client count:
//! with one URL per member, a single client's figure does not hang on whether the member it
//! happened to use leads. Prints one line:
//! `target=.. clients=.. writes=.. errors=.. seconds=.. throughput=../s p50_ms=.. p99_ms=..`
//! With `LOADGEN_RAW=FILE` set it also appends every write's latency (µs, one per line) to FILE,
//! so runs split into rounds can be summed up with exact percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    K8s,
    Etcd,
}

fn body(target: Target, key: &str, value: &str) -> (String, String) {
    match target {
        Target::K8s => (
            "/api/v1/namespaces/default/configmaps".to_string(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": key},
                "data": {"v": value},
            })
            .to_string(),
        ),
        Target::Etcd => {
            let b64 = base64::engine::general_purpose::STANDARD;
            (
                "/v3/kv/put".to_string(),
                serde_json::json!({"key": b64.encode(format!("/bench/{key}")), "value": b64.encode(value)})
                    .to_string(),
            )
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: loadgen (k8s|etcd) URL[,URL...] CLIENTS TOTAL VALUE_BYTES");
    }
    let target = match args[1].as_str() {
        "k8s" => Target::K8s,
        "etcd" => Target::Etcd,
        other => bail!("unknown target {other:?}: k8s or etcd"),
    };
    let urls: Vec<String> = args[2]
        .split(',')
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    let clients: usize = args[3].parse().context("CLIENTS")?;
    let total: u64 = args[4].parse().context("TOTAL")?;
    let size: usize = args[5].parse().context("VALUE_BYTES")?;
    let value = "x".repeat(size);
    let run_id = std::process::id();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let urls = urls.clone();
        let (next, errors, value) = (next.clone(), errors.clone(), value.clone());
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Full<bytes::Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let mut lat = Vec::new();
            for turn in c.. {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let url = &urls[turn % urls.len()];
                let key = format!("bench-{run_id}-{i}");
                let (path, json) = body(target, &key, &value);
                let req = http::Request::post(format!("{url}{path}"))
                    .header("content-type", "application/json")
                    .body(Full::new(bytes::Bytes::from(json)));
                let Ok(req) = req else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await;
                        if !status.is_success() && first_error.lock().is_ok_and(|f| f.is_none()) {
                            let text = body
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                .unwrap_or_default();
                            if let Ok(mut f) = first_error.lock() {
                                *f = Some(format!("{status}: {text}"));
                            }
                        }
                        status.is_success()
                    }
                    Err(e) => {
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert_with(|| e.to_string());
                        }
                        false
                    }
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(path) = std::env::var_os("LOADGEN_RAW") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("LOADGEN_RAW {}", path.to_string_lossy()))?;
        let lines: String = all.iter().map(|d| format!("{}\n", d.as_micros())).collect();
        f.write_all(lines.as_bytes()).context("LOADGEN_RAW")?;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "target={} clients={clients} writes={} errors={} seconds={secs:.2} throughput={:.0}/s p50_ms={:.2} p99_ms={:.2}",
        args[1],
        all.len(),
        errors.load(Ordering::Relaxed),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    if let Ok(Some(e)) = first_error.lock().map(|f| f.clone()) {
        eprintln!("first error: {e}");
    }
    Ok(())
}
