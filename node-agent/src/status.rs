//! Pod status as the kubelet computes it: the container statuses from what the worker observed
//! of each container ([`Observed`]), then `phase` and `conditions` from them and the restart
//! policy (kubelet `getPhase`, `GeneratePodReadyCondition`, ...). Pure functions, so the rules
//! are tested table by table.

use crate::cri::v1;
use crate::slot::{Slot, ns_to_time, terminated_of};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus,
    HostIP, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// `spec.restartPolicy`, defaulted to `Always` as the API server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn from_spec(value: Option<&str>) -> Self {
        match value {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn terminated_exit(s: &ContainerStatus) -> Option<i32> {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn last_terminated_exit(s: &ContainerStatus) -> Option<i32> {
    s.last_state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

fn is_waiting(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.waiting.is_some())
}

/// Whether any regular container has run: the pod got past its init containers.
fn initialized(containers: &[ContainerStatus]) -> bool {
    containers
        .iter()
        .any(|s| is_running(s) || terminated_exit(s).is_some() || last_terminated_exit(s).is_some())
}

/// The pod phase (kubelet `getPhase`). `init_names`/`names` are the spec's containers in order;
/// a container without a status counts as unknown. `sidecars` are the init containers with
/// `restartPolicy: Always`: one holds the pod Pending only until it runs and has started, and
/// never decides Succeeded or Failed.
pub fn pod_phase(
    policy: RestartPolicy,
    init_names: &[String],
    init: &[ContainerStatus],
    names: &[String],
    containers: &[ContainerStatus],
    sidecars: &[String],
) -> &'static str {
    let mut pending_init = 0;
    let mut failed_init = 0;
    let pod_initialized = initialized(containers);
    for name in init_names {
        if sidecars.contains(name) {
            let up = find(init, name).is_some_and(|s| is_running(s) && s.started == Some(true));
            if !up && !pod_initialized {
                pending_init += 1;
            }
            continue;
        }
        match find(init, name) {
            None => pending_init += 1,
            Some(s) if is_running(s) => pending_init += 1,
            Some(s) => match terminated_exit(s) {
                Some(0) => {}
                Some(_) => failed_init += 1,
                None if is_waiting(s) && last_terminated_exit(s) == Some(0) => {}
                None => pending_init += 1,
            },
        }
    }
    if failed_init > 0 && policy == RestartPolicy::Never {
        return FAILED;
    }
    if pending_init > 0 || failed_init > 0 {
        return PENDING;
    }

    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for name in names {
        match find(containers, name) {
            None => unknown += 1,
            Some(s) if is_running(s) => running += 1,
            Some(s) => match terminated_exit(s) {
                Some(code) => {
                    stopped += 1;
                    if code == 0 {
                        succeeded += 1;
                    }
                }
                None if is_waiting(s) => {
                    // A container waiting to restart has run before: it counts as stopped.
                    if last_terminated_exit(s).is_some() {
                        stopped += 1;
                    } else {
                        waiting += 1;
                    }
                }
                None => unknown += 1,
            },
        }
    }
    if waiting > 0 {
        PENDING
    } else if running > 0 && unknown == 0 {
        RUNNING
    } else if running == 0 && stopped > 0 && unknown == 0 {
        if policy == RestartPolicy::Always {
            RUNNING
        } else if stopped == succeeded {
            SUCCEEDED
        } else if policy == RestartPolicy::Never {
            FAILED
        } else {
            RUNNING
        }
    } else {
        PENDING
    }
}

/// A condition as computed this pass, before transition times are carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

fn names_where(
    names: &[String],
    statuses: &[ContainerStatus],
    bad: impl Fn(&ContainerStatus) -> bool,
) -> Vec<String> {
    names
        .iter()
        .filter(|n| find(statuses, n).is_none_or(&bad))
        .cloned()
        .collect()
}

/// The conditions the kubelet owns: PodReadyToStartContainers, Initialized, ContainersReady,
/// Ready (no probes yet: ready means running). PodScheduled is the scheduler's and is kept.
pub fn pod_conditions(
    phase: &str,
    sandbox_ready: bool,
    init_names: &[String],
    init: &[ContainerStatus],
    names: &[String],
    containers: &[ContainerStatus],
    sidecars: &[String],
) -> Vec<Condition> {
    let cond = |type_, status, reason: Option<&str>, message: Option<String>| Condition {
        type_,
        status,
        reason: reason.map(str::to_owned),
        message,
    };
    let mut out = vec![cond("PodReadyToStartContainers", sandbox_ready, None, None)];

    let pod_initialized = initialized(containers);
    let not_initialized: Vec<String> = if pod_initialized {
        Vec::new()
    } else {
        init_names
            .iter()
            .filter(|n| {
                find(init, n).is_none_or(|s| {
                    if sidecars.contains(n) {
                        s.started != Some(true)
                    } else {
                        terminated_exit(s) != Some(0)
                            && !(is_waiting(s) && last_terminated_exit(s) == Some(0))
                    }
                })
            })
            .cloned()
            .collect()
    };
    out.push(if not_initialized.is_empty() {
        cond("Initialized", true, None, None)
    } else {
        cond(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                not_initialized.join(" ")
            )),
        )
    });

    let completed = phase == SUCCEEDED || phase == FAILED;
    // Sidecars count for readiness as regular containers do.
    let mut unready = names_where(sidecars, init, |s| !s.ready);
    unready.extend(names_where(names, containers, |s| !s.ready));
    let ready = if completed {
        (false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    out.push(cond("ContainersReady", ready.0, ready.1, ready.2.clone()));
    out.push(cond("Ready", ready.0, ready.1, ready.2));
    out
}

/// Ready also needs the pod's readiness gates: each gate's condition, set by another component
/// on the pod's status, must be True (kubelet `GeneratePodReadyCondition`).
pub fn with_readiness_gates(
    mut computed: Vec<Condition>,
    gates: &[String],
    previous: &[PodCondition],
) -> Vec<Condition> {
    let Some(ready) = computed.iter_mut().find(|c| c.type_ == "Ready") else {
        return computed;
    };
    if !ready.status || gates.is_empty() {
        return computed;
    }
    let unready: Vec<String> = gates
        .iter()
        .filter_map(|g| match previous.iter().find(|p| &p.type_ == g) {
            None => Some(format!(
                "corresponding condition of pod readiness gate \"{g}\" does not exist."
            )),
            Some(p) if p.status != "True" => Some(format!(
                "the status of pod readiness gate \"{g}\" is not \"True\", but {}",
                p.status
            )),
            Some(_) => None,
        })
        .collect();
    if !unready.is_empty() {
        ready.status = false;
        ready.reason = Some("ReadinessGatesNotReady".to_owned());
        ready.message = Some(unready.join(", "));
    }
    computed
}

/// Turns computed conditions into API conditions, keeping `lastTransitionTime` from `previous`
/// while a condition's status is unchanged, and keeping PodScheduled (and any condition another
/// component owns) as it was.
pub fn merge_conditions(
    computed: &[Condition],
    previous: &[PodCondition],
    now: &Time,
) -> Vec<PodCondition> {
    let mut out: Vec<PodCondition> = Vec::new();
    let scheduled = previous
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "True".to_owned(),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        });
    out.push(scheduled);
    for c in computed {
        let status = if c.status { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == status)
            .and_then(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        out.push(PodCondition {
            type_: c.type_.to_owned(),
            status: status.to_owned(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: Some(since),
            ..Default::default()
        });
    }
    // Conditions owned by others (readiness gates, DisruptionTarget) survive our merge patch.
    for p in previous {
        if !out.iter().any(|c| c.type_ == p.type_) {
            out.push(p.clone());
        }
    }
    out
}

/// What the worker observed of a pod, which its status is assembled from.
#[derive(Debug)]
pub struct Observed<'a> {
    pub spec: &'a PodSpec,
    pub init: &'a [Slot],
    pub containers: &'a [Slot],
    /// The scheme of `containerID`s (CRI `runtime_name`).
    pub runtime: &'a str,
    /// Why the sandbox could not be made, shown on containers still being created.
    pub sandbox_error: Option<&'a str>,
    pub sandbox_ready: bool,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    /// Why the kubelet failed the pod itself (`DeadlineExceeded`), with its message.
    pub failure: Option<(&'a str, &'a str)>,
}

