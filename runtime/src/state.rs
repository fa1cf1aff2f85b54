//! Small helpers for the runtime's persistent JSON state files: written to a temp file in the same
//! directory and renamed, so a crash leaves either the old or the new file, never half. Records
//! that must survive a power cut (images) are synced first; records of containers are not, as
//! no container survives the machine going down (see [`write_json_unsynced`]).

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, RuntimeError};

/// Atomically replaces `path` with `value` as pretty JSON, durable once this returns.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write(path, &encode(path, value)?, true)
}

/// Atomically replaces `path` with `value` as JSON, without waiting for the disk: for the
/// records of containers and their monitors. A process crash cannot lose the file (the page
/// cache outlives it); a power cut can, and it also ends every container the record describes,
/// which is what the runtime reports for a record it cannot read. An fsync costs a container
/// start about as much as everything else the runtime does for it.
pub fn write_json_unsynced(path: &Path, value: &impl Serialize) -> Result<()> {
    write(path, &encode(path, value)?, false)
}

fn encode(path: &Path, value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| RuntimeError::State {
        path: path.to_path_buf(),
        source,
    })
}

/// Atomically replaces `path` with `data`, durable once this returns.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write(path, data, true)
}

/// Atomically replaces `path` with `data`, unsynced (see [`write_json_unsynced`]).
pub fn write_atomic_unsynced(path: &Path, data: &[u8]) -> Result<()> {
    write(path, data, false)
}

fn write(path: &Path, data: &[u8], sync: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(RuntimeError::io("create dir", dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(RuntimeError::io("create", &tmp))?;
    f.write_all(data).map_err(RuntimeError::io("write", &tmp))?;
    if sync {
        f.sync_all().map_err(RuntimeError::io("sync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(RuntimeError::io("rename", path))
}

/// Reads `path` as JSON; `Ok(None)` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| RuntimeError::State {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("read", path)(e)),
    }
}

/// Nanoseconds since the Unix epoch, as CRI timestamps are.
pub fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}
