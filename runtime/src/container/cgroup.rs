//! Reading usage from and writing limits to a live container's cgroup, in both layouts: cgroup
//! v1 (one hierarchy per controller, as on this machine) and cgroup v2 (one unified hierarchy, as
//! most hosts have). [`Cgroups`] is the boundary; [`V1`] and [`V2`] read and write files under
//! a root directory, so tests point them at fixture trees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::spec::Resources;
use crate::error::{Result, RuntimeError};

/// Usage figures of one cgroup at one moment. `None`: the controller is not there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time used by all tasks, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Memory charged to the cgroup, page cache included.
    pub memory_usage: Option<u64>,
    /// Usage minus inactive file pages: what the kubelet evicts on (cAdvisor's definition).
    pub memory_working_set: Option<u64>,
    /// Anonymous memory (and swap cache): what cannot be dropped.
    pub memory_rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// Tasks in the cgroup.
    pub pids: Option<u64>,
}

/// A cgroup hierarchy: usage read from and limits written to the cgroup at `path` (the OCI
/// `cgroupsPath`, e.g. `/skiff/<pod>/<container>`).
pub trait Cgroups: Send + Sync {
    fn stats(&self, path: &str) -> Result<CgroupStats>;
    /// Writes the cpu and memory limits of `r` (zero fields are left alone) to the live cgroup.
    fn update(&self, path: &str, r: &Resources) -> Result<()>;
}

/// Whichever layout the host mounts at `/sys/fs/cgroup`.
pub fn host() -> Box<dyn Cgroups> {
    let root = PathBuf::from("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        Box::new(V2 { root })
    } else {
        Box::new(V1 { root })
    }
}

fn rel(path: &str) -> &Path {
    Path::new(path.trim_start_matches('/'))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// A flat-keyed file (`memory.stat`, `cpu.stat`): `key value` per line.
fn read_keyed(p: &Path) -> Option<HashMap<String, u64>> {
    let text = std::fs::read_to_string(p).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect(),
    )
}

fn write(p: &Path, value: &str) -> Result<()> {
    std::fs::write(p, value).map_err(RuntimeError::io("write cgroup file", p))
}

/// cgroup v1: `<root>/<controller>/<path>/<file>`.
#[derive(Debug, Clone)]
pub struct V1 {
    pub root: PathBuf,
}

impl V1 {
    fn file(&self, controller: &str, path: &str, file: &str) -> PathBuf {
        self.root.join(controller).join(rel(path)).join(file)
    }
}

impl Cgroups for V1 {
    fn stats(&self, path: &str) -> Result<CgroupStats> {
        let mem_dir = self.root.join("memory").join(rel(path));
        let cpu = read_u64(&self.file("cpuacct", path, "cpuacct.usage"));
        if cpu.is_none() && !mem_dir.exists() {
            return Err(RuntimeError::not_found("cgroup", path));
        }
        let usage = read_u64(&mem_dir.join("memory.usage_in_bytes"));
        let stat = read_keyed(&mem_dir.join("memory.stat")).unwrap_or_default();
        // The `total_` figures include child cgroups (a pod's containers).
        let get = |k: &str| stat.get(&format!("total_{k}")).or(stat.get(k)).copied();
        let inactive = get("inactive_file").unwrap_or(0);
        Ok(CgroupStats {
            cpu_usage_ns: cpu,
            memory_usage: usage,
            memory_working_set: usage.map(|u| u.saturating_sub(inactive)),
            memory_rss: get("rss"),
            page_faults: get("pgfault"),
            major_page_faults: get("pgmajfault"),
            pids: read_u64(&self.file("pids", path, "pids.current")),
        })
    }

    fn update(&self, path: &str, r: &Resources) -> Result<()> {
        if r.cpu_shares > 0 {
            write(
                &self.file("cpu", path, "cpu.shares"),
                &r.cpu_shares.to_string(),
            )?;
        }
        if r.cpu_period > 0 {
            write(
                &self.file("cpu", path, "cpu.cfs_period_us"),
                &r.cpu_period.to_string(),
            )?;
        }
        if r.cpu_quota != 0 {
            write(
                &self.file("cpu", path, "cpu.cfs_quota_us"),
                &r.cpu_quota.to_string(),
            )?;
        }
        if r.memory_limit > 0 {
            write(
                &self.file("memory", path, "memory.limit_in_bytes"),
                &r.memory_limit.to_string(),
            )?;
        }
        Ok(())
    }
}

/// cgroup v2: `<root>/<path>/<file>`.
#[derive(Debug, Clone)]
pub struct V2 {
    pub root: PathBuf,
}

/// cpu.shares (2..262144) onto cpu.weight (1..10000), the conversion runc and the kubelet use.
pub fn shares_to_weight(shares: i64) -> u64 {
    let shares = shares.clamp(2, 262_144) as u64;
    1 + ((shares - 2) * 9999) / 262_142
}

impl Cgroups for V2 {
    fn stats(&self, path: &str) -> Result<CgroupStats> {
        let dir = self.root.join(rel(path));
        if !dir.exists() {
            return Err(RuntimeError::not_found("cgroup", path));
        }
        let cpu = read_keyed(&dir.join("cpu.stat"))
            .and_then(|s| s.get("usage_usec").copied())
            .map(|us| us * 1000);
        let usage = read_u64(&dir.join("memory.current"));
        let stat = read_keyed(&dir.join("memory.stat")).unwrap_or_default();
        let inactive = stat.get("inactive_file").copied().unwrap_or(0);
        Ok(CgroupStats {
            cpu_usage_ns: cpu,
            memory_usage: usage,
            memory_working_set: usage.map(|u| u.saturating_sub(inactive)),
            memory_rss: stat.get("anon").copied(),
            page_faults: stat.get("pgfault").copied(),
            major_page_faults: stat.get("pgmajfault").copied(),
            pids: read_u64(&dir.join("pids.current")),
        })
    }

