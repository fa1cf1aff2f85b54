//! CRI container log format: `<RFC3339Nano> <stream> <P|F> <content>\n`, one record per line,
//! lines longer than [`MAX_LINE`] split into partial (`P`) records ending with a full (`F`) one.
//! [`LogSink`] is the file they go to, rotated by size the way the kubelet rotates container logs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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

/// The container's log file: appended to, reopened on request, and rotated once it passes
/// `max_size` bytes into `<path>.<YYYYMMDD-HHMMSS>` (the kubelet's naming, which the log
/// readers skip), keeping `max_files` files in all. Without a path, output is discarded.
#[derive(Debug)]
pub struct LogSink {
    path: Option<PathBuf>,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogSink {
    /// Opens (creating) `path` for appending; `max_size` 0 never rotates.
    pub fn open(path: Option<PathBuf>, max_size: u64, max_files: u32) -> Self {
        let mut s = LogSink {
            path,
            file: None,
            size: 0,
            max_size,
            max_files: max_files.max(1),
        };
        s.reopen();
        s
    }

    /// Closes the file and opens whatever is at the path now (a fresh file if it was renamed).
    pub fn reopen(&mut self) {
        self.file = None;
        let Some(p) = &self.path else { return };
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
            }
            Err(e) => eprintln!("open log {}: {e}", p.display()),
        }
    }

    /// Rotates if the file has grown past the limit. Called before each write, and each record
    /// is one write, so no record is split across two files.
    fn rotate_if_needed(&mut self) {
        if self.max_size == 0 || self.size < self.max_size {
            return;
        }
        let Some(p) = self.path.clone() else { return };
        let stamp = crate::clock::rotation_stamp(crate::clock::now());
        // Several rotations in one second get a zero-padded counter, so names still sort in
        // the order the files were written.
        let mut target = rotated_name(&p, &stamp);
        let mut n = 1;
        while target.exists() {
            target = rotated_name(&p, &format!("{stamp}.{n:03}"));
            n += 1;
        }
        if let Err(e) = std::fs::rename(&p, &target) {
            eprintln!("rotate log {}: {e}", p.display());
            return;
        }
        prune_rotated(&p, self.max_files as usize - 1);
        self.reopen();
    }
}

fn rotated_name(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Deletes the oldest rotated files of `path` until `keep` remain (timestamps sort by name).
fn prune_rotated(path: &Path, keep: usize) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let prefix = format!("{name}.");
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    rotated.sort();
    let excess = rotated.len().saturating_sub(keep);
    for old in &rotated[..excess] {
        let _ = std::fs::remove_file(old);
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.rotate_if_needed();
        match self.file.as_mut() {
            Some(f) => {
                let n = f.write(buf)?;
                self.size += n as u64;
                Ok(n)
            }
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// The current time as RFC 3339 with nanoseconds, as kubelet parses log timestamps.
pub fn timestamp() -> String {
    crate::clock::rfc3339_nano(crate::clock::now())
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
    fn sink_rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c").join("0.log");
        let mut sink = LogSink::open(Some(path.clone()), 100, 3);
        let mut w = CriLineWriter::new("stdout");
        for i in 0..20 {
            w.feed(
                format!("line {i:02} {}\n", "x".repeat(40)).as_bytes(),
                "T",
                &mut sink,
            )
            .expect("feed");
        }
        // One read holding many lines still rotates between its records.
        let many: String = (20..60)
            .map(|i| format!("line {i:02} {}\n", "y".repeat(40)))
            .collect();
        w.feed(many.as_bytes(), "T", &mut sink).expect("feed");
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("c"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"0.log".to_string()));
        assert!(
            names
                .iter()
                .all(|n| n == "0.log" || n.starts_with("0.log."))
        );
        // The live file holds the newest record, whole.
        let live = std::fs::read_to_string(&path).expect("read");
        assert!(
            live.lines().all(|l| l.starts_with("T stdout F line ")),
            "{live}"
        );
        let total: usize = names
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join("c").join(n)).expect("r"))
            .map(|t| t.lines().count())
            .sum();
        assert!(total < 60, "old files were pruned");
        assert!(
            live.contains("line 59"),
            "the newest record is in the live file"
        );
    }

    #[test]
    fn sink_reopens_after_rename_and_discards_without_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut sink = LogSink::open(Some(path.clone()), 0, 1);
        sink.write_all(b"one\n").expect("write");
        std::fs::rename(&path, dir.path().join("0.log.old")).expect("rename");
        sink.reopen();
        sink.write_all(b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two\n");
        let mut none = LogSink::open(None, 10, 1);
        none.write_all(b"dropped").expect("write");
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
