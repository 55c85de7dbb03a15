//! Running the binary against an isolated store.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Requests in flight (4 per mirror by default) of 4 MiB each, plus what
/// sits in socket buffers: bytes a run may receive but never write.
pub const IN_FLIGHT: u64 = 4 * 4 * (1 << 20) + 8 * (1 << 20);

/// A temporary folder with a store in it, and the binary to run there.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `p2pmodel` command on this workspace's store.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(testkit::binary());
        command.arg("--store").arg(self.store()).args(args);
        command
            .env_remove("P2PMODEL_STORE")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    }

    /// Runs to completion within two minutes.
    pub async fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).spawn().expect("binary starts");
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("command finished within two minutes")
            .expect("output collected")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("binary starts")
    }
}

/// Standard output as text, trimmed.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success, showing stderr otherwise.
pub fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}, stderr:\n{}",
        output.status,
        stderr(output)
    );
}

/// Waits until `condition` holds, polling every 10 ms, for at most a minute.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `signal` (a `kill -s` name) to a running child.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// Writes `data` and its sidecar outboard on the mirror; returns the hash.
pub fn publish(mirror: &testkit::TestMirror, name: &str, data: &[u8], sidecar: bool) -> String {
    let outboard = p2pmodel_protocol::Outboard::compute(data, data.len() as u64).expect("outboard");
    mirror.put(name, data);
    if sidecar {
        mirror.put(&format!("{name}.obao"), outboard.as_bytes());
    }
    outboard.hash().to_string()
}

/// Starts `p2pmodel daemon` on the workspace's store with `extra`
/// arguments; returns it and the first address it wrote to `daemon.addrs`.
pub async fn start_daemon_with(
    work: &Workspace,
    extra: &[&str],
) -> (tokio::process::Child, String) {
    let mut args = vec!["daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
    args.extend_from_slice(extra);
    let daemon = work.spawn(&args);
    let addrs_file = work.store().join("daemon.addrs");
    wait_until("the daemon wrote its addresses", || addrs_file.exists()).await;
    let addr = std::fs::read_to_string(&addrs_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    (daemon, addr)
}

/// [`start_daemon_with`] with no extra argument.
pub async fn start_daemon(work: &Workspace) -> (tokio::process::Child, String) {
    start_daemon_with(work, &[]).await
}

/// A workspace whose store holds `data`; returns it and the hash.
pub async fn seeded(data: &[u8]) -> (Workspace, String) {
    let work = Workspace::new();
    let file = work.path("model.bin");
    std::fs::write(&file, data).unwrap();
    let out = work.run(&["add", file.to_str().unwrap()]).await;
    assert_ok(&out);
    let hash = stdout(&out);
    std::fs::remove_file(file).unwrap();
    (work, hash)
}

/// The peer id at the end of a `/p2p/` address.
pub fn peer_id(addr: &str) -> &str {
    addr.rsplit("/p2p/").next().unwrap()
}

/// Bytes from `source` in a `--json` progress line.
pub fn bytes_from(line: &serde_json::Value, source: &str) -> u64 {
    line["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["source"] == source)
        .and_then(|s| s["bytes"].as_u64())
        .unwrap_or(0)
}

/// The last `progress` event a `fetch --json` printed.
pub fn last_progress(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["event"] == "progress")
        .expect("fetch --json printed progress")
}
