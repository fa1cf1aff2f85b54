//! The service proxy's sync cost at scale, for `e2e/bench/services.sh`: programs SERVICES
//! service ports with ENDPOINTS endpoints each through skiff's real dataplane (nftables over
//! netlink, in the network namespace it runs in), then changes one endpoint of a random
//! service ROUNDS times, syncing after each change as the agent does on an EndpointSlice
//! event, and prints the initial sync time and the per-change percentiles.
//!
//! usage: proxy-bench SERVICES ENDPOINTS ROUNDS   (as root, in a throwaway network namespace)

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use node_agent::proxy::model::{Endpoint, Protocol, ServicePort};
use node_agent::proxy::{Dataplane, NftDataplane, Options};

fn ports(services: usize, endpoints: usize) -> Vec<ServicePort> {
    (0..services)
        .map(|s| {
            let s32 = u32::try_from(s).unwrap_or(0);
            ServicePort {
                id: format!("bench/svc-{s}:http/tcp"),
                protocol: Protocol::Tcp,
                port: 80,
                cluster_ip: Ipv4Addr::from(0x0a60_0000 + 10 + s32),
                external_ips: Vec::new(),
                node_port: Some(30000 + u16::try_from(s % 2700).unwrap_or(0)),
                affinity_seconds: None,
                external_local: false,
                internal_local: false,
                endpoints: (0..endpoints)
                    .map(|e| Endpoint {
                        ip: Ipv4Addr::from(0x0a58_0000 + s32 * 16 + u32::try_from(e).unwrap_or(0)),
                        port: 8080,
                        local: e % 2 == 0,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .context("usage: proxy-bench SERVICES ENDPOINTS ROUNDS")
        })
        .collect::<Result<_>>()?;
    let [services, endpoints, rounds] = args[..] else {
        anyhow::bail!("usage: proxy-bench SERVICES ENDPOINTS ROUNDS");
    };
    let dp = NftDataplane::default();
    let mut state = ports(services, endpoints);
    let started = Instant::now();
    let changes = dp.sync(&state, Options::default()).await?;
    let initial = started.elapsed();
    let mut took = Vec::with_capacity(rounds);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let s = usize::try_from(seed % services as u64).unwrap_or(0);
        let e = round % endpoints;
        // A pod replaced: its endpoint gets a new address.
        state[s].endpoints[e].ip = Ipv4Addr::from(0x0b00_0000 + u32::try_from(round).unwrap_or(0));
        let t = Instant::now();
        dp.sync(&state, Options::default()).await?;
        took.push(t.elapsed());
    }
    took.sort();
    println!(
        "services={services} endpoints_each={endpoints} initial_ops={changes} initial_ms={:.1} rounds={rounds} change_p50_ms={:.1} change_p99_ms={:.1} change_max_ms={:.1}",
        initial.as_secs_f64() * 1000.0,
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        percentile(&took, 1.0),
    );
    Ok(())
}
