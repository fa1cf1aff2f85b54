//! A TCP data-path benchmark for the service proxy: an echo server, and a client that measures
//! request/response round trips (`rr`: 64 bytes each way on connections kept open) or whole
//! connections (`crr`: connect, 64 bytes each way, close) against an address, so a Service's
//! cluster IP and its pod's own IP can be compared in one run (`e2e/bench/services.sh`).
//!
//! usage: tcp-bench serve PORT
//!        tcp-bench (rr|crr) HOST:PORT CONNECTIONS SECONDS
//! The client prints one line:
//! `mode=.. addr=.. connections=.. ops=.. errors=.. seconds=.. rate=../s p50_us=.. p99_us=..`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const MESSAGE: usize = 64;

async fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on port {port}"))?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; MESSAGE];
            while s.read_exact(&mut buf).await.is_ok() {
                if s.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn round_trip(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [7u8; MESSAGE];
    s.write_all(&buf).await?;
    s.read_exact(&mut buf).await?;
    Ok(())
}

async fn client(mode: &str, addr: SocketAddr, conns: usize, secs: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let errors = errors.clone();
        let keep = mode == "rr";
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let mut conn: Option<TcpStream> = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = async {
                    if conn.is_none() {
                        let s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        conn = Some(s);
                    }
                    let Some(s) = conn.as_mut() else {
                        unreachable!("connected above")
                    };
                    round_trip(s).await
                }
                .await;
                match r {
                    Ok(()) => lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
                if !keep {
                    conn = None;
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.is_empty() {
            return 0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i.min(all.len() - 1)]
    };
    println!(
        "mode={mode} addr={addr} connections={conns} ops={} errors={} seconds={elapsed:.1} rate={:.0}/s p50_us={} p99_us={}",
        all.len(),
        errors.load(Ordering::Relaxed),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let port = args.get(2).context("serve PORT")?.parse()?;
            serve(port).await
        }
        Some(mode @ ("rr" | "crr")) => {
            let (Some(addr), Some(conns), Some(secs)) = (args.get(2), args.get(3), args.get(4))
            else {
                bail!("usage: tcp-bench {mode} HOST:PORT CONNECTIONS SECONDS");
            };
            client(mode, addr.parse()?, conns.parse()?, secs.parse()?).await
        }
        _ => {
            bail!("usage: tcp-bench serve PORT | tcp-bench (rr|crr) HOST:PORT CONNECTIONS SECONDS")
        }
    }
}
