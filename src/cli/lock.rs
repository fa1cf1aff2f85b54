//! One skiff per data dir: `skiff up`, `skiff controller` and `skiff agent` hold an exclusive
//! lock on `<data-dir>/skiff.lock` (flock, released by the kernel when the process ends, however
//! it ends) with their pid in it, so a second one is refused with that pid instead of failing
//! deep inside the store or the runtime.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The held lock; the data dir is this process's until it is dropped or the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the data dir's lock, or says which process holds it.
pub fn hold(data_dir: &Path) -> Result<DataDirLock> {
    let path: PathBuf = data_dir.join("skiff.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                "another skiff".to_owned()
            } else {
                format!("another skiff (pid {pid})")
            };
            bail!(
                "data dir {} is in use by {holder}: stop it first, or give this one another --data-dir",
                data_dir.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DataDirLock { _file: file })
}

/// The pid of the process holding the data dir's lock, if one does (`Some(None)`: held, pid
/// unknown); `None` when it is free.
pub fn holder(data_dir: &Path) -> Option<Option<u32>> {
    let mut file = File::open(data_dir.join("skiff.lock")).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(pid.trim().parse().ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_who_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = hold(dir.path()).unwrap();
        let err = hold(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "data dir {} is in use by another skiff (pid {}): stop it first, or give this one another --data-dir",
                dir.path().display(),
                std::process::id()
            )
        );
        assert_eq!(holder(dir.path()), Some(Some(std::process::id())));
        drop(first);
        assert_eq!(holder(dir.path()), None);
        let again = hold(dir.path());
        assert!(again.is_ok(), "{again:?}");
        let pid = std::fs::read_to_string(dir.path().join("skiff.lock")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
    }
}
