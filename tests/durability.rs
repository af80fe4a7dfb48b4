//! What the `cave` binary acknowledges is stored, whatever happens to the disk: a full disk (a small tmpfs
//! mounted as the data directory), `kill -9`, restarts.
//!
//! Mounting needs root (CI and the dev container run as root). Without it a test prints a "skipped" line and
//! passes, unless `CAVE_REQUIRE_TOOLS=1` makes that a failure.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::child::{Cave, DEADLINE};

/// Size of the tmpfs a full-disk test runs on.
const TMPFS_BYTES: u64 = 32 << 20;
/// Free space a filler file leaves on it: room for a few values, not many.
const ROOM_BYTES: u64 = 6 << 20;
/// Size of each value written (the report's workload).
const VALUE_BYTES: usize = 700 << 10;
/// Keys the values are spread over: live data of a few MiB, a fraction of the disk.
const KEYS: usize = 4;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `bytes`, or `None` (after a "skipped" line) if this process may not mount.
    fn mount(bytes: u64, test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={bytes},mode=0700")).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings that outlive the call.
        let mounted = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            let why = std::io::Error::last_os_error();
            if std::env::var("CAVE_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("CAVE_REQUIRE_TOOLS=1 but mounting a tmpfs failed (run as root): {why}");
            }
            eprintln!("skipped {test}: cannot mount a tmpfs ({why}); run as root");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free on the file system.
    fn free_bytes(&self) -> u64 {
        let path = CString::new(self.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: statvfs(2) writes into the zeroed struct we own.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        stat.f_bavail * stat.f_frsize
    }

    /// A file taking all but `room` bytes of the free space.
    fn fill_leaving(&self, room: u64) -> PathBuf {
        let path = self.path().join("filler");
        let size = self.free_bytes().saturating_sub(room);
        std::fs::write(&path, vec![0xAB; size as usize]).unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2(2) on the directory this value mounted. Detached, so that a test failing with files
        // still open does not leave the mount behind.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The value of write `i` to `key`: recognisable, and [`VALUE_BYTES`] long.
fn value_of(key: &str, i: usize) -> String {
    let tag = format!("{key}={i};");
    tag.repeat(VALUE_BYTES / tag.len() + 1)[..VALUE_BYTES].to_string()
}

/// Writes to one node and the value of each key's last acknowledged write.
struct Writer {
    client: reqwest::Client,
    acked: BTreeMap<String, usize>,
    next: usize,
}

impl Writer {
    fn new() -> Writer {
        Writer {
            client: common::client(),
            acked: BTreeMap::new(),
            next: 0,
        }
    }

    /// PUT the next value; `true` if acknowledged (200), `false` if refused for want of space (507). Any
    /// other answer fails the test.
    async fn put(&mut self, cave: &Cave) -> bool {
        let i = self.next;
        self.next += 1;
        let key = format!("big/{}", i % KEYS);
        let response = self
            .client
            .put(format!("{}/api/v1/kv/{key}", cave.base))
            .body(value_of(&key, i))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {
                self.acked.insert(key, i);
                true
            }
            507 => {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["code"], "insufficient_storage", "{body}");
                false
            }
            other => panic!("PUT {key} answered {other}: {}", response.text().await.unwrap()),
        }
    }

    /// PUT until the disk is full: some writes acknowledged, then three refused in a row.
    async fn fill(&mut self, cave: &Cave) {
        let (mut acked, mut refused) = (0, 0);
        for _ in 0..200 {
            if self.put(cave).await {
                acked += 1;
                refused = 0;
            } else {
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
        assert!(
            acked > 0 && refused == 3,
            "{acked} acknowledged, {refused} refused in a row"
        );
    }

    /// Every key reads back at its last acknowledged value.
    async fn assert_all_readable(&self, cave: &Cave) {
        for (key, i) in &self.acked {
            let response = self
                .client
                .get(format!("{}/api/v1/kv/{key}", cave.base))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{key}");
            let body = response.text().await.unwrap();
            assert!(
                body == value_of(key, *i),
                "{key}: acknowledged write {i}, read {:?}",
                &body[..body.len().min(24)]
            );
        }
    }
}

async fn readyz(cave: &Cave) -> (u16, serde_json::Value) {
    let response = common::client()
        .get(format!("{}/readyz", cave.base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The report's scenario, in one durability mode: fill the disk, see 507s and `/readyz` say so, shut down
/// while full, restart with room, fill it again, make room, write more, `kill -9`, restart: every
/// acknowledged write reads back at its acknowledged value.
async fn a_full_disk_never_loses_an_acknowledged_write(durability: &str) {
    let test = format!("a_full_disk_never_loses_an_acknowledged_write ({durability})");
    let Some(disk) = Tmpfs::mount(TMPFS_BYTES, &test) else {
        return;
    };
    let data = disk.path().join("data");
    let flags = ["--durability", durability];
    let mut writer = Writer::new();

    let mut cave = Cave::start(&data, &flags).await;
    let filler = disk.fill_leaving(ROOM_BYTES);
    writer.fill(&cave).await;
    assert_eq!(
        readyz(&cave).await,
        (503, serde_json::json!({"status": "storage_full"}))
    );
    writer.assert_all_readable(&cave).await;

    // Shutting down while the disk is full completes, and keeps what was acknowledged.
    cave.sigterm();
    let (status, log) = cave.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    drop(cave);
    std::fs::remove_file(&filler).unwrap();
    let cave = Cave::start(&data, &flags).await;
    assert_eq!(readyz(&cave).await.0, 200);
    writer.assert_all_readable(&cave).await;

    // Full again, then room again: writes are acknowledged, and survive a crash.
    let filler = disk.fill_leaving(ROOM_BYTES);
    writer.fill(&cave).await;
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..KEYS {
        let free = disk.free_bytes();
        assert!(writer.put(&cave).await, "a write failed with {free} bytes free");
    }
    assert_eq!(readyz(&cave).await.0, 200, "a successful commit clears storage_full");
    let mut cave = cave;
    cave.kill_9();
    drop(cave);
    let cave = tokio::time::timeout(DEADLINE, Cave::start(&data, &flags))
        .await
        .unwrap();
    writer.assert_all_readable(&cave).await;
    cave.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_never_loses_an_acknowledged_write_normal() {
    a_full_disk_never_loses_an_acknowledged_write("normal").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_never_loses_an_acknowledged_write_fsync() {
    a_full_disk_never_loses_an_acknowledged_write("fsync").await;
}

/// A config for a node on `data_dir` with the dev defaults.
fn config_in(data_dir: &Path) -> cave::config::Config {
    cave::config::Config {
        data_dir: data_dir.to_path_buf(),
        ..cave::config::Config::default()
    }
}

/// Open a node on `data_dir`, write `key` (sealed as a secret if `secret`), close it.
async fn seed(data_dir: &Path, key: &str, secret: bool) {
    let node = cave::node::Node::open(config_in(data_dir)).await.unwrap();
    let value = if secret {
        node.db.seal(b"s3cret")
    } else {
        bytes::Bytes::from_static(b"v")
    };
    let put = cave::db::Op::Put {
        key: key.to_string(),
        value,
        content_type: "text/plain".into(),
        secret,
        cas: None,
        ttl: None,
        lease: None,
    };
    node.db.write(vec![put]).await.unwrap();
    node.close().await.unwrap();
}

/// `Node::open` on `data_dir` fails, naming each of `needles`.
async fn refused(config: cave::config::Config, needles: &[&str]) {
    let message = match open(config).await {
        Ok(node) => {
            let _ = node.close().await;
            panic!("the node started");
        }
        Err(err) => err.to_string(),
    };
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

/// `Node::open`, waiting out a data-dir lock that a closed node of this test still seems to hold: a child
/// process another test forks in the same moment inherits the lock's descriptor until it execs (the
/// descriptor is close-on-exec), and for that instant the flock is still held.
async fn open(config: cave::config::Config) -> cave::Result<cave::node::Node> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match cave::node::Node::open(config.clone()).await {
            Err(cave::Error::Unavailable(m)) if m.contains("in use") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
}

async fn keys(config: cave::config::Config) -> usize {
    let node = open(config).await.unwrap();
    let keys = node.db.stats().keys;
    node.close().await.unwrap();
    keys
}

#[tokio::test]
async fn a_used_data_dir_without_its_database_refuses_to_start() {
    for empty in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        seed(&data, "k", false).await;
        let db = data.join("cave.db");
        if empty {
            std::fs::write(&db, b"").unwrap();
        } else {
            std::fs::remove_file(&db).unwrap();
        }
        let state = if empty { "is empty" } else { "is missing" };
        refused(config_in(&data), &[db.to_str().unwrap(), state, "--allow-empty-start"]).await;
        let allowed = cave::config::Config {
            allow_empty_start: true,
            ..config_in(&data)
        };
        assert_eq!(keys(allowed).await, 0, "started empty, as asked");
        assert_eq!(keys(config_in(&data)).await, 0, "and from then on without the flag");
    }
}

#[tokio::test]
async fn a_fresh_data_dir_starts_and_a_used_one_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    seed(&data, "k", false).await;
    assert_eq!(keys(config_in(&data)).await, 1);
}

#[tokio::test]
async fn a_missing_key_file_refuses_to_start_unless_a_new_cluster_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    seed(&data, "secret", true).await;
    let recorded = std::fs::read_to_string(data.join("cluster.id")).unwrap();
    std::fs::remove_file(data.join("node.key")).unwrap();
    let key_file = data.join("node.key");
    refused(
        config_in(&data),
        &[key_file.to_str().unwrap(), recorded.trim(), "--new-cluster"],
    )
    .await;
    assert!(!key_file.exists(), "a refused start makes no key");
    let allowed = cave::config::Config {
        new_cluster: true,
        ..config_in(&data)
    };
    assert_eq!(keys(allowed).await, 1, "the data is kept");
    assert!(key_file.exists(), "the new key is kept");
    let now = std::fs::read_to_string(data.join("cluster.id")).unwrap();
    assert_ne!(now, recorded, "and the new cluster recorded");
    assert_eq!(keys(config_in(&data)).await, 1, "from then on without the flag");
}

#[tokio::test]
async fn a_read_only_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    seed(&data, "k", false).await;
    let db = data.join("cave.db");
    // Root may write any file whatever its mode: a read-only bind mount of the file makes it unwritable.
    let Some(_mount) = ReadOnlyBind::mount(&db, "a_read_only_database_refuses_to_start") else {
        return;
    };
    refused(config_in(&data), &[db.to_str().unwrap(), "not writable"]).await;
}

/// `path` bind-mounted read-only over itself, unmounted when dropped.
struct ReadOnlyBind {
    target: CString,
}

impl ReadOnlyBind {
    fn mount(path: &Path, test: &str) -> Option<ReadOnlyBind> {
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings; a bind mount, then its remount read-only.
        let bound = unsafe {
            libc::mount(
                target.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        let mounted = bound == 0 && {
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            // SAFETY: as above.
            unsafe {
                libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) == 0
            }
        };
        let bind = ReadOnlyBind { target };
        if mounted {
            return Some(bind);
        }
        let why = std::io::Error::last_os_error();
        drop(bind);
        if std::env::var("CAVE_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("CAVE_REQUIRE_TOOLS=1 but a read-only bind mount failed (run as root): {why}");
        }
        eprintln!("skipped {test}: cannot bind-mount a file read-only ({why}); run as root");
        None
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        // SAFETY: umount2(2) of the mount made above (a no-op error if it was never made).
        unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_lock_does_not_let_a_second_process_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Cave::start(&data, &[]).await;
    std::fs::remove_file(data.join("LOCK")).unwrap();
    let mut second = common::child::launch(&data, common::child::free_port(), &[]);
    let (status, log) = second.wait_exit().await;
    assert!(
        status.code().is_some_and(|c| c != 0),
        "the second process must fail: {status}\n{log}"
    );
    assert!(log.contains("is in use by another Cave process"), "{log}");
    first.stop().await;
}
