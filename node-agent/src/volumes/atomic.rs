//! The kubelet's atomic writer for configMap, secret, downwardAPI and projected volumes: the
//! files live in a timestamped directory `..<time>.<random>`, `..data` is a symlink to it, and
//! each top-level name the user sees is a symlink through `..data`. An update writes a new
//! timestamped directory and swaps `..data` with one rename, so a reader sees either the old
//! set of files or the new one, never a mix; then it adds and removes the visible links and
//! removes the old directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

/// One file of a volume's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileSpec>;

const DATA_LINK: &str = "..data";
const TMP_LINK: &str = "..data_tmp";

/// Why a payload path is refused (the kubelet's `validatePath`).
pub fn path_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        return Some("must not be empty");
    }
    if p.len() > 4096 {
        return Some("must be less than or equal to 4096 characters");
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Some("must be a relative path");
    }
    let parts: Vec<Component> = path.components().collect();
    if parts.iter().any(|c| matches!(c, Component::ParentDir)) {
        return Some("must not contain '..'");
    }
    if p.starts_with("..") {
        return Some("must not start with '..'");
    }
    None
}

fn timestamped_name() -> String {
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    let r = uuid_like();
    format!("..{stamp}.{r}")
}

/// A random decimal suffix, as `os.MkdirTemp` adds one.
fn uuid_like() -> String {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf = (n as u64).to_le_bytes();
    }
    (u64::from_le_bytes(buf) % 1_000_000_000).to_string()
}

/// Whether the files under `dir` are exactly `payload` (content and mode).
fn matches(dir: &Path, payload: &Payload) -> bool {
    let mut found = BTreeSet::new();
    if !collect_files(dir, dir, &mut found) {
        return false;
    }
    if found.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(p, f)| {
        let path = dir.join(p);
        found.contains(p)
            && std::fs::read(&path).is_ok_and(|d| d == f.data)
            && std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.permissions().mode() & 0o7777 == f.mode)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { return false };
        if ft.is_dir() {
            if !collect_files(root, &p, out) {
                return false;
            }
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    true
}

/// The top-level names of a payload (`a` for `a/b/c`): what the user sees in the volume.
fn visible(payload: &Payload) -> BTreeSet<String> {
    payload
        .keys()
        .filter_map(|p| p.split('/').next())
        .map(str::to_owned)
        .collect()
}

/// Ownership to give written files: the pod's fsGroup as group owner.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    pub gid: Option<u32>,
}

/// Writes `payload` into `target` (an existing directory) as the kubelet does; returns whether
/// anything changed. Does nothing when the current files already are the payload.
pub fn write(target: &Path, payload: &Payload, owner: Owner) -> io::Result<bool> {
    for p in payload.keys() {
        if let Some(why) = path_problem(p) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid path {p:?}: {why}"),
            ));
        }
    }
    let link = target.join(DATA_LINK);
    let old: Option<PathBuf> = std::fs::read_link(&link).ok();
    if let Some(old) = &old
        && matches(&target.join(old), payload)
    {
        return Ok(false);
    }
    let name = timestamped_name();
    let ts = target.join(&name);
    std::fs::create_dir(&ts)?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755))?;
    let written = (|| {
        for (p, f) in payload {
            let path = ts.join(p);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &f.data)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
            if let Some(gid) = owner.gid {
                std::os::unix::fs::lchown(&path, None, Some(gid))?;
            }
        }
        if let Some(gid) = owner.gid {
            std::os::unix::fs::lchown(&ts, None, Some(gid))?;
        }
        let tmp = target.join(TMP_LINK);
        let _ = std::fs::remove_file(&tmp);
        symlink(&name, &tmp)?;
        std::fs::rename(&tmp, &link)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&ts);
        return Err(e);
    }
    let want = visible(payload);
    for v in &want {
        let path = target.join(v);
        if std::fs::symlink_metadata(&path).is_err() {
            symlink(Path::new(DATA_LINK).join(v), &path)?;
        }
    }
    for e in std::fs::read_dir(target)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("..") || want.contains(&n) {
            continue;
        }
        std::fs::remove_file(e.path())?;
    }
    if let Some(old) = old {
        let old_dir = target.join(&old);
        if old.as_os_str() != name.as_str() && old_dir.starts_with(target) {
            let _ = std::fs::remove_dir_all(old_dir);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> FileSpec {
        FileSpec {
            data: s.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_the_kubelets_layout_and_swaps_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let mut p = Payload::new();
        p.insert("app.conf".into(), file("a=1\n", 0o644));
        p.insert("nested/deep/x".into(), file("x", 0o400));
        assert!(write(t, &p, Owner::default()).unwrap());
        let first = std::fs::read_link(t.join("..data")).unwrap();
        assert!(first.to_string_lossy().starts_with("..20"), "{first:?}");
        assert_eq!(
            std::fs::read_link(t.join("app.conf")).unwrap(),
            PathBuf::from("..data/app.conf")
        );
        assert_eq!(
            std::fs::read_to_string(t.join("nested/deep/x")).unwrap(),
            "x"
        );
        let mode = std::fs::metadata(t.join("nested/deep/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);

        // The same payload again changes nothing.
        assert!(!write(t, &p, Owner::default()).unwrap());
        assert_eq!(std::fs::read_link(t.join("..data")).unwrap(), first);

        // An update: new content, a removed key, a new key.
        let mut q = Payload::new();
        q.insert("app.conf".into(), file("a=2\n", 0o644));
        q.insert("extra".into(), file("e", 0o644));
        assert!(write(t, &q, Owner::default()).unwrap());
        assert_eq!(
            std::fs::read_to_string(t.join("app.conf")).unwrap(),
            "a=2\n"
        );
        assert!(std::fs::symlink_metadata(t.join("nested")).is_err());
        assert!(!t.join(&first).exists(), "old directory removed");
        let names: BTreeSet<String> = std::fs::read_dir(t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..20"))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["..data".into(), "app.conf".into(), "extra".into()])
        );
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for bad in ["../x", "/etc/passwd", "a/../../x", "..hidden", ""] {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
        assert!(path_problem("a/b.c").is_none());
        let dir = tempfile::tempdir().unwrap();
        let mut p = Payload::new();
        p.insert("../escape".into(), file("x", 0o644));
        assert!(write(dir.path(), &p, Owner::default()).is_err());
    }
}
