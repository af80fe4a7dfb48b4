//! The checkpointer task, which copies the WAL into the database file in the background. See "Checkpoints"
//! in the module docs of [`super`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::writer::Writer;
use super::StoreTuning;
use crate::error::{Error, Result};

/// A catch-up of the checkpointer takes the writer lock once a passive checkpoint finds less than this much
/// appended while the one before it ran, or after this many passes.
const CATCH_UP_BYTES: u64 = 1 << 20;
const CATCH_UP_PASSES: u32 = 4;

/// What `PRAGMA wal_checkpoint` reports: whether it gave up on a lock, the frames in the WAL, and how many of
/// them are in the database file now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpoint {
    pub(super) busy: bool,
    pub(super) frames: i64,
    checkpointed: i64,
}

impl Checkpoint {
    pub(super) async fn run(conn: &mut SqliteConnection, sql: &'static str) -> Result<Checkpoint> {
        let (busy, frames, checkpointed): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(conn).await?;
        Ok(Checkpoint {
            busy: busy != 0,
            frames,
            checkpointed,
        })
    }
}

const CHECKPOINT_PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
pub(super) const CHECKPOINT_TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// The handle of the checkpointer task: dropping it (with the store) stops the task too.
pub(super) struct Checkpointer {
    pub(super) stop: oneshot::Sender<()>,
    pub(super) task: JoinHandle<()>,
}

/// The checkpointer task: the writer's connection never checkpoints (`wal_autocheckpoint=0`), this task does,
/// on a connection of its own. See "Checkpoints" in the module docs.
///
/// It holds the writer only weakly and ends when `stop` fires or its sender is dropped (the store dropped
/// without `close`), after the round in progress.
pub(super) async fn checkpoint_loop(mut round: Round, mut stop: oneshot::Receiver<()>) {
    match sqlx::query_scalar::<_, i64>("PRAGMA page_size")
        .fetch_one(&mut round.conn)
        .await
    {
        // A WAL frame is a page behind a 24-byte header.
        Ok(page) => round.frame_bytes = page as u64 + 24,
        Err(err) => {
            tracing::error!(
                error = %err,
                "the storage checkpointer cannot start; the WAL is checkpointed at its limit and on close only"
            );
            return;
        }
    }
    let mut ticks = tokio::time::interval(round.tuning.checkpoint_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        if let Err(err) = round.run().await {
            tracing::warn!(error = %err, "checkpointing the storage WAL failed; will retry");
        }
    }
    if let Err(err) = round.conn.close().await {
        tracing::debug!(error = %err, "closing the checkpointer connection failed");
    }
}

/// Bytes of a file, 0 if there is none.
async fn file_len(path: &Path) -> Result<u64> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(meta.len()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err.into()),
    }
}

/// Clears the compaction hold when a catch-up ends, however it ends.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A descriptor of the database file, which the checkpointer fsyncs before a catch-up takes the writer lock
/// (see [`Round::catch_up`]).
///
/// SQLite locks the database file with POSIX advisory locks, and those belong to the process: closing *any*
/// descriptor of the file drops all of them, the ones SQLite's open connections hold included. So this one is
/// opened after the store's connections and closed only once they all are, at the end of `close`; a store
/// dropped without `close` leaks it rather than close it while its connections may still be open.
pub(super) struct DatabaseFile(pub(super) std::fs::File);

/// What the checkpointer works with, and what it remembers between rounds.
pub(super) struct Round {
    pub(super) conn: SqliteConnection,
    pub(super) wal: PathBuf,
    /// The database file, to fsync it before a catch-up takes the writer lock. See [`DatabaseFile`].
    pub(super) db: Arc<DatabaseFile>,
    pub(super) writer: Weak<Mutex<Option<Writer>>>,
    pub(super) hold: Arc<AtomicBool>,
    pub(super) tuning: StoreTuning,
    pub(super) frame_bytes: u64,
    /// Frames in the WAL as last seen: at the start of the previous round, or at the end of a catch-up.
    pub(super) last_frames: i64,
    /// Rounds in a row that saw no commit since the one before.
    pub(super) quiet: u32,
}

