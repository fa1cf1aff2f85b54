//! A DNS load generator for `e2e/bench/dns.sh`: sends A queries for one name to one server at a
//! fixed rate over UDP for a number of seconds and prints how many were answered and the
//! latency percentiles, so skiff's cluster DNS and a reference server are measured alike.
//!
//! usage: dns-bench SERVER:PORT NAME RATE SECONDS
//! prints: `server=.. rate=.. sent=.. answered=.. p50_ms=.. p99_ms=.. max_ms=..`

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A query for `name`'s A record with id `id` and recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, name, rate, seconds] = &args[..] else {
        bail!("usage: dns-bench SERVER:PORT NAME RATE SECONDS");
    };
    let server: SocketAddr = server.parse().context("SERVER:PORT")?;
    let rate: u32 = rate.parse().context("RATE")?;
    let seconds: u32 = seconds.parse().context("SECONDS")?;
    let socket = Arc::new(tokio::net::UdpSocket::bind("0.0.0.0:0").await?);
    socket.connect(server).await?;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; 65536]));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let receiver = {
        let (socket, sent_at, latencies) = (socket.clone(), sent_at.clone(), latencies.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok(n) = socket.recv(&mut buf).await {
                if n < 12 || buf[3] & 0x0f != 0 {
                    continue;
                }
                let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                let at = sent_at.lock().ok().and_then(|mut s| s[id].take());
                if let (Some(at), Ok(mut l)) = (at, latencies.lock()) {
                    l.push(at.elapsed());
                }
            }
        })
    };
    let total = rate * seconds;
    let period = Duration::from_secs(1) / rate.max(1);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let id = u16::try_from(i % 65536).unwrap_or(0);
        if let Ok(mut s) = sent_at.lock() {
            s[usize::from(id)] = Some(Instant::now());
        }
        socket.send(&query(id, name)).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.abort();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "server={server} rate={rate}/s sent={total} answered={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        l.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
