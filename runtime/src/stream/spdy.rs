//! SPDY/3.1, as much of it as Kubernetes' streaming clients use (client-go over
//! moby/spdystream): `kubectl port-forward` always, and `kubectl exec`/`attach` before 1.30. The
//! client opens streams with SYN_STREAM, each naming its role in headers (`streamType`, `port`,
//! `requestID`); the server accepts each with a SYN_REPLY, and data flows in DATA frames until a
//! FIN. Header blocks are zlib-compressed with SPDY's preset dictionary, one compression context
//! per direction for the whole connection. PINGs are echoed (client-go pings every 10 s through
//! the WebSocket tunnel); SETTINGS and WINDOW_UPDATE are read and ignored, as spdystream does:
//! neither side does flow control.
//!
//! [`Decoder`] and [`Encoder`] are the framing; [`serve`] runs one connection over any byte
//! stream and hands its streams to a handler as [`Incoming`], with an [`Outgoing`] to answer on.

use std::collections::HashMap;
use std::sync::LazyLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::{Result, RuntimeError};

/// Header names and values, names lower-cased; a value holding several (NUL-separated on the
/// wire) appears once per value.
pub type Headers = Vec<(String, String)>;

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    /// HEADERS, SETTINGS, WINDOW_UPDATE or an unknown control frame: nothing this server acts on.
    Ignored {
        kind: u16,
    },
}

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// The most a frame's 24-bit length can say.
pub const MAX_DATA: usize = (1 << 24) - 1;
/// Header blocks larger than this once inflated are refused (a few headers are all a streaming
/// client sends; this bounds what a compressed bomb can make the server allocate).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// RST_STREAM status: PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: u32 = 1;

/// SPDY/3's zlib dictionary (draft 3, section 2.6.10.1): length-prefixed common header words,
/// then a run of status codes, dates and media types.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
        " 00:00:00",
        " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdch",
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
});

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Spdy(msg.into())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads frames from a byte stream fed in arbitrary pieces.
pub struct Decoder {
    buf: Vec<u8>,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buf: Vec::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let flags = self.buf[4];
        let len = (u32_at(&self.buf, 4) & 0x00ff_ffff) as usize;
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let head: [u8; 4] = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        let payload: Vec<u8> = self.buf.drain(..8 + len).skip(8).collect();
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                id: u32::from_be_bytes(head) & 0x7fff_ffff,
                fin,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(bad(format!("unsupported SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if payload.len() < n {
                Err(bad(format!(
                    "control frame {kind} of {} bytes",
                    payload.len()
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                let headers = self.header_block(&payload[10..])?;
                Frame::SynStream {
                    id: u32_at(&payload, 0) & 0x7fff_ffff,
                    fin,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                // The block is inflated even when unused: the zlib context spans the connection.
                let headers = self.header_block(&payload[4..])?;
                let id = u32_at(&payload, 0) & 0x7fff_ffff;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, fin, headers }
                } else {
                    Frame::Ignored { kind }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: u32_at(&payload, 0) & 0x7fff_ffff,
                    status: u32_at(&payload, 4),
                }
            }
            PING => {
                need(4)?;
                Frame::Ping {
                    id: u32_at(&payload, 0),
                }
            }
            GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last_good: u32_at(&payload, 0) & 0x7fff_ffff,
                    status: u32_at(&payload, 4),
                }
            }
            _ => Frame::Ignored { kind },
        };
        Ok(Some(frame))
    }

    fn header_block(&mut self, block: &[u8]) -> Result<Headers> {
        let raw = self.inflate_block(block)?;
        parse_headers(&raw)
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(bad("header block inflates past 1 MiB"));
                }
                out.reserve(out.capacity());
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let res = self
                .inflate
                .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - in_before) as usize;
            match res {
                Ok(_) => {
                    let stalled = out.len() == out_before && pos == block.len();
                    if (pos == block.len() && out.len() < out.capacity()) || stalled {
                        return Ok(out);
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| bad(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(bad(format!("bad header block: {e}"))),
            }
        }
    }
}

fn parse_headers(raw: &[u8]) -> Result<Headers> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = raw
            .get(at..at + n)
            .ok_or_else(|| bad("truncated header block"))?;
        at += n;
        Ok(s)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default());
    let mut out = Vec::new();
    for _ in 0..count {
        let n = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_owned()));
        }
    }
    Ok(out)
}

/// Writes frames; holds the connection's compression context for header blocks.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh compressor always accepts a dictionary.
        let _ = deflate.set_dictionary(&DICTIONARY);
        Encoder { deflate }
    }
}

