//! Kubernetes' remote command protocol over SPDY (`v4.channel.k8s.io`, as `kubectl exec` and
//! `attach` speak it before 1.30): one SPDY stream per channel, named by its `streamType`
//! header (`error`, `stdin`, `stdout`, `stderr`, `resize`). The server waits for the streams the
//! request implies, as the kubelet does, then presents them as the channel-prefixed messages of
//! the WebSocket protocol ([`super::protocol`]), so exec and attach sessions are written once.
//! The client's FIN on stdin becomes v5's close-stdin signal; the resize stream's JSON objects
//! become resize messages.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::protocol::{self, CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT};
use super::spdy::{Incoming, Outgoing};

/// The stream protocol served over SPDY.
pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open its streams (the kubelet's default).
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// What the client's request implies it will open, besides the error stream.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal: a resize stream, and no stderr (it is merged into the terminal).
    pub tty: bool,
}

impl Expected {
    fn count(self) -> usize {
        1 + usize::from(self.stdin)
            + usize::from(self.stdout)
            + usize::from(self.stderr && !self.tty)
            + usize::from(self.tty)
    }
}

/// One session's channels: client messages in, server messages out. Dropping `outgoing` ends
/// the session: every stream is finished and the connection closed; `done` resolves then.
pub struct Channels {
    pub incoming: tokio_stream::wrappers::ReceiverStream<Vec<u8>>,
    pub outgoing: futures::channel::mpsc::Sender<Vec<u8>>,
    pub done: JoinHandle<()>,
}

