//! Layer unpacking into a snapshot directory that will serve as an overlayfs lowerdir.
//!
//! Owns the two rules that make this safe and correct: nothing is ever written outside the
//! snapshot (no `..`, no absolute paths, no following symlinks on the way to an entry, hardlinks
//! only to entries inside the snapshot), and OCI whiteouts become overlayfs whiteouts
//! (`.wh.<name>` → a 0/0 character device, `.wh..wh..opq` → `trusted.overlay.opaque=y`). How
//! whiteouts are materialised is a [`WhiteoutWriter`], so the logic is testable without root.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use sha2::{Digest as _, Sha256};

use crate::error::{Result, RuntimeError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How whiteouts are written into a snapshot.
pub trait WhiteoutWriter: Send + Sync {
    /// Marks `path` (inside the snapshot) as deleted relative to lower layers.
    fn whiteout(&self, path: &Path) -> io::Result<()>;
    /// Marks directory `dir` (inside the snapshot) as hiding everything below it in lower layers.
    fn opaque(&self, dir: &Path) -> io::Result<()>;
}

/// The overlayfs representation; needs CAP_MKNOD and CAP_SYS_ADMIN (trusted.* xattrs).
#[derive(Debug, Default)]
pub struct OverlayWhiteouts;

impl WhiteoutWriter for OverlayWhiteouts {
    fn whiteout(&self, path: &Path) -> io::Result<()> {
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(io::Error::from)
    }

    fn opaque(&self, dir: &Path) -> io::Result<()> {
        let c_path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let name = c"trusted.overlay.opaque";
        // SAFETY: both strings are valid NUL-terminated C strings that outlive the call, and the
        // value pointer/length describe a live one-byte buffer. lsetxattr does not follow symlinks.
        let rc =
            unsafe { libc::lsetxattr(c_path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Outcome of unpacking one layer.
#[derive(Debug)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar: the layer's diff id.
    pub diff_id: String,
}

/// A layer's uncompressed tar may be at most this large: a decompression bomb (a small blob that
/// inflates without end) fails the pull instead of filling the disk.
pub const MAX_LAYER_BYTES: u64 = 64 << 30;

/// A zstd stream of one or more frames, decoded as it is read; skippable frames (which zstd:chunked
/// layers carry) are skipped.
struct ZstdFrames<R: BufRead> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        Self {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                    let need = buf.len() - self.decoder.can_collect();
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(need))
                        .map_err(io::Error::other)?;
                }
                let n = self.decoder.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.in_frame = false;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped < u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated skippable zstd frame",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// Fails the read once more than `left` bytes came through.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::other(format!(
                "the layer inflates past {MAX_LAYER_BYTES} bytes (a decompression bomb?)"
            ))
        })?;
        Ok(n)
    }
}

/// Unpacks a layer tar (uncompressed, gzip or zstd, told apart by their magic bytes) from
/// `reader` into `dest`, which must exist and be empty. `layer` names the layer in errors.
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    layer: &str,
    whiteouts: &dyn WhiteoutWriter,
) -> Result<Unpacked> {
    unpack_layer_bounded(reader, dest, layer, whiteouts, MAX_LAYER_BYTES)
}

