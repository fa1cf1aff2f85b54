//! The replicated state machine: a revisioned key-value map. Every applied write bumps one
//! global revision; each key keeps the revision that created it and the one that last changed it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Arc<[u8]>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.value.len());
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 16 {
            return None;
        }
        let create_revision = u64::from_le_bytes(b[0..8].try_into().ok()?);
        let mod_revision = u64::from_le_bytes(b[8..16].try_into().ok()?);
        Some(Self {
            value: Arc::from(&b[16..]),
            create_revision,
            mod_revision,
        })
    }
}

/// What must hold for a write to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// Apply whatever is there.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist.
    Present,
    /// The key must exist with this mod revision (compare-and-swap).
    ModRevision(u64),
}

/// A write proposed to raft; applied in log order on every member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Put {
        key: String,
        value: Vec<u8>,
        precondition: Precondition,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
    /// Forget watch history at or below this revision (the compaction window).
    Compact { revision: u64 },
    /// Does nothing; a new leader's way to learn the commit point.
    Noop,
}

impl Precondition {
    fn encode(self, out: &mut Vec<u8>) {
        let (tag, v) = match self {
            Precondition::None => (0u8, 0),
            Precondition::Absent => (1, 0),
            Precondition::Present => (2, 0),
            Precondition::ModRevision(r) => (3, r),
        };
        out.push(tag);
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let v = u64::from_le_bytes(b.get(1..9)?.try_into().ok()?);
        Some(match b.first()? {
            0 => Precondition::None,
            1 => Precondition::Absent,
            2 => Precondition::Present,
            3 => Precondition::ModRevision(v),
            _ => return None,
        })
    }
}

impl Command {
    /// A compact binary form for the raft log: values are stored as they are, not re-encoded.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let key_and = |out: &mut Vec<u8>, tag: u8, key: &str, p: Precondition| {
            out.push(tag);
            p.encode(out);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
        };
        match self {
            Command::Put {
                key,
                value,
                precondition,
            } => {
                key_and(&mut out, 1, key, *precondition);
                out.extend_from_slice(value);
            }
            Command::Delete { key, precondition } => key_and(&mut out, 2, key, *precondition),
            Command::Compact { revision } => {
                out.push(3);
                out.extend_from_slice(&revision.to_le_bytes());
            }
            Command::Noop => out.push(4),
        }
        out
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let tag = *b.first()?;
        if tag == 3 {
            return Some(Command::Compact {
                revision: u64::from_le_bytes(b.get(1..9)?.try_into().ok()?),
            });
        }
        if tag == 4 {
            return Some(Command::Noop);
        }
        let precondition = Precondition::decode(b.get(1..10)?)?;
        let klen = u32::from_le_bytes(b.get(10..14)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(b.get(14..14 + klen)?).ok()?.to_string();
        let rest = b.get(14 + klen..)?;
        match tag {
            1 => Some(Command::Put {
                key,
                value: rest.to_vec(),
                precondition,
            }),
            2 => Some(Command::Delete { key, precondition }),
            _ => None,
        }
    }
}

/// The outcome of one applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The write took effect at `revision`; `prev` is what it replaced or deleted.
    Done {
        revision: u64,
        record: Option<Record>,
        prev: Option<Record>,
    },
    /// The precondition failed; `actual` is what is stored now.
    PreconditionFailed { actual: Option<Record> },
}

