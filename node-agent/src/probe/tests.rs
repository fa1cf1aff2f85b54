//! Probe workers against scripted actions, under a paused clock.

use super::*;
use futures::future::BoxFuture;
use std::collections::VecDeque;

/// Answers each run with the next scripted outcome (then the last one again), and counts runs.
#[derive(Default)]
struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    runs: Mutex<Vec<Instant>>,
}

impl Script {
    fn new(outcomes: &[Outcome]) -> Arc<Self> {
        Arc::new(Script {
            outcomes: Mutex::new(outcomes.iter().cloned().collect()),
            runs: Mutex::default(),
        })
    }
}

impl Actions for Script {
    fn run<'a>(
        &'a self,
        _id: &'a str,
        _action: &'a Action,
        _timeout: Option<Duration>,
        _purpose: &'static str,
    ) -> BoxFuture<'a, Outcome> {
        locked(&self.runs).push(Instant::now());
        let mut q = locked(&self.outcomes);
        let out = if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        };
        Box::pin(async move { out.unwrap_or(Outcome::Success(String::new())) })
    }
}

fn spec(kind: Kind, period: u64, failure: u32) -> ProbeSpec {
    ProbeSpec {
        kind,
        action: Action::Exec(vec!["true".into()]),
        initial_delay: Duration::from_secs(5),
        period: Duration::from_secs(period),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: failure,
    }
}

struct Harness {
    probes: Probes,
    events: Arc<Mutex<Vec<String>>>,
    wakes: Arc<Mutex<u32>>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            probes: Probes::default(),
            events: Arc::default(),
            wakes: Arc::default(),
        }
    }

    fn start(&mut self, specs: Vec<ProbeSpec>, script: Arc<Script>) {
        let events = self.events.clone();
        let wakes = self.wakes.clone();
        self.probes.ensure(
            Target {
                name: "app".into(),
                id: "c1".into(),
                started: Instant::now(),
                specs,
            },
            script,
            Arc::new(move |_ty, reason, msg| locked(&events).push(format!("{reason}: {msg}"))),
            Arc::new(move || *locked(&wakes) += 1),
        );
    }
}

async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
    // Let the woken tasks run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_starts_failed_and_follows_thresholds() {
    let mut h = Harness::new();
    let script = Script::new(&[
        Outcome::Success(String::new()),
        Outcome::Failure("HTTP probe failed with statuscode: 503".into()),
        Outcome::Failure("HTTP probe failed with statuscode: 503".into()),
        Outcome::Success(String::new()),
    ]);
    h.start(vec![spec(Kind::Readiness, 10, 2)], script.clone());
    // Read without asking for a run (as `ready` does while the container is not ready).
    let readiness = |h: &Harness| h.probes.result("app", Kind::Readiness);
    assert_eq!(
        readiness(&h),
        Some(Result3::Failure),
        "not ready before the first probe"
    );
    settle(Duration::from_secs(4)).await;
    assert!(
        locked(&script.runs).is_empty(),
        "initialDelaySeconds is waited out"
    );
    settle(Duration::from_secs(2)).await;
    assert_eq!(readiness(&h), Some(Result3::Success));
    // One failure is under the threshold of two.
    settle(Duration::from_secs(10)).await;
    assert_eq!(readiness(&h), Some(Result3::Success));
    settle(Duration::from_secs(10)).await;
    assert_eq!(readiness(&h), Some(Result3::Failure));
    // While unready, asking for readiness runs the probe at once: here it succeeds again.
    assert!(!h.probes.ready("app"));
    settle(Duration::from_millis(1)).await;
    assert!(h.probes.ready("app"));
    assert!(locked(&h.events).contains(
        &"Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 503".to_owned()
    ));
    assert!(*locked(&h.wakes) >= 2, "changes wake the worker");
}

#[tokio::test(start_paused = true)]
async fn readiness_retries_early_only_until_ready_within_the_first_period() {
    let mut h = Harness::new();
    let refused = Outcome::Failure("connection refused".into());
    let script = Script::new(&[
        refused.clone(),
        refused.clone(),
        Outcome::Success(String::new()),
        refused.clone(),
    ]);
    let mut s = spec(Kind::Readiness, 5, 3);
    s.initial_delay = Duration::ZERO;
    h.start(vec![s], script.clone());
    let start = Instant::now();
    settle(Duration::from_millis(2500)).await;
    assert_eq!(
        h.probes.result("app", Kind::Readiness),
        Some(Result3::Success),
        "ready a second after the server listens, not a period later"
    );
    let runs: Vec<Duration> = locked(&script.runs).iter().map(|t| *t - start).collect();
    assert_eq!(
        runs,
        [0, 1, 2].map(Duration::from_secs),
        "early retries a second apart"
    );
    // Once it succeeded, the period applies again, failures included.
    settle(Duration::from_secs(11)).await;
    let runs: Vec<Duration> = locked(&script.runs).iter().map(|t| *t - start).collect();
    assert_eq!(runs[3..], [7, 12].map(Duration::from_secs));

    // A container that never gets ready is probed each second only in its first period.
    let mut h = Harness::new();
    let script = Script::new(&[refused]);
    let mut s = spec(Kind::Readiness, 5, 3);
    s.initial_delay = Duration::ZERO;
    h.start(vec![s], script.clone());
    let start = Instant::now();
    settle(Duration::from_millis(15500)).await;
    let runs: Vec<Duration> = locked(&script.runs).iter().map(|t| *t - start).collect();
    assert_eq!(runs, [0, 1, 2, 3, 4, 5, 10, 15].map(Duration::from_secs));
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_asks_for_a_restart_and_stops() {
    let mut h = Harness::new();
    let script = Script::new(&[Outcome::Failure("no".into())]);
    h.start(vec![spec(Kind::Liveness, 10, 3)], script.clone());
    assert_eq!(h.probes.failed("app"), None);
    settle(Duration::from_secs(5 + 10 + 10 + 1)).await;
    assert_eq!(h.probes.failed("app"), Some(Kind::Liveness));
    let runs = locked(&script.runs).len();
    assert_eq!(runs, 3);
    settle(Duration::from_secs(60)).await;
    assert_eq!(locked(&script.runs).len(), runs, "the task stopped");
}

#[tokio::test(start_paused = true)]
async fn startup_holds_back_liveness_and_readiness() {
    let mut h = Harness::new();
    let startup = Script::new(&[
        Outcome::Failure("not yet".into()),
        Outcome::Failure("not yet".into()),
        Outcome::Success(String::new()),
    ]);
    h.start(
        vec![spec(Kind::Startup, 10, 30), spec(Kind::Readiness, 10, 3)],
        startup.clone(),
    );
    settle(Duration::from_secs(6)).await;
    assert!(!h.probes.started("app"));
    assert!(!h.probes.ready("app"));
    // Only the startup probe ran.
    assert_eq!(locked(&startup.runs).len(), 1);
    settle(Duration::from_secs(20)).await;
    assert!(h.probes.started("app"));
    settle(Duration::from_secs(11)).await;
    assert!(h.probes.ready("app"));
    h.probes.stop("app");
    assert!(
        h.probes.ready("app"),
        "no probes: ready as far as probes go"
    );
}