    fn update(&self, path: &str, r: &Resources) -> Result<()> {
        let dir = self.root.join(rel(path));
        if r.cpu_shares > 0 {
            write(
                &dir.join("cpu.weight"),
                &shares_to_weight(r.cpu_shares).to_string(),
            )?;
        }
        if r.cpu_quota != 0 || r.cpu_period > 0 {
            let period = if r.cpu_period > 0 {
                r.cpu_period
            } else {
                100_000
            };
            let quota = if r.cpu_quota > 0 {
                r.cpu_quota.to_string()
            } else {
                "max".to_string()
            };
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if r.memory_limit > 0 {
            write(&dir.join("memory.max"), &r.memory_limit.to_string())?;
        }
        Ok(())
    }
}

/// A fake hierarchy for runtime tests: fixed stats, recorded updates.
#[cfg(test)]
#[derive(Default)]
pub struct FakeCgroups {
    pub stats: std::sync::Mutex<HashMap<String, CgroupStats>>,
    pub updates: std::sync::Mutex<Vec<(String, Resources)>>,
}

#[cfg(test)]
impl Cgroups for FakeCgroups {
    fn stats(&self, path: &str) -> Result<CgroupStats> {
        self.stats
            .lock()
            .expect("lock")
            .get(path)
            .cloned()
            .ok_or_else(|| RuntimeError::not_found("cgroup", path))
    }
    fn update(&self, path: &str, r: &Resources) -> Result<()> {
        self.updates
            .lock()
            .expect("lock")
            .push((path.to_string(), r.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    const CG: &str = "/skiff/pod1/ctr1";

    #[test]
    fn v1_stats_from_fixture() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        put(r, "cpuacct/skiff/pod1/ctr1/cpuacct.usage", "123456789\n");
        put(
            r,
            "memory/skiff/pod1/ctr1/memory.usage_in_bytes",
            "10485760\n",
        );
        put(
            r,
            "memory/skiff/pod1/ctr1/memory.stat",
            "cache 100\nrss 50\ninactive_file 7\npgfault 3\ntotal_rss 4096\ntotal_inactive_file 1048576\ntotal_pgfault 900\ntotal_pgmajfault 2\n",
        );
        put(r, "pids/skiff/pod1/ctr1/pids.current", "3\n");
        let s = V1 { root: r.into() }.stats(CG).expect("stats");
        assert_eq!(
            s,
            CgroupStats {
                cpu_usage_ns: Some(123_456_789),
                memory_usage: Some(10_485_760),
                memory_working_set: Some(10_485_760 - 1_048_576),
                memory_rss: Some(4096),
                page_faults: Some(900),
                major_page_faults: Some(2),
                pids: Some(3),
            }
        );
        assert!(matches!(
            V1 { root: r.into() }.stats("/skiff/none"),
            Err(RuntimeError::NotFound { .. })
        ));
    }

    #[test]
    fn v2_stats_from_fixture() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        put(
            r,
            "skiff/pod1/ctr1/cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        put(r, "skiff/pod1/ctr1/memory.current", "8192000\n");
        put(
            r,
            "skiff/pod1/ctr1/memory.stat",
            "anon 4096000\nfile 4000000\ninactive_file 192000\npgfault 77\npgmajfault 1\n",
        );
        put(r, "skiff/pod1/ctr1/pids.current", "1\n");
        let s = V2 { root: r.into() }.stats(CG).expect("stats");
        assert_eq!(
            s,
            CgroupStats {
                cpu_usage_ns: Some(2_500_000),
                memory_usage: Some(8_192_000),
                memory_working_set: Some(8_000_000),
                memory_rss: Some(4_096_000),
                page_faults: Some(77),
                major_page_faults: Some(1),
                pids: Some(1),
            }
        );
    }

    #[test]
    fn v1_update_writes_controller_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for f in [
            "cpu/skiff/pod1/ctr1/cpu.shares",
            "memory/skiff/pod1/ctr1/memory.limit_in_bytes",
        ] {
            put(r, f, "0");
        }
        let res = Resources {
            cpu_shares: 256,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit: 64 << 20,
            ..Default::default()
        };
        V1 { root: r.into() }.update(CG, &res).expect("update");
        let read = |f: &str| std::fs::read_to_string(r.join(f)).expect("read");
        assert_eq!(read("cpu/skiff/pod1/ctr1/cpu.shares"), "256");
        assert_eq!(read("cpu/skiff/pod1/ctr1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/skiff/pod1/ctr1/cpu.cfs_period_us"), "100000");
        assert_eq!(
            read("memory/skiff/pod1/ctr1/memory.limit_in_bytes"),
            (64 << 20).to_string()
        );
    }

    #[test]
    fn v2_update_writes_weight_max_and_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        std::fs::create_dir_all(r.join("skiff/pod1/ctr1")).expect("mkdir");
        let cg = V2 { root: r.into() };
        cg.update(
            CG,
            &Resources {
                cpu_shares: 1024,
                cpu_quota: 20_000,
                cpu_period: 100_000,
                memory_limit: 1 << 30,
                ..Default::default()
            },
        )
        .expect("update");
        let read = |f: &str| std::fs::read_to_string(r.join("skiff/pod1/ctr1").join(f)).expect("r");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "20000 100000");
        assert_eq!(read("memory.max"), (1u64 << 30).to_string());
        cg.update(
            CG,
            &Resources {
                cpu_quota: -1,
                ..Default::default()
            },
        )
        .expect("update");
        assert_eq!(read("cpu.max"), "max 100000");
    }

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(0), 1);
    }
}