impl Round {
    /// One round: a passive checkpoint, which copies what was committed since the last one into the database
    /// file without ever blocking the writer. Then, if the WAL holds `wal_restart_bytes`, a catch-up so that
    /// the next commit starts it over; or, once nothing has been committed for two rounds and the WAL file is
    /// larger than that, a `TRUNCATE` to give the disk space back.
    async fn run(&mut self) -> Result<()> {
        // The frame count is from when the checkpoint began: the WAL may have grown since, which the next
        // round sees. An unchanged count means nothing was committed since it was last seen, so this
        // checkpoint has copied everything and the next commit starts the WAL over anyway (unless a reader
        // still uses it).
        let passive = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
        let unchanged = !passive.busy && passive.checkpointed == passive.frames && passive.frames == self.last_frames;
        self.quiet = if unchanged { self.quiet + 1 } else { 0 };
        self.last_frames = passive.frames;
        if !unchanged && passive.frames.max(0) as u64 * self.frame_bytes >= self.tuning.wal_restart_bytes {
            self.catch_up().await
        } else if self.quiet >= 2 && file_len(&self.wal).await? > self.tuning.wal_restart_bytes {
            self.truncate_idle().await
        } else {
            Ok(())
        }
    }

    /// Catch up with the whole WAL, so that the next commit starts it over from the beginning:
    ///
    /// 1. hold compaction slices off, so that only appends (a few pages a commit) land in the WAL;
    /// 2. passive checkpoints without the writer lock until one finds little new: the first copies what
    ///    compaction wrote, each next one what was appended while the one before ran;
    /// 3. an fsync of the database file (see below);
    /// 4. with the writer lock (between two commits, none starting), one more: it copies the last few pages
    ///    and has then caught up, unless a reader still uses older frames.
    ///
    /// The writer waits for step 4 only, whose cost is mostly its two fsyncs (of the WAL, then of the
    /// database file), of what was written since the steps before.
    async fn catch_up(&mut self) -> Result<()> {
        let started = Instant::now();
        self.hold.store(true, Ordering::Release);
        let _release = Release(&self.hold);
        let mut passes = 0;
        let mut before = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
        while passes < CATCH_UP_PASSES {
            passes += 1;
            let next = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
            let appended = next.frames - before.frames;
            before = next;
            if appended < 0 || appended as u64 * self.frame_bytes < CATCH_UP_BYTES {
                break;
            }
        }
        // SQLite fsyncs the database file only when a checkpoint reaches the end of the WAL, which none of the
        // passes above does while the writer appends: the last checkpoint, under the writer lock, would flush
        // everything they copied (~80 ms at 1M keys). Flush it now, without the lock.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.0.sync_data())
            .await
            .map_err(|err| Error::Internal(format!("fsync of the database file: {err}")))??;
        let Some(writer) = self.writer.upgrade() else {
            return Ok(());
        };
        let waited = Instant::now();
        let guard = writer.lock().await;
        if guard.is_none() {
            return Ok(()); // closed: `close` checkpoints itself
        }
        let locked = Instant::now();
        let last = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
        drop(guard);
        self.last_frames = last.frames;
        tracing::debug!(
            passes,
            frames = ?(before.frames, last.frames),
            caught_up = !last.busy && last.checkpointed == last.frames,
            catching_up = ?waited.duration_since(started),
            lock_wait = ?locked.duration_since(waited),
            writer_held = ?locked.elapsed(),
            "checkpointed the storage WAL so that it starts over"
        );
        Ok(())
    }

    /// Truncate the WAL file of a store that is not being written to. There is nothing left to copy, so the
    /// writer is held only for the truncation.
    async fn truncate_idle(&mut self) -> Result<()> {
        let Some(writer) = self.writer.upgrade() else {
            return Ok(());
        };
        let guard = writer.lock().await;
        if guard.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let truncate = Checkpoint::run(&mut self.conn, CHECKPOINT_TRUNCATE).await?;
        drop(guard);
        tracing::debug!(busy = truncate.busy, writer_held = ?started.elapsed(), "truncated the idle storage WAL");
        Ok(())
    }
}
