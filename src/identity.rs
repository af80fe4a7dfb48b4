//! Which cluster a data directory belongs to: the key a node runs with must be the one its data was made
//! under, or the node forks away from its cluster.
//!
//! A node's cluster is its key (the cluster id is derived from it, see [`MasterKey::cluster_id`]). A data
//! directory records the id of the cluster it belongs to in `cluster.id`, written durably on its first start
//! (and on the first start of a directory older than the file). On every later start the key the node would
//! run with is checked against it:
//!
//! - **No key at all** (none configured, and the key file in the data directory is gone) on a *used* data
//!   directory: a prod member restarted without `CAVE_CLUSTER_KEY` would otherwise make a new key, found a
//!   new cluster of one on its old data, report itself ready and miss every later write, while its secrets
//!   turned unreadable. It refuses to start.
//! - **A key of another cluster** than the recorded one (a wrong key, a copied data directory): the same
//!   fork. It refuses to start.
//!
//! Both refusals are configuration errors (the process exits with status 2) whose message says what to do:
//! give the node its cluster's key, or, to mean it, start once with `new_cluster` (`--new-cluster`), which
//! makes or adopts the key and records the new cluster id. A *fresh* data directory needs no flag: founding a
//! cluster (or joining one with a configured key) is what a first start does.
//!
//! Losing the *database* is a different failure with its own flag (`allow_empty_start`, see `node`): the
//! identity is intact there, only the data is gone.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::secrets::MasterKey;

/// File in the data directory holding the id of the cluster the directory belongs to.
pub const CLUSTER_ID_FILE: &str = "cluster.id";

/// The key a node opening a data directory runs with, and what is left to record once it has opened.
pub(crate) struct Identity {
    /// The master key: the configured cluster key, or the key file's, or a new one.
    pub master: MasterKey,
    /// Where a newly made key must be written (after the database is known to open).
    pub new_key_file: Option<PathBuf>,
    /// Whether `cluster.id` must be (re)written with the master key's cluster id.
    pub record: bool,
}

/// The identity of a node opening `dir` with `config`; `used` says whether the directory has been used by
/// a node before (its node id, cluster id or a database exists). Refuses a key that does not belong to the
/// directory's cluster, and a used directory without a key, unless `config.new_cluster`.
pub(crate) fn resolve(config: &Config, dir: &Path, used: bool) -> Result<Identity> {
    let recorded = read_cluster_id(dir)?;
    let key_file = dir.join(match config.mode {
        Mode::Prod => crate::node::CLUSTER_KEY_FILE,
        Mode::Dev => crate::node::NODE_KEY_FILE,
    });
    let (master, source, new_key_file) = match &config.cluster_key {
        Some(key) => (key.clone(), configured_key_source(config), None),
        None => match read_key(&key_file)? {
            Some(key) => (key, format!("key file {}", key_file.display()), None),
            None if used && !config.new_cluster => return Err(no_key(config, dir, &key_file, recorded.as_deref())),
            None => (MasterKey::generate(), String::new(), Some(key_file)),
        },
    };
    let id = master.cluster_id();
    match recorded.as_deref() {
        Some(recorded) if recorded == id => {}
        Some(recorded) if config.new_cluster => tracing::warn!(
            from = recorded,
            to = %id,
            data_dir = %dir.display(),
            "--new-cluster: this data directory leaves cluster {recorded} for cluster {id}; secrets sealed under \
             the old key stay unreadable. Remove --new-cluster for the next starts"
        ),
        Some(recorded) => {
            let source = if source.is_empty() {
                "a new key".to_string()
            } else {
                source
            };
            return Err(Error::invalid(format!(
                "{source} belongs to cluster {id}, but data_dir {dir} belongs to cluster {recorded} (recorded in \
                 {file}): give this node the key of cluster {recorded}, the one its other members run with \
                 (GET /api/v1/system/info on a member shows its cluster_id); or, to move this data to cluster \
                 {id}, start once with --new-cluster (secrets sealed under the old key then stay unreadable)",
                dir = dir.display(),
                file = dir.join(CLUSTER_ID_FILE).display(),
            )));
        }
        None => {}
    }
    Ok(Identity {
        master,
        new_key_file,
        record: recorded.as_deref() != Some(id.as_str()),
    })
}

