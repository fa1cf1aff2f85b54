//! Container logs as the kubelet serves them: finds a container's CRI log file under the pod
//! log directory, parses the CRI log format (`<RFC3339Nano> <stdout|stderr> <P|F> <content>`,
//! joining partial `P` lines), applies `tailLines`/`sinceSeconds`/`limitBytes`/`timestamps`,
//! and for `follow` keeps polling the file until the container stops.

use crate::registry::PodRegistry;
use crate::spec;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

/// How often a followed log file is polled for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    /// `P`: the runtime split a long line; the next line continues it.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its trailing newline). `None` for a malformed line.
pub fn parse_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(CriLine {
        timestamp,
        stream,
        partial,
        content: parts.next().unwrap_or(b""),
    })
}

/// A whole log message: partial lines joined, newline restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The timestamp of the message's first part.
    pub timestamp: String,
    pub content: Vec<u8>,
}

impl Record {
    fn render(&self, timestamps: bool, out: &mut Vec<u8>) {
        if timestamps {
            out.extend_from_slice(self.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.content);
    }

    fn since(&self, cutoff: Option<jiff::Timestamp>) -> bool {
        match (cutoff, self.timestamp.parse::<jiff::Timestamp>()) {
            (Some(c), Ok(t)) => t >= c,
            _ => true,
        }
    }
}

/// Joins partial lines into records, per stream (stdout and stderr interleave).
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Vec<(String, Record)>,
}

impl Assembler {
    /// Feeds one raw line; returns a record when it completes one.
    pub fn push(&mut self, raw: &[u8]) -> Option<Record> {
        let line = parse_line(raw)?;
        let idx = self.pending.iter().position(|(s, _)| s == line.stream);
        let mut rec = match idx {
            Some(i) => self.pending.remove(i).1,
            None => Record {
                timestamp: line.timestamp.to_owned(),
                content: Vec::new(),
            },
        };
        rec.content.extend_from_slice(line.content);
        if line.partial {
            self.pending.push((line.stream.to_owned(), rec));
            None
        } else {
            rec.content.push(b'\n');
            Some(rec)
        }
    }
}

/// The query of `GET /containerLogs/...`, as the kubelet takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub since_seconds: Option<i64>,
}

/// Parses complete lines of `data` into records (a trailing line without newline is left out;
/// the caller keeps it for the next read).
pub fn records(asm: &mut Assembler, data: &[u8]) -> Vec<Record> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| asm.push(l))
        .collect()
}

