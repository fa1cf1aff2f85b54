//! The watch cache: a bounded history of applied events plus a broadcast of new ones, so a watch
//! can start at any revision still in the window and never skips or repeats an event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::state::Event;

/// How a watch starting at an old revision fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest revision a watch may start after.
    pub oldest: u64,
}

struct HubInner {
    history: VecDeque<Arc<Event>>,
    /// Every event with a revision above `floor` is in `history`.
    floor: u64,
}

/// Fan-out of applied events.
pub struct WatchHub {
    inner: Mutex<HubInner>,
    tx: broadcast::Sender<Arc<Event>>,
    capacity: usize,
}

/// A subscription: the events already in history, then the live receiver.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl WatchHub {
    /// `floor` is the store's revision when the hub starts: watches may start there or later.
    pub fn new(floor: u64, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.clamp(16, 65_536));
        Self {
            inner: Mutex::new(HubInner {
                history: VecDeque::new(),
                floor,
            }),
            tx,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes events in revision order.
    pub fn publish(&self, events: Vec<Event>) {
        let mut inner = self.lock();
        for ev in events {
            let ev = Arc::new(ev);
            inner.history.push_back(ev.clone());
            while inner.history.len() > self.capacity {
                if let Some(old) = inner.history.pop_front() {
                    inner.floor = old.revision;
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(ev);
        }
    }

    /// Forgets history at or below `revision` (a snapshot replaced the state, or compaction).
    pub fn reset(&self, revision: u64) {
        let mut inner = self.lock();
        inner.history.retain(|e| e.revision > revision);
        inner.floor = inner.floor.max(revision);
    }

    /// Subscribes to every event after `after`.
    pub fn subscribe(&self, after: u64) -> Result<Subscription, TooOld> {
        let inner = self.lock();
        if after < inner.floor {
            return Err(TooOld {
                oldest: inner.floor,
            });
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live: self.tx.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: u64) -> Event {
        Event {
            key: format!("/k{rev}"),
            revision: rev,
            record: None,
            prev: None,
        }
    }

    #[test]
    fn history_window_and_too_old() {
        let hub = WatchHub::new(0, 3);
        hub.publish((1..=5).map(ev).collect());
        assert_eq!(hub.subscribe(1).err(), Some(TooOld { oldest: 2 }));
        let s = hub.subscribe(2).unwrap();
        let revs: Vec<_> = s.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(revs, [3, 4, 5]);
    }

    #[tokio::test]
    async fn live_events_follow_backlog_without_gap() {
        let hub = WatchHub::new(10, 100);
        hub.publish(vec![ev(11)]);
        let mut s = hub.subscribe(10).unwrap();
        hub.publish(vec![ev(12)]);
        assert_eq!(s.backlog[0].revision, 11);
        assert_eq!(s.live.recv().await.unwrap().revision, 12);
    }
}
