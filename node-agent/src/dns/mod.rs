//! Cluster DNS on every node (CoreDNS's job): the node agent answers the cluster's names
//! (`zone.rs`) at the cluster DNS address, which it makes an address of the node itself (on
//! the loopback link, as NodeLocal DNSCache binds its own address), so a pod's query never
//! leaves its node and the service proxy leaves that address alone. Other names are forwarded to
//! the node's own resolvers (from `--resolv-conf`), with their answers cached for their TTL
//! (at most 30 s). Messages are read and written with hickory-proto; `resolv.rs` says what
//! each pod's resolv.conf holds.

pub mod resolv;
pub mod zone;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use crate::services::ServiceView;
use zone::{Answer, Data, Kind, Zone};

/// The link that holds the cluster DNS address on the node.
pub const LINK: &str = "lo";
/// The TTL of the cluster's own records (CoreDNS's kubernetes plugin default).
const TTL: u32 = 5;
/// The longest a forwarded answer is kept.
const MAX_CACHE_TTL: u32 = 30;
const CACHE_ENTRIES: usize = 10_000;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes an address local to the node. The real one puts it on [`LINK`].
pub trait LocalAddress: Send + Sync + 'static {
    fn ensure(&self, ip: Ipv4Addr) -> BoxFuture<'_, Result<(), AgentError>>;
}

/// [`LocalAddress`] through rtnetlink: the address on the loopback link (a /32, which makes
/// it local without the dummy driver some kernels lack; unlike 127/8 it is routable, so pods
/// reach it through their gateway). Its scope is `host`, so the kernel never picks it as the
/// source of the node's own traffic (masquerading through lo would otherwise take it).
pub struct Loopback;

impl LocalAddress for Loopback {
    fn ensure(&self, ip: Ipv4Addr) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            let fail = |source| AgentError::DnsAddress {
                address: ip,
                source,
            };
            let conn = nlink::Connection::<nlink::Route>::new().map_err(fail)?;
            // Replace: idempotent, and it sets the scope of an address already there.
            conn.replace_address(
                nlink::netlink::addr::Ipv4Address::new(LINK, ip, 32)
                    .scope(nlink::netlink::types::addr::Scope::Host),
            )
            .await
            .map_err(fail)
        })
    }
}

impl Loopback {
    /// Takes the cluster DNS address off [`LINK`] (`skiff down`); whether it was there.
    pub async fn remove(ip: Ipv4Addr) -> Result<bool, AgentError> {
        let fail = |source| AgentError::DnsAddress {
            address: ip,
            source,
        };
        let conn = nlink::Connection::<nlink::Route>::new().map_err(fail)?;
        conn.del_address_if_exists(LINK, std::net::IpAddr::V4(ip), 32)
            .await
            .map_err(fail)
    }
}

/// Sends a query to the node's resolvers and returns the answer's bytes.
pub trait Upstream: Send + Sync + 'static {
    fn exchange(&self, query: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, std::io::Error>>;
}

/// The node's resolvers, over UDP (TCP when the answer was truncated), each in turn.
pub struct Resolvers(pub Vec<SocketAddr>);

async fn over_udp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
    } else {
        "[::]:0".parse().unwrap_or_else(|_| unreachable!())
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    buf.truncate(n);
    Ok(buf)
}

async fn over_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(query).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

