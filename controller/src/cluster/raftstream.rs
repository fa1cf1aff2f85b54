//! Raft messages between members on a TCP connection of their own, beside the gRPC `Peer`
//! service on the same port. A connection that opens with [`MAGIC`] carries length-prefixed
//! frames one way, from the member that dialled; any other connection is handed to the gRPC
//! server. Without HTTP/2 in the way, a message crosses one task on each side (the sender's
//! writer, the receiver's reader) instead of three, which is most of a round trip's cost on a
//! busy node. Followers' forwarded writes and the leader's answers travel the same way
//! ([`Outgoing`]): an answer comes back on the leader's own connection to the follower.
//!
//! Frames: a little-endian `u32` length of the rest, a kind byte, then the body: a raft message
//! in raft-rs's protobuf 2 encoding; a forward (`u64` id, `u64` sender, the store command); or
//! an answer (`u64` id, a `ForwardResponse`).
//! A peer cut off by the network is noticed by `TCP_USER_TIMEOUT` on the sending side (unsent
//! data older than [`DEAD_AFTER`] ends the connection, and the next batch dials again) and by
//! keepalive probes on the receiving side.

use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::Message;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a raft connection opens with.
pub const MAGIC: &[u8; 8] = b"SKRAFT02";
const RAFT: u8 = 0;
const FORWARD: u8 = 1;
const ANSWER: u8 = 2;

/// What goes out on a raft connection.
#[derive(Debug)]
pub enum Outgoing {
    Raft(Message),
    /// A follower's write for the leader to propose; `id` is the follower's own.
    Forward {
        id: u64,
        from: u64,
        command: Vec<u8>,
    },
    /// The leader's answer to forward `id`: a `ForwardResponse`.
    Answer {
        id: u64,
        response: Vec<u8>,
    },
}

/// What a reader does with the frames that are not raft messages.
pub trait Frames: Send + Sync + 'static {
    fn forward(&self, from: u64, id: u64, command: Vec<u8>);
    fn answer(&self, id: u64, response: Vec<u8>);
}
/// The largest frame accepted: a snapshot of the whole store travels as one message.
const MAX_FRAME: usize = 1 << 30;
/// How long sent data may stay unacknowledged, or a connection idle without answering probes,
/// before it counts as dead.
const DEAD_AFTER: Duration = Duration::from_secs(2);
/// How much of a raft connection is read at once.
const READ_BUFFER: usize = 64 << 10;
/// How long a new connection may take to say what it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_tcp_user_timeout(Some(DEAD_AFTER));
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(DEAD_AFTER)
            .with_interval(Duration::from_secs(1))
            .with_retries(2),
    );
}

/// Dials `addr` and says this is a raft connection.
pub async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let addr = addr.trim_start_matches("http://");
    let mut stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    tune(&stream);
    stream.write_all(MAGIC).await?;
    Ok(stream)
}

/// Appends `items` as frames to `buf`.
pub fn encode(items: &[Outgoing], buf: &mut Vec<u8>) {
    for item in items {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        match item {
            Outgoing::Raft(m) => {
                buf.push(RAFT);
                if m.write_to_writer(buf).is_err() {
                    buf.truncate(start);
                    continue;
                }
            }
            Outgoing::Forward { id, from, command } => {
                buf.push(FORWARD);
                buf.extend_from_slice(&id.to_le_bytes());
                buf.extend_from_slice(&from.to_le_bytes());
                buf.extend_from_slice(command);
            }
            Outgoing::Answer { id, response } => {
                buf.push(ANSWER);
                buf.extend_from_slice(&id.to_le_bytes());
                buf.extend_from_slice(response);
            }
        }
        match u32::try_from(buf.len() - start - 4) {
            Ok(len) => buf[start..start + 4].copy_from_slice(&len.to_le_bytes()),
            Err(_) => buf.truncate(start),
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Hands one encoded raft message to the node loop. Peers are other skiff members; a message
/// that does not decode is dropped, as is one that finds the inbox full (raft resends).
pub fn deliver(bytes: &[u8], inbox: &mpsc::Sender<Message>) {
    match Message::parse_from_bytes(bytes) {
        Ok(m) => {
            if inbox.try_send(m).is_err() {
                tracing::debug!("raft inbox full; dropping a message");
            }
        }
        Err(e) => tracing::warn!(error = %e, "undecodable raft message"),
    }
}

/// Hands one frame to where it goes.
fn dispatch(frame: &[u8], inbox: &mpsc::Sender<Message>, frames: &dyn Frames) {
    let Some((&kind, body)) = frame.split_first() else {
        return;
    };
    match kind {
        RAFT => deliver(body, inbox),
        FORWARD => match (u64_at(body, 0), u64_at(body, 8)) {
            (Some(id), Some(from)) => frames.forward(from, id, body[16..].to_vec()),
            _ => tracing::warn!("short forward frame"),
        },
        ANSWER => match u64_at(body, 0) {
            Some(id) => frames.answer(id, body[8..].to_vec()),
            None => tracing::warn!("short answer frame"),
        },
        other => tracing::warn!(kind = other, "unknown raft connection frame"),
    }
}

/// Whether `stream` opens as a raft connection; consumes the magic if so. Waits until enough
/// has arrived to tell (a gRPC client sends its preface at once).
async fn is_raft(stream: &mut TcpStream) -> bool {
    let mut head = [0u8; MAGIC.len()];
    let peeked = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match stream.peek(&mut head).await {
                Ok(n) if n >= MAGIC.len() => return true,
                // Closed, or not enough for either protocol yet.
                Ok(0) | Err(_) => return false,
                Ok(n) if head[..n] != MAGIC[..n] => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
    .await
    .unwrap_or(false);
    peeked && head == *MAGIC && stream.read_exact(&mut head).await.is_ok()
}

/// Reads frames from a raft connection into `inbox` until it ends or `cancel` fires.
async fn read_frames(
    stream: TcpStream,
    inbox: mpsc::Sender<Message>,
    frames: std::sync::Arc<dyn Frames>,
    cancel: CancellationToken,
) {
    let mut buf = Vec::new();
    // Frames are small and come in bursts: read them out of one buffer, not a read per field.
    let mut stream = tokio::io::BufReader::with_capacity(READ_BUFFER, stream);
    let read = async {
        loop {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_FRAME {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a raft frame of {len} bytes"),
                ));
            }
            buf.resize(len, 0);
            stream.read_exact(&mut buf).await?;
            dispatch(&buf, &inbox, &*frames);
        }
    };
    let ended: std::io::Result<()> = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = read => r,
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "raft connection ended");
    }
}