/// The refusal of a used data directory without any key.
fn no_key(config: &Config, dir: &Path, key_file: &Path, recorded: Option<&str>) -> Error {
    let cluster = recorded.map_or_else(|| "its cluster".to_string(), |id| format!("cluster {id}"));
    let text = match config.mode {
        Mode::Prod => format!(
            "data_dir {dir} belongs to {cluster}, but no cluster key is configured and the key file {file} is \
             not there: set the key its other members run with (CAVE_CLUSTER_KEY, or --cluster-key-file for a \
             mounted secret); starting without it would found a new cluster on this data and leave the old one. \
             To do exactly that (its secrets then stay unreadable), start once with --new-cluster",
            dir = dir.display(),
            file = key_file.display(),
        ),
        Mode::Dev => format!(
            "the key file {file} of data_dir {dir} ({cluster}) is missing: restore it from a backup, or start \
             once with --new-cluster to make a new key (secrets sealed under the old one then stay unreadable)",
            dir = dir.display(),
            file = key_file.display(),
        ),
    };
    Error::invalid(text)
}

/// How the configured key was given, for messages.
fn configured_key_source(config: &Config) -> String {
    match &config.cluster_key_file {
        Some(path) => format!("the cluster key in {} (cluster_key_file)", path.display()),
        None => "the configured cluster key (CAVE_CLUSTER_KEY / --cluster-key)".to_string(),
    }
}

/// Record that `dir` belongs to the cluster of `master` (durably: a crash right after start-up must not
/// leave the directory without it).
pub(crate) fn record(dir: &Path, master: &MasterKey) -> Result<()> {
    write_durably(&dir.join(CLUSTER_ID_FILE), &format!("{}\n", master.cluster_id()))
}

/// The cluster id recorded in `dir`, if any.
pub fn read_cluster_id(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Corrupt(format!(
                    "{} does not hold a cluster id (16 hex digits): restore it from a backup, or delete it to \
                     record the id of the key the node starts with",
                    path.display()
                )));
            }
            Ok(Some(id.to_ascii_lowercase()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::internal(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The key in the key file at `path`, `None` if there is no such file.
pub(crate) fn read_key(path: &Path) -> Result<Option<MasterKey>> {
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::from_base64(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("key file {} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::internal(format!("cannot read key file {}: {e}", path.display()))),
    }
}

/// Warn if the key file given by `cluster_key_file` can be read by others than its owner. Not refused:
/// secrets managers commonly mount files readable by all (Kubernetes' default mode is 0644), inside a
/// container or directory that is itself private.
pub(crate) fn check_key_file_mode(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the cluster key file can be read by others than its owner: make it 0400 or 0600 (Kubernetes: \
                 defaultMode: 0400 on the secret volume)"
            );
        }
    }
}

/// Write `contents` to `path` so that it survives a power loss whole or not at all: a temporary file,
/// fsynced, renamed over `path`, and the directory fsynced so that the rename is durable too.
pub(crate) fn write_durably(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| Error::Unavailable(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail)?;
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, mode: Mode, key: Option<MasterKey>, new_cluster: bool) -> Config {
        Config {
            mode,
            data_dir: dir.to_path_buf(),
            cluster_key: key,
            new_cluster,
            ..Config::default()
        }
    }

    #[test]
    fn a_fresh_dir_takes_any_key_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let id = resolve(
            &config(dir.path(), Mode::Prod, Some(key.clone()), false),
            dir.path(),
            false,
        )
        .unwrap();
        assert!(id.record && id.new_key_file.is_none());
        record(dir.path(), &id.master).unwrap();
        assert_eq!(read_cluster_id(dir.path()).unwrap(), Some(key.cluster_id()));
        let again = resolve(&config(dir.path(), Mode::Prod, Some(key), false), dir.path(), true).unwrap();
        assert!(!again.record);
    }

    #[test]
    fn a_used_dir_refuses_another_key_or_none_unless_told_to_found_a_new_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        record(dir.path(), &key).unwrap();
        let other = MasterKey::generate();
        let err = resolve(
            &config(dir.path(), Mode::Prod, Some(other.clone()), false),
            dir.path(),
            true,
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&key.cluster_id()) && text.contains("--new-cluster"),
            "{text}"
        );
        let err = resolve(&config(dir.path(), Mode::Prod, None, false), dir.path(), true)
            .err()
            .unwrap();
        assert!(err.to_string().contains("CAVE_CLUSTER_KEY"), "{err}");
        let adopted = resolve(&config(dir.path(), Mode::Prod, Some(other), true), dir.path(), true).unwrap();
        assert!(adopted.record);
        let made = resolve(&config(dir.path(), Mode::Prod, None, true), dir.path(), true).unwrap();
        assert!(made.new_key_file.is_some() && made.record);
    }

    #[test]
    fn a_corrupt_cluster_id_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLUSTER_ID_FILE), "not an id\n").unwrap();
        assert!(matches!(read_cluster_id(dir.path()), Err(Error::Corrupt(_))));
    }
}