impl Applied {
    /// A binary form for a forwarded proposal's answer (the peer service carries it as bytes).
    pub fn encode(&self) -> Vec<u8> {
        fn opt(out: &mut Vec<u8>, r: &Option<Record>) {
            match r {
                None => out.push(0),
                Some(r) => {
                    out.push(1);
                    let b = r.encode();
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(&b);
                }
            }
        }
        let mut out = Vec::new();
        match self {
            Applied::Done {
                revision,
                record,
                prev,
            } => {
                out.push(0);
                out.extend_from_slice(&revision.to_le_bytes());
                opt(&mut out, record);
                opt(&mut out, prev);
            }
            Applied::PreconditionFailed { actual } => {
                out.push(1);
                opt(&mut out, actual);
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        fn opt(b: &[u8], at: &mut usize) -> Option<Option<Record>> {
            let flag = *b.get(*at)?;
            *at += 1;
            if flag == 0 {
                return Some(None);
            }
            let len = u32::from_le_bytes(b.get(*at..*at + 4)?.try_into().ok()?) as usize;
            *at += 4;
            let r = Record::decode(b.get(*at..*at + len)?)?;
            *at += len;
            Some(Some(r))
        }
        let mut at = 1;
        match *b.first()? {
            0 => {
                let revision = u64::from_le_bytes(b.get(1..9)?.try_into().ok()?);
                at = 9;
                let record = opt(b, &mut at)?;
                let prev = opt(b, &mut at)?;
                Some(Applied::Done {
                    revision,
                    record,
                    prev,
                })
            }
            1 => Some(Applied::PreconditionFailed {
                actual: opt(b, &mut at)?,
            }),
            _ => None,
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub revision: u64,
    /// The new value; `None` for a delete.
    pub record: Option<Record>,
    pub prev: Option<Record>,
}

/// The state machine itself.
#[derive(Debug, Default, Clone)]
pub struct KvState {
    map: BTreeMap<String, Record>,
    revision: u64,
    applied_index: u64,
    compacted: u64,
}

impl KvState {
    pub fn new(applied_index: u64, revision: u64, compacted: u64) -> Self {
        Self {
            map: BTreeMap::new(),
            revision,
            applied_index,
            compacted,
        }
    }

    pub(crate) fn load(&mut self, key: String, rec: Record) {
        self.map.insert(key, rec);
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.map.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Record)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All keys under `prefix`, in key order.
    pub fn range_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Record)> + 'a {
        self.map
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    fn check(&self, key: &str, p: Precondition) -> Result<(), Option<Record>> {
        let cur = self.map.get(key);
        let ok = match p {
            Precondition::None => true,
            Precondition::Absent => cur.is_none(),
            Precondition::Present => cur.is_some(),
            Precondition::ModRevision(r) => cur.is_some_and(|c| c.mod_revision == r),
        };
        if ok { Ok(()) } else { Err(cur.cloned()) }
    }

    /// Applies a command; returns its outcome and the event to publish, if it changed anything.
    pub fn apply(&mut self, cmd: Command) -> (Applied, Option<Event>) {
        match cmd {
            Command::Put {
                key,
                value,
                precondition,
            } => {
                if let Err(actual) = self.check(&key, precondition) {
                    return (Applied::PreconditionFailed { actual }, None);
                }
                self.revision += 1;
                let prev = self.map.get(&key).cloned();
                let rec = Record {
                    value: Arc::from(value),
                    create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
                    mod_revision: self.revision,
                };
                self.map.insert(key.clone(), rec.clone());
                let ev = Event {
                    key,
                    revision: self.revision,
                    record: Some(rec.clone()),
                    prev: prev.clone(),
                };
                (
                    Applied::Done {
                        revision: self.revision,
                        record: Some(rec),
                        prev,
                    },
                    Some(ev),
                )
            }
            Command::Delete { key, precondition } => {
                let precondition = match precondition {
                    Precondition::None => Precondition::Present,
                    p => p,
                };
                if let Err(actual) = self.check(&key, precondition) {
                    return (Applied::PreconditionFailed { actual }, None);
                }
                self.revision += 1;
                let prev = self.map.remove(&key);
                let ev = Event {
                    key,
                    revision: self.revision,
                    record: None,
                    prev: prev.clone(),
                };
                (
                    Applied::Done {
                        revision: self.revision,
                        record: None,
                        prev,
                    },
                    Some(ev),
                )
            }
            Command::Compact { revision } => {
                self.compacted = self.compacted.max(revision.min(self.revision));
                (
                    Applied::Done {
                        revision: self.revision,
                        record: None,
                        prev: None,
                    },
                    None,
                )
            }
            Command::Noop => (
                Applied::Done {
                    revision: self.revision,
                    record: None,
                    prev: None,
                },
                None,
            ),
        }
    }

    /// Serializes the whole map for a raft snapshot.
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        let body = SnapshotBody {
            revision: self.revision,
            compacted: self.compacted,
            entries: self
                .map
                .iter()
                .map(|(k, r)| (k.clone(), r.encode()))
                .collect(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Rebuilds the map from a raft snapshot taken at `applied_index`.
    pub fn from_snapshot_bytes(b: &[u8], applied_index: u64) -> Option<Self> {
        let body: SnapshotBody = serde_json::from_slice(b).ok()?;
        let mut s = Self::new(applied_index, body.revision, body.compacted);
        for (k, r) in body.entries {
            s.map.insert(k, Record::decode(&r)?);
        }
        Some(s)
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    revision: u64,
    compacted: u64,
    entries: Vec<(String, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, v: &str, p: Precondition) -> Command {
        Command::Put {
            key: key.into(),
            value: v.as_bytes().to_vec(),
            precondition: p,
        }
    }

    #[test]
    fn revisions_and_compare_and_swap() {
        let mut s = KvState::default();
        let (a, ev) = s.apply(put("/a", "1", Precondition::Absent));
        assert!(matches!(a, Applied::Done { revision: 1, .. }));
        assert_eq!(ev.unwrap().revision, 1);
        let (a, _) = s.apply(put("/a", "2", Precondition::Absent));
        assert!(matches!(a, Applied::PreconditionFailed { actual: Some(_) }));
        let (a, _) = s.apply(put("/a", "2", Precondition::ModRevision(7)));
        assert!(matches!(a, Applied::PreconditionFailed { .. }));
        let (a, _) = s.apply(put("/a", "2", Precondition::ModRevision(1)));
        let Applied::Done { record, .. } = a else {
            panic!("cas failed")
        };
        let r = record.unwrap();
        assert_eq!((r.create_revision, r.mod_revision), (1, 2));
        let (a, ev) = s.apply(Command::Delete {
            key: "/a".into(),
            precondition: Precondition::None,
        });
        assert!(matches!(a, Applied::Done { revision: 3, .. }));
        assert!(ev.unwrap().record.is_none());
        let (a, _) = s.apply(Command::Delete {
            key: "/a".into(),
            precondition: Precondition::None,
        });
        assert!(matches!(a, Applied::PreconditionFailed { actual: None }));
    }

    #[test]
    fn command_encoding_round_trips() {
        for c in [
            put("/k", "{\"a\":1}", Precondition::ModRevision(42)),
            Command::Delete {
                key: "/x/y".into(),
                precondition: Precondition::Absent,
            },
            Command::Compact { revision: 9 },
            Command::Noop,
        ] {
            let back = Command::decode(&c.encode()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
        }
        assert!(Command::decode(&[9, 9]).is_none());
        assert!(Command::decode(&[]).is_none());
    }

    #[test]
    fn applied_encoding_round_trips() {
        let rec = Record {
            value: Arc::from(&b"v"[..]),
            create_revision: 3,
            mod_revision: 7,
        };
        for a in [
            Applied::Done {
                revision: 7,
                record: Some(rec.clone()),
                prev: None,
            },
            Applied::Done {
                revision: 8,
                record: None,
                prev: Some(rec.clone()),
            },
            Applied::PreconditionFailed { actual: Some(rec) },
            Applied::PreconditionFailed { actual: None },
        ] {
            assert_eq!(Applied::decode(&a.encode()), Some(a));
        }
        assert_eq!(Applied::decode(&[0, 1]), None);
    }

    #[test]
    fn snapshot_round_trip_and_prefix_range() {
        let mut s = KvState::default();
        for k in ["/p/a", "/p/b", "/q/a"] {
            s.apply(put(k, "v", Precondition::None));
        }
        let keys: Vec<_> = s.range_prefix("/p/").map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, ["/p/a", "/p/b"]);
        let t = KvState::from_snapshot_bytes(&s.to_snapshot_bytes(), 9).unwrap();
        assert_eq!(t.revision(), 3);
        assert_eq!(t.applied_index(), 9);
        assert_eq!(t.get("/q/a"), s.get("/q/a"));
    }
}
