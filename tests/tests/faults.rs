//! Failures of the machine: a process killed at random moments, a full
//! disk. Each must lose at most the documented window and never leave a
//! wrong file at the final path.

use std::process::Command as StdCommand;
use std::time::Duration;

use p2pmodel_store::partial::COMMIT_INTERVAL;
use testkit::{TestMirror, b3sum, generate};

use crate::util::{IN_FLIGHT, Workspace, assert_ok, publish, stderr};

const MIB: u64 = 1 << 20;

/// A small deterministic generator for kill moments (xorshift64).
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        range.start + self.0 % (range.end - range.start)
    }
}

#[tokio::test]
async fn twenty_kills_at_seeded_random_moments_lose_at_most_a_window_each() {
    let mirror = TestMirror::start().await;
    let size = 96 * MIB;
    let data = generate(size, 77);
    let hash = publish(&mirror, "m.bin", &data, true);
    let url = mirror.url("m.bin");
    let work = Workspace::new();
    let output = work.path("out.bin");
    let args = [
        "fetch",
        hash.as_str(),
        "--mirror",
        url.as_str(),
        "-o",
        output.to_str().unwrap(),
    ];
    // Four requests at 2 MiB/s each: the blob takes about 12 s in all, so
    // twenty kills land all along it.
    let rate = 2 * MIB;
    mirror.throttle(rate);
    let mut moments = Moments(0x5eed_cafe_f00d_1234);
    let mut kills = 0;
    for _ in 0..20 {
        let mut child = work.spawn(&args);
        tokio::time::sleep(Duration::from_millis(moments.next_millis(50..900))).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().await.unwrap();
        kills += 1;
        assert!(
            !output.exists(),
            "a killed fetch left a file at the final path"
        );
        let verify = work.run(&["verify"]).await;
        assert_ok(&verify);
    }
    mirror.throttle(0);
    let out = work.run(&args).await;
    assert_ok(&out);
    assert_eq!(b3sum(&output), hash);
    // Each kill loses at most one commit interval of the four requests'
    // bytes (the time bound of the window) plus what was in flight.
    let window = 4 * rate * COMMIT_INTERVAL.as_secs().max(1) + IN_FLIGHT;
    let sent = mirror.body_bytes();
    eprintln!("{kills} kills; the mirror sent {sent} bytes for a {size} byte blob");
    assert!(
        sent <= size + kills * window,
        "sent {sent} bytes over {kills} kills (window {window})"
    );
}

/// A tmpfs of `size` mounted on `dir` for one test, unmounted on drop.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (tests run as root here)"
        );
        Self { dir }
    }

    fn grow(&self, size: &str) {
        let status = StdCommand::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test]
async fn a_full_disk_gives_a_clear_error_keeps_the_store_and_resumes_when_space_is_freed() {
    let mirror = TestMirror::start().await;
    let size = 48 * MIB;
    let data = generate(size, 78);
    let hash = publish(&mirror, "m.bin", &data, true);
    let url = mirror.url("m.bin");
    let work = Workspace::new();
    let disk = SmallDisk::mount(work.store(), "24m");
    let args = ["fetch", hash.as_str(), "--mirror", url.as_str()];

    let out = work.run(&args).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "stderr: {}",
        stderr(&out)
    );
    let first = mirror.body_bytes();

    let listed = work.run(&["list"]).await;
    assert_ok(&listed);
    let verify = work.run(&["verify"]).await;
    assert_ok(&verify);

    disk.grow("128m");
    let out = work.run(&args).await;
    assert_ok(&out);
    let path = crate::util::stdout(&out);
    assert_eq!(b3sum(std::path::Path::new(&path)), hash);
    let second = mirror.body_bytes() - first;
    assert!(
        second < size,
        "the resumed fetch moved {second} bytes of {size}: work was kept"
    );
}

#[tokio::test]
async fn export_to_another_filesystem_copies_whole_and_leaves_no_staging_file() {
    let work = Workspace::new();
    let file = work.path("weights.bin");
    std::fs::write(&file, generate(3 * MIB + 5, 79)).unwrap();
    let out = work.run(&["add", file.to_str().unwrap()]).await;
    assert_ok(&out);
    let hash = crate::util::stdout(&out);
    let other = SmallDisk::mount(work.path("other-fs"), "16m");
    let target = other.dir.join("copy.bin");
    let out = work
        .run(&["export", &hash, "-o", target.to_str().unwrap()])
        .await;
    assert_ok(&out);
    assert_eq!(b3sum(&target), hash);
    let names: Vec<_> = std::fs::read_dir(&other.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("copy.bin")],
        "only the export, no staging file"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&target).unwrap().nlink(),
        1,
        "a copy, not a link into the store"
    );
}