impl Encoder {
    /// Appends `frame` to `out`. DATA longer than [`MAX_DATA`] must be split by the caller.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
        };
        let flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::SynStream { id, fin, headers } => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&[0; 6]);
                body.extend(self.header_block(headers));
                control(out, SYN_STREAM, flag(*fin), &body);
            }
            Frame::SynReply { id, fin, headers } => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend(self.header_block(headers));
                control(out, SYN_REPLY, flag(*fin), &body);
            }
            Frame::Data { id, fin, data } => {
                out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                let len = data.len().min(MAX_DATA);
                out.extend_from_slice(&((u32::from(flag(*fin)) << 24) | len as u32).to_be_bytes());
                out.extend_from_slice(&data[..len]);
            }
            Frame::RstStream { id, status } => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &body);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut body = last_good.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &body);
            }
            Frame::Ignored { .. } => {}
        }
    }

    fn header_block(&mut self, headers: &Headers) -> Vec<u8> {
        // Repeated names travel as one entry with NUL-separated values.
        let mut merged: Vec<(&str, String)> = Vec::new();
        for (k, v) in headers {
            match merged.iter_mut().find(|(n, _)| *n == k.as_str()) {
                Some((_, all)) => {
                    all.push('\0');
                    all.push_str(v);
                }
                None => merged.push((k.as_str(), v.clone())),
            }
        }
        let mut raw = (merged.len() as u32).to_be_bytes().to_vec();
        for (k, v) in &merged {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = self.deflate.total_in();
            // Compressing into memory with room to spare cannot fail.
            let _ = self
                .deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - before) as usize;
            if pos == raw.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// A stream the client opened: its headers, and its data until the client's FIN (or a reset, or
/// the end of the connection) ends the channel.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    pub data: mpsc::Receiver<Vec<u8>>,
}

