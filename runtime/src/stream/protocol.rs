//! Kubernetes' remote command protocol over WebSocket (`v4.channel.k8s.io`,
//! `v5.channel.k8s.io`), as the kubelet's streaming server speaks it to `kubectl exec` and
//! `kubectl attach`: every binary message starts with a channel byte. From the client: 0 stdin,
//! 4 resize (JSON `{"Width":..,"Height":..}`) and, in v5 only, 255 followed by a stream id to
//! close that stream (stdin). To the client: 1 stdout, 2 stderr and 3 the final `Status` (JSON),
//! which carries a non-zero exit code as reason `NonZeroExitCode` with an `ExitCode` cause.

use serde::Deserialize;
use serde_json::json;

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

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
    V4,
    /// v4 plus the close-stream signal, so stdin can end before the connection does.
    V5,
}

impl Version {
    pub fn from_protocol(p: &str) -> Option<Version> {
        match p {
            "v5.channel.k8s.io" => Some(Version::V5),
            "v4.channel.k8s.io" => Some(Version::V4),
            _ => None,
        }
    }
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
pub fn exit_status(cmd: &[String], exit_code: i32) -> Vec<u8> {
    let status = if exit_code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {exit_code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
        })
    };
    frame(ERROR, status.to_string().as_bytes())
}

/// The final status of a stream that failed before or instead of an exit code.
pub fn failure_status(message: &str) -> Vec<u8> {
    let status = json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    });
    frame(ERROR, status.to_string().as_bytes())
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
        let ok = exit_status(&["true".into()], 0);
        assert_eq!(ok[0], ERROR);
        let v: serde_json::Value = serde_json::from_slice(&ok[1..]).expect("json");
        assert_eq!(v["status"], "Success");

        let failed = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        let v: serde_json::Value = serde_json::from_slice(&failed[1..]).expect("json");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");

        let v: serde_json::Value =
            serde_json::from_slice(&failure_status("no such file")[1..]).expect("json");
        assert_eq!(v["message"], "no such file");
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Version::from_protocol(PROTOCOLS[0]), Some(Version::V5));
        assert_eq!(
            Version::from_protocol("v4.channel.k8s.io"),
            Some(Version::V4)
        );
        assert_eq!(Version::from_protocol("channel.k8s.io"), None);
    }
}
