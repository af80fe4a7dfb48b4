//! Versions from the future already on disk: the start-up check that refuses to serve them, and
//! `cave repair-clock`, which restamps them.
//!
//! A stored version more than `max_clock_drift` ahead of the wall clock at start-up means that the clock
//! went back (NTP stepped it, or this node ran ahead before), or that a bad version got in before the drift
//! rule covered imports. Loading it would drag the node's HLC along, and every later local write would be
//! stamped that far ahead: held back by the peers' drift guard, and beating writes acknowledged after it.
//! So the node refuses to start and says which keys and how far ahead; if waiting is not an option (a
//! version years ahead), `cave repair-clock` rewrites the database with those entries restamped at the
//! current time by this node (same value, an honest version), keeping the old file beside it.
//!
//! A restamped entry is older than the bad version, so a peer that still holds the bad version keeps
//! winning for that key: repair every node that refuses to start (a rolling restart finds them all).

use std::path::Path;

use crate::config::Config;
use crate::crdt::hlc::{beyond_drift, from_physical_ms, SystemTime, TimeSource};
use crate::crdt::{Entry, LwwMap, NodeId, Version};
use crate::error::{Error, Result};
use crate::storage::{SqliteStore, Store};

/// Where `cave repair-clock` keeps the database it replaced, in the data directory.
pub const BACKUP_FILE: &str = "cave.db.before-repair-clock";
/// The database being written by `cave repair-clock` (renamed into place when complete).
const REPAIRING_FILE: &str = "cave.db.repairing";
/// Entries named in the start-up error.
const NAMED_ENTRIES: usize = 5;
/// Entries per transaction while rewriting.
const REWRITE_CHUNK_ENTRIES: usize = 10_000;

/// A stored entry stamped further ahead than the drift bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarAhead {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: Version,
    /// How far ahead of the clock it is, ms.
    pub ahead_ms: u64,
}

/// The entries of `state` stamped more than `max_drift_ms` ahead of `now_ms` (the drift rule of
/// [`beyond_drift`]), furthest ahead first.
pub fn far_ahead<'a>(entries: impl Iterator<Item = &'a Entry>, now_ms: u64, max_drift_ms: u64) -> Vec<FarAhead> {
    let mut found: Vec<FarAhead> = entries
        .filter_map(|e| {
            beyond_drift(e.version.hlc, now_ms, max_drift_ms).map(|ahead_ms| FarAhead {
                key: e.key.to_string(),
                version: e.version,
                ahead_ms,
            })
        })
        .collect();
    found.sort_by(|a, b| b.ahead_ms.cmp(&a.ahead_ms).then_with(|| a.key.cmp(&b.key)));
    found
}

/// The start-up check: an error naming the entries of `state` that are too far ahead, if any.
pub fn check_loaded(state: &LwwMap, now_ms: u64, max_drift_ms: u64) -> Result<()> {
    let found = far_ahead(state.iter(), now_ms, max_drift_ms);
    if found.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = found
        .iter()
        .take(NAMED_ENTRIES)
        .map(|f| format!("{} at {} ({} ms ahead)", f.key, f.version, f.ahead_ms))
        .collect();
    Err(Error::ClockSkew(format!(
        "refusing to start: {} stored version(s) are more than max_clock_drift ({max_drift_ms} ms) ahead of this \
         node's clock: {}{}. If this node's clock is behind, fix it (NTP) and start again; if they are only \
         seconds ahead, starting again once the clock has passed them works too; otherwise run `cave \
         repair-clock` with this node's settings: it restamps them at the current time and keeps the old \
         database as {BACKUP_FILE}",
        found.len(),
        named.join(", "),
        if found.len() > NAMED_ENTRIES { ", ..." } else { "" },
    )))
}

/// `cave repair-clock`: rewrite the database of `config.data_dir` with every entry more than
/// `max_clock_drift` ahead of the wall clock restamped at the current time by `node`; the node must not be
/// running (the caller holds the data-dir lock). Returns the entries restamped (nothing is rewritten when there are none).
pub async fn repair_clock(config: &Config, node: NodeId) -> Result<Vec<FarAhead>> {
    let dir = &config.data_dir;
    let path = dir.join(crate::node::DB_FILE);
    if !path.exists() {
        return Err(Error::InvalidInput(format!(
            "data_dir {} holds no database",
            dir.display()
        )));
    }
    let old = SqliteStore::open(&path, config.durability).await?;
    let mut entries = old.load().await?;
    let now_ms = SystemTime.now_ms();
    let found = far_ahead(entries.iter(), now_ms, config.max_clock_drift.as_millis() as u64);
    if found.is_empty() {
        old.close().await?;
        return Ok(found);
    }
    let stamp = Version::new(from_physical_ms(now_ms), node);
    for e in &mut entries {
        if found.iter().any(|f| f.key == e.key) {
            e.version = stamp;
        }
    }
    let tmp = dir.join(REPAIRING_FILE);
    remove_with_sidecars(&tmp)?;
    let new = SqliteStore::open(&tmp, config.durability).await?;
    for chunk in entries.chunks(REWRITE_CHUNK_ENTRIES) {
        new.apply(chunk).await?;
    }
    // The audit trail moves along unchanged (its times are not versions), a page at a time.
    let mut after = 0;
    loop {
        let records = old.audit_scan(after, REWRITE_CHUNK_ENTRIES).await?;
        let Some(last) = records.last() else { break };
        after = last.id;
        new.apply_with_audit(&[], &records).await?;
    }
    old.close().await?;
    new.close().await?;
    let backup = dir.join(BACKUP_FILE);
    remove_with_sidecars(&backup)?;
    rename_with_sidecars(&path, &backup)?;
    rename_with_sidecars(&tmp, &path)?;
    Ok(found)
}

/// The SQLite files of a database: itself, its WAL and its shared-memory index.
fn sidecars(path: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

fn remove_with_sidecars(path: &Path) -> Result<()> {
    for p in sidecars(path) {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::internal(format!("cannot remove {}: {e}", p.display())))
            }
            _ => {}
        }
    }
    Ok(())
}

fn rename_with_sidecars(from: &Path, to: &Path) -> Result<()> {
    for (a, b) in sidecars(from).iter().zip(sidecars(to)) {
        if a.exists() {
            std::fs::rename(a, &b)
                .map_err(|e| Error::internal(format!("cannot rename {} to {}: {e}", a.display(), b.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_names_the_entries_beyond_the_drift_bound_furthest_first() {
        let mut state = LwwMap::new();
        let at = |ms: u64| Version::new(from_physical_ms(ms), NodeId(1));
        state.merge(Entry::value("within", "v", at(11_000)));
        assert_eq!(check_loaded(&state, 10_000, 1_000), Ok(()));
        for i in 0..7u64 {
            state.merge(Entry::value(format!("k{i}"), "v", at(20_000 + i)));
        }
        let found = far_ahead(state.iter(), 10_000, 1_000);
        assert_eq!(found.len(), 7);
        assert_eq!((found[0].key.as_str(), found[0].ahead_ms), ("k6", 10_006));
        let err = check_loaded(&state, 10_000, 1_000).unwrap_err().to_string();
        assert!(
            err.contains("7 stored version(s)") && err.contains("k6 at") && err.contains(", ..."),
            "{err}"
        );
        assert!(!err.contains("k1 at") && !err.contains("within"), "{err}");
    }
}
