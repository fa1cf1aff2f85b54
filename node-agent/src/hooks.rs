//! Lifecycle hooks and stopping containers, as the kubelet does them: `postStart` runs right
//! after the container starts, and its failure kills the container; stopping a container first
//! records `Killing`, then runs `preStop` within the grace period, then asks the runtime to stop
//! it (the image's stop signal, then SIGKILL) with what is left of the grace period, at least
//! two seconds.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use tokio::time::Instant;

use crate::AgentError;
use crate::cri::Cri;
use crate::probe::action::{Actions, Outcome, hook_action};
use crate::recorder::EventType;

/// How long a stopped container gets after its preStop hook, at the least.
const MIN_GRACE: Duration = Duration::from_secs(2);

/// How an event about the container is recorded (type, reason, message).
pub type Emit<'a> = &'a (dyn Fn(EventType, &'static str, String) + Send + Sync);

/// Runs a hook's handler for container `id`; its error says what failed.
async fn run_hook(
    actions: &dyn Actions,
    id: &str,
    h: &LifecycleHandler,
    c: &Container,
    pod_ip: &str,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let action = hook_action(h, c, pod_ip).map_err(|e| format!("Cannot run handler: {e}"))?;
    match actions.run(id, &action, timeout, "lifecycle").await {
        Outcome::Success(_) | Outcome::Warning(_) => Ok(()),
        Outcome::Failure(m) | Outcome::Error(m) => Err(m),
    }
}

/// Runs the container's postStart hook, if it has one. On failure it records
/// `FailedPostStartHook` (without the hook's output, which may hold secrets) and returns the
/// hook's message.
pub async fn post_start(
    actions: &dyn Actions,
    id: &str,
    c: &Container,
    pod_ip: &str,
    emit: Emit<'_>,
) -> Result<(), String> {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
        return Ok(());
    };
    let out = run_hook(actions, id, h, c, pod_ip, None).await;
    if let Err(e) = &out {
        tracing::warn!(container = %c.name, error = %e, "postStart hook failed");
        emit(
            EventType::Warning,
            "FailedPostStartHook",
            "PostStartHook failed".to_owned(),
        );
    }
    out
}

/// How to stop one container.
pub struct Stop<'a> {
    pub id: &'a str,
    pub container: Option<&'a Container>,
    pub pod_ip: &'a str,
    /// The grace period, before preStop takes its share.
    pub grace: Duration,
    /// The `Killing` event's message (`Stopping container X` unless a probe or hook asks).
    pub message: String,
}

/// Stops a container as the kubelet's `killContainer` does: `Killing`, preStop bounded by the
/// grace period (a failure is `FailedPreStopHook` and the stop goes on), then StopContainer
/// with the rest of the grace period, at least two seconds.
pub async fn stop<C: Cri>(
    cri: &C,
    actions: &Arc<dyn Actions>,
    s: Stop<'_>,
    emit: Emit<'_>,
) -> Result<(), AgentError> {
    emit(EventType::Normal, "Killing", s.message.clone());
    let mut grace = s.grace;
    if let Some(c) = s.container
        && let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        && !grace.is_zero()
    {
        let started = Instant::now();
        let hook = run_hook(actions.as_ref(), s.id, h, c, s.pod_ip, Some(grace));
        match tokio::time::timeout(grace, hook).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = %c.name, error = %e, "preStop hook failed");
                emit(
                    EventType::Warning,
                    "FailedPreStopHook",
                    "PreStopHook failed".to_owned(),
                );
            }
            Err(_) => {
                tracing::info!(container = %c.name, "preStop hook ran out of the grace period")
            }
        }
        // Whole seconds, as the kubelet counts them.
        grace = grace.saturating_sub(Duration::from_secs(started.elapsed().as_secs()));
    }
    let grace = grace.max(MIN_GRACE);
    match cri
        .stop_container(s.id, i64::try_from(grace.as_secs()).unwrap_or(i64::MAX))
        .await
    {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeCri;
    use crate::cri::v1;
    use crate::probe::action::Action;
    use futures::future::BoxFuture;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, SleepAction};
    use std::sync::Mutex;

    /// Hooks that take `took` and answer `outcome`.
    struct Slow {
        took: Duration,
        outcome: Outcome,
        ran: Mutex<Vec<Action>>,
    }

    impl Actions for Slow {
        fn run<'a>(
            &'a self,
            _id: &'a str,
            action: &'a Action,
            _timeout: Option<Duration>,
            _purpose: &'static str,
        ) -> BoxFuture<'a, Outcome> {
            self.ran
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(action.clone());
            Box::pin(async move {
                tokio::time::sleep(self.took).await;
                self.outcome.clone()
            })
        }
    }

    fn with_pre_stop() -> Container {
        Container {
            name: "app".into(),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["sh".into(), "-c".into(), "drain".into()]),
                    }),
                    ..Default::default()
                }),
                post_start: Some(LifecycleHandler {
                    sleep: Some(SleepAction { seconds: 1 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pre_stop_takes_its_share_of_the_grace_period() {
        let fake = FakeCri::new();
        let sb = fake
            .run_pod_sandbox(v1::PodSandboxConfig::default())
            .await
            .unwrap();
        let id = fake
            .create_container(
                &sb,
                v1::ContainerConfig {
                    metadata: Some(v1::ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    ..Default::default()
                },
                v1::PodSandboxConfig::default(),
            )
            .await
            .unwrap();
        let actions: Arc<dyn Actions> = Arc::new(Slow {
            took: Duration::from_secs(7),
            outcome: Outcome::Failure("exit 1".into()),
            ran: Mutex::default(),
        });
        let events = Mutex::new(Vec::new());
        let emit = |_ty, reason: &'static str, msg: String| {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{reason}: {msg}"))
        };
        let c = with_pre_stop();
        stop(
            &fake,
            &actions,
            Stop {
                id: &id,
                container: Some(&c),
                pod_ip: "10.0.0.1",
                grace: Duration::from_secs(30),
                message: "Stopping container app".into(),
            },
            &emit,
        )
        .await
        .unwrap();
        assert!(
            fake.calls().contains(&format!("StopContainer {id} 23")),
            "{:?}",
            fake.calls()
        );
        assert_eq!(
            *events.lock().unwrap_or_else(|e| e.into_inner()),
            [
                "Killing: Stopping container app",
                "FailedPreStopHook: PreStopHook failed"
            ]
        );
    }
}