impl Incoming {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends on a connection; clones share it. Every send fails once the connection is gone.
#[derive(Clone)]
pub struct Outgoing {
    tx: mpsc::Sender<Frame>,
}

impl Outgoing {
    /// Sends `data` on stream `id`; false if the connection is gone.
    pub async fn data(&self, id: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA) {
            let frame = Frame::Data {
                id,
                fin: false,
                data: chunk.to_vec(),
            };
            if self.tx.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends this side of stream `id` (an empty DATA frame with FIN, as spdystream's Close).
    pub async fn finish(&self, id: u32) {
        let _ = self
            .tx
            .send(Frame::Data {
                id,
                fin: true,
                data: Vec::new(),
            })
            .await;
    }

    /// Resets stream `id`.
    pub async fn reset(&self, id: u32) {
        let _ = self
            .tx
            .send(Frame::RstStream {
                id,
                status: PROTOCOL_ERROR,
            })
            .await;
    }

    /// Says goodbye and closes the connection's write side once everything before is sent.
    pub async fn go_away(&self, last_good: u32) {
        let _ = self
            .tx
            .send(Frame::GoAway {
                last_good,
                status: 0,
            })
            .await;
    }
}

/// How long a closed connection keeps reading what the client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// How many DATA frames of one stream may wait for its reader before the connection's reader
/// waits too (back-pressure: spdystream has no flow control either).
const STREAM_BACKLOG: usize = 16;

/// Runs one SPDY connection over `io`: accepts every stream the client opens (SYN_REPLY) and
/// passes it on, routes DATA to it, echoes PINGs. The returned receiver ends with the connection.
pub fn serve<T>(io: T) -> (mpsc::Receiver<Incoming>, Outgoing)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (frames_tx, frames_rx) = mpsc::channel::<Frame>(64);
    let (new_tx, new_rx) = mpsc::channel::<Incoming>(16);
    let out = Outgoing { tx: frames_tx };
    tokio::spawn(write_frames(write, frames_rx));
    tokio::spawn(read_frames(read, out.clone(), new_tx));
    (new_rx, out)
}

async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Frame>) {
    let mut enc = Encoder::default();
    let mut buf = Vec::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        enc.encode(&frame, &mut buf);
        // Everything queued behind this frame goes in the same write.
        let last = matches!(frame, Frame::GoAway { .. });
        let mut ended = last;
        while !ended && let Ok(next) = rx.try_recv() {
            ended = matches!(next, Frame::GoAway { .. });
            enc.encode(&next, &mut buf);
        }
        if w.write_all(&buf).await.and(w.flush().await).is_err() || ended {
            break;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut r: R,
    out: Outgoing,
    new_streams: mpsc::Sender<Incoming>,
) {
    let mut dec = Decoder::default();
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => n,
            // The write side ended (GOAWAY sent, or the client is gone): nothing can be
            // answered. What the client still sends is read and dropped for a moment, so it
            // gets to read the end instead of a reset connection.
            _ = out.tx.closed() => {
                let _ = tokio::time::timeout(LINGER, async {
                    while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
                break;
            }
        };
        match n {
            Ok(n) if n > 0 => dec.push(&buf[..n]),
            _ => break,
        }
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy connection ends");
                    return;
                }
            };
            match frame {
                Frame::SynStream { id, fin, headers } => {
                    let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
                    let reply = Frame::SynReply {
                        id,
                        fin: false,
                        headers: Vec::new(),
                    };
                    if out.tx.send(reply).await.is_err() {
                        return;
                    }
                    if !fin {
                        streams.insert(id, tx);
                    }
                    let incoming = Incoming {
                        id,
                        headers,
                        data: rx,
                    };
                    if new_streams.send(incoming).await.is_err() {
                        out.reset(id).await;
                        streams.remove(&id);
                    }
                }
                Frame::Data { id, fin, data } => {
                    if let Some(tx) = streams.get(&id)
                        && !data.is_empty()
                        && tx.send(data).await.is_err()
                    {
                        // Its reader is gone: the rest of this stream is dropped.
                        streams.remove(&id);
                    }
                    if fin {
                        streams.remove(&id);
                    }
                }
                Frame::RstStream { id, .. } => {
                    streams.remove(&id);
                }
                Frame::Ping { id } => {
                    if out.tx.send(Frame::Ping { id }).await.is_err() {
                        return;
                    }
                }
                Frame::GoAway { .. } => return,
                Frame::SynReply { .. } | Frame::Ignored { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        // Length and Adler-32 of the dictionary in the SPDY/3 draft (and in spdystream).
        assert_eq!(DICTIONARY.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in DICTIONARY.iter() {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn frames_round_trip_in_any_pieces() {
        let frames = vec![
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                id: 3,
                fin: false,
                headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::Data {
                id: 3,
                fin: false,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::SynReply {
                id: 3,
                fin: false,
                headers: Vec::new(),
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: Vec::new(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream { id: 5, status: 1 },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut enc = Encoder::default();
        let mut wire = Vec::new();
        for f in &frames {
            enc.encode(f, &mut wire);
        }
        for piece in [1, 3, 7, wire.len()] {
            let mut dec = Decoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(piece) {
                dec.push(chunk);
                while let Some(f) = dec.next_frame().expect("decode") {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "in pieces of {piece}");
        }
    }

    #[test]
    fn repeated_headers_travel_as_one_nul_separated_value() {
        let mut enc = Encoder::default();
        let mut wire = Vec::new();
        let h = headers(&[
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ]);
        enc.encode(
            &Frame::SynReply {
                id: 1,
                fin: false,
                headers: h.clone(),
            },
            &mut wire,
        );
        let mut dec = Decoder::default();
        dec.push(&wire);
        assert_eq!(
            dec.next_frame().expect("decode"),
            Some(Frame::SynReply {
                id: 1,
                fin: false,
                headers: h
            })
        );
    }

    #[test]
    fn bad_frames_are_refused_by_name() {
        let mut dec = Decoder::default();
        // A control frame of version 2.
        dec.push(&[0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
        let err = dec.next_frame().expect_err("version 2");
        assert!(err.to_string().contains("version 2"), "{err}");
        // A SYN_STREAM whose header block is not zlib.
        let mut dec = Decoder::default();
        let mut f = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 14];
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        dec.push(&f);
        let err = dec.next_frame().expect_err("garbage block");
        assert!(err.to_string().contains("header block"), "{err}");
    }

    #[tokio::test]
    async fn a_connection_accepts_streams_routes_data_and_echoes_pings() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut streams, out) = serve(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = Encoder::default();
        let mut wire = Vec::new();
        for f in [
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: headers(&[("streamtype", "data")]),
            },
            Frame::Data {
                id: 1,
                fin: true,
                data: b"hello".to_vec(),
            },
            Frame::Ping { id: 9 },
        ] {
            enc.encode(&f, &mut wire);
        }
        cw.write_all(&wire).await.expect("write");
        let mut s = streams.recv().await.expect("a stream");
        assert_eq!(s.header("streamtype"), Some("data"));
        assert_eq!(s.data.recv().await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(s.data.recv().await, None, "FIN ends the stream");
        assert!(out.data(1, b"back").await);
        out.finish(1).await;
        out.go_away(1).await;
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.expect("read");
        let mut dec = Decoder::default();
        dec.push(&got);
        let mut frames = Vec::new();
        while let Some(f) = dec.next_frame().expect("decode") {
            frames.push(f);
        }
        // The echo is sent by the reader, so it may come before or after the test's frames.
        let ping = frames.iter().position(|f| *f == Frame::Ping { id: 9 });
        frames.remove(ping.expect("the ping is echoed"));
        assert_eq!(
            frames,
            vec![
                Frame::SynReply {
                    id: 1,
                    fin: false,
                    headers: Vec::new()
                },
                Frame::Data {
                    id: 1,
                    fin: false,
                    data: b"back".to_vec()
                },
                Frame::Data {
                    id: 1,
                    fin: true,
                    data: Vec::new()
                },
                Frame::GoAway {
                    last_good: 1,
                    status: 0
                },
            ]
        );
    }
}
