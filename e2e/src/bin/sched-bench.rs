//! The scheduler benchmark's client: makes NODES Node objects (no agents behind them: Ready,
//! with allocatable cpu, memory and pods, spread over ten zones) cordoned, creates PODS pods
//! that wait for them, then uncordons every node and measures, from a watch on pods, how long
//! the scheduler takes to bind them all. This is how the figures in issue 13 were taken, so
//! the numbers compare.
//!
//! usage: sched-bench URL NODES PODS [CLIENTS]
//! Then it creates as many pods again while every node is open, and measures how fast they are
//! created with the scheduler at work, and how soon after the first create the last is bound.
//! Prints one line:
//! `nodes=.. pods=.. uncordon_s=.. bound=.. seconds=.. throughput=../s open_created=../s
//! open_bound=.. open_seconds=.. open_throughput=../s`
//! where `seconds` runs from the first uncordon to the last binding seen.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type Http = Client<HttpConnector, Full<bytes::Bytes>>;

async fn send(client: &Http, method: &str, url: &str, ctype: &str, body: String) -> Result<Value> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", ctype)
        .body(Full::new(bytes::Bytes::from(body)))?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "{method} {url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Runs `count` requests made by `make(i)` over `clients` concurrent connections.
async fn fan_out<F>(client: &Http, clients: usize, count: usize, make: F) -> Result<()>
where
    F: Fn(usize) -> (&'static str, String, &'static str, String) + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, make, client) = (next.clone(), make.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let (method, url, ctype, body) = make(i);
                send(&client, method, &url, ctype, body).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn node(i: usize) -> Value {
    let name = format!("bench-node-{i:05}");
    let res = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 10)}},
        "spec": {"unschedulable": true},
        "status": {"capacity": res, "allocatable": res, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench"}]},
    })
}

fn pod(round: &str, i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{round}-{i:05}"), "labels": {"app": round}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]},
    })
}

/// Counts the pods that get a node, from a watch opened at `rv`, until `want` have; returns
/// when the last one was seen.
async fn count_bound(
    url: String,
    round: &'static str,
    rv: String,
    want: usize,
) -> Result<(usize, Instant)> {
    let client: Client<HttpConnector, Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri = format!(
        "{url}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&labelSelector=app%3D{round}"
    );
    let req = http::Request::get(uri).body(Full::new(bytes::Bytes::new()))?;
    let mut body = client.request(req).await?.into_body();
    let mut seen = HashSet::new();
    let mut last = Instant::now();
    let mut buf = Vec::new();
    while seen.len() < want {
        let Some(frame) = body.frame().await else {
            bail!("the watch ended after {} bindings", seen.len());
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev: Value = serde_json::from_slice(&line).context("watch event")?;
            let obj = &ev["object"];
            let bound = obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            if bound && seen.insert(obj["metadata"]["name"].as_str().unwrap_or("").to_string()) {
                last = Instant::now();
            }
        }
    }
    Ok((seen.len(), last))
}

/// Starts counting the bindings of the pods of `round` from now on.
async fn watch_bindings(
    client: &Http,
    url: &str,
    round: &'static str,
    pods: usize,
) -> Result<tokio::task::JoinHandle<Result<(usize, Instant)>>> {
    let list = send(
        client,
        "GET",
        &format!("{url}/api/v1/namespaces/default/pods?limit=1"),
        "",
        String::new(),
    )
    .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let watcher = tokio::spawn(count_bound(url.to_string(), round, rv, pods));
    // The watch is open before anything it counts happens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(watcher)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        bail!("usage: sched-bench URL NODES PODS [CLIENTS]");
    }
    let url = args[1].trim_end_matches('/').to_string();
    let nodes: usize = args[2].parse().context("NODES")?;
    let pods: usize = args[3].parse().context("PODS")?;
    let clients: usize = args
        .get(4)
        .map_or(Ok(16), |c| c.parse())
        .context("CLIENTS")?;
    let client: Http = Client::builder(TokioExecutor::new()).build_http();

    let u = url.clone();
    fan_out(&client, clients, nodes, move |i| {
        (
            "POST",
            format!("{u}/api/v1/nodes"),
            "application/json",
            node(i).to_string(),
        )
    })
    .await
    .context("creating nodes")?;
    // A server that drops status on create (as some strategies do) gets it written apart.
    let first = send(
        &client,
        "GET",
        &format!("{url}/api/v1/nodes/bench-node-00000"),
        "",
        String::new(),
    )
    .await?;
    if first["status"]["allocatable"].is_null() {
        let u = url.clone();
        fan_out(&client, clients, nodes, move |i| {
            let n = node(i);
            let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
            let patch = json!({"status": n["status"]}).to_string();
            (
                "PATCH",
                format!("{u}/api/v1/nodes/{name}/status"),
                "application/merge-patch+json",
                patch,
            )
        })
        .await
        .context("writing node status")?;
    }
    let u = url.clone();
    fan_out(&client, clients, pods, move |i| {
        (
            "POST",
            format!("{u}/api/v1/namespaces/default/pods"),
            "application/json",
            pod("cordoned", i).to_string(),
        )
    })
    .await
    .context("creating pods")?;
    // Let the scheduler find every pod unschedulable before the nodes open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watcher = watch_bindings(&client, &url, "cordoned", pods).await?;

    let start = Instant::now();
    let u = url.clone();
    fan_out(&client, clients, nodes, move |i| {
        let patch = json!({"spec": {"unschedulable": false}}).to_string();
        (
            "PATCH",
            format!("{u}/api/v1/nodes/bench-node-{i:05}"),
            "application/merge-patch+json",
            patch,
        )
    })
    .await
    .context("uncordoning nodes")?;
    let uncordon = start.elapsed();
    let (bound, last) = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("pods still unbound after 600 s")???;
    let secs = last.saturating_duration_since(start).as_secs_f64();

    // The same number again, created while every node is open: how fast pods are created with
    // the scheduler at work, and how soon after the first create the last one is bound.
    let watcher = watch_bindings(&client, &url, "open", pods).await?;
    let start = Instant::now();
    let u = url.clone();
    fan_out(&client, clients, pods, move |i| {
        (
            "POST",
            format!("{u}/api/v1/namespaces/default/pods"),
            "application/json",
            pod("open", i).to_string(),
        )
    })
    .await
    .context("creating pods on open nodes")?;
    let created = start.elapsed().as_secs_f64();
    let (open_bound, open_last) = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("pods on open nodes still unbound after 600 s")???;
    let open_secs = open_last.saturating_duration_since(start).as_secs_f64();
    println!(
        "nodes={nodes} pods={pods} uncordon_s={:.2} bound={bound} seconds={secs:.2} throughput={:.0}/s \
         open_created={:.0}/s open_bound={open_bound} open_seconds={open_secs:.2} open_throughput={:.0}/s",
        uncordon.as_secs_f64(),
        bound as f64 / secs,
        pods as f64 / created,
        open_bound as f64 / open_secs,
    );
    Ok(())
}
