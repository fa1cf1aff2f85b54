//! Kubernetes' remote command protocol over WebSocket, as the kubelet's streaming server speaks
//! it to `kubectl exec`, `kubectl attach` and the other clients: every message starts with a
//! channel. From the client: 0 stdin, 4 resize (JSON `{"Width":..,"Height":..}`) and, in v5
//! only, 255 followed by a stream id to close that stream (stdin). To the client: 1 stdout,
//! 2 stderr and 3 the error channel: in v4 and v5 the final `Status` (JSON), which carries a
//! non-zero exit code as reason `NonZeroExitCode` with an `ExitCode` cause; in the first
//! version (`channel.k8s.io`) the error's text, and nothing on success.
//!
//! The `base64` variants carry each message as text: the channel as an ASCII digit, then the
//! data in standard base64, for clients that cannot send binary messages (browsers of old).
//! A client that names no subprotocol gets the first version in binary, as from the kubelet.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

/// The subprotocols served, most preferred first (the kubelet's list).
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: "close stream" signal; the payload is the id of the stream to close.
pub const CLOSE: u8 = 255;

/// Which protocol version the client and server agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `channel.k8s.io`: errors as text on the error channel.
    V1,
    /// Errors and exit codes as a `Status` on the error channel.
    V4,
    /// v4 plus the close-stream signal, so stdin can end before the connection does.
    V5,
}

/// How messages carry their channel and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Binary messages: the channel byte, then the data.
    Binary,
    /// Text messages: the channel as a digit, then the data in base64.
    Base64,
}

/// The version and framing of a served subprotocol (`""`: none asked for).
pub fn negotiate(p: &str) -> Option<(Version, Framing)> {
    Some(match p {
        "v5.channel.k8s.io" => (Version::V5, Framing::Binary),
        "v4.channel.k8s.io" => (Version::V4, Framing::Binary),
        "v4.base64.channel.k8s.io" => (Version::V4, Framing::Base64),
        "channel.k8s.io" | "" => (Version::V1, Framing::Binary),
        "base64.channel.k8s.io" => (Version::V1, Framing::Base64),
        _ => return None,
    })
}

/// A message as the client sent it. Clients of the binary protocols may send text messages
/// too (the Python client sends stdin given as `str` that way): their bytes are the same.
pub fn from_client(framing: Framing, text: bool, msg: &[u8]) -> Result<Vec<u8>, String> {
    if framing == Framing::Binary || !text {
        return Ok(msg.to_vec());
    }
    let Some((&digit, data)) = msg.split_first() else {
        return Ok(Vec::new());
    };
    if !digit.is_ascii_digit() {
        return Err(format!("bad base64 channel {:?}", digit as char));
    }
    let mut out = vec![digit - b'0'];
    base64::engine::general_purpose::STANDARD
        .decode_vec(data, &mut out)
        .map_err(|e| format!("bad base64 data on channel {}: {e}", digit - b'0'))?;
    Ok(out)
}

/// A frame (channel byte, data) as it goes to a base64 client: the digit and the base64 text.
pub fn to_base64(frame: &[u8]) -> String {
    let Some((&channel, data)) = frame.split_first() else {
        return String::new();
    };
    let mut out = String::with_capacity(1 + data.len().div_ceil(3) * 4);
    out.push(char::from(b'0' + channel % 10));
    base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
    out
}

/// A message from the client, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Vec<u8>),
    Resize {
        width: u16,
        height: u16,
    },
    /// End of the client's stdin (v5 close of stream 0).
    CloseStdin,
    /// Something this server ignores (an unknown channel, a close of another stream, an empty
    /// message).
    Ignored,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TerminalSize {
    width: u16,
    height: u16,
}

/// Decodes one binary message from the client.
pub fn decode(version: Version, msg: &[u8]) -> Result<ClientFrame, String> {
    let Some((&channel, data)) = msg.split_first() else {
        return Ok(ClientFrame::Ignored);
    };
    match channel {
        STDIN => Ok(ClientFrame::Stdin(data.to_vec())),
        RESIZE => {
            let size: TerminalSize =
                serde_json::from_slice(data).map_err(|e| format!("bad resize message: {e}"))?;
            Ok(ClientFrame::Resize {
                width: size.width,
                height: size.height,
            })
        }
        CLOSE if version == Version::V5 => match data.first() {
            Some(&STDIN) => Ok(ClientFrame::CloseStdin),
            _ => Ok(ClientFrame::Ignored),
        },
        _ => Ok(ClientFrame::Ignored),
    }
}

