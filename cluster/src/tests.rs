//! [`Clusters`] against a fake host that records what it is asked and keeps which data dirs
//! "run".

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::spec::{Launch, NodeSpec};

#[derive(Default)]
struct FakeHost {
    log: Mutex<Vec<String>>,
    running: Mutex<BTreeMap<PathBuf, u32>>,
    netns: Mutex<BTreeSet<String>>,
    /// The node whose agent cannot start.
    fail_agent_of: Option<String>,
    networks: Vec<(Ipv4Addr, u8)>,
}

impl FakeHost {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Host for FakeHost {
    async fn networks(&self) -> Result<Vec<(Ipv4Addr, u8)>, ClusterError> {
        Ok(self.networks.clone())
    }

    async fn ensure_bridge(&self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        self.note(format!("bridge {}", spec.bridge));
        Ok(())
    }

    async fn ensure_node(&self, _: &ClusterSpec, node: &NodeSpec) -> Result<(), ClusterError> {
        self.netns.lock().unwrap().insert(node.netns.clone());
        self.note(format!("node {}", node.name));
        Ok(())
    }

    fn has_netns(&self, name: &str) -> bool {
        self.netns.lock().unwrap().contains(name)
    }

    async fn remove_node(&self, node: &NodeSpec) -> Result<bool, ClusterError> {
        self.note(format!("remove node {}", node.name));
        Ok(self.netns.lock().unwrap().remove(&node.netns))
    }

    async fn remove_bridge(&self, spec: &ClusterSpec) -> Result<Vec<String>, ClusterError> {
        self.note(format!("remove bridge {}", spec.bridge));
        Ok(vec![format!("bridge {}", spec.bridge)])
    }

    fn spawn(&self, launch: &Launch) -> Result<u32, ClusterError> {
        if launch.role == Role::Agent && self.fail_agent_of.as_deref() == Some(&launch.node) {
            return Err(ClusterError::Spawn {
                what: format!("the agent of node {}", launch.node),
                source: std::io::Error::other("no such binary"),
            });
        }
        let mut running = self.running.lock().unwrap();
        let pid = 100 + u32::try_from(running.len()).unwrap();
        running.insert(launch.data_dir.clone(), pid);
        self.note(format!("spawn {} {:?}", launch.node, launch.role));
        Ok(pid)
    }

    async fn run(&self, netns: Option<&str>, args: &[String]) -> Result<String, ClusterError> {
        self.note(format!("run in {netns:?}: {}", args.join(" ")));
        if args[0] == "down" {
            self.running.lock().unwrap().remove(Path::new(&args[2]));
        }
        Ok("done\n".into())
    }

    fn holder(&self, data_dir: &Path) -> Option<u32> {
        self.running.lock().unwrap().get(data_dir).copied()
    }

