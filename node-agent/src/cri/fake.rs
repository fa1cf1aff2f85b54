//! An in-memory CRI runtime for unit tests: records every call in order, keeps sandboxes,
//! containers and images in maps, and lets a test make containers exit or image pulls fail.

use super::{Cri, v1};
use crate::AgentError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// A sandbox the fake runtime holds.
#[derive(Debug, Clone)]
pub struct FakeSandbox {
    pub config: v1::PodSandboxConfig,
    pub state: v1::PodSandboxState,
}

/// A container the fake runtime holds.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub sandbox_id: String,
    pub config: v1::ContainerConfig,
    pub state: v1::ContainerState,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub image_ref: String,
}

/// The size every fake image has.
pub const FAKE_IMAGE_SIZE: u64 = 4 * 1024 * 1024;

/// Everything the fake knows; tests read and change it through [`FakeCri::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// Calls in order, as `"<Op> <subject>"`, e.g. `"StartContainer c1"`.
    pub calls: Vec<String>,
    /// Images present on the "node": name → image ref.
    pub images: BTreeMap<String, String>,
    /// Images whose pull fails, with the message.
    pub pull_errors: BTreeMap<String, String>,
    /// Images only these users may pull ("" is anonymous).
    pub pull_users: BTreeMap<String, Vec<String>>,
    pub sandboxes: BTreeMap<String, FakeSandbox>,
    pub containers: BTreeMap<String, FakeContainer>,
    /// Containers whose start fails.
    pub start_errors: BTreeSet<String>,
    /// The IP every sandbox gets.
    pub pod_ip: String,
    /// Ops (`"ListPodSandbox"`, ...) whose next call fails with `Unavailable`, once each.
    pub fail_once: BTreeSet<String>,
    /// ExecSync answers by command line (`"cat /tmp/healthy"`).
    pub exec_results: BTreeMap<String, v1::ExecSyncResponse>,
    /// Pod UIDs for GetContainerEvents streams; `None`: the fake has no events.
    pub events: Option<tokio::sync::broadcast::Sender<String>>,
    next_id: u64,
}

/// The fake runtime. `Sync` through a mutex; never held across an await.
#[derive(Debug, Default)]
pub struct FakeCri {
    state: Mutex<FakeState>,
}

fn not_found(op: &'static str, what: &str) -> AgentError {
    AgentError::Cri {
        op,
        target: what.to_owned(),
        code: tonic::Code::NotFound,
        message: format!("{what} not found"),
    }
}

fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

impl FakeCri {
    pub fn new() -> Self {
        let fake = FakeCri::default();
        fake.state().pod_ip = "10.88.0.5".to_owned();
        fake
    }

    /// The fake's state, for a test to inspect or change.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread may poison the lock; the data is still fine to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// Makes the container exit with `code`, as if its process ended.
    pub fn exit_container(&self, id: &str, code: i32) {
        let mut st = self.state();
        if let Some(c) = st.containers.get_mut(id) {
            c.state = v1::ContainerState::ContainerExited;
            c.exit_code = code;
            c.finished_at = now_ns();
        }
    }

    /// Adds a ready sandbox for pod `namespace/pod` with a running container `name` (labelled
    /// as the agent labels them) and returns the container's id.
    pub fn add_running_container(&self, namespace: &str, pod: &str, name: &str) -> String {
        let labels: std::collections::HashMap<String, String> = [
            (super::LABEL_POD_NAMESPACE.to_owned(), namespace.to_owned()),
            (super::LABEL_POD_NAME.to_owned(), pod.to_owned()),
        ]
        .into();
        let mut st = self.state();
        let sb = Self::new_id(&mut st, "sb");
        st.sandboxes.insert(
            sb.clone(),
            FakeSandbox {
                config: v1::PodSandboxConfig {
                    labels: labels.clone(),
                    ..Default::default()
                },
                state: v1::PodSandboxState::SandboxReady,
            },
        );
        let mut labels = labels;
        labels.insert(super::LABEL_CONTAINER_NAME.to_owned(), name.to_owned());
        let id = Self::new_id(&mut st, "c");
        st.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox_id: sb,
                config: v1::ContainerConfig {
                    labels,
                    ..Default::default()
                },
                state: v1::ContainerState::ContainerRunning,
                started_at: now_ns(),
                finished_at: 0,
                exit_code: 0,
                image_ref: String::new(),
            },
        );
        id
    }

    /// Ids of containers with metadata name `name`, oldest first.
    pub fn containers_named(&self, name: &str) -> Vec<String> {
        self.state()
            .containers
            .iter()
            .filter(|(_, c)| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn record(&self, call: String) -> MutexGuard<'_, FakeState> {
        let mut st = self.state();
        st.calls.push(call);
        st
    }

    fn new_id(st: &mut FakeState, prefix: &str) -> String {
        st.next_id += 1;
        format!("{prefix}{}", st.next_id)
    }
}

