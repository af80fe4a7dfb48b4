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