impl Upstream for Resolvers {
    fn exchange(&self, query: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, std::io::Error>> {
        Box::pin(async move {
            let mut last = std::io::Error::other("no nameserver in the node's resolv.conf");
            for server in &self.0 {
                match over_udp(*server, &query).await {
                    // The TC bit: the whole answer needs TCP.
                    Ok(answer) if answer.get(2).is_some_and(|b| b & 0x02 != 0) => {
                        match over_tcp(*server, &query).await {
                            Ok(a) => return Ok(a),
                            Err(e) => last = e,
                        }
                    }
                    Ok(answer) => return Ok(answer),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

/// Forwarded answers by (name, type, class), with when they expire.
type Cache = HashMap<(String, u16, u16), (Instant, Message)>;

/// Answers DNS messages: the cluster's names from the zone, the rest through `upstream`.
pub struct Resolver<U: Upstream> {
    zone: RwLock<Option<Arc<Zone>>>,
    upstream: U,
    cache: std::sync::Mutex<Cache>,
    domain: String,
}

fn kind(t: RecordType) -> Kind {
    match t {
        RecordType::A | RecordType::ANY => Kind::A,
        RecordType::CNAME => Kind::Cname,
        RecordType::SRV => Kind::Srv,
        RecordType::PTR => Kind::Ptr,
        _ => Kind::Other,
    }
}

fn name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

impl<U: Upstream> Resolver<U> {
    pub fn new(domain: &str, upstream: U) -> Self {
        Self {
            zone: RwLock::new(None),
            upstream,
            cache: std::sync::Mutex::new(HashMap::new()),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// Replaces the zone; until the first, the cluster's names answer SERVFAIL.
    pub fn set_zone(&self, zone: Zone) {
        if let Ok(mut z) = self.zone.write() {
            *z = Some(Arc::new(zone));
        }
    }

    fn soa(&self) -> Option<Record> {
        let apex = name(&self.domain)?;
        let soa = SOA::new(
            name(&format!("ns.dns.{}", self.domain))?,
            name(&format!("hostmaster.{}", self.domain))?,
            1,
            7200,
            1800,
            86400,
            TTL,
        );
        Some(Record::from_rdata(apex, TTL, RData::SOA(soa)))
    }

    /// The answer to `request` (wire format), or `None` for what is not a DNS query at all.
    pub async fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(request).ok()?;
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.queries = req.queries.clone();
        if req.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            resp.edns = Some(edns);
        }
        let [query] = req.queries.as_slice() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp.to_vec().ok();
        };
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return resp.to_vec().ok();
        }
        let qname = query.name().to_ascii();
        let zone = self.zone.read().ok().and_then(|z| z.clone());
        let answer = match &zone {
            Some(z) => z.lookup(&qname, kind(query.query_type())),
            None if zone::in_domain(&self.domain, &qname) => {
                resp.metadata.response_code = ResponseCode::ServFail;
                return resp.to_vec().ok();
            }
            None => Answer::Outside,
        };
        match answer {
            Answer::Outside => return self.forward(&req, request).await,
            Answer::Records(data) => {
                resp.metadata.authoritative = true;
                let mut chase = None;
                for d in data {
                    let rdata = match d {
                        Data::A(ip) => RData::A(A(ip)),
                        Data::Cname(t) => {
                            chase = name(&t);
                            RData::CNAME(CNAME(name(&t)?))
                        }
                        Data::Srv { port, target } => {
                            RData::SRV(SRV::new(0, 100, port, name(&target)?))
                        }
                        Data::Ptr(t) => RData::PTR(PTR(name(&t)?)),
                    };
                    resp.answers
                        .push(Record::from_rdata(query.name().clone(), TTL, rdata));
                }
                // An ExternalName's target is resolved too, as CoreDNS does: clients get the
                // addresses with the CNAME.
                if let Some(target) = chase.filter(|_| query.query_type() != RecordType::CNAME) {
                    resp.answers.extend(
                        self.chase(target, query.query_type(), zone.as_deref())
                            .await,
                    );
                }
            }
            Answer::NoData => {
                resp.metadata.authoritative = true;
                resp.authorities.extend(self.soa());
            }
            Answer::NxDomain => {
                resp.metadata.authoritative = true;
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.authorities.extend(self.soa());
            }
        }
        resp.to_vec().ok()
    }

    /// The records a CNAME's `target` has for `qtype`: from the zone, or from the upstream
    /// (through the cache).
    async fn chase(&self, target: Name, qtype: RecordType, zone: Option<&Zone>) -> Vec<Record> {
        match zone.map(|z| z.lookup(&target.to_ascii(), kind(qtype))) {
            Some(Answer::Records(data)) => {
                return data
                    .into_iter()
                    .filter_map(|d| match d {
                        Data::A(ip) => {
                            Some(Record::from_rdata(target.clone(), TTL, RData::A(A(ip))))
                        }
                        _ => None,
                    })
                    .collect();
            }
            Some(Answer::NoData | Answer::NxDomain) => return Vec::new(),
            Some(Answer::Outside) | None => {}
        }
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(hickory_proto::op::Query::query(target, qtype));
        let Ok(bytes) = q.to_vec() else {
            return Vec::new();
        };
        self.forward(&q, &bytes)
            .await
            .and_then(|b| Message::from_vec(&b).ok())
            .map(|m| m.answers)
            .unwrap_or_default()
    }

    async fn forward(&self, req: &Message, request: &[u8]) -> Option<Vec<u8>> {
        let query = req.queries.first()?;
        let key = (
            query.name().to_ascii().to_ascii_lowercase(),
            u16::from(query.query_type()),
            u16::from(query.query_class()),
        );
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(&key)
                .filter(|(expires, _)| *expires > Instant::now())
                .map(|(_, m)| m.clone())
        });
        if let Some(mut m) = cached {
            m.metadata.id = req.metadata.id;
            return m.to_vec().ok();
        }
        match self.upstream.exchange(request.to_vec()).await {
            Ok(bytes) => {
                if let Ok(m) = Message::from_vec(&bytes) {
                    self.remember(key, m);
                }
                Some(bytes)
            }
            Err(e) => {
                tracing::debug!(name = %key.0, error = %e, "upstream DNS did not answer");
                let mut resp = Message::error_msg(
                    req.metadata.id,
                    req.metadata.op_code,
                    ResponseCode::ServFail,
                );
                resp.queries = req.queries.clone();
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.to_vec().ok()
            }
        }
    }

    fn remember(&self, key: (String, u16, u16), m: Message) {
        let ttl = match m.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => m
                .answers
                .iter()
                .chain(&m.authorities)
                .map(|r| r.ttl)
                .min()
                .unwrap_or(TTL)
                .min(MAX_CACHE_TTL),
            _ => return,
        };
        if ttl == 0 || m.metadata.truncation {
            return;
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_ENTRIES {
                let now = Instant::now();
                c.retain(|_, (expires, _)| *expires > now);
                if c.len() >= CACHE_ENTRIES {
                    c.clear();
                }
            }
            c.insert(
                key,
                (Instant::now() + Duration::from_secs(u64::from(ttl)), m),
            );
        }
    }
}

/// Where and how the node serves DNS.
#[derive(Debug, Clone)]
pub struct DnsServe {
    pub address: Ipv4Addr,
    pub domain: String,
    pub upstreams: Vec<SocketAddr>,
}

/// The nameservers of a resolv.conf as socket addresses on port 53.
pub fn upstreams(conf: &resolv::ResolvConf) -> Vec<SocketAddr> {
    conf.nameservers
        .iter()
        .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// An error and its causes on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Makes `ip` local and binds port 53 on it, UDP and TCP. With SO_REUSEPORT: two agents in
/// one network namespace (a second node on the same host) both answer, the kernel spreading
/// queries between them.
async fn listen(
    local: &dyn LocalAddress,
    ip: Ipv4Addr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), AgentError> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen as sock_listen,
        setsockopt, socket, sockopt,
    };
    local.ensure(ip).await?;
    let addr = SocketAddr::new(ip.into(), 53);
    let fail = |e: nix::Error| AgentError::DnsListen {
        address: addr,
        source: std::io::Error::from(e),
    };
    let sa = SockaddrIn::from(std::net::SocketAddrV4::new(ip, 53));
    let open = |ty: SockType| -> Result<std::os::fd::OwnedFd, AgentError> {
        let fd = socket(
            AddressFamily::Inet,
            ty,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(fail)?;
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(fail)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(fail)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &sa).map_err(fail)?;
        Ok(fd)
    };
    let udp = std::net::UdpSocket::from(open(SockType::Datagram)?);
    let tcp_fd = open(SockType::Stream)?;
    sock_listen(&tcp_fd, Backlog::new(128).map_err(fail)?).map_err(fail)?;
    let tcp = std::net::TcpListener::from(tcp_fd);
    let io = |source| AgentError::DnsListen {
        address: addr,
        source,
    };
    Ok((
        tokio::net::UdpSocket::from_std(udp).map_err(io)?,
        tokio::net::TcpListener::from_std(tcp).map_err(io)?,
    ))
}

/// Serves DNS on `cfg.address` port 53 (UDP and TCP) until `cancel`.
pub async fn run(
    view: ServiceView,
    cfg: DnsServe,
    local: Arc<dyn LocalAddress>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let addr = SocketAddr::new(cfg.address.into(), 53);
    // A node keeps running without DNS (as a kubelet does without CoreDNS), retrying.
    let mut delay = Duration::from_secs(1);
    let (udp, tcp) = loop {
        match listen(local.as_ref(), cfg.address).await {
            Ok(sockets) => break sockets,
            Err(e) => {
                tracing::warn!(error = %with_causes(&e), retry_in = ?delay, "cluster DNS cannot start");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let udp = Arc::new(udp);
    tracing::info!(%addr, domain = %cfg.domain, upstreams = ?cfg.upstreams, "cluster DNS serving");
    let resolver = Arc::new(Resolver::new(&cfg.domain, Resolvers(cfg.upstreams.clone())));
    let zone_task = {
        let (resolver, cancel, domain) = (resolver.clone(), cancel.clone(), cfg.domain.clone());
        async move {
            let mut changes = view.changes();
            tokio::select! {
                _ = cancel.cancelled() => return,
                listed = view.wait_listed() => if !listed { return },
            }
            loop {
                changes.mark_unchanged();
                let svcs = view.services.state();
                let eps = view.slices.state();
                resolver.set_zone(Zone::build(
                    &domain,
                    svcs.iter().map(AsRef::as_ref),
                    eps.iter().map(AsRef::as_ref),
                ));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                }
            }
        }
    };
    tokio::spawn(zone_task);
    let mut buf = vec![0u8; 65535];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            got = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let request = buf[..n].to_vec();
                let (udp, resolver) = (udp.clone(), resolver.clone());
                tokio::spawn(async move {
                    if let Some(answer) = resolver.answer(&request).await {
                        let answer = fit_udp(&request, answer);
                        let _ = udp.send_to(&answer, from).await;
                    }
                });
            }
            conn = tcp.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let (resolver, cancel) = (resolver.clone(), cancel.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = serve_tcp(stream, &resolver) => {}
                    }
                });
            }
        }
    }
}

/// A UDP answer larger than the client takes (512 bytes, or its EDNS size) goes out
/// truncated (TC set, no records), so the client asks again over TCP.
fn fit_udp(request: &[u8], answer: Vec<u8>) -> Vec<u8> {
    let limit = Message::from_vec(request)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload().max(512))))
        .unwrap_or(512);
    if answer.len() <= limit {
        return answer;
    }
    match Message::from_vec(&answer) {
        Ok(m) => {
            let mut t = m.truncate();
            t.metadata.truncation = true;
            t.to_vec().unwrap_or(answer)
        }
        Err(_) => answer,
    }
}

async fn serve_tcp<U: Upstream>(mut stream: tokio::net::TcpStream, resolver: &Resolver<U>) {
    loop {
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), stream.read_u16()).await
        else {
            return;
        };
        let mut request = vec![0u8; usize::from(n)];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(answer) = resolver.answer(&request).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        if stream.write_all(&len.to_be_bytes()).await.is_err()
            || stream.write_all(&answer).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
