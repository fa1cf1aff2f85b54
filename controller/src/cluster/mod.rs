//! Control-plane members talking to each other: the gRPC `Peer` service (forwarded proposals,
//! membership management, and raft batches from older members), raft messages on connections of
//! their own on the same port ([`raftstream`]), the outgoing `GrpcTransport` (one task per peer
//! with a bounded queue, reconnecting with back-off, dropping on overflow: raft retries), and
//! how `--initial-members` is parsed into raft ids.
//!
//! Raft ids are derived from member names (`store::member_id`, FNV-1a), so every member computes
//! the same ids from the same list in any order, and a member added later by name gets its id
//! the same way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{ConfChangeV2, Message};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::store::transport::{BoxFuture, Forward, Forwarded, Transport};
use crate::store::{Applied, Command, MemberInfo, Store, StoreError, member_id};

mod raftstream;

use raftstream::Outgoing;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("skiff.peer.v1");
}

use proto::forward_error::Kind;
use proto::peer_client::PeerClient;
use proto::peer_server::{Peer, PeerServer};

/// How many raft messages wait for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Raft messages sent to a peer in one `Step` call, at most.
const BATCH: usize = 256;
/// How often an idle peer connection is pinged, and how long an unanswered ping may take before
/// the connection is dropped (its calls fail and the next call reconnects).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the peer service and the member commands.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid member list entry {entry:?}: want name=host:port")]
    BadMember { entry: String },
    #[error("this member's name {name:?} is not in --initial-members")]
    NotInMembers { name: String },
    #[error("invalid peer address {addr}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot reach member at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("member at {addr} refused: {status}")]
    Rpc { addr: String, status: String },
    #[error("peer server on {addr}: {reason}")]
    Serve { addr: SocketAddr, reason: String },
}

/// How a member of a multi-member control plane runs.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This member's name; its raft id is `member_id(name)`.
    pub name: String,
    /// Where the peer gRPC service listens.
    pub peer_listen: SocketAddr,
    /// The initial members, this one included, as (name, peer address).
    pub initial_members: Vec<(String, String)>,
    /// True for a member added with `skiff controller member add`: it starts empty and is
    /// caught up by a snapshot from the leader.
    pub join: bool,
}

impl ClusterConfig {
    /// The initial members with their raft ids.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.initial_members
            .iter()
            .map(|(name, addr)| MemberInfo {
                id: member_id(name),
                name: name.clone(),
                peer_addr: addr.clone(),
            })
            .collect()
    }
}

/// Parses `name1=host:port,name2=host:port`.
pub fn parse_members(list: &str) -> Result<Vec<(String, String)>, ClusterError> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((n, a)) if !n.is_empty() && a.contains(':') => {
                Ok((n.trim().to_string(), a.trim().to_string()))
            }
            _ => Err(ClusterError::BadMember {
                entry: entry.to_string(),
            }),
        })
        .collect()
}

fn endpoint(addr: &str) -> Result<Endpoint, ClusterError> {
    let url = if addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| ClusterError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(1))
        // A peer cut off by the network never resets the connection: without pings, calls on
        // it (raft batches, forwarded proposals) would hang until TCP gives up, minutes later.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

struct PeerHandle {
    addr: String,
    queue: mpsc::Sender<Outgoing>,
    /// Whether the raft connection to the peer is up: forwards go on it only then.
    connected: Arc<AtomicBool>,
    client: PeerClient<Channel>,
}

/// Forwards sent on raft connections, by id, waiting for the leader's answer.
type Waiters = HashMap<u64, oneshot::Sender<Result<proto::ForwardResponse, StoreError>>>;
type Pending = Arc<Mutex<Waiters>>;

fn waiting(pending: &Pending) -> std::sync::MutexGuard<'_, Waiters> {
    // Entries are inserted and removed whole, so a poisoned map is still consistent.
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

fn settle(pending: &Pending, id: u64, outcome: Result<proto::ForwardResponse, StoreError>) {
    let waiter = waiting(pending).remove(&id);
    if let Some(tx) = waiter {
        let _ = tx.send(outcome);
    }
}

/// The transport between member processes.
pub struct GrpcTransport {
    me: u64,
    /// Where the peers' connection tasks run (the raft thread's runtime).
    runtime: tokio::runtime::Handle,
    peers: RwLock<HashMap<u64, PeerHandle>>,
    pending: Pending,
    next_forward: AtomicU64,
    cancel: CancellationToken,
}