impl FakeCri {
    /// Streaming calls answer with a URL naming the call and container, if it runs.
    fn streaming_url(&self, op: &'static str, id: &str) -> Result<String, AgentError> {
        match self.state().containers.get(id).map(|c| c.state) {
            None => Err(not_found(op, id)),
            Some(v1::ContainerState::ContainerRunning) => {
                Ok(format!("http://streaming.invalid/{op}/{id}"))
            }
            Some(_) => Err(AgentError::Cri {
                op,
                target: id.to_owned(),
                code: tonic::Code::FailedPrecondition,
                message: format!("container {id} is not running"),
            }),
        }
    }

    fn injected(&self, op: &'static str) -> Result<(), AgentError> {
        if self.state().fail_once.remove(op) {
            return Err(AgentError::Cri {
                op,
                target: "fake".to_owned(),
                code: tonic::Code::Unavailable,
                message: "injected failure".to_owned(),
            });
        }
        Ok(())
    }
}

fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Cri for FakeCri {
    async fn version(&self) -> Result<v1::VersionResponse, AgentError> {
        Ok(v1::VersionResponse {
            version: "0.1.0".to_owned(),
            runtime_name: "fake".to_owned(),
            runtime_version: "1.0.0".to_owned(),
            runtime_api_version: "v1".to_owned(),
        })
    }

    async fn update_pod_cidr(&self, cidr: &str) -> Result<(), AgentError> {
        self.state()
            .calls
            .push(format!("UpdateRuntimeConfig {cidr}"));
        Ok(())
    }

    async fn status(&self) -> Result<v1::RuntimeStatus, AgentError> {
        let cond = |t: &str| v1::RuntimeCondition {
            r#type: t.to_owned(),
            status: true,
            ..Default::default()
        };
        Ok(v1::RuntimeStatus {
            conditions: vec![cond("RuntimeReady"), cond("NetworkReady")],
        })
    }

    async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, AgentError> {
        let uid = config
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let mut st = self.record(format!("RunPodSandbox {uid}"));
        let id = Self::new_id(&mut st, "sb");
        st.sandboxes.insert(
            id.clone(),
            FakeSandbox {
                config,
                state: v1::PodSandboxState::SandboxReady,
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), AgentError> {
        let mut st = self.record(format!("StopPodSandbox {id}"));
        let Some(sb) = st.sandboxes.get_mut(id) else {
            return Err(not_found("StopPodSandbox", id));
        };
        sb.state = v1::PodSandboxState::SandboxNotready;
        for c in st.containers.values_mut().filter(|c| c.sandbox_id == id) {
            if c.state == v1::ContainerState::ContainerRunning {
                c.state = v1::ContainerState::ContainerExited;
                c.exit_code = 137;
                c.finished_at = now_ns();
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), AgentError> {
        let mut st = self.record(format!("RemovePodSandbox {id}"));
        st.containers.retain(|_, c| c.sandbox_id != id);
        match st.sandboxes.remove(id) {
            Some(_) => Ok(()),
            None => Err(not_found("RemovePodSandbox", id)),
        }
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<v1::PodSandboxStatus, AgentError> {
        self.injected("PodSandboxStatus")?;
        let st = self.state();
        let sb = st
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("PodSandboxStatus", id))?;
        Ok(v1::PodSandboxStatus {
            id: id.to_owned(),
            metadata: sb.config.metadata.clone(),
            state: sb.state.into(),
            network: Some(v1::PodSandboxNetworkStatus {
                ip: st.pod_ip.clone(),
                additional_ips: vec![],
            }),
            labels: sb.config.labels.clone(),
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(
        &self,
        filter: v1::PodSandboxFilter,
    ) -> Result<Vec<v1::PodSandbox>, AgentError> {
        self.injected("ListPodSandbox")?;
        let st = self.state();
        Ok(st
            .sandboxes
            .iter()
            .filter(|(_, sb)| labels_match(&sb.config.labels, &filter.label_selector))
            .map(|(id, sb)| v1::PodSandbox {
                id: id.clone(),
                metadata: sb.config.metadata.clone(),
                state: sb.state.into(),
                labels: sb.config.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        _sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, AgentError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut st = self.record(format!("CreateContainer {name}"));
        if !st.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image_ref = st.images.get(&image).cloned().unwrap_or_default();
        let id = Self::new_id(&mut st, "c");
        st.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox_id: sandbox_id.to_owned(),
                config,
                state: v1::ContainerState::ContainerCreated,
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                image_ref,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), AgentError> {
        let mut st = self.record(format!("StartContainer {id}"));
        if st.start_errors.contains(id) {
            return Err(AgentError::Cri {
                op: "StartContainer",
                target: id.to_owned(),
                code: tonic::Code::Internal,
                message: "exec format error".to_owned(),
            });
        }
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StartContainer", id))?;
        c.state = v1::ContainerState::ContainerRunning;
        c.started_at = now_ns();
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), AgentError> {
        let mut st = self.record(format!("StopContainer {id} {timeout_seconds}"));
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StopContainer", id))?;
        if c.state == v1::ContainerState::ContainerRunning {
            c.state = v1::ContainerState::ContainerExited;
            c.exit_code = 143;
            c.finished_at = now_ns();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let mut st = self.record(format!("RemoveContainer {id}"));
        match st.containers.remove(id) {
            Some(_) => Ok(()),
            None => Err(not_found("RemoveContainer", id)),
        }
    }

    async fn list_containers(
        &self,
        filter: v1::ContainerFilter,
    ) -> Result<Vec<v1::Container>, AgentError> {
        let st = self.state();
        Ok(st
            .containers
            .iter()
            .filter(|(_, c)| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id == filter.pod_sandbox_id
            })
            .filter(|(_, c)| labels_match(&c.config.labels, &filter.label_selector))
            .map(|(id, c)| v1::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: c.image_ref.clone(),
                state: c.state.into(),
                labels: c.config.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _timeout: std::time::Duration,
    ) -> Result<v1::ExecSyncResponse, AgentError> {
        let mut st = self.state();
        st.calls
            .push(format!("ExecSync {container_id} {}", cmd.join(" ")));
        if !st.containers.contains_key(container_id) {
            return Err(not_found("ExecSync", container_id));
        }
        // A test scripts answers by command; anything else succeeds silently.
        Ok(st
            .exec_results
            .get(&cmd.join(" "))
            .cloned()
            .unwrap_or_default())
    }

    async fn exec(&self, req: v1::ExecRequest) -> Result<String, AgentError> {
        self.streaming_url("exec", &req.container_id)
    }

    async fn attach(&self, req: v1::AttachRequest) -> Result<String, AgentError> {
        self.streaming_url("attach", &req.container_id)
    }

    async fn port_forward(&self, req: v1::PortForwardRequest) -> Result<String, AgentError> {
        if !self.state().sandboxes.contains_key(&req.pod_sandbox_id) {
            return Err(not_found("PortForward", &req.pod_sandbox_id));
        }
        Ok(format!(
            "http://streaming.invalid/portforward/{}",
            req.pod_sandbox_id
        ))
    }

    async fn pod_events(&self) -> Result<Option<super::PodEvents>, AgentError> {
        use futures::StreamExt as _;
        let Some(tx) = self.state().events.clone() else {
            return Ok(None);
        };
        let stream = futures::stream::unfold(tx.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(uid) => Some((Ok(uid), rx)),
                Err(_) => None,
            }
        });
        Ok(Some(stream.boxed()))
    }

    async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, AgentError> {
        let st = self.state();
        let c = st
            .containers
            .get(id)
            .ok_or_else(|| not_found("ContainerStatus", id))?;
        let reason = match (c.state, c.exit_code) {
            (v1::ContainerState::ContainerExited, 0) => "Completed",
            (v1::ContainerState::ContainerExited, _) => "Error",
            _ => "",
        };
        Ok(v1::ContainerStatus {
            id: id.to_owned(),
            metadata: c.config.metadata.clone(),
            state: c.state.into(),
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            reason: reason.to_owned(),
            labels: c.config.labels.clone(),
            log_path: c.config.log_path.clone(),
            ..Default::default()
        })
    }

    async fn list_images(&self) -> Result<Vec<v1::Image>, AgentError> {
        // Not recorded: the status loop asks every heartbeat.
        let st = self.state();
        Ok(st
            .images
            .iter()
            .map(|(name, id)| v1::Image {
                id: id.clone(),
                repo_tags: vec![name.clone()],
                size: FAKE_IMAGE_SIZE,
                ..Default::default()
            })
            .collect())
    }

    async fn image_status(&self, image: &str) -> Result<Option<v1::Image>, AgentError> {
        let mut st = self.record(format!("ImageStatus {image}"));
        Ok(st.images.get_mut(image).map(|r| v1::Image {
            id: r.clone(),
            repo_tags: vec![image.to_owned()],
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        _sandbox_config: Option<v1::PodSandboxConfig>,
        auth: Option<v1::AuthConfig>,
    ) -> Result<String, AgentError> {
        let user = auth.map(|a| a.username).unwrap_or_default();
        let mut st = if user.is_empty() {
            self.record(format!("PullImage {image}"))
        } else {
            self.record(format!("PullImage {image} as {user}"))
        };
        // A registry that only lets `pull_users` in, when any are set for the image.
        if let Some(allowed) = st.pull_users.get(image)
            && !allowed.contains(&user)
        {
            return Err(AgentError::ImagePull {
                image: image.to_owned(),
                message: format!("unauthorized: {user:?} may not pull"),
            });
        }
        if let Some(message) = st.pull_errors.get(image) {
            return Err(AgentError::ImagePull {
                image: image.to_owned(),
                message: message.clone(),
            });
        }
        let image_ref = format!("sha256:{}", image.replace([':', '/'], "-"));
        st.images.insert(image.to_owned(), image_ref.clone());
        Ok(image_ref)
    }
}