/// A message to the client on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The final status of a command that ran: Success, or the exit code as client-go reads it.
/// In the first version, the error's text on failure and nothing on success.
pub fn exit_status(version: Version, cmd: &[String], exit_code: i32) -> Option<Vec<u8>> {
    let message = format!(
        "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {exit_code}"
    );
    if version == Version::V1 {
        return (exit_code != 0).then(|| frame(ERROR, message.as_bytes()));
    }
    // Go's field order (metav1.Status), as the kubelet writes it.
    let status = if exit_code == 0 {
        r#"{"metadata":{},"status":"Success"}"#.to_owned()
    } else {
        format!(
            r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{exit_code}"}}]}}}}"#,
            json!(message)
        )
    };
    Some(frame(ERROR, status.as_bytes()))
}

/// The final status of a stream that failed before or instead of an exit code.
pub fn failure_status(version: Version, message: &str) -> Vec<u8> {
    if version == Version::V1 {
        return frame(ERROR, message.as_bytes());
    }
    let status = format!(
        r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"InternalError","code":500}}"#,
        json!(message)
    );
    frame(ERROR, status.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_frames() {
        let table: &[(Version, &[u8], ClientFrame)] = &[
            (Version::V5, b"\x00hi", ClientFrame::Stdin(b"hi".to_vec())),
            (Version::V4, b"\x00", ClientFrame::Stdin(vec![])),
            (
                Version::V5,
                b"\x04{\"Width\":80,\"Height\":24}",
                ClientFrame::Resize {
                    width: 80,
                    height: 24,
                },
            ),
            (Version::V5, b"\xff\x00", ClientFrame::CloseStdin),
            // v4 has no close signal; other streams cannot be closed by the client.
            (Version::V4, b"\xff\x00", ClientFrame::Ignored),
            (Version::V5, b"\xff\x01", ClientFrame::Ignored),
            (Version::V5, b"", ClientFrame::Ignored),
            (Version::V5, b"\x07x", ClientFrame::Ignored),
        ];
        for (version, msg, want) in table {
            assert_eq!(&decode(*version, msg).expect("decode"), want, "{msg:?}");
        }
        assert!(decode(Version::V5, b"\x04{\"Width\":-1}").is_err());
    }

    #[test]
    fn exit_codes_as_client_go_reads_them() {
        let ok = exit_status(Version::V4, &["true".into()], 0).expect("a status");
        assert_eq!(&ok[1..], br#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(ok[0], ERROR);
        let v: serde_json::Value = serde_json::from_slice(&ok[1..]).expect("json");
        assert_eq!(v["status"], "Success");

        let failed = exit_status(Version::V5, &["sh".into(), "-c".into(), "exit 3".into()], 3)
            .expect("a status");
        assert!(
            failed[1..]
                .starts_with(br#"{"metadata":{},"status":"Failure","message":"command terminated"#)
        );
        let v: serde_json::Value = serde_json::from_slice(&failed[1..]).expect("json");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");

        let v: serde_json::Value =
            serde_json::from_slice(&failure_status(Version::V4, "no such file")[1..])
                .expect("json");
        assert_eq!(v["message"], "no such file");
        // The first version: text on failure, nothing on success.
        assert_eq!(exit_status(Version::V1, &["true".into()], 0), None);
        let failed = exit_status(Version::V1, &["false".into()], 1).expect("an error");
        assert!(failed[1..].starts_with(b"command terminated with non-zero exit code"));
        assert_eq!(&failure_status(Version::V1, "boom")[1..], b"boom");
    }

    #[test]
    fn protocol_names() {
        assert_eq!(
            negotiate(PROTOCOLS[0]),
            Some((Version::V5, Framing::Binary))
        );
        assert_eq!(
            negotiate("v4.channel.k8s.io"),
            Some((Version::V4, Framing::Binary))
        );
        assert_eq!(
            negotiate("base64.channel.k8s.io"),
            Some((Version::V1, Framing::Base64))
        );
        assert_eq!(negotiate(""), Some((Version::V1, Framing::Binary)));
        assert_eq!(negotiate("v6.channel.k8s.io"), None);
    }

    #[test]
    fn base64_frames() {
        assert_eq!(to_base64(b"\x01hello"), "1aGVsbG8=");
        assert_eq!(
            from_client(Framing::Base64, true, b"0aGVsbG8=").unwrap(),
            b"\x00hello"
        );
        // Binary messages of a base64 client, and text of a binary one, are taken as they are.
        assert_eq!(
            from_client(Framing::Base64, false, b"\x00x").unwrap(),
            b"\x00x"
        );
        assert_eq!(
            from_client(Framing::Binary, true, b"\x00x").unwrap(),
            b"\x00x"
        );
        assert!(from_client(Framing::Base64, true, b"x").is_err());
        assert!(from_client(Framing::Base64, true, b"0!!").is_err());
    }
}