impl Observed<'_> {
    fn statuses(&self, slots: &[Slot], specs: &[Container]) -> Vec<ContainerStatus> {
        let runtime = self.runtime;
        slots
            .iter()
            .zip(specs)
            .map(|(slot, c)| {
                let current = slot.current.as_ref();
                let mut last = slot.last_terminated.clone();
                let state = if let Some((reason, message)) = &slot.waiting {
                    // Waiting to restart: the attempt that ended is the last state.
                    if let Some(t) = current.and_then(|a| terminated_of(a, runtime)) {
                        last = Some(t);
                    }
                    ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.clone()),
                            message: message.clone(),
                        }),
                        ..Default::default()
                    }
                } else {
                    match current {
                        Some(a) if a.state() == v1::ContainerState::ContainerRunning => {
                            ContainerState {
                                running: Some(ContainerStateRunning {
                                    started_at: a
                                        .status
                                        .as_ref()
                                        .and_then(|s| ns_to_time(s.started_at)),
                                }),
                                ..Default::default()
                            }
                        }
                        Some(a) if a.exit_code().is_some() => ContainerState {
                            terminated: terminated_of(a, runtime),
                            ..Default::default()
                        },
                        _ => ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some("ContainerCreating".to_owned()),
                                message: self.sandbox_error.map(str::to_owned),
                            }),
                            ..Default::default()
                        },
                    }
                };
                let running = state.running.is_some();
                let (ready, started) = if running {
                    (slot.ready, slot.started)
                } else {
                    // An init container that completed is ready (the kubelet's rule).
                    let done = !slot.sidecar
                        && state.terminated.as_ref().is_some_and(|t| t.exit_code == 0);
                    (done, false)
                };
                ContainerStatus {
                    name: slot.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: current
                        .and_then(|a| a.status.as_ref())
                        .map(|s| s.image_ref.clone())
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| slot.image_ref.clone()),
                    container_id: current.map(|a| format!("{runtime}://{}", a.id)),
                    restart_count: i32::try_from(slot.restart_count).unwrap_or(i32::MAX),
                    ready,
                    started: Some(started),
                    state: Some(state),
                    last_state: Some(ContainerState {
                        terminated: last,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn names(specs: &[Container]) -> Vec<String> {
        specs.iter().map(|c| c.name.clone()).collect()
    }

    /// The phase the pod is in.
    fn sidecars(&self) -> Vec<String> {
        self.init
            .iter()
            .filter(|s| s.sidecar)
            .map(|s| s.name.clone())
            .collect()
    }

    pub fn phase(&self) -> &'static str {
        let init_specs = self.spec.init_containers.clone().unwrap_or_default();
        let policy = RestartPolicy::from_spec(self.spec.restart_policy.as_deref());
        pod_phase(
            policy,
            &Self::names(&init_specs),
            &self.statuses(self.init, &init_specs),
            &Self::names(&self.spec.containers),
            &self.statuses(self.containers, &self.spec.containers),
            &self.sidecars(),
        )
    }

    /// The status the kubelet would write now. `previous` conditions keep their transition
    /// times while unchanged.
    pub fn assemble(&self, previous: &[PodCondition], start_time: Time, now: &Time) -> PodStatus {
        let init_specs = self.spec.init_containers.clone().unwrap_or_default();
        let policy = RestartPolicy::from_spec(self.spec.restart_policy.as_deref());
        let init = self.statuses(self.init, &init_specs);
        let containers = self.statuses(self.containers, &self.spec.containers);
        let init_names = Self::names(&init_specs);
        let names = Self::names(&self.spec.containers);
        let sidecars = self.sidecars();
        let phase = match self.failure {
            Some(_) => FAILED,
            None => pod_phase(policy, &init_names, &init, &names, &containers, &sidecars),
        };
        let computed = pod_conditions(
            phase,
            self.sandbox_ready,
            &init_names,
            &init,
            &names,
            &containers,
            &sidecars,
        );
        let gates: Vec<String> = self
            .spec
            .readiness_gates
            .iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect();
        let computed = with_readiness_gates(computed, &gates, previous);
        let conditions = merge_conditions(&computed, previous, now);
        let host_ip = self.host_ip.clone();
        let pod_ips = self.pod_ips.clone();
        PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: pod_ips.first().cloned(),
            pod_ips: (!pod_ips.is_empty())
                .then(|| pod_ips.into_iter().map(|ip| PodIP { ip }).collect()),
            start_time: Some(start_time),
            reason: self.failure.map(|(r, _)| r.to_owned()),
            message: self.failure.map(|(_, m)| m.to_owned()),
            init_container_statuses: (!init.is_empty()).then_some(init),
            container_statuses: Some(containers),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    /// A container status shorthand: `R` running, `T<code>` terminated, `W` waiting (never
    /// ran), `B<code>` waiting to restart after exiting with code.
    fn cs(name: &str, what: &str) -> ContainerStatus {
        let term = |code: i32| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        };
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (state, last) = match what.as_bytes()[0] {
            b'R' => (
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                },
                None,
            ),
            b'T' => (term(what[1..].parse().expect("code")), None),
            b'W' => (waiting, None),
            b'B' => (waiting, Some(term(what[1..].parse().expect("code")))),
            _ => panic!("bad shorthand {what}"),
        };
        ContainerStatus {
            name: name.to_owned(),
            ready: what == "R",
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    fn statuses(spec: &[&str]) -> Vec<ContainerStatus> {
        spec.iter()
            .enumerate()
            .map(|(i, w)| cs(&format!("c{i}"), w))
            .collect()
    }

    #[test]
    fn phase_by_policy_and_exit_codes() {
        use RestartPolicy::*;
        let cases: &[(RestartPolicy, &[&str], &str)] = &[
            (Always, &["R"], RUNNING),
            (Always, &["T0"], RUNNING),
            (Always, &["T1"], RUNNING),
            (Always, &["B1"], RUNNING),
            (Always, &["W"], PENDING),
            (Always, &["R", "W"], PENDING),
            (OnFailure, &["T0"], SUCCEEDED),
            (OnFailure, &["T1"], RUNNING),
            (OnFailure, &["B1"], RUNNING),
            (OnFailure, &["T0", "R"], RUNNING),
            (OnFailure, &["T0", "T0"], SUCCEEDED),
            (Never, &["T0"], SUCCEEDED),
            (Never, &["T1"], FAILED),
            (Never, &["T0", "T2"], FAILED),
            (Never, &["T1", "R"], RUNNING),
            (Never, &["R"], RUNNING),
            (Never, &["W"], PENDING),
        ];
        for (policy, spec, want) in cases {
            let got = pod_phase(*policy, &[], &[], &names(spec.len()), &statuses(spec), &[]);
            assert_eq!(got, *want, "{policy:?} {spec:?}");
        }
    }

    #[test]
    fn missing_status_is_pending() {
        let got = pod_phase(
            RestartPolicy::Always,
            &[],
            &[],
            &names(2),
            &statuses(&["R"]),
            &[],
        );
        assert_eq!(got, PENDING);
    }

    #[test]
    fn init_containers_gate_the_phase() {
        use RestartPolicy::*;
        let init = vec!["i0".to_owned()];
        let one = |w: &str| vec![cs("i0", w)];
        let cases: &[(RestartPolicy, &str, &str)] = &[
            (Always, "R", PENDING),
            (Always, "T1", PENDING),
            (Always, "B1", PENDING),
            (Never, "T1", FAILED),
            (OnFailure, "T1", PENDING),
        ];
        for (policy, init_state, want) in cases {
            let got = pod_phase(
                *policy,
                &init,
                &one(init_state),
                &names(1),
                &statuses(&["W"]),
                &[],
            );
            assert_eq!(got, *want, "{policy:?} init {init_state}");
        }
        let got = pod_phase(Never, &init, &one("T0"), &names(1), &statuses(&["R"]), &[]);
        assert_eq!(got, RUNNING);
    }

    #[test]
    fn sidecars_gate_only_until_started_and_count_for_readiness() {
        let init = vec!["side".to_owned(), "i1".to_owned()];
        let side = vec!["side".to_owned()];
        let mut running_side = cs("side", "R");
        running_side.started = Some(false);
        // A sidecar that has not started holds the pod Pending.
        let got = pod_phase(
            RestartPolicy::Always,
            &init,
            &[running_side.clone(), cs("i1", "W")],
            &names(1),
            &statuses(&["W"]),
            &side,
        );
        assert_eq!(got, PENDING);
        // Once the pod runs, a sidecar does not decide the phase: a crashed one is ignored, and
        // the main container's success completes the pod.
        let got = pod_phase(
            RestartPolicy::Never,
            &init,
            &[cs("side", "T1"), cs("i1", "T0")],
            &names(1),
            &statuses(&["T0"]),
            &side,
        );
        assert_eq!(got, SUCCEEDED);
        // An unready sidecar makes the pod unready.
        let mut side_status = cs("side", "R");
        side_status.ready = false;
        let conds = pod_conditions(
            RUNNING,
            true,
            &init,
            &[side_status, cs("i1", "T0")],
            &names(1),
            &statuses(&["R"]),
            &side,
        );
        let ready = conds.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert!(!ready.status);
        assert!(ready.message.as_deref().unwrap_or("").contains("side"));
    }

    #[test]
    fn ready_when_all_running() {
        let n = names(2);
        let conds = pod_conditions(RUNNING, true, &[], &[], &n, &statuses(&["R", "R"]), &[]);
        assert!(conds.iter().all(|c| c.status), "{conds:?}");

        let conds = pod_conditions(RUNNING, true, &[], &[], &n, &statuses(&["R", "B1"]), &[]);
        let ready = conds.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert!(!ready.status);
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c1]")
        );

        let conds = pod_conditions(
            SUCCEEDED,
            false,
            &[],
            &[],
            &n,
            &statuses(&["T0", "T0"]),
            &[],
        );
        let ready = conds.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let t0 = Time(jiff::Timestamp::from_second(1_000).expect("ts"));
        let t1 = Time(jiff::Timestamp::from_second(2_000).expect("ts"));
        let n = names(1);
        let first = merge_conditions(
            &pod_conditions(RUNNING, true, &[], &[], &n, &statuses(&["R"]), &[]),
            &[],
            &t0,
        );
        let same = merge_conditions(
            &pod_conditions(RUNNING, true, &[], &[], &n, &statuses(&["R"]), &[]),
            &first,
            &t1,
        );
        assert_eq!(first, same);
        let changed = merge_conditions(
            &pod_conditions(RUNNING, true, &[], &[], &n, &statuses(&["B1"]), &[]),
            &same,
            &t1,
        );
        let ready = changed.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(ready.last_transition_time, Some(t1));
        assert_eq!(changed[0].type_, "PodScheduled");
    }

    #[test]
    fn readiness_gates_hold_ready_back_until_their_conditions_are_true() {
        let computed = vec![
            Condition {
                type_: "ContainersReady",
                status: true,
                reason: None,
                message: None,
            },
            Condition {
                type_: "Ready",
                status: true,
                reason: None,
                message: None,
            },
        ];
        let gates = vec!["example.com/lb".to_owned()];
        let out = with_readiness_gates(computed.clone(), &gates, &[]);
        let ready = out.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(!ready.status);
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
        let gate = |status: &str| PodCondition {
            type_: "example.com/lb".into(),
            status: status.into(),
            ..Default::default()
        };
        let out = with_readiness_gates(computed.clone(), &gates, &[gate("False")]);
        assert!(!out.iter().find(|c| c.type_ == "Ready").unwrap().status);
        let out = with_readiness_gates(computed, &gates, &[gate("True")]);
        let ready = out.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.status && ready.reason.is_none());
        assert!(
            out.iter()
                .find(|c| c.type_ == "ContainersReady")
                .unwrap()
                .status
        );
    }
}
