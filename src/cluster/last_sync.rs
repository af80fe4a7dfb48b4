//! The last-sync record: the time (ms) of the node's last completed anti-entropy round, one decimal number
//! in the file [`LAST_SYNC_FILE`] of the data directory. It decides, at start, whether the node rejoins
//! pull-first ([`crate::replication::LastSync`]), so losing it must never make a node look new: a missing
//! file is "unknown" on a node that holds data, an unreadable one refuses the start, and it is replaced
//! atomically and durably (written to a temporary file, fsynced, renamed, the directory fsynced).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// File in the data directory holding the time (ms) of the last completed anti-entropy round.
pub const LAST_SYNC_FILE: &str = "last_sync";

/// The recorded time, `None` if there is no record. A record that cannot be read or parsed is an error.
pub fn read(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(LAST_SYNC_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Corrupt(format!(
                "cannot read the last-sync record {}: {e}; fix its permissions, or delete it to make this \
                 node rejoin pull-first (its peers decide about old entries)",
                path.display()
            )))
        }
    };
    let parsed = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|&t| t > 0);
    parsed.map(Some).ok_or_else(|| {
        Error::Corrupt(format!(
            "the last-sync record {} is corrupt (expected a time in ms, found {:?}); delete it to make this \
             node rejoin pull-first (its peers decide about old entries)",
            path.display(),
            String::from_utf8_lossy(&text[..text.len().min(64)])
        ))
    })
}

/// Replace the record with `time_ms`, atomically and durably.
pub fn write(dir: &Path, time_ms: u64) -> std::io::Result<()> {
    let path = dir.join(LAST_SYNC_FILE);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{time_ms}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), 1_767_225_600_123).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(1_767_225_600_123));
        assert!(!dir.path().join("last_sync.tmp").exists());
        for garbage in [&b""[..], b"soon", b"-5", b"0", b"\xff\xfe", b"12 34"] {
            std::fs::write(dir.path().join(LAST_SYNC_FILE), garbage).unwrap();
            let err = read(dir.path()).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{garbage:?}: {err}");
            assert!(err.to_string().contains("delete it"), "{err}");
        }
    }
}