/// Waits for the streams of `expected`, then starts the translation both ways.
pub async fn open(
    mut streams: mpsc::Receiver<Incoming>,
    out: Outgoing,
    expected: Expected,
) -> Result<Channels, String> {
    let want = expected.count();
    let mut by_type: HashMap<String, Incoming> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    while by_type.len() < want {
        let s = match tokio::time::timeout_at(deadline, streams.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client left before opening its streams".into()),
            Err(_) => {
                return Err(format!(
                    "timed out waiting for the client's streams ({} of {want})",
                    by_type.len()
                ));
            }
        };
        match s.header("streamtype").map(str::to_owned) {
            Some(t)
                if ["error", "stdin", "stdout", "stderr", "resize"].contains(&t.as_str())
                    && !by_type.contains_key(&t) =>
            {
                by_type.insert(t, s);
            }
            other => {
                tracing::debug!(id = s.id, kind = ?other, "unexpected remote command stream");
                out.reset(s.id).await;
            }
        }
    }
    let ids: Vec<u32> = by_type.values().map(|s| s.id).collect();
    let id_of = |t: &str| by_type.get(t).map(|s| s.id);
    let (stdout, stderr, error) = (id_of("stdout"), id_of("stderr"), id_of("error"));

    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
    if let Some(mut s) = by_type.remove("stdin") {
        let tx = in_tx.clone();
        tokio::spawn(async move {
            while let Some(d) = s.data.recv().await {
                if tx.send(protocol::frame(STDIN, &d)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(vec![CLOSE, STDIN]).await;
        });
    }
    if let Some(mut s) = by_type.remove("resize") {
        let tx = in_tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(d) = s.data.recv().await {
                buf.extend_from_slice(&d);
                for size in take_json_values(&mut buf) {
                    if tx.send(protocol::frame(RESIZE, &size)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    // Until the connection ends, the session's input stays open (a client that closed stdin
    // has not left); later streams are refused.
    let watch_out = out.clone();
    tokio::spawn(async move {
        while let Some(s) = streams.recv().await {
            watch_out.reset(s.id).await;
        }
        drop(in_tx);
    });

    let (out_tx, mut out_rx) = futures::channel::mpsc::channel::<Vec<u8>>(16);
    let done = tokio::spawn(async move {
        while let Some(msg) = out_rx.next().await {
            let Some((&channel, data)) = msg.split_first() else {
                continue;
            };
            let id = match channel {
                STDOUT => stdout,
                STDERR => stderr,
                ERROR => error,
                _ => None,
            };
            if let Some(id) = id
                && !out.data(id, data).await
            {
                break;
            }
        }
        for id in &ids {
            out.finish(*id).await;
        }
        out.go_away(ids.iter().copied().max().unwrap_or(0)).await;
    });
    Ok(Channels {
        incoming: tokio_stream::wrappers::ReceiverStream::new(in_rx),
        outgoing: out_tx,
        done,
    })
}

/// Removes the complete JSON values at the front of `buf` and returns them, re-encoded.
fn take_json_values(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    while let Some(Ok(v)) = it.next() {
        used = it.byte_offset();
        values.push(v.to_string().into_bytes());
    }
    buf.drain(..used);
    values
}

#[cfg(test)]
mod tests {
    use super::super::spdy::{Decoder, Encoder, Frame, serve};
    use super::*;
    use futures::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn resize_objects_are_split_as_they_complete() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(
            take_json_values(&mut buf),
            vec![br#"{"Height":24,"Width":80}"#.to_vec()]
        );
        assert_eq!(buf, br#"{"Width":1"#);
        buf.extend_from_slice(b"00,\"Height\":5}\n");
        assert_eq!(take_json_values(&mut buf).len(), 1);
    }

    fn syn(id: u32, kind: &str) -> Frame {
        Frame::SynStream {
            id,
            fin: false,
            headers: vec![("streamtype".into(), kind.into())],
        }
    }

    #[tokio::test]
    async fn streams_become_channels_and_back() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (streams, out) = serve(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = Encoder::default();
        let mut wire = Vec::new();
        for f in [
            syn(1, "error"),
            syn(3, "stdin"),
            syn(5, "stdout"),
            syn(7, "resize"),
            Frame::Data {
                id: 3,
                fin: true,
                data: b"typed".to_vec(),
            },
            Frame::Data {
                id: 7,
                fin: false,
                data: b"{\"Width\":91,\"Height\":33}\n".to_vec(),
            },
        ] {
            enc.encode(&f, &mut wire);
        }
        cw.write_all(&wire).await.expect("write");
        let expected = Expected {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        let Channels {
            mut incoming,
            mut outgoing,
            done,
        } = open(streams, out, expected).await.expect("open");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(incoming.next().await.expect("a message"));
        }
        assert!(got.contains(&b"\x00typed".to_vec()), "{got:?}");
        assert!(got.contains(&vec![CLOSE, STDIN]), "{got:?}");
        assert!(
            got.contains(&b"\x04{\"Height\":33,\"Width\":91}".to_vec()),
            "{got:?}"
        );
        outgoing.send(b"\x01out".to_vec()).await.expect("send");
        outgoing.send(b"\x03{}".to_vec()).await.expect("send");
        drop(outgoing);
        done.await.expect("writer");
        let mut bytes = Vec::new();
        cr.read_to_end(&mut bytes).await.expect("read");
        let mut dec = Decoder::default();
        dec.push(&bytes);
        let mut frames = Vec::new();
        while let Some(f) = dec.next_frame().expect("decode") {
            frames.push(f);
        }
        let data = |want: u32| -> Vec<u8> {
            frames
                .iter()
                .filter_map(|f| match f {
                    Frame::Data { id, data, .. } if *id == want => Some(data.clone()),
                    _ => None,
                })
                .flatten()
                .collect()
        };
        assert_eq!(data(5), b"out");
        assert_eq!(data(1), b"{}");
        for id in [1, 3, 5, 7] {
            assert!(
                frames.contains(&Frame::Data {
                    id,
                    fin: true,
                    data: Vec::new()
                }),
                "stream {id} finished: {frames:?}"
            );
        }
        assert!(matches!(frames.last(), Some(Frame::GoAway { .. })));
    }
}
