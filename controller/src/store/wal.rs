//! The raft log's write-ahead log: entries and hard states appended as checksummed records to
//! preallocated segment files, made durable by one `fdatasync` per raft `Ready`.
//!
//! Why not the redb file: a redb commit rewrites B-tree pages and grows the file, and on ext4 an
//! fdatasync that must also commit a size change costs milliseconds where one that only rewrites
//! data blocks of an already allocated file costs about a tenth of one. So segments are filled
//! with zeros when they are created, and records are written over the zeros.
//!
//! A record is `len: u32 LE | crc32: u32 LE | kind: u8 | payload`, with `len` counting kind and
//! payload and the checksum covering both. Reading stops at the first zero length; a bad record
//! at the end of the last segment is a write torn by a crash (it was never acknowledged) and is
//! zeroed, anywhere else it is corruption and opening fails.
//!
//! Segment `N` is `<dir>/<N as 16 hex digits>.wal`. Every segment after the first starts with the
//! hard state current when it was opened, so segments whose entries are all compacted can be
//! deleted from the front without losing the term and vote.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::{Entry, HardState};

use super::StoreError;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// Every entry before this record is void: a snapshot replaced the log.
const KIND_RESET: u8 = 3;
const HEADER: usize = 8;
/// Segments as large as etcd's: a new one (and its zero fill) is needed rarely.
pub const SEGMENT_SIZE: u64 = 64 << 20;

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> StoreError {
    StoreError::Disk(format!("{what}: {e}"))
}

struct Segment {
    seq: u64,
    /// The highest entry index written to it (0 for none).
    max_index: u64,
}

/// What the log held when it was opened.
#[derive(Debug, Default)]
pub struct Replayed {
    pub hard_state: Option<HardState>,
    /// Contiguous entries after the snapshot index.
    pub entries: Vec<Entry>,
}

/// An open write-ahead log. Not shared: the node loop is its only writer.
pub struct Wal {
    dir: PathBuf,
    segment_size: u64,
    segments: Vec<Segment>,
    /// The segment being written; shared with whoever flushes it (`sync_handle`).
    file: Arc<File>,
    offset: u64,
    hard_state: HardState,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn push_record(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = (payload.len() + 1) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
}

/// Creates a zero-filled segment: under a temporary name first, so a crash mid-fill leaves no
/// half-made segment behind.
fn create_segment(dir: &Path, seq: u64, size: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, seq);
    let tmp = path.with_extension("tmp");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_err(tmp.display(), e))?;
    zero_fill(&file, 0, size).map_err(|e| io_err(tmp.display(), e))?;
    file.sync_all().map_err(|e| io_err(tmp.display(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err(path.display(), e))?;
    sync_dir(dir)?;
    Ok(file)
}

fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir.display(), e))
}