/// Accepts connections on `listener` until `cancel` fires: raft connections are read here, all
/// others go to `grpc` for the gRPC server.
pub async fn accept(
    listener: tokio::net::TcpListener,
    inbox: mpsc::Sender<Message>,
    frames: std::sync::Arc<dyn Frames>,
    grpc: mpsc::Sender<std::io::Result<TcpStream>>,
    cancel: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        let mut stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!(error = %e, "peer accept failed");
                continue;
            }
        };
        tune(&stream);
        let (inbox, grpc, cancel) = (inbox.clone(), grpc.clone(), cancel.clone());
        let frames = frames.clone();
        tokio::spawn(async move {
            if is_raft(&mut stream).await {
                read_frames(stream, inbox, frames, cancel).await;
            } else {
                let _ = grpc.send(Ok(stream)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::MessageType;

    fn msg(to: u64, index: u64) -> Outgoing {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = to;
        m.commit = index;
        Outgoing::Raft(m)
    }

    /// Records the forwards and answers it is handed.
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<String>>);

    impl Frames for Seen {
        fn forward(&self, from: u64, id: u64, command: Vec<u8>) {
            let c = String::from_utf8_lossy(&command).into_owned();
            self.0
                .lock()
                .unwrap()
                .push(format!("forward {from} {id} {c}"));
        }
        fn answer(&self, id: u64, response: Vec<u8>) {
            let r = String::from_utf8_lossy(&response).into_owned();
            self.0.lock().unwrap().push(format!("answer {id} {r}"));
        }
    }

    #[tokio::test]
    async fn raft_frames_and_grpc_share_a_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (inbox, mut delivered) = mpsc::channel(16);
        let (grpc, mut others) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let seen = std::sync::Arc::new(Seen::default());
        tokio::spawn(accept(listener, inbox, seen.clone(), grpc, cancel.clone()));

        let mut raft = connect(&addr).await.unwrap();
        let mut buf = Vec::new();
        let forward = Outgoing::Forward {
            id: 5,
            from: 9,
            command: b"put".to_vec(),
        };
        let answer = Outgoing::Answer {
            id: 6,
            response: b"ok".to_vec(),
        };
        encode(&[msg(2, 7), forward, answer, msg(2, 8)], &mut buf);
        raft.write_all(&buf).await.unwrap();
        for want in [7, 8] {
            let got = tokio::time::timeout(Duration::from_secs(5), delivered.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((got.to, got.commit), (2, want));
        }
        assert_eq!(*seen.0.lock().unwrap(), ["forward 9 5 put", "answer 6 ok"]);

        // Anything else, an HTTP/2 preface say, is left whole for the gRPC server.
        let mut other = TcpStream::connect(&addr).await.unwrap();
        other
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut handed = tokio::time::timeout(Duration::from_secs(5), others.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let mut head = [0u8; 3];
        handed.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"PRI");
        cancel.cancel();
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (inbox, mut delivered) = mpsc::channel(16);
        let (grpc, _others) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let seen = std::sync::Arc::new(Seen::default());
        tokio::spawn(accept(listener, inbox, seen, grpc, cancel.clone()));
        let mut raft = connect(&addr).await.unwrap();
        raft.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        // The reader gives up on the connection: our next read sees it closed.
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), raft.read(&mut byte))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(delivered.try_recv().is_err());
        cancel.cancel();
    }
}
