//! Watches over HTTP: newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`,
//! `ERROR`) on a chunked response, starting after a resourceVersion, filtered by namespace and
//! selectors, with objects moving in and out of a selector seen as ADDED and DELETED, and
//! streaming lists (`sendInitialEvents`) ended by their `initial-events-end` bookmark.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::encode;
use super::error::ApiError;
use super::objects::decode;
use super::resources::Resource;
use super::selectors::{FieldSelector, LabelSelector};
use super::table;
use crate::store::{Event, Store, StoreError};

/// What a watch selects and how it answers.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Start after this revision; `None` starts with the current state as ADDED events.
    pub after: Option<u64>,
    /// `sendInitialEvents=true` (a streaming list): the current state as ADDED events whatever
    /// `after` says (it is never older than the revision asked for), then a bookmark annotated
    /// `k8s.io/initial-events-end` that tells the client its list is complete.
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub as_table: bool,
}

impl WatchSpec {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(self.res, obj)
    }

    fn render(&self, obj: &Value) -> Value {
        if self.as_table {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            table::table(self.res, std::slice::from_ref(obj), rv, false)
        } else {
            obj.clone()
        }
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        Bytes::from(encode::watch_event(kind, &self.render(obj)))
    }

    /// Turns one store event into the watch event this watcher sees, if any.
    fn translate(&self, ev: &Event) -> Option<Bytes> {
        let prefix = self.res.list_prefix(self.namespace.as_deref());
        if !ev.key.starts_with(&prefix) {
            return None;
        }
        let old = ev.prev.as_ref().and_then(|r| decode(r).ok());
        let old_in = old.as_ref().is_some_and(|o| self.selects(o));
        match &ev.record {
            Some(rec) => {
                let new = decode(rec).ok()?;
                match (old_in, self.selects(&new)) {
                    (false, true) => Some(self.line("ADDED", &new)),
                    (true, true) => Some(self.line("MODIFIED", &new)),
                    (true, false) => Some(self.line("DELETED", &new)),
                    (false, false) => None,
                }
            }
            None => {
                let mut gone = old.filter(|_| old_in)?;
                gone["metadata"]["resourceVersion"] = json!(ev.revision.to_string());
                Some(self.line("DELETED", &gone))
            }
        }
    }

    fn bookmark(&self, revision: u64, initial_events_end: bool) -> Bytes {
        let mut obj = json!({
            "kind": self.res.kind,
            "apiVersion": self.res.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        });
        if initial_events_end {
            obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        Bytes::from(encode::watch_event("BOOKMARK", &obj))
    }
}

fn error_line(e: &ApiError) -> Bytes {
    Bytes::from(encode::watch_event("ERROR", &e.status()))
}

/// Starts a watch; the returned receiver yields the response body's chunks.
pub fn start(
    store: &Store,
    spec: WatchSpec,
    cancel: CancellationToken,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let resume = spec.after.filter(|_| !spec.send_initial_events);
    let (initial, sub, mut last) = match resume {
        Some(after) => match store.watch(after) {
            Ok(sub) => (Vec::new(), Some(sub), after),
            Err(StoreError::TooOld { requested, oldest }) => {
                // Kubernetes answers 200 and then an ERROR event with 410 Expired.
                let e = ApiError::Gone(format!("too old resource version: {requested} ({oldest})"));
                let _ = tx.try_send(error_line(&e));
                return Ok(rx);
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            let prefix = spec.res.list_prefix(spec.namespace.as_deref());
            let (items, rev) = store.list(&prefix);
            let sub = store.watch(rev)?;
            let mut lines = Vec::new();
            for (_, rec) in &items {
                let obj = decode(rec)?;
                if spec.selects(&obj) {
                    lines.push(spec.line("ADDED", &obj));
                }
            }
            if spec.send_initial_events && spec.bookmarks {
                lines.push(spec.bookmark(rev, true));
            }
            (lines, Some(sub), rev)
        }
    };
    let Some(mut sub) = sub else { return Ok(rx) };
    tokio::spawn(async move {
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        for ev in std::mem::take(&mut sub.backlog) {
            last = ev.revision;
            if let Some(l) = spec.translate(&ev)
                && tx.send(l).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(Duration::from_secs(60));
        bookmark.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut deadline => {
                    if spec.bookmarks {
                        let _ = tx.send(spec.bookmark(last, false)).await;
                    }
                    return;
                }
                _ = tx.closed() => return,
                _ = bookmark.tick(), if spec.bookmarks => {
                    if tx.send(spec.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                r = sub.live.recv() => match r {
                    Ok(ev) => {
                        if ev.revision <= last {
                            continue;
                        }
                        last = ev.revision;
                        if let Some(l) = spec.translate(&ev)
                            && tx.send(l).await.is_err() {
                                return;
                            }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::Gone(format!(
                            "too old resource version: {last}: the watch fell behind"
                        ));
                        let _ = tx.send(error_line(&e)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(rx)
}