/// Reads one segment's records into `out`; returns where its valid records end and whether it
/// ended cleanly (at a zero length or the end of the file) rather than at a bad record.
fn replay_segment(
    path: &Path,
    snapshot_index: u64,
    out: &mut Replayed,
    seg: &mut Segment,
) -> Result<(u64, bool), StoreError> {
    let file = File::open(path).map_err(|e| io_err(path.display(), e))?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    loop {
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok((offset, true)),
            Err(e) => return Err(io_err(path.display(), e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 {
            return Ok((offset, crc == 0));
        }
        payload.resize(len, 0);
        match r.read_exact(&mut payload) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok((offset, false)),
            Err(e) => return Err(io_err(path.display(), e)),
        }
        if crc32fast::hash(&payload) != crc {
            return Ok((offset, false));
        }
        let bad =
            |what: &str| StoreError::Disk(format!("{}: {what} at offset {offset}", path.display()));
        let body = &payload[1..];
        match payload[0] {
            KIND_ENTRY => {
                let e = Entry::parse_from_bytes(body).map_err(|_| bad("undecodable entry"))?;
                seg.max_index = seg.max_index.max(e.index);
                if e.index > snapshot_index {
                    let next = out.entries.first().map_or(snapshot_index + 1, |f| f.index);
                    if e.index < next {
                        // Overwrites from before everything kept: start over from it.
                        out.entries.clear();
                    } else {
                        let keep = (e.index - next) as usize;
                        if keep > out.entries.len() {
                            return Err(bad(&format!(
                                "entry {} leaves a gap after {}",
                                e.index,
                                next + out.entries.len() as u64 - 1
                            )));
                        }
                        out.entries.truncate(keep);
                    }
                    if out.entries.is_empty() && e.index != snapshot_index + 1 {
                        return Err(bad(&format!(
                            "entry {} does not follow the snapshot at {snapshot_index}",
                            e.index
                        )));
                    }
                    out.entries.push(e);
                }
            }
            KIND_HARD_STATE => {
                out.hard_state = Some(
                    HardState::parse_from_bytes(body).map_err(|_| bad("undecodable hard state"))?,
                );
            }
            KIND_RESET => out.entries.clear(),
            k => return Err(bad(&format!("unknown record kind {k}"))),
        }
        offset += (HEADER + len) as u64;
    }
}

impl Wal {
    /// Opens the log in `dir` (creating it), replaying every record after `snapshot_index`.
    pub fn open(
        dir: &Path,
        segment_size: u64,
        snapshot_index: u64,
    ) -> Result<(Self, Replayed), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir.display(), e))?;
        let mut seqs: Vec<u64> = Vec::new();
        for ent in std::fs::read_dir(dir).map_err(|e| io_err(dir.display(), e))? {
            let ent = ent.map_err(|e| io_err(dir.display(), e))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".wal") {
                if let Ok(seq) = u64::from_str_radix(stem, 16) {
                    seqs.push(seq);
                }
            } else if name.ends_with(".tmp") {
                // A segment whose zero fill a crash interrupted: never written to.
                let _ = std::fs::remove_file(ent.path());
            }
        }
        seqs.sort_unstable();
        let mut out = Replayed::default();
        let mut segments = Vec::new();
        let mut end = 0u64;
        for (i, seq) in seqs.iter().enumerate() {
            let mut seg = Segment {
                seq: *seq,
                max_index: 0,
            };
            let path = segment_path(dir, *seq);
            let (valid, clean) = replay_segment(&path, snapshot_index, &mut out, &mut seg)?;
            if !clean && i + 1 != seqs.len() {
                return Err(StoreError::Disk(format!(
                    "{}: corrupt record at offset {valid} in a segment that is not the last",
                    path.display()
                )));
            }
            end = valid;
            segments.push(seg);
        }
        let file = match segments.last() {
            Some(last) => {
                let path = segment_path(dir, last.seq);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(path.display(), e))?;
                // Zero whatever a torn write left after the valid records, so a shorter record
                // written there later is never followed by stale bytes that parse.
                let len = file
                    .metadata()
                    .map_err(|e| io_err(path.display(), e))?
                    .len();
                let mut probe = [0u8; HEADER];
                let n = file.read_at(&mut probe, end).unwrap_or(0);
                if probe[..n].iter().any(|b| *b != 0) {
                    zero_fill(&file, end, len).map_err(|e| io_err(path.display(), e))?;
                    file.sync_data().map_err(|e| io_err(path.display(), e))?;
                }
                file
            }
            None => {
                segments.push(Segment {
                    seq: 1,
                    max_index: 0,
                });
                create_segment(dir, 1, segment_size)?
            }
        };
        let wal = Self {
            dir: dir.to_path_buf(),
            segment_size,
            segments,
            file: Arc::new(file),
            offset: end,
            hard_state: out.hard_state.clone().unwrap_or_default(),
            buf: Vec::new(),
        };
        Ok((wal, out))
    }

    /// Writes a `Ready`'s entries (which replace any at their indexes and after) and hard
    /// state, in that order; durable when this returns if `sync`.
    pub fn write(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        self.buf.clear();
        for e in entries {
            let bytes = e.write_to_bytes()?;
            push_record(&mut self.buf, KIND_ENTRY, &bytes);
        }
        if let Some(hs) = hs {
            push_record(&mut self.buf, KIND_HARD_STATE, &hs.write_to_bytes()?);
            self.hard_state = hs.clone();
        }
        let max_index = entries.last().map_or(0, |e| e.index);
        self.flush(max_index, sync)
    }

    /// The file that an `fdatasync` must flush to make what was written so far durable: a
    /// `write` without `sync` followed by `sync_data` on this equals a `write` with it (a change
    /// of segment flushes the old one before writing to the new).
    pub fn sync_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Voids every entry written so far (a snapshot replaced the log) and records `hs`; durable
    /// when this returns.
    pub fn reset(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.buf.clear();
        push_record(&mut self.buf, KIND_RESET, &[]);
        push_record(&mut self.buf, KIND_HARD_STATE, &hs.write_to_bytes()?);
        self.hard_state = hs.clone();
        self.flush(0, true)
    }

    fn flush(&mut self, max_index: u64, sync: bool) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.offset > 0 && self.offset + self.buf.len() as u64 > self.segment_size {
            self.rotate()?;
        }
        let seq = self.segments.last().map_or(0, |s| s.seq);
        let path = |dir: &Path| segment_path(dir, seq);
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| io_err(path(&self.dir).display(), e))?;
        self.offset += self.buf.len() as u64;
        if let Some(seg) = self.segments.last_mut() {
            seg.max_index = seg.max_index.max(max_index);
        }
        if sync {
            self.file
                .sync_data()
                .map_err(|e| io_err(path(&self.dir).display(), e))?;
        }
        Ok(())
    }

    /// Moves to a fresh segment that starts with the current hard state; the batch in `buf`
    /// goes after it.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let seq = self.segments.last().map_or(0, |s| s.seq) + 1;
        // Everything in the old segment is durable before the next one exists, so only the last
        // segment can ever end in a torn write.
        self.file
            .sync_data()
            .map_err(|e| io_err(segment_path(&self.dir, seq - 1).display(), e))?;
        self.file = Arc::new(create_segment(&self.dir, seq, self.segment_size)?);
        self.segments.push(Segment { seq, max_index: 0 });
        let mut head = Vec::with_capacity(64 + self.buf.len());
        push_record(
            &mut head,
            KIND_HARD_STATE,
            &self.hard_state.write_to_bytes()?,
        );
        head.extend_from_slice(&self.buf);
        self.buf = head;
        self.offset = 0;
        Ok(())
    }

    /// Deletes the oldest segments whose entries are all at or below `index` (compacted), never
    /// the one being written.
    pub fn purge(&mut self, index: u64) -> Result<(), StoreError> {
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].max_index <= index {
            let seg = self.segments.remove(0);
            let path = segment_path(&self.dir, seg.seq);
            std::fs::remove_file(&path).map_err(|e| io_err(path.display(), e))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// How many segment files the log spans.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 100].into(),
            ..Default::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn indexes(r: &Replayed) -> Vec<(u64, u64)> {
        r.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn replays_entries_overwrites_and_the_last_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, r) = Wal::open(dir.path(), 1 << 16, 0).unwrap();
            assert!(r.entries.is_empty() && r.hard_state.is_none());
            w.write(
                &[entry(1, 1), entry(2, 1), entry(3, 1)],
                Some(&hs(1, 1, 1)),
                true,
            )
            .unwrap();
            w.write(&[entry(3, 2), entry(4, 2)], Some(&hs(2, 2, 3)), true)
                .unwrap();
            w.write(&[], Some(&hs(2, 2, 4)), false).unwrap();
        }
        let (_, r) = Wal::open(dir.path(), 1 << 16, 0).unwrap();
        assert_eq!(indexes(&r), [(1, 1), (2, 1), (3, 2), (4, 2)]);
        assert_eq!(r.hard_state, Some(hs(2, 2, 4)));
        // Entries at or below the snapshot index are left out.
        let (_, r) = Wal::open(dir.path(), 1 << 16, 2).unwrap();
        assert_eq!(indexes(&r), [(3, 2), (4, 2)]);
    }

    #[test]
    fn rotates_segments_keeps_the_hard_state_and_purges_compacted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(dir.path(), 1024, 0).unwrap();
        w.write(&[], Some(&hs(7, 3, 0)), true).unwrap();
        for i in 1..=40 {
            w.write(&[entry(i, 7)], None, true).unwrap();
        }
        let before = w.segment_count();
        assert!(before > 3, "{before} segments");
        w.purge(30).unwrap();
        let left = w.segment_count();
        assert!(left < before - 1, "{left} of {before} segments left");
        drop(w);
        let (_, r) = Wal::open(dir.path(), 1024, 30).unwrap();
        assert_eq!(r.hard_state, Some(hs(7, 3, 0)));
        assert_eq!(r.entries.first().map(|e| e.index), Some(31));
        assert_eq!(r.entries.last().map(|e| e.index), Some(40));
    }

    #[test]
    fn a_torn_tail_is_dropped_and_overwritten_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(dir.path(), 1 << 16, 0).unwrap();
            w.write(&[entry(1, 1), entry(2, 1)], Some(&hs(1, 0, 0)), true)
                .unwrap();
        }
        // Tear the last record: flip a byte in entry 2's payload.
        let path = segment_path(dir.path(), 1);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let rec = HEADER as u64 + 1 + entry(1, 1).write_to_bytes().unwrap().len() as u64;
        f.write_all_at(&[0xff], rec + HEADER as u64 + 20).unwrap();
        drop(f);
        {
            let (mut w, r) = Wal::open(dir.path(), 1 << 16, 0).unwrap();
            assert_eq!(indexes(&r), [(1, 1)]);
            assert_eq!(r.hard_state, None);
            w.write(&[entry(2, 2)], None, true).unwrap();
        }
        let (_, r) = Wal::open(dir.path(), 1 << 16, 0).unwrap();
        assert_eq!(indexes(&r), [(1, 1), (2, 2)]);
    }

    #[test]
    fn reset_voids_earlier_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(dir.path(), 1 << 16, 0).unwrap();
            w.write(&[entry(1, 1), entry(2, 1), entry(3, 1)], None, true)
                .unwrap();
            w.reset(&hs(3, 0, 10)).unwrap();
            w.write(&[entry(11, 3)], None, true).unwrap();
        }
        let (_, r) = Wal::open(dir.path(), 1 << 16, 10).unwrap();
        assert_eq!(indexes(&r), [(11, 3)]);
        assert_eq!(r.hard_state, Some(hs(3, 0, 10)));
    }

    #[test]
    fn corruption_before_the_last_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(dir.path(), 1024, 0).unwrap();
            for i in 1..=20 {
                w.write(&[entry(i, 1)], None, true).unwrap();
            }
            assert!(w.segment_count() > 2);
        }
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 1))
            .unwrap();
        f.write_all_at(&[0xff], HEADER as u64 + 5).unwrap();
        drop(f);
        let err = Wal::open(dir.path(), 1024, 0).unwrap_err();
        assert!(err.to_string().contains("corrupt record"), "{err}");
    }
}