impl GrpcTransport {
    /// A transport knowing `members` (this member, `me`, is skipped). Each peer gets a sending
    /// task on `runtime`, stopped by `cancel`.
    pub fn new(
        me: u64,
        members: &[MemberInfo],
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let t = Arc::new(Self {
            me,
            runtime,
            peers: RwLock::new(HashMap::new()),
            pending: Arc::default(),
            next_forward: AtomicU64::new(1),
            cancel,
        });
        for m in members {
            t.set_peer(m.id, Some(m.peer_addr.clone()));
        }
        t
    }

    fn client(&self, id: u64) -> Option<PeerClient<Channel>> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.get(&id).map(|p| p.client.clone())
    }

    /// Queues a write for leader `to` on the raft connection, if it is up: the answer's
    /// receiver, or `None` to use the gRPC call instead.
    fn forward_on_connection(
        &self,
        to: u64,
        cmd: &Command,
    ) -> Option<oneshot::Receiver<Result<proto::ForwardResponse, StoreError>>> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let peer = peers.get(&to)?;
        if !peer.connected.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next_forward.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiting(&self.pending).insert(id, tx);
        let item = Outgoing::Forward {
            id,
            from: self.me,
            command: cmd.encode(),
        };
        if peer.queue.try_send(item).is_err() {
            waiting(&self.pending).remove(&id);
            return None;
        }
        Some(rx)
    }

    /// Sends the answer to forward `id` back to member `to`; lost if there is no connection,
    /// as an answer on a broken gRPC call would be.
    fn answer(&self, to: u64, id: u64, response: Vec<u8>) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get(&to)
            && p.queue.try_send(Outgoing::Answer { id, response }).is_err()
        {
            tracing::debug!(
                peer = p.addr,
                "peer queue full; dropping a forward's answer"
            );
        }
    }
}

/// What the answer to a forward says.
fn forwarded(resp: proto::ForwardResponse) -> Result<Forwarded, StoreError> {
    if let Some(e) = resp.error {
        return Err(error_from_wire(&e));
    }
    let applied = Applied::decode(&resp.applied)
        .ok_or_else(|| StoreError::Raft("undecodable forwarded answer".into()))?;
    Ok(Forwarded {
        index: resp.index,
        applied,
    })
}

