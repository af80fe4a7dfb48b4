//! Test-only access to a [`SqliteStore`]'s writer: its settings, its log and sweep, and ways to make its
//! writes fail as on a full disk.

use super::{closed, SqliteStore};
use crate::error::Result;

impl SqliteStore {
    /// `(journal_mode, synchronous, busy_timeout, wal_autocheckpoint)` as the writer connection reports them.
    pub(in crate::storage) async fn writer_settings(&self) -> Result<(String, i64, i64, i64)> {
        let mut writer = self.writer.lock().await;
        let conn = &mut writer.as_mut().ok_or_else(closed)?.conn;
        let journal_mode = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let synchronous = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let busy_timeout = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *conn).await?;
        let autocheckpoint = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await?;
        Ok((journal_mode, synchronous, busy_timeout, autocheckpoint))
    }

    /// Pages in the database file, as the writer sees it.
    pub(in crate::storage) async fn page_count(&self) -> Result<u64> {
        let mut writer = self.writer.lock().await;
        let conn = &mut writer.as_mut().ok_or_else(closed)?.conn;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *conn).await?;
        Ok(pages as u64)
    }

    /// Limit the database file to `pages` pages on the writer connection: past it, writes fail with
    /// `SQLITE_FULL`, as on a full disk.
    pub(in crate::storage) async fn set_max_page_count(&self, pages: u64) -> Result<()> {
        let mut writer = self.writer.lock().await;
        let conn = &mut writer.as_mut().ok_or_else(closed)?.conn;
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Make the writer's next `failures` commits fail the way a COMMIT on a full disk does: SQLite rolls the
    /// transaction back itself and the COMMIT returns an error.
    pub(in crate::storage) async fn fail_commits(&self, failures: usize) -> Result<()> {
        let mut writer = self.writer.lock().await;
        let conn = &mut writer.as_mut().ok_or_else(closed)?.conn;
        let mut left = failures;
        conn.lock_handle().await?.set_commit_hook(move || {
            let refuse = left > 0;
            left = left.saturating_sub(1);
            !refuse
        });
        Ok(())
    }

    /// Ranges the sweep in progress has left to fold, counting the one it folds next (`None`: no sweep).
    pub(in crate::storage) async fn sweep_ranges_left(&self) -> Option<usize> {
        let writer = self.writer.lock().await;
        let sweep = writer.as_ref()?.sweep.as_ref()?;
        Some(sweep.ends.len() + 1)
    }

    /// The checkpointer task, to watch it end (`None` once `close` stopped it).
    pub(in crate::storage) fn checkpointer_task(&self) -> Option<tokio::task::AbortHandle> {
        let checkpointer = self.checkpointer.lock().unwrap();
        checkpointer.as_ref().map(|c| c.task.abort_handle())
    }

    /// Rows in the log, counted in SQL; checks that the writer's running count agrees.
    pub(in crate::storage) async fn log_rows(&self) -> Result<usize> {
        let mut writer = self.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(closed)?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&mut writer.conn)
            .await?;
        assert_eq!(rows as usize, writer.log_rows, "the running count of log rows drifted");
        Ok(rows as usize)
    }
}
