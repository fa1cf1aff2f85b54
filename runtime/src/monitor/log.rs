//! CRI container log format: `<RFC3339Nano> <stream> <P|F> <content>\n`, one record per line,
//! lines longer than [`MAX_LINE`] split into partial (`P`) records ending with a full (`F`) one.

use std::io::{self, Write};

/// Longest content of one record, as containerd uses (16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Splits one stream's bytes into CRI log records.
#[derive(Debug)]
pub struct CriLineWriter {
    stream: &'static str,
    buf: Vec<u8>,
}

impl CriLineWriter {
    /// A writer for `stream` (`stdout` or `stderr`).
    pub fn new(stream: &'static str) -> Self {
        CriLineWriter {
            stream,
            buf: Vec::new(),
        }
    }

    fn record(&self, out: &mut impl Write, ts: &str, tag: &str, content: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(self.stream.as_bytes());
        line.push(b' ');
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(content);
        line.push(b'\n');
        // One write per record so concurrent readers never see half a record.
        out.write_all(&line)
    }

    /// Feeds bytes read from the stream; writes every complete record.
    pub fn feed(&mut self, data: &[u8], ts: &str, out: &mut impl Write) -> io::Result<()> {
        self.buf.extend_from_slice(data);
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n')
                && nl <= MAX_LINE
            {
                let rest = self.buf.split_off(nl + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                self.record(out, ts, "F", &line)?;
                continue;
            }
            if self.buf.len() > MAX_LINE {
                let rest = self.buf.split_off(MAX_LINE);
                let chunk = std::mem::replace(&mut self.buf, rest);
                self.record(out, ts, "P", &chunk)?;
                continue;
            }
            return Ok(());
        }
    }

    /// At end of stream: a trailing line without newline is written as a full record.
    pub fn finish(&mut self, ts: &str, out: &mut impl Write) -> io::Result<()> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.record(out, ts, "F", &line)?;
        }
        Ok(())
    }
}

/// The current time as RFC 3339 with nanoseconds, as kubelet parses log timestamps.
pub fn timestamp() -> String {
    let ts = jiff::Timestamp::now();
    format!("{ts:.9}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lines_and_split_reads() {
        let mut w = CriLineWriter::new("stdout");
        let mut out = Vec::new();
        w.feed(b"hel", "T", &mut out).expect("feed");
        assert!(out.is_empty());
        w.feed(b"lo\nworld\n", "T", &mut out).expect("feed");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "T stdout F hello\nT stdout F world\n"
        );
    }

    #[test]
    fn long_lines_become_partials() {
        let mut w = CriLineWriter::new("stderr");
        let mut out = Vec::new();
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.push(b'\n');
        w.feed(&data, "T", &mut out).expect("feed");
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("T stderr P xxx"));
        assert_eq!(lines[0].len(), "T stderr P ".len() + MAX_LINE);
        assert_eq!(lines[1], format!("T stderr F {}", "x".repeat(10)));
    }

    #[test]
    fn trailing_text_is_flushed_on_finish() {
        let mut w = CriLineWriter::new("stdout");
        let mut out = Vec::new();
        w.feed(b"no newline", "T", &mut out).expect("feed");
        w.finish("T", &mut out).expect("finish");
        assert_eq!(String::from_utf8_lossy(&out), "T stdout F no newline\n");
    }

    #[test]
    fn timestamp_is_rfc3339_nano() {
        let ts = timestamp();
        assert!(ts.ends_with('Z'), "{ts}");
        let frac = ts.split('.').nth(1).expect("fraction");
        assert_eq!(frac.len(), 10, "{ts}"); // 9 digits + Z
        assert!(ts.parse::<jiff::Timestamp>().is_ok());
    }
}