/// `unpack_layer` with the bound on the uncompressed size given.
pub fn unpack_layer_bounded(
    reader: impl Read,
    dest: &Path,
    layer: &str,
    whiteouts: &dyn WhiteoutWriter,
    max_bytes: u64,
) -> Result<Unpacked> {
    let fail = |message: String| RuntimeError::Unpack {
        layer: layer.to_string(),
        message,
    };
    let mut buffered = BufReader::new(reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| fail(format!("read: {e}")))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 4
            && (0x184D_2A50..=0x184D_2A5F)
                .contains(&u32::from_le_bytes([head[0], head[1], head[2], head[3]])));
    let decompressed: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(buffered))
    } else if zstd {
        Box::new(ZstdFrames::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader {
        inner: Bounded {
            inner: decompressed,
            left: max_bytes,
        },
        hasher: Sha256::new(),
    };
    let is_root = nix::unistd::geteuid().is_root();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| fail(format!("read tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| fail(format!("read tar entry: {e}")))?;
            let raw_path = entry
                .path()
                .map_err(|e| fail(format!("entry path: {e}")))?
                .into_owned();
            let Some(rel) = sanitize(&raw_path) else {
                return Err(fail(format!(
                    "entry {} escapes the layer root",
                    raw_path.display()
                )));
            };
            if rel.as_os_str().is_empty() {
                continue; // "./" itself
            }
            apply_entry(&mut entry, dest, &rel, whiteouts, is_root)
                .map_err(|e| fail(format!("entry {}: {e}", rel.display())))?;
        }
    }
    // Drain trailing padding so the diff id covers the whole stream, as it was computed upstream.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| fail(format!("read: {e}")))?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Turns a tar path into a relative path with only normal components, or `None` if it would
/// leave the root (`..`). Leading `/` and `./` are dropped, as GNU tar does.
fn sanitize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Makes sure every directory from `root` down to `rel`'s parent exists and is a real directory
/// (not a symlink), creating missing ones. Returns the absolute parent path.
fn safe_parent(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "{} is not a directory (symlinks are not followed)",
                        cur.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur)?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(cur)
}

/// Removes whatever is at `path` (not following symlinks) so a later entry replaces an earlier
/// one, as tar does. Directories are kept when the new entry is a directory too.
fn clear(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path)
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    rel: &Path,
    whiteouts: &dyn WhiteoutWriter,
    is_root: bool,
) -> io::Result<()> {
    let parent = safe_parent(root, rel)?;
    let Some(name) = rel.file_name() else {
        return Ok(());
    };
    let name_str = name.to_string_lossy();
    if name_str == OPAQUE_MARKER {
        return whiteouts.opaque(&parent);
    }
    if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(io::Error::other("malformed whiteout"));
        }
        let target = parent.join(hidden);
        clear(&target, false)?;
        return whiteouts.whiteout(&target);
    }
    let target = parent.join(name);
    let header = entry.header();
    let kind = header.entry_type();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let uid = header.uid().unwrap_or(0);
    let gid = header.gid().unwrap_or(0);
    let mtime = header.mtime().unwrap_or(0);
    match kind {
        tar::EntryType::Directory => {
            clear(&target, true)?;
            if !target.exists() {
                fs::create_dir(&target)?;
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            clear(&target, false)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&target)?;
            io::copy(entry, &mut file)?;
            let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            file.set_modified(mtime)?;
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name()?
                .ok_or_else(|| io::Error::other("symlink without target"))?;
            clear(&target, false)?;
            // The link's text is stored as is: it is only resolved inside the container's root.
            std::os::unix::fs::symlink(&link, &target)?;
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name()?
                .ok_or_else(|| io::Error::other("hardlink without target"))?;
            let link_rel = sanitize(&link)
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| io::Error::other("hardlink target escapes the layer root"))?;
            let link_parent = safe_parent(root, &link_rel)?;
            let source = link_parent.join(link_rel.file_name().unwrap_or_default());
            let meta = fs::symlink_metadata(&source)?;
            if meta.is_dir() {
                return Err(io::Error::other("hardlink to a directory"));
            }
            clear(&target, false)?;
            // linkat without AT_SYMLINK_FOLLOW: links the entry itself, never a symlink's target.
            fs::hard_link(&source, &target)?;
            return Ok(());
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            clear(&target, false)?;
            let sflag = match kind {
                tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                _ => nix::sys::stat::SFlag::S_IFIFO,
            };
            let major = header.device_major()?.unwrap_or(0);
            let minor = header.device_minor()?.unwrap_or(0);
            nix::sys::stat::mknod(
                &target,
                sflag,
                nix::sys::stat::Mode::from_bits_truncate(mode),
                nix::sys::stat::makedev(major.into(), minor.into()),
            )
            .map_err(io::Error::from)?;
        }
        // PAX/GNU metadata entries are consumed by the tar crate; anything else is skipped.
        _ => return Ok(()),
    }
    if is_root {
        std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))?;
    }
    if kind != tar::EntryType::Symlink {
        // After chown: chown clears setuid bits.
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorded {
        whiteouts: Mutex<Vec<PathBuf>>,
        opaques: Mutex<Vec<PathBuf>>,
    }

    impl WhiteoutWriter for Recorded {
        fn whiteout(&self, path: &Path) -> io::Result<()> {
            self.whiteouts
                .lock()
                .expect("lock")
                .push(path.to_path_buf());
            Ok(())
        }
        fn opaque(&self, dir: &Path) -> io::Result<()> {
            self.opaques.lock().expect("lock").push(dir.to_path_buf());
            Ok(())
        }
    }

    /// Builds a tar in memory. Paths are written raw into the header so malicious names survive.
    fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                let l = &mut h.as_old_mut().linkname;
                l[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    use tar::EntryType as E;

    #[test]
    fn unpacks_files_dirs_links_and_reports_diff_id() {
        let tar = tar_of(&[
            ("etc/", E::Directory, "", b""),
            ("etc/passwd", E::Regular, "", b"root:x:0:0::/root:/bin/sh\n"),
            ("bin/busybox", E::Regular, "", b"ELF"),
            ("bin/sh", E::Symlink, "busybox", b""),
            ("bin/ls", E::Link, "bin/busybox", b""),
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = unpack_layer(&tar[..], dir.path(), "l", &Recorded::default()).expect("unpack");
        assert_eq!(out.diff_id, crate::image::content::sha256_digest(&tar));
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/passwd")).expect("read"),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).expect("link"),
            PathBuf::from("busybox")
        );
        assert_eq!(fs::read(dir.path().join("bin/ls")).expect("read"), b"ELF");
    }

    #[test]
    fn gzip_layers_unpack_and_hash_the_uncompressed_stream() {
        use std::io::Write;
        let tar = tar_of(&[("a", E::Regular, "", b"x")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = unpack_layer(&gz[..], dir.path(), "l", &Recorded::default()).expect("unpack");
        assert_eq!(out.diff_id, crate::image::content::sha256_digest(&tar));
        assert!(dir.path().join("a").is_file());
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn zstd_layers_unpack_across_frames_and_skippable_frames() {
        let big = vec![7u8; 300_000];
        let tar = tar_of(&[("a", E::Regular, "", b"x"), ("big", E::Regular, "", &big)]);
        // A skippable frame first (zstd:chunked puts metadata in them), then the tar split over
        // two frames.
        let mut blob = Vec::new();
        blob.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        blob.extend_from_slice(&5u32.to_le_bytes());
        blob.extend_from_slice(b"meta!");
        let (first, second) = tar.split_at(1000);
        blob.extend(zstd(first));
        blob.extend(zstd(second));
        let dir = tempfile::tempdir().expect("tempdir");
        let out = unpack_layer(&blob[..], dir.path(), "l", &Recorded::default()).expect("unpack");
        assert_eq!(out.diff_id, crate::image::content::sha256_digest(&tar));
        assert_eq!(std::fs::read(dir.path().join("big")).expect("big"), big);
        // A single frame decodes the same.
        let dir = tempfile::tempdir().expect("tempdir");
        let one = zstd(&tar);
        let out = unpack_layer(&one[..], dir.path(), "l", &Recorded::default()).expect("unpack");
        assert_eq!(out.diff_id, crate::image::content::sha256_digest(&tar));
    }

    #[test]
    fn corrupt_zstd_and_bombs_fail_naming_the_layer() {
        let tar = tar_of(&[("big", E::Regular, "", &vec![0u8; 1 << 20])]);
        let mut blob = zstd(&tar);
        assert!(blob.len() < 64 << 10, "{} bytes", blob.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            unpack_layer_bounded(&blob[..], dir.path(), "bomb", &Recorded::default(), 1 << 16)
                .expect_err("bounded");
        assert!(err.to_string().contains("bomb"), "{err}");
        assert!(err.to_string().contains("decompression bomb"), "{err}");
        let n = blob.len();
        blob[n / 2] ^= 0xff;
        blob.truncate(n - 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            unpack_layer(&blob[..], dir.path(), "bad", &Recorded::default()).expect_err("corrupt");
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[test]
    fn whiteouts_and_opaque_dirs_go_to_the_writer() {
        let tar = tar_of(&[
            ("etc/.wh.motd", E::Regular, "", b""),
            ("var/cache/.wh..wh..opq", E::Regular, "", b""),
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Recorded::default();
        unpack_layer(&tar[..], dir.path(), "l", &rec).expect("unpack");
        assert_eq!(
            *rec.whiteouts.lock().expect("lock"),
            vec![dir.path().join("etc/motd")]
        );
        assert_eq!(
            *rec.opaques.lock().expect("lock"),
            vec![dir.path().join("var/cache")]
        );
        // The marker files themselves are never written.
        assert!(!dir.path().join("etc/.wh.motd").exists());
        assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
    }

    #[test]
    fn dotdot_entries_are_rejected() {
        let outer = tempfile::tempdir().expect("tempdir");
        let dest = outer.path().join("fs");
        fs::create_dir(&dest).expect("mkdir");
        let tar = tar_of(&[("../evil", E::Regular, "", b"x")]);
        assert!(unpack_layer(&tar[..], &dest, "l", &Recorded::default()).is_err());
        assert!(!outer.path().join("evil").exists());
    }

    #[test]
    fn absolute_paths_stay_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = tar_of(&[("/abs", E::Regular, "", b"x")]);
        unpack_layer(&tar[..], dir.path(), "l", &Recorded::default()).expect("unpack");
        assert!(dir.path().join("abs").is_file());
    }

    #[test]
    fn writes_through_a_symlinked_dir_are_rejected() {
        let outer = tempfile::tempdir().expect("tempdir");
        let dest = outer.path().join("fs");
        let victim = outer.path().join("victim");
        fs::create_dir(&dest).expect("mkdir");
        fs::create_dir(&victim).expect("mkdir");
        let tar = tar_of(&[
            ("link", E::Symlink, victim.to_str().expect("utf8"), b""),
            ("link/pwned", E::Regular, "", b"x"),
        ]);
        assert!(unpack_layer(&tar[..], &dest, "l", &Recorded::default()).is_err());
        assert!(!victim.join("pwned").exists());
    }

    #[test]
    fn writes_through_a_symlink_file_replace_the_link() {
        let outer = tempfile::tempdir().expect("tempdir");
        let dest = outer.path().join("fs");
        let victim = outer.path().join("victim");
        fs::create_dir(&dest).expect("mkdir");
        fs::write(&victim, b"safe").expect("write");
        let tar = tar_of(&[
            ("f", E::Symlink, victim.to_str().expect("utf8"), b""),
            ("f", E::Regular, "", b"evil"),
        ]);
        unpack_layer(&tar[..], &dest, "l", &Recorded::default()).expect("unpack");
        assert_eq!(fs::read(&victim).expect("read"), b"safe");
        assert_eq!(fs::read(dest.join("f")).expect("read"), b"evil");
    }

    #[test]
    fn hardlinks_outside_are_rejected() {
        let outer = tempfile::tempdir().expect("tempdir");
        let dest = outer.path().join("fs");
        fs::create_dir(&dest).expect("mkdir");
        fs::write(outer.path().join("secret"), b"s").expect("write");
        for link in ["../secret", "sym/secret"] {
            let tar = tar_of(&[
                ("sym", E::Symlink, outer.path().to_str().expect("utf8"), b""),
                ("h", E::Link, link, b""),
            ]);
            assert!(
                unpack_layer(&tar[..], &dest, "l", &Recorded::default()).is_err(),
                "{link}"
            );
            assert!(!dest.join("h").exists());
        }
    }

    #[test]
    fn writing_to_a_hardlink_does_not_modify_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = tar_of(&[
            ("a", E::Regular, "", b"orig"),
            ("b", E::Link, "a", b""),
            ("b", E::Regular, "", b"new"),
        ]);
        unpack_layer(&tar[..], dir.path(), "l", &Recorded::default()).expect("unpack");
        assert_eq!(fs::read(dir.path().join("a")).expect("read"), b"orig");
        assert_eq!(fs::read(dir.path().join("b")).expect("read"), b"new");
    }
}

/// The real overlay representation, checked on the file tree; needs root (mknod, trusted.*).
#[cfg(test)]
mod overlay_tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    #[test]
    fn overlay_whiteouts_are_char_devices_and_opaque_xattrs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for mknod and trusted.* xattrs");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("d");
        fs::create_dir(&d).expect("mkdir");
        let w = OverlayWhiteouts;
        w.whiteout(&dir.path().join("gone")).expect("whiteout");
        w.opaque(&d).expect("opaque");
        let m = fs::symlink_metadata(dir.path().join("gone")).expect("stat");
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        let mut buf = [0u8; 4];
        let path = CString::new(d.as_os_str().as_bytes()).expect("cstring");
        // SAFETY: valid C strings and a live buffer of the length passed.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(n, 1);
        assert_eq!(buf[0], b'y');
    }
}