    async fn terminate(&self, pid: u32, _: Duration) -> Result<(), ClusterError> {
        self.running.lock().unwrap().retain(|_, p| *p != pid);
        self.note(format!("terminate {pid}"));
        Ok(())
    }
}

fn clusters(host: FakeHost) -> (tempfile::TempDir, Clusters<FakeHost>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Clusters::new(dir.path().join("clusters"), host);
    (dir, c)
}

#[tokio::test]
async fn a_cluster_is_made_stopped_started_and_deleted() {
    let (_tmp, c) = clusters(FakeHost::default());
    let spec = c.create("dev", 1, 2).await.expect("create");
    assert_eq!(spec.subnet, 1);
    let dir = c.root.join("dev");
    assert!(dir.join("cluster.json").exists());
    let kubeconfig = std::fs::read_to_string(dir.join("kubeconfig")).expect("kubeconfig");
    assert!(
        kubeconfig.contains("http://172.30.1.2:6443"),
        "{kubeconfig}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let status = c.status("dev").expect("status");
    assert_eq!((status.running, status.processes), (4, 4));
    assert_eq!(status.state(), State::Running);
    let log = c.host.log();
    assert_eq!(log[0], format!("bridge {}", spec.bridge));
    assert!(log[1..4].iter().all(|l| l.starts_with("node ")), "{log:?}");
    assert_eq!(log[4], "spawn dev-control-plane Controller");

    c.stop("dev").await.expect("stop");
    assert_eq!(c.status("dev").expect("status").state(), State::Stopped);
    let log = c.host.log();
    let downs: Vec<_> = log
        .iter()
        .filter(|l| l.contains(": down --data-dir"))
        .collect();
    assert_eq!(downs.len(), 3, "{log:?}");
    assert!(
        downs[1].starts_with("run in Some(\"skiff-dev-worker\")"),
        "{downs:?}"
    );
    assert!(!downs[1].contains("--purge"));

    c.start("dev").await.expect("start");
    assert_eq!(c.status("dev").expect("status").state(), State::Running);

    let removed = c.delete("dev").await.expect("delete");
    assert!(
        removed.contains(&"network namespace skiff-dev-worker2".to_owned()),
        "{removed:?}"
    );
    assert!(!dir.exists());
    assert!(c.host.netns.lock().unwrap().is_empty());
    assert!(c.host.running.lock().unwrap().is_empty());
    assert!(c.host.log().iter().any(|l| l.ends_with("--purge")));
    assert!(matches!(
        c.status("dev"),
        Err(ClusterError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_name_in_use_is_refused_and_each_cluster_gets_its_own_subnet() {
    let host = FakeHost {
        networks: vec![(Ipv4Addr::new(172, 30, 2, 0), 24)],
        ..FakeHost::default()
    };
    let (_tmp, c) = clusters(host);
    c.create("a", 1, 0).await.expect("create a");
    let err = c.create("a", 1, 0).await.expect_err("in use");
    assert!(matches!(err, ClusterError::Exists { .. }), "{err}");
    // 1 is a's, 2 the host's.
    assert_eq!(c.create("b", 1, 1).await.expect("create b").subnet, 3);
    let names: Vec<_> = c
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let err = c.create("Bad_Name", 1, 0).await.expect_err("bad name");
    assert!(matches!(err, ClusterError::InvalidName { .. }));
    assert!(!c.root.join("Bad_Name").exists());
}

#[tokio::test]
async fn a_failed_create_leaves_nothing_behind() {
    let host = FakeHost {
        fail_agent_of: Some("dev-worker2".into()),
        ..FakeHost::default()
    };
    let (_tmp, c) = clusters(host);
    let err = c
        .create("dev", 1, 3)
        .await
        .expect_err("a node cannot start");
    assert_eq!(
        err.to_string(),
        "cannot start the agent of node dev-worker2"
    );
    assert!(!c.root.join("dev").exists());
    assert!(c.host.running.lock().unwrap().is_empty(), "processes left");
    assert!(c.host.netns.lock().unwrap().is_empty(), "namespaces left");
    assert!(c.host.log().iter().any(|l| l.starts_with("remove bridge")));
}

#[tokio::test]
async fn images_load_into_every_running_node() {
    let (tmp, c) = clusters(FakeHost::default());
    let archive = tmp.path().join("busybox.tar");
    std::fs::write(&archive, b"x").expect("archive");
    c.create("dev", 1, 1).await.expect("create");
    let out = c.load_image("dev", &archive).await.expect("load");
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], ("dev-worker".to_owned(), "done\n".to_owned()));
    let log = c.host.log();
    let imports: Vec<_> = log.iter().filter(|l| l.contains(" import ")).collect();
    assert!(
        imports[1].contains("dev-worker/agent import"),
        "{imports:?}"
    );
    c.stop("dev").await.expect("stop");
    let err = c.load_image("dev", &archive).await.expect_err("stopped");
    assert!(matches!(err, ClusterError::NodeStopped { .. }), "{err}");
    let err = c
        .load_image("dev", &tmp.path().join("none.tar"))
        .await
        .expect_err("no file");
    assert!(err.to_string().ends_with("none.tar"), "{err}");
}
