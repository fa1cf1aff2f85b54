//! Controllers: level-triggered loops that move the cluster towards what its objects ask for.
//! Each pass looks at the whole state; store events only wake a loop early.

pub mod namespace;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Waits until the store changes after `after`, `period` passes, or `cancel` fires; returns
/// false when cancelled.
pub(crate) async fn wait_for_change(
    store: &Store,
    after: u64,
    period: Duration,
    cancel: &CancellationToken,
) -> bool {
    let sub = store.watch(after);
    let changed = async {
        match sub {
            Ok(mut s) if s.backlog.is_empty() => {
                let _ = s.live.recv().await;
            }
            _ => {}
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => return false,
        _ = changed => {}
        _ = tokio::time::sleep(period) => {}
    }
    // Let a burst of changes settle into one pass.
    tokio::time::sleep(Duration::from_millis(20)).await;
    !cancel.is_cancelled()
}