/// Renders the already-written part of a log for `opts` (everything but `follow`).
pub fn render(records: &[Record], opts: &LogOptions, now: jiff::Timestamp) -> Vec<u8> {
    let cutoff = opts
        .since_seconds
        .and_then(|s| now.checked_sub(jiff::SignedDuration::from_secs(s)).ok());
    let selected: Vec<&Record> = records.iter().filter(|r| r.since(cutoff)).collect();
    let skip = match opts.tail_lines {
        Some(n) => selected.len().saturating_sub(n),
        None => 0,
    };
    let mut out = Vec::new();
    for r in &selected[skip..] {
        r.render(opts.timestamps, &mut out);
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    out
}

/// Why a log could not be found; the HTTP server turns it into a 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound(pub String);

/// Finds the pod's log directory: the registry knows the live pod's UID; otherwise the newest
/// `<ns>_<name>_<uid>` directory (a finished pod after an agent restart).
pub fn pod_dir(
    root: &Path,
    registry: &PodRegistry,
    namespace: &str,
    pod: &str,
) -> Result<PathBuf, NotFound> {
    if let Some(entry) = registry.get(namespace, pod) {
        let dir = spec::pod_log_dir(root, namespace, pod, &entry.uid);
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    let prefix = format!("{namespace}_{pod}_");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    newest
        .map(|e| e.path())
        .ok_or_else(|| NotFound(format!("pod {namespace}/{pod} not found on this node")))
}

/// The container's log file: the newest restart's, or the one before it for `previous`.
pub fn log_file(
    pod_dir: &Path,
    container: &str,
    previous: bool,
    pod_key: &str,
) -> Result<PathBuf, NotFound> {
    let dir = pod_dir.join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    attempts.sort_unstable();
    let pick = if previous {
        attempts.iter().rev().nth(1)
    } else {
        attempts.last()
    };
    match pick {
        Some(n) => Ok(dir.join(format!("{n}.log"))),
        None if previous => Err(NotFound(format!(
            "previous terminated container {container:?} in pod {pod_key} not found"
        ))),
        None => Err(NotFound(format!(
            "container {container:?} in pod {pod_key} has no log"
        ))),
    }
}

/// A `follow` stream's state: the file, how far it was read, and the incomplete tail.
pub struct Follower {
    pub path: PathBuf,
    pub offset: u64,
    pub carry: Vec<u8>,
    pub asm: Assembler,
    pub timestamps: bool,
    pub remaining: Option<usize>,
    pub registry: PodRegistry,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub cancel: CancellationToken,
    pub first: Option<Vec<u8>>,
    /// (device, inode) of the file being read; `None` until the first poll. A change means
    /// the runtime rotated the log (renamed it and started a new one at the same path).
    pub file_id: Option<(u64, u64)>,
}

type FileId = (u64, u64);

async fn open_with_id(path: &Path) -> std::io::Result<(tokio::fs::File, FileId, u64)> {
    use std::os::unix::fs::MetadataExt;
    let f = tokio::fs::File::open(path).await?;
    let md = f.metadata().await?;
    Ok((f, (md.dev(), md.ino()), md.len()))
}

async fn read_rest(mut f: tokio::fs::File, offset: u64) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// The rotated file (`<path>.<suffix>` beside it) that is the file `id`, if it still exists.
async fn find_rotated(path: &Path, id: FileId) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent()?;
    let prefix = format!("{}.", path.file_name()?.to_str()?);
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    while let Ok(Some(e)) = entries.next_entry().await {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
            && let Ok(md) = e.metadata().await
            && (md.dev(), md.ino()) == id
        {
            return Some(e.path());
        }
    }
    None
}

impl Follower {
    fn running(&self) -> bool {
        self.registry
            .get(&self.namespace, &self.pod)
            .is_some_and(|e| e.running.contains(&self.container))
    }

    /// Reads what was appended since the last call and renders its complete records. Across a
    /// rotation it finishes the renamed file first, then starts the new one from its beginning.
    async fn poll_once(&mut self) -> std::io::Result<Vec<u8>> {
        let (f, id, len) = open_with_id(&self.path).await?;
        let mut data = Vec::new();
        match self.file_id {
            Some(old) if old != id => {
                if let Some(rotated) = find_rotated(&self.path, old).await
                    && let Ok((rf, _, _)) = open_with_id(&rotated).await
                {
                    data = read_rest(rf, self.offset).await.unwrap_or_default();
                }
                self.offset = 0;
            }
            // Truncated in place (copytruncate): start over.
            _ if len < self.offset => self.offset = 0,
            _ => {}
        }
        self.file_id = Some(id);
        let fresh = read_rest(f, self.offset).await?;
        self.offset += fresh.len() as u64;
        data.extend_from_slice(&fresh);
        self.carry.extend_from_slice(&data);
        let Some(last_nl) = self.carry.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<u8> = self.carry.drain(..=last_nl).collect();
        let mut out = Vec::new();
        for r in records(&mut self.asm, &complete) {
            r.render(self.timestamps, &mut out);
        }
        Ok(out)
    }

    /// The next chunk to send, or `None` when the stream is over: the container stopped and
    /// the file is drained, the byte limit is reached, or the agent shuts down.
    pub async fn next_chunk(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        if let Some(first) = self.first.take()
            && !first.is_empty()
        {
            return Some(Ok(self.limit(first)));
        }
        loop {
            if self.remaining == Some(0) || self.cancel.is_cancelled() {
                return None;
            }
            // Decide before reading, so lines written just before the exit are still sent.
            let running = self.running();
            match self.poll_once().await {
                Ok(out) if !out.is_empty() => return Some(Ok(self.limit(out))),
                Ok(_) if !running => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }

    fn limit(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        if let Some(rem) = self.remaining.as_mut() {
            out.truncate(*rem);
            *rem -= out.len();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-01T00:00:00.000000001Z stdout F hello\n\
2024-01-01T00:00:01.000000000Z stderr P par\n\
2024-01-01T00:00:01.500000000Z stdout F between\n\
2024-01-01T00:00:02.000000000Z stderr F tial\n\
2024-01-01T00:00:03.000000000Z stdout F last\n";

    fn all(data: &str) -> Vec<Record> {
        records(&mut Assembler::default(), data.as_bytes())
    }

    #[test]
    fn parses_cri_lines() {
        let l = parse_line(b"2024-01-01T00:00:00Z stdout F a b c").expect("line");
        assert_eq!(l.timestamp, "2024-01-01T00:00:00Z");
        assert_eq!(
            (l.stream, l.partial, l.content),
            ("stdout", false, &b"a b c"[..])
        );
        let empty = parse_line(b"2024-01-01T00:00:00Z stderr F").expect("empty");
        assert_eq!(empty.content, b"");
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2024 stdin F x").is_none());
        assert!(parse_line(b"2024 stdout X x").is_none());
    }

    #[test]
    fn partial_lines_join_per_stream() {
        let recs = all(LOG);
        let text: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.content).into_owned())
            .collect();
        assert_eq!(text, ["hello\n", "between\n", "partial\n", "last\n"]);
        assert_eq!(recs[2].timestamp, "2024-01-01T00:00:01.000000000Z");
    }

    #[test]
    fn tail_timestamps_limit_and_since() {
        let recs = all(LOG);
        let now: jiff::Timestamp = "2024-01-01T00:00:03.5Z".parse().expect("ts");
        let opts = |f: fn(&mut LogOptions)| {
            let mut o = LogOptions::default();
            f(&mut o);
            o
        };
        let out = |o: LogOptions| String::from_utf8(render(&recs, &o, now)).expect("utf8");
        assert_eq!(out(opts(|_| {})), "hello\nbetween\npartial\nlast\n");
        assert_eq!(out(opts(|o| o.tail_lines = Some(2))), "partial\nlast\n");
        assert_eq!(out(opts(|o| o.tail_lines = Some(0))), "");
        assert_eq!(
            out(opts(|o| o.tail_lines = Some(10))),
            "hello\nbetween\npartial\nlast\n"
        );
        assert_eq!(
            out(opts(|o| {
                o.tail_lines = Some(1);
                o.timestamps = true;
            })),
            "2024-01-01T00:00:03.000000000Z last\n"
        );
        assert_eq!(out(opts(|o| o.limit_bytes = Some(8))), "hello\nbe");
        assert_eq!(out(opts(|o| o.since_seconds = Some(2))), "between\nlast\n");
    }

    #[test]
    fn finds_newest_and_previous_log_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let registry = PodRegistry::default();
        let dir = root.path().join("default_web_u1");
        std::fs::create_dir_all(dir.join("app")).expect("mkdir");
        for n in [0, 1, 2, 10] {
            std::fs::write(dir.join("app").join(format!("{n}.log")), "").expect("write");
        }
        let found = pod_dir(root.path(), &registry, "default", "web").expect("pod dir");
        assert_eq!(found, dir);
        let newest = log_file(&found, "app", false, "default/web").expect("newest");
        assert!(newest.ends_with("app/10.log"), "{newest:?}");
        let prev = log_file(&found, "app", true, "default/web").expect("previous");
        assert!(prev.ends_with("app/2.log"), "{prev:?}");
        assert!(log_file(&found, "nope", false, "default/web").is_err());
        assert!(pod_dir(root.path(), &registry, "default", "other").is_err());
    }

    #[tokio::test]
    async fn follow_streams_until_the_container_stops() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("0.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:00Z stdout F one\n2024-01-01T00:00:00Z stdout P tw",
        )
        .expect("write");
        let registry = app_running();
        let mut f = follower(&path, registry.clone());
        let chunk = f.next_chunk().await.expect("chunk").expect("io");
        assert_eq!(chunk, b"one\n");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut file, b"o\n2024-01-01T00:00:00Z stdout F -end\n")
            .expect("append");
        let chunk = f.next_chunk().await.expect("chunk").expect("io");
        assert_eq!(chunk, b"two-end\n");
        registry.remove("default", "web", "u1");
        assert!(
            f.next_chunk().await.is_none(),
            "stopped container ends the stream"
        );
    }

    /// A registry where container `app` of `default/web` runs.
    fn app_running() -> PodRegistry {
        let registry = PodRegistry::default();
        registry.set(
            "default",
            "web",
            crate::registry::PodEntry {
                uid: "u1".to_owned(),
                running: ["app".to_owned()].into(),
            },
        );
        registry
    }

    /// Follows `path` from its start for container `app` of `default/web`.
    fn follower(path: &Path, registry: PodRegistry) -> Follower {
        Follower {
            path: path.to_path_buf(),
            offset: 0,
            carry: Vec::new(),
            asm: Assembler::default(),
            timestamps: false,
            remaining: None,
            registry,
            namespace: "default".to_owned(),
            pod: "web".to_owned(),
            container: "app".to_owned(),
            cancel: CancellationToken::new(),
            first: None,
            file_id: None,
        }
    }

    #[tokio::test]
    async fn follow_continues_across_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let line = |s: &str| format!("2024-01-01T00:00:00Z stdout F {s}\n");
        std::fs::write(&path, line("one")).expect("write");
        let registry = app_running();
        let mut f = follower(&path, registry);
        assert_eq!(f.next_chunk().await.expect("chunk").expect("io"), b"one\n");
        // The runtime appends a last line, renames the file away and starts a new one.
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut old, line("two").as_bytes()).expect("append");
        std::fs::rename(&path, dir.path().join("0.log.20240101-000000")).expect("rotate");
        std::fs::write(&path, line("three")).expect("new file");
        assert_eq!(
            f.next_chunk().await.expect("chunk").expect("io"),
            b"two\nthree\n"
        );
    }
}
