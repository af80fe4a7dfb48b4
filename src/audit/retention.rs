//! Retention: records older than `audit_retention` are deleted, in bounded batches, by one task the
//! database owns (started by [`crate::db::Db::start_audit_retention`], stopped and awaited by
//! [`crate::db::Db::close`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::crdt::Hlc;
use crate::storage::Store;

/// Most records one purge deletes, in one transaction: at ~100 bytes a record, a batch holds the store's
/// writer for about a millisecond, so writes queued meanwhile barely notice.
pub const PURGE_BATCH_ROWS: usize = 1000;
/// Shortest pause between two purge rounds.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest pause between two purge rounds.
const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// How often records older than `retention` are looked for: a tenth of it, within
/// 100 ms..10 min, so a record outlives its retention by at most a tenth (or 10 min).
pub fn purge_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The running retention task.
#[derive(Debug)]
pub struct Retention {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Retention {
    /// Purge records of `store` older than `retention` (by `clock`'s time) every [`purge_interval`].
    pub fn start(store: Arc<dyn Store>, clock: Arc<Hlc>, retention: Duration) -> Retention {
        let (stop, mut stopped) = watch::channel(false);
        let interval = purge_interval(retention);
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let before_ms = clock.time_ms().saturating_sub(retention_ms);
                // Batch after batch until the old records are gone, each its own transaction; a stop waits for
                // at most the batch in progress.
                loop {
                    match store.audit_purge(before_ms, PURGE_BATCH_ROWS).await {
                        Ok(purged) if purged == PURGE_BATCH_ROWS && !*stopped.borrow() => {
                            tokio::task::yield_now().await;
                        }
                        Ok(purged) => {
                            if purged > 0 {
                                tracing::debug!(purged, "purged audit records past their retention");
                            }
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "purging old audit records failed; will retry");
                            break;
                        }
                    }
                }
            }
        });
        Retention { stop, task }
    }

    /// Stop the task and wait for it to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "the audit retention task failed");
        }
    }
}
