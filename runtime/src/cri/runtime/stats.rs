//! The runtime's live-container operations that are not about lifecycle: usage statistics from
//! cgroups and disk (ContainerStats, PodSandboxStats and their list forms, ImageFsInfo), resource
//! updates (UpdateContainerResources) and log reopening (ReopenContainerLog).
//!
//! These walk files and directories, so they are synchronous: the CRI service runs them on the
//! blocking pool.

use std::path::PathBuf;
use std::time::Duration;

use cri_api::v1 as cri;

use super::{Live, Runtime, labels_match, lock, sandbox_cgroup, to_hash};
use crate::container::cgroup::CgroupStats;
use crate::container::{ContainerRecord, disk_usage};
use crate::error::{Result, RuntimeError};
use crate::monitor::{REOPEN_LOG, wake_for_reopen};
use crate::sandbox::SandboxRecord;
use crate::state;

/// How long ReopenContainerLog waits for the monitor to pick up the request.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

fn u64v(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

impl Runtime {
    /// Reads a cgroup's usage and turns the CPU counter into a rate against the previous read
    /// of the same cgroup (none on the first read).
    fn cgroup_usage(&self, path: &str) -> Option<(CgroupStats, cri::CpuUsage, cri::MemoryUsage)> {
        let s = self.cgroups.stats(path).ok()?;
        let now = state::now_ns();
        let nano_cores = s.cpu_usage_ns.and_then(|usage| {
            let prev = lock(&self.cpu_samples).insert(path.to_string(), (now, usage));
            let (t0, u0) = prev?;
            let dt = u64::try_from(now - t0).ok().filter(|d| *d > 0)?;
            Some(((usage.saturating_sub(u0) as u128 * 1_000_000_000) / dt as u128) as u64)
        });
        let cpu = cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: u64v(s.cpu_usage_ns),
            usage_nano_cores: u64v(nano_cores),
        };
        let memory = cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: u64v(s.memory_working_set),
            available_bytes: None,
            usage_bytes: u64v(s.memory_usage),
            rss_bytes: u64v(s.memory_rss),
            page_faults: u64v(s.page_faults),
            major_page_faults: u64v(s.major_page_faults),
        };
        Some((s, cpu, memory))
    }

    fn stats_of(&self, c: &ContainerRecord) -> cri::ContainerStats {
        let running = self.live(c) == Live::Running;
        let usage = running.then(|| self.cgroup_usage(&c.cgroup_path)).flatten();
        let upper = self.container_dir(&c.id).join("upper");
        let (bytes, inodes) = disk_usage(std::slice::from_ref(&upper));
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: Some(cri::ContainerMetadata {
                    name: c.name.clone(),
                    attempt: c.attempt,
                }),
                labels: to_hash(&c.labels),
                annotations: to_hash(&c.annotations),
            }),
            cpu: usage.as_ref().map(|u| u.1),
            memory: usage.map(|u| u.2),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: state::now_ns(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: upper.display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            }),
        }
    }

    /// ContainerStats.
    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        let c = self.container(id)?;
        Ok(self.stats_of(&c))
    }

    /// ListContainerStats: the running containers that match the filter.
    pub fn list_container_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let f = filter.unwrap_or_default();
        let all: Vec<ContainerRecord> = lock(&self.containers).values().cloned().collect();
        let mut picked: Vec<&ContainerRecord> = all
            .iter()
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| labels_match(&f.label_selector, &c.labels))
            .filter(|c| self.live(c) == Live::Running)
            .collect();
        picked.sort_by_key(|c| c.created_at);
        picked.into_iter().map(|c| self.stats_of(c)).collect()
    }

    fn sandbox_stats_of(&self, sb: &SandboxRecord) -> cri::PodSandboxStats {
        let usage = self.cgroup_usage(&sandbox_cgroup(sb));
        let containers = self.list_container_stats(Some(cri::ContainerStatsFilter {
            pod_sandbox_id: sb.id.clone(),
            ..Default::default()
        }));
        let now = state::now_ns();
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.id.clone(),
                metadata: Some(Self::sandbox_metadata(sb)),
                labels: to_hash(&sb.labels),
                annotations: to_hash(&sb.annotations),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: usage.as_ref().map(|u| u.1),
                memory: usage.as_ref().map(|u| u.2),
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: u64v(usage.and_then(|u| u.0.pids)),
                }),
                containers,
            }),
        }
    }

    /// PodSandboxStats.
    pub fn pod_sandbox_stats(&self, id: &str) -> Result<cri::PodSandboxStats> {
        let sb = self.sandbox(id)?;
        Ok(self.sandbox_stats_of(&sb))
    }

    /// ListPodSandboxStats: the ready sandboxes that match the filter.
    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        let f = filter.unwrap_or_default();
        let mut all: Vec<SandboxRecord> = lock(&self.sandboxes)
            .values()
            .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
            .filter(|s| labels_match(&f.label_selector, &s.labels))
            .filter(|s| s.phase == crate::sandbox::SandboxPhase::Ready)
            .cloned()
            .collect();
        all.sort_by_key(|s| s.created_at);
        all.iter().map(|s| self.sandbox_stats_of(s)).collect()
    }

    /// ImageFsInfo: what the content store, the image index and the snapshots use.
    pub fn image_fs_info(&self) -> cri::ImageFsInfoResponse {
        let dirs: Vec<PathBuf> = ["content", "images", "snapshots"]
            .iter()
            .map(|d| self.root.join(d))
            .collect();
        let (bytes, inodes) = disk_usage(&dirs);
        let usage = |mountpoint: PathBuf, bytes: u64, inodes: u64| cri::FilesystemUsage {
            timestamp: state::now_ns(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        let (cbytes, cinodes) = disk_usage(&[self.root.join("containers")]);
        cri::ImageFsInfoResponse {
            image_filesystems: vec![usage(self.root.join("snapshots"), bytes, inodes)],
            container_filesystems: vec![usage(self.root.join("containers"), cbytes, cinodes)],
        }
    }

    /// UpdateContainerResources: writes the new cpu and memory limits to the running
    /// container's cgroup and records them. Zero fields keep their current value.
    pub fn update_container_resources(
        &self,
        id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> Result<()> {
        let mut c = self.container(id)?;
        let Some(l) = linux else {
            return Ok(());
        };
        let wanted = crate::container::spec::Resources {
            memory_limit: l.memory_limit_in_bytes,
            cpu_shares: l.cpu_shares,
            cpu_quota: l.cpu_quota,
            cpu_period: l.cpu_period,
            oom_score_adj: 0,
            pids_limit: 0,
        };
        match self.live(&c) {
            Live::Running => self.cgroups.update(&c.cgroup_path, &wanted)?,
            Live::Created => {}
            Live::Exited(_) => {
                return Err(RuntimeError::FailedPrecondition {
                    kind: "container",
                    name: id.to_string(),
                    state: "exited".into(),
                    action: "update resources",
                });
            }
        }
        let r = &mut c.resources;
        for (have, new) in [
            (&mut r.memory_limit, wanted.memory_limit),
            (&mut r.cpu_shares, wanted.cpu_shares),
            (&mut r.cpu_quota, wanted.cpu_quota),
            (&mut r.cpu_period, wanted.cpu_period),
        ] {
            if new != 0 {
                *have = new;
            }
        }
        // A created container starts with the new limits: its bundle is rewritten too.
        let bundle = self.task_dir(id).join("bundle").join("config.json");
        if let Ok(Some(mut spec)) = state::read_json::<serde_json::Value>(&bundle) {
            let res = &mut spec["linux"]["resources"];
            if r.memory_limit > 0 {
                res["memory"]["limit"] = r.memory_limit.into();
            }
            for (k, v) in [
                ("shares", r.cpu_shares),
                ("quota", r.cpu_quota),
                ("period", r.cpu_period),
            ] {
                if v != 0 {
                    res["cpu"][k] = v.into();
                }
            }
            state::write_json_unsynced(&bundle, &spec)?;
        }
        self.save_container(&c)?;
        tracing::info!(container = %id, "container resources updated");
        Ok(())
    }

    /// ReopenContainerLog: asks the container's monitor to reopen its log file (after the
    /// caller renamed it away) and waits until it has.
    pub fn reopen_container_log(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if self.live(&c) != Live::Running {
            return Err(RuntimeError::FailedPrecondition {
                kind: "container",
                name: id.to_string(),
                state: "not running".into(),
                action: "reopen its log",
            });
        }
        let flag = self.task_dir(id).join(REOPEN_LOG);
        std::fs::write(&flag, b"").map_err(RuntimeError::io("write", &flag))?;
        wake_for_reopen(&self.task_dir(id));
        let deadline = std::time::Instant::now() + REOPEN_WAIT;
        while flag.exists() {
            if std::time::Instant::now() >= deadline || self.live(&c) != Live::Running {
                let _ = std::fs::remove_file(&flag);
                return Err(RuntimeError::Launch {
                    id: id.to_string(),
                    message: "monitor did not reopen the log file".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}