/// Sends one peer's queue in batches on a raft connection of its own ([`raftstream`]); when the
/// connection breaks, waits (doubling up to 2 s), drops what queued meanwhile (raft resends what
/// matters; queued forwards fail as never sent) and dials again. Forwards sent on a connection
/// that breaks fail as sent without an answer.
async fn peer_loop(
    id: u64,
    addr: String,
    mut rx: mpsc::Receiver<Outgoing>,
    connected: Arc<AtomicBool>,
    pending: Pending,
    cancel: CancellationToken,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut backoff = Duration::from_millis(100);
    let mut buf = Vec::new();
    loop {
        let dialled = tokio::select! {
            _ = cancel.cancelled() => return,
            c = raftstream::connect(&addr) => c,
        };
        let mut sent_any = false;
        // Forwards written on this connection whose answers may still come.
        let mut in_flight: Vec<u64> = Vec::new();
        let reason = match dialled {
            Err(e) => e.to_string(),
            Ok(stream) => {
                let (mut read, mut write) = stream.into_split();
                connected.store(true, Ordering::Release);
                let mut byte = [0u8; 1];
                let reason = loop {
                    let first = tokio::select! {
                        _ = cancel.cancelled() => return,
                        // The peer never writes on this connection: a read ends only when it
                        // closes or resets it.
                        r = read.read(&mut byte) => break match r {
                            Ok(_) => "the peer closed the connection".to_string(),
                            Err(e) => e.to_string(),
                        },
                        m = rx.recv() => match m {
                            Some(m) => m,
                            None => return,
                        },
                    };
                    let mut batch = vec![first];
                    while batch.len() < BATCH
                        && let Ok(m) = rx.try_recv()
                    {
                        batch.push(m);
                    }
                    if in_flight.len() > 64 {
                        let waiting = waiting(&pending);
                        in_flight.retain(|f| waiting.contains_key(f));
                    }
                    in_flight.extend(batch.iter().filter_map(|m| match m {
                        Outgoing::Forward { id, .. } => Some(*id),
                        _ => None,
                    }));
                    buf.clear();
                    raftstream::encode(&batch, &mut buf);
                    let written = tokio::select! {
                        _ = cancel.cancelled() => return,
                        w = write.write_all(&buf) => w,
                    };
                    match written {
                        Ok(()) => sent_any = true,
                        Err(e) => break e.to_string(),
                    }
                };
                connected.store(false, Ordering::Release);
                reason
            }
        };
        for f in in_flight {
            settle(&pending, f, Err(StoreError::NoAnswer { id }));
        }
        tracing::debug!(peer = id, %addr, error = %reason, "raft connection ended");
        if sent_any {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        // What queued up meanwhile is stale; raft will resend, and a forward was never sent.
        while let Ok(m) = rx.try_recv() {
            if let Outgoing::Forward { id: f, .. } = m {
                settle(&pending, f, Err(StoreError::Unreachable { id }));
            }
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        for m in messages {
            match peers.get(&m.to) {
                Some(p) => {
                    if p.queue.try_send(Outgoing::Raft(m)).is_err() {
                        tracing::debug!(peer = p.addr, "peer queue full; dropping a raft message");
                    }
                }
                None => tracing::debug!(to = m.to, "no address for raft peer"),
            }
        }
    }

    fn forward(&self, to: u64, req: Forward) -> BoxFuture<Result<Forwarded, StoreError>> {
        // Writes go on the raft connection when it is up: no HTTP/2 on the way there or back.
        if let Forward::Write(cmd) = &req
            && let Some(answer) = self.forward_on_connection(to, cmd)
        {
            return Box::pin(async move {
                match answer.await {
                    Ok(Ok(resp)) => forwarded(resp),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(StoreError::NoAnswer { id: to }),
                }
            });
        }
        let client = self.client(to);
        Box::pin(async move {
            let mut client = client.ok_or(StoreError::Unreachable { id: to })?;
            let request = match req {
                Forward::Write(cmd) => proto::forward_request::Request::Write(cmd.encode()),
                Forward::Conf(cc) => proto::forward_request::Request::ConfChange(
                    cc.write_to_bytes()
                        .map_err(|e| StoreError::Raft(e.to_string()))?,
                ),
            };
            let resp = client
                .forward(proto::ForwardRequest {
                    request: Some(request),
                })
                .await
                .map_err(|status| {
                    let sent = !never_sent(&status);
                    tracing::debug!(to, sent, error = %status.message(), "forward failed");
                    if sent {
                        StoreError::NoAnswer { id: to }
                    } else {
                        StoreError::Unreachable { id: to }
                    }
                })?
                .into_inner();
            forwarded(resp)
        })
    }

    fn set_peer(&self, id: u64, addr: Option<String>) {
        if id == self.me {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        let Some(addr) = addr else {
            peers.remove(&id);
            return;
        };
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let client = match endpoint(&addr) {
            Ok(ep) => PeerClient::new(ep.connect_lazy()),
            Err(e) => {
                tracing::warn!(peer = id, error = %e, "ignoring a peer with a bad address");
                return;
            }
        };
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        self.runtime.spawn(peer_loop(
            id,
            addr.clone(),
            rx,
            connected.clone(),
            self.pending.clone(),
            self.cancel.clone(),
        ));
        tracing::info!(peer = id, %addr, "raft peer");
        peers.insert(
            id,
            PeerHandle {
                addr,
                queue: tx,
                connected,
                client,
            },
        );
    }
}

/// True when an RPC failed before anything reached the peer: tonic wraps every failure to open a
/// connection (refused, no route, connect timeout) in a `ConnectError`, kept in the status's
/// source chain. Anything else (a connection lost mid-call, a keepalive timeout) may have
/// delivered the request.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn error_to_wire(e: &StoreError) -> proto::ForwardError {
    let (kind, leader) = match e {
        StoreError::NotLeader { leader } => (Kind::NotLeader, leader.unwrap_or(0)),
        StoreError::NoLeader => (Kind::NoLeader, 0),
        StoreError::ProposalDropped => (Kind::ProposalDropped, 0),
        StoreError::Timeout => (Kind::Timeout, 0),
        StoreError::Stopped => (Kind::Stopped, 0),
        _ => (Kind::Other, 0),
    };
    proto::ForwardError {
        kind: kind as i32,
        message: e.to_string(),
        leader,
    }
}

fn error_from_wire(e: &proto::ForwardError) -> StoreError {
    match Kind::try_from(e.kind).unwrap_or(Kind::Other) {
        Kind::NotLeader => StoreError::NotLeader {
            leader: Some(e.leader).filter(|l| *l != 0),
        },
        Kind::NoLeader => StoreError::NoLeader,
        Kind::ProposalDropped => StoreError::ProposalDropped,
        // The leader stopped while the proposal may already have been in its log: not known.
        Kind::Timeout | Kind::Stopped => StoreError::Timeout,
        Kind::Other => StoreError::Raft(e.message.clone()),
    }
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::NotLeader { .. }
        | StoreError::NoLeader
        | StoreError::Stopped
        | StoreError::Unreachable { .. } => Status::unavailable(e.to_string()),
        StoreError::Timeout | StoreError::NoAnswer { .. } => {
            Status::deadline_exceeded(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// The `Peer` service of one member.
pub struct PeerService {
    store: Store,
    inbox: mpsc::Sender<Message>,
    initial: Vec<MemberInfo>,
    /// Ends the long-lived raft streams, which a graceful shutdown would otherwise wait for.
    cancel: CancellationToken,
}

impl PeerService {
    pub fn new(
        store: Store,
        inbox: mpsc::Sender<Message>,
        initial: Vec<MemberInfo>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            store,
            inbox,
            initial,
            cancel,
        }
    }

    /// Hands a batch of encoded raft messages to the node loop.
    fn deliver(&self, batch: Vec<Vec<u8>>) {
        for b in batch {
            raftstream::deliver(&b, &self.inbox);
        }
    }

    /// Initial and added members, by id.
    fn known(&self) -> HashMap<u64, MemberInfo> {
        self.initial
            .iter()
            .cloned()
            .chain(self.store.added_members())
            .map(|m| (m.id, m))
            .collect()
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn step(
        &self,
        req: Request<proto::StepRequest>,
    ) -> Result<Response<proto::StepResponse>, Status> {
        self.deliver(req.into_inner().messages);
        Ok(Response::new(proto::StepResponse {}))
    }

    async fn step_stream(
        &self,
        req: Request<tonic::Streaming<proto::StepRequest>>,
    ) -> Result<Response<proto::StepResponse>, Status> {
        let mut stream = req.into_inner();
        loop {
            let batch = tokio::select! {
                _ = self.cancel.cancelled() => break,
                b = stream.message() => b?,
            };
            let Some(batch) = batch else { break };
            self.deliver(batch.messages);
        }
        Ok(Response::new(proto::StepResponse {}))
    }

    async fn forward(
        &self,
        req: Request<proto::ForwardRequest>,
    ) -> Result<Response<proto::ForwardResponse>, Status> {
        let fwd = match req.into_inner().request {
            Some(proto::forward_request::Request::Write(b)) => Forward::Write(
                Command::decode(&b).ok_or_else(|| Status::invalid_argument("bad command"))?,
            ),
            Some(proto::forward_request::Request::ConfChange(b)) => Forward::Conf(
                ConfChangeV2::parse_from_bytes(&b)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
            None => return Err(Status::invalid_argument("empty forward request")),
        };
        Ok(Response::new(forward_response(
            self.store.propose_here(fwd).await,
        )))
    }

    async fn add_member(
        &self,
        req: Request<proto::AddMemberRequest>,
    ) -> Result<Response<proto::MemberResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() || !r.peer_addr.contains(':') {
            return Err(Status::invalid_argument("want a name and a host:port"));
        }
        let id = member_id(&r.name);
        self.store
            .add_member(MemberInfo {
                id,
                name: r.name,
                peer_addr: r.peer_addr,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(proto::MemberResponse { id }))
    }

    async fn remove_member(
        &self,
        req: Request<proto::RemoveMemberRequest>,
    ) -> Result<Response<proto::MemberResponse>, Status> {
        let id = member_id(&req.into_inner().name);
        self.store.remove_member(id).await.map_err(status)?;
        Ok(Response::new(proto::MemberResponse { id }))
    }

    async fn list_members(
        &self,
        _: Request<proto::ListMembersRequest>,
    ) -> Result<Response<proto::ListMembersResponse>, Status> {
        let st = self.store.status();
        let known = self.known();
        let members = st
            .voters
            .iter()
            .map(|id| (*id, true))
            .chain(st.learners.iter().map(|id| (*id, false)))
            .map(|(id, voter)| {
                let m = known.get(&id);
                proto::Member {
                    id,
                    name: m.map(|m| m.name.clone()).unwrap_or_default(),
                    peer_addr: m.map(|m| m.peer_addr.clone()).unwrap_or_default(),
                    is_leader: st.leader == Some(id),
                    voter,
                }
            })
            .collect();
        Ok(Response::new(proto::ListMembersResponse { members }))
    }
}

fn forward_response(r: Result<Forwarded, StoreError>) -> proto::ForwardResponse {
    match r {
        Ok(f) => proto::ForwardResponse {
            index: f.index,
            applied: f.applied.encode(),
            error: None,
        },
        Err(e) => proto::ForwardResponse {
            index: 0,
            applied: Vec::new(),
            error: Some(error_to_wire(&e)),
        },
    }
}

/// Forwards and answers that arrive on raft connections: a forward is proposed here (this
/// member leads, or answers why not) and answered on this member's connection to the sender;
/// an answer settles the forward this member sent.
struct PeerFrames {
    store: Store,
    transport: Arc<GrpcTransport>,
}

impl raftstream::Frames for PeerFrames {
    fn forward(&self, from: u64, id: u64, command: Vec<u8>) {
        let (store, transport) = (self.store.clone(), self.transport.clone());
        tokio::spawn(async move {
            let result = match Command::decode(&command) {
                Some(cmd) => store.propose_here(Forward::Write(cmd)).await,
                None => Err(StoreError::Raft("undecodable forwarded command".into())),
            };
            let response = prost::Message::encode_to_vec(&forward_response(result));
            transport.answer(from, id, response);
        });
    }

    fn answer(&self, id: u64, response: Vec<u8>) {
        let outcome = <proto::ForwardResponse as prost::Message>::decode(response.as_slice())
            .map_err(|e| StoreError::Raft(format!("undecodable forward answer: {e}")));
        settle(&self.transport.pending, id, outcome);
    }
}

/// Serves the peer service on `listener` until `cancel` fires; raft connections are read on the
/// transport's runtime, and forwards arriving on them are answered through `transport`.
pub async fn serve(
    service: PeerService,
    listener: tokio::net::TcpListener,
    transport: Arc<GrpcTransport>,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let addr = listener.local_addr().map_err(|e| ClusterError::Serve {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        reason: e.to_string(),
    })?;
    tracing::info!(%addr, "peer service listening");
    // Raft connections are read by `raftstream`; the rest, with TCP_NODELAY set (tonic's own
    // setting does not apply to a supplied listener, and without it answers to forwarded writes
    // sit in Nagle's buffer until the peer's delayed ACK, 40 ms later), go to the gRPC server.
    let (grpc, incoming) = mpsc::channel(64);
    let runtime = transport.runtime.clone();
    let frames = Arc::new(PeerFrames {
        store: service.store.clone(),
        transport,
    });
    runtime.spawn(raftstream::accept(
        listener,
        service.inbox.clone(),
        frames,
        grpc,
        cancel.clone(),
    ));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
    Server::builder()
        .add_service(PeerServer::new(service))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
        .map_err(|e| ClusterError::Serve {
            addr,
            reason: e.to_string(),
        })
}

async fn connect(addr: &str) -> Result<PeerClient<Channel>, ClusterError> {
    let ch = endpoint(addr)?
        .connect()
        .await
        .map_err(|e| ClusterError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    Ok(PeerClient::new(ch))
}

fn rpc_err(addr: &str) -> impl Fn(Status) -> ClusterError + '_ {
    move |s| ClusterError::Rpc {
        addr: addr.to_string(),
        status: s.message().to_string(),
    }
}

/// `skiff controller member add`: asks the member at `via` to add `name` at `peer_addr`.
pub async fn member_add(via: &str, name: &str, peer_addr: &str) -> Result<u64, ClusterError> {
    let r = connect(via)
        .await?
        .add_member(proto::AddMemberRequest {
            name: name.to_string(),
            peer_addr: peer_addr.to_string(),
        })
        .await
        .map_err(rpc_err(via))?;
    Ok(r.into_inner().id)
}

/// `skiff controller member remove`.
pub async fn member_remove(via: &str, name: &str) -> Result<u64, ClusterError> {
    let r = connect(via)
        .await?
        .remove_member(proto::RemoveMemberRequest {
            name: name.to_string(),
        })
        .await
        .map_err(rpc_err(via))?;
    Ok(r.into_inner().id)
}

/// `skiff controller member list`.
pub async fn member_list(via: &str) -> Result<Vec<proto::Member>, ClusterError> {
    let r = connect(via)
        .await?
        .list_members(proto::ListMembersRequest {})
        .await
        .map_err(rpc_err(via))?;
    Ok(r.into_inner().members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_parse_and_ids_do_not_depend_on_order() {
        let a = parse_members("a=127.0.0.1:7001, b=127.0.0.1:7002").unwrap();
        assert_eq!(a[1], ("b".to_string(), "127.0.0.1:7002".to_string()));
        assert!(parse_members("a=127.0.0.1:7001,b").is_err());
        assert!(parse_members("=x:1").is_err());
        assert_ne!(member_id("a"), member_id("b"));
        assert_eq!(member_id("a"), member_id("a"));
        assert_ne!(member_id(""), 0);
    }

    fn transport_to(addr: String) -> (Arc<GrpcTransport>, CancellationToken) {
        let cancel = CancellationToken::new();
        let peer = MemberInfo {
            id: 2,
            name: "b".into(),
            peer_addr: addr,
        };
        let runtime = tokio::runtime::Handle::current();
        (
            GrpcTransport::new(1, &[peer], runtime, cancel.clone()),
            cancel,
        )
    }

    fn put(key: &str) -> Forward {
        Forward::Write(Command::Put {
            key: key.into(),
            value: b"v".to_vec(),
            precondition: crate::store::Precondition::Absent,
        })
    }

    /// Reads from `sock` until `key` has arrived; returns everything read. `what` names the
    /// message in the failure.
    async fn read_until_key(sock: &mut tokio::net::TcpStream, key: &str, what: &str) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(key.len()).any(|w| w == key.as_bytes()) {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the {what} never arrived");
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    }

    /// Loopback sockets rather than an in-memory pipe: what is tested is how tonic's real
    /// connector reports a connection that could not be made.
    #[tokio::test]
    async fn a_forward_to_a_closed_port_was_never_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (t, cancel) = transport_to(format!("127.0.0.1:{port}"));
        let r = t.forward(2, put("/registry/a")).await;
        assert!(matches!(r, Err(StoreError::Unreachable { id: 2 })), "{r:?}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_forward_whose_connection_drops_after_sending_has_no_answer() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = "/registry/configmaps/default/sent-then-lost";
        // A peer that takes the whole request, then goes away without answering.
        let peer = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            // An empty SETTINGS frame: the server side of the HTTP/2 preface.
            sock.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
            read_until_key(&mut sock, key, "request").await;
        });
        let (t, cancel) = transport_to(addr.to_string());
        let r = tokio::time::timeout(Duration::from_secs(10), t.forward(2, put(key)))
            .await
            .expect("the forward gave up");
        assert!(matches!(r, Err(StoreError::NoAnswer { id: 2 })), "{r:?}");
        peer.await.unwrap();
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_forward_on_a_raft_connection_that_breaks_has_no_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = "/registry/configmaps/default/forwarded-then-lost";
        // A peer that takes the raft connection and the forward, then closes it unanswered.
        let peer = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let seen = read_until_key(&mut sock, key, "forward").await;
            assert!(seen.starts_with(raftstream::MAGIC));
        });
        let (t, cancel) = transport_to(addr.to_string());
        let connected = t.peers.read().unwrap()[&2].connected.clone();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !connected.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the raft connection came up");
        let r = tokio::time::timeout(Duration::from_secs(10), t.forward(2, put(key)))
            .await
            .expect("the forward gave up");
        assert!(matches!(r, Err(StoreError::NoAnswer { id: 2 })), "{r:?}");
        peer.await.unwrap();
        assert!(t.pending.lock().unwrap().is_empty());
        cancel.cancel();
    }

    #[test]
    fn forward_errors_cross_the_wire() {
        for e in [
            StoreError::NotLeader { leader: Some(7) },
            StoreError::NotLeader { leader: None },
            StoreError::NoLeader,
            StoreError::ProposalDropped,
            StoreError::Timeout,
        ] {
            let back = error_from_wire(&error_to_wire(&e));
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
        }
        // A leader that stopped may have had the proposal in its log already.
        let back = error_from_wire(&error_to_wire(&StoreError::Stopped));
        assert!(matches!(back, StoreError::Timeout), "{back:?}");
    }
}
