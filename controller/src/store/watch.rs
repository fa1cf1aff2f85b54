//! The watch cache: a bounded history of applied events plus a broadcast of new ones, so a watch
//! can start at any revision still in the window and never skips or repeats an event.
//!
//! A subscriber that wants only some events (the controllers' loops) gives a filter instead
//! ([`WatchHub::subscribe_filtered`]): the hub applies it where events are published and wakes
//! the subscriber only for a match. Through the broadcast, every subscriber's task is woken for
//! every event, and on a busy store (a stream of ConfigMap writes, say) that wake-up of an idle
//! thread costs more CPU than the write.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, broadcast};

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
    /// Subscribers with a filter; dropped ones are pruned as events are published.
    filtered: Vec<Weak<Filtered>>,
}

impl HubInner {
    /// The events after `after` that `keep` accepts, if the history still reaches back there.
    fn backlog(
        &self,
        after: u64,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Arc<Event>>, TooOld> {
        if after < self.floor {
            return Err(TooOld { oldest: self.floor });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.revision > after && keep(e))
            .cloned()
            .collect())
    }
}

/// Which events a filtered subscriber wants.
pub type EventFilter = Box<dyn Fn(&Event) -> bool + Send + Sync>;

/// A filtered subscriber's side of the hub.
struct Filtered {
    filter: EventFilter,
    matched: Mutex<Matched>,
    arrived: Notify,
}

#[derive(Default)]
struct Matched {
    events: Vec<Arc<Event>>,
    /// Events it wanted were lost (too many unread, or a snapshot replaced the state).
    lagged: bool,
}

impl Filtered {
    fn matched(&self) -> std::sync::MutexGuard<'_, Matched> {
        // Events are pushed and taken whole, so a poisoned queue is still consistent.
        self.matched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A filtered subscription: the matching events already in history, then the matching live
/// ones as they come ([`FilteredSubscription::changed`], [`FilteredSubscription::take`]).
pub struct FilteredSubscription {
    pub backlog: Vec<Arc<Event>>,
    sub: Arc<Filtered>,
}

/// Matching events were lost: the subscriber must look at everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

impl FilteredSubscription {
    /// Returns once a matching event has been published since the last `take` (at once if one
    /// already was).
    pub async fn changed(&self) {
        loop {
            let notified = self.sub.arrived.notified();
            {
                let m = self.sub.matched();
                if !m.events.is_empty() || m.lagged {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The matching events published since the last call, in order.
    pub fn take(&mut self) -> Result<Vec<Arc<Event>>, Lagged> {
        let mut m = self.sub.matched();
        if m.lagged {
            m.lagged = false;
            m.events.clear();
            return Err(Lagged);
        }
        Ok(std::mem::take(&mut m.events))
    }
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
                filtered: Vec::new(),
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
        // Each live filtered subscriber, and whether this batch has anything for it.
        let mut filtered: Vec<(Arc<Filtered>, bool)> = Vec::new();
        inner.filtered.retain(|w| match w.upgrade() {
            Some(f) => {
                filtered.push((f, false));
                true
            }
            None => false,
        });
        for ev in events {
            let ev = Arc::new(ev);
            for (f, woken) in filtered.iter_mut() {
                if (f.filter)(&ev) {
                    let mut m = f.matched();
                    if m.events.len() >= self.capacity {
                        m.events.clear();
                        m.lagged = true;
                    } else if !m.lagged {
                        m.events.push(ev.clone());
                    }
                    *woken = true;
                }
            }
            inner.history.push_back(ev.clone());
            while inner.history.len() > self.capacity {
                if let Some(old) = inner.history.pop_front() {
                    inner.floor = old.revision;
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(ev);
        }
        drop(inner);
        for (f, woken) in filtered {
            if woken {
                f.arrived.notify_one();
            }
        }
    }

    /// Forgets history at or below `revision` (a snapshot replaced the state, or compaction).
    pub fn reset(&self, revision: u64) {
        let mut inner = self.lock();
        inner.history.retain(|e| e.revision > revision);
        inner.floor = inner.floor.max(revision);
        // What a snapshot replaced was never published: filtered subscribers look again.
        for f in inner.filtered.iter().filter_map(Weak::upgrade) {
            f.matched().lagged = true;
            f.arrived.notify_one();
        }
    }

    /// Subscribes to the events after `after` that `filter` accepts; it is called as events
    /// are published, under the hub's lock, so it must be quick.
    pub fn subscribe_filtered(
        &self,
        after: u64,
        filter: EventFilter,
    ) -> Result<FilteredSubscription, TooOld> {
        let mut inner = self.lock();
        let backlog = inner.backlog(after, &filter)?;
        let sub = Arc::new(Filtered {
            filter,
            matched: Mutex::default(),
            arrived: Notify::new(),
        });
        inner.filtered.push(Arc::downgrade(&sub));
        Ok(FilteredSubscription { backlog, sub })
    }

    /// Subscribes to every event after `after`.
    pub fn subscribe(&self, after: u64) -> Result<Subscription, TooOld> {
        let backlog = self.lock().backlog(after, |_| true)?;
        Ok(Subscription {
            backlog,
            live: self.tx.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    async fn a_filtered_subscriber_is_woken_only_for_what_it_wants() {
        let hub = WatchHub::new(0, 4);
        hub.publish(vec![ev(1), ev(2)]);
        let even: EventFilter = Box::new(|e| e.revision % 2 == 0);
        let mut s = hub.subscribe_filtered(0, even).unwrap();
        let revs = |evs: &[Arc<Event>]| evs.iter().map(|e| e.revision).collect::<Vec<_>>();
        assert_eq!(revs(&s.backlog), [2]);
        hub.publish(vec![ev(3)]);
        let woken = tokio::time::timeout(Duration::from_millis(50), s.changed()).await;
        assert!(woken.is_err(), "woken for an event it does not want");
        hub.publish(vec![ev(4), ev(5), ev(6)]);
        tokio::time::timeout(Duration::from_secs(5), s.changed())
            .await
            .unwrap();
        assert_eq!(revs(&s.take().unwrap()), [4, 6]);
        assert!(s.take().unwrap().is_empty());
        // More unread matches than the hub keeps: the subscriber is told it lost some.
        hub.publish((7..=20).map(ev).collect());
        s.changed().await;
        assert_eq!(s.take().err(), Some(Lagged));
        // So is one whose state a snapshot replaced.
        hub.reset(30);
        s.changed().await;
        assert_eq!(s.take().err(), Some(Lagged));
        // A dropped subscriber is forgotten.
        drop(s);
        hub.publish(vec![ev(32)]);
        assert!(hub.lock().filtered.is_empty());
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
