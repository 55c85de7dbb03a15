//! Discovery on a LAN: a daemon and a fetch in two network namespaces
//! joined by a veth pair, the fetch finding the daemon by mDNS alone.
//!
//! mDNS multicasts on every interface it sees, so both ends run only
//! inside namespaces this test creates (and removes, whatever happens);
//! nothing multicasts on the machine's own interfaces. Needs root, as
//! `ip netns` does.

use std::process::Stdio;
use std::time::Duration;

use testkit::{b3sum, binary, generate};

use crate::util::{Workspace, assert_ok, stdout, wait_until};

const MIB: u64 = 1 << 20;

/// Network namespaces made for one test, removed when dropped.
struct Namespaces(Vec<String>);

impl Namespaces {
    /// Two namespaces, `a` at 10.78.0.1 and `b` at 10.78.0.2, joined by a
    /// veth pair created inside them.
    fn pair() -> Self {
        let tag = format!("p2pm{}", std::process::id());
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        let made = Self(vec![a.clone(), b.clone()]);
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "-n", &a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &b,
        ]);
        for (ns, addr, dev) in [(&a, "10.78.0.1/24", "veth0"), (&b, "10.78.0.2/24", "veth1")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        made
    }

    /// `p2pmodel ARGS` on `work`'s store, inside namespace `index`.
    fn p2pmodel(&self, index: usize, work: &Workspace, args: &[&str]) -> tokio::process::Child {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.0[index]])
            .arg(binary())
            .arg("--store")
            .arg(work.store())
            .args(args)
            .env_remove("P2PMODEL_STORE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().expect("ip netns exec starts")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip runs");
    assert!(
        status.success(),
        "ip {} failed (this test needs root)",
        args.join(" ")
    );
}

#[tokio::test]
async fn a_fetch_finds_a_daemon_on_its_lan_by_mdns_alone() {
    let namespaces = Namespaces::pair();
    let seed = Workspace::new();
    let file = seed.path("model.bin");
    std::fs::write(&file, generate(4 * MIB + 5, 21)).unwrap();
    let out = seed.run(&["add", file.to_str().unwrap()]).await;
    assert_ok(&out);
    let hash = stdout(&out);

    // mDNS is on by default for the daemon.
    let mut daemon =
        namespaces.p2pmodel(0, &seed, &["daemon", "--listen", "/ip4/10.78.0.1/tcp/4001"]);
    let addrs = seed.store().join("daemon.addrs");
    wait_until("the daemon wrote its addresses", || addrs.exists()).await;

    let leech = Workspace::new();
    let target = leech.path("model.bin");
    let fetch = namespaces.p2pmodel(
        1,
        &leech,
        &["fetch", &hash, "--mdns", "-o", target.to_str().unwrap()],
    );
    let out = tokio::time::timeout(Duration::from_secs(60), fetch.wait_with_output())
        .await
        .expect("the fetch ends")
        .unwrap();
    assert_ok(&out);
    assert_eq!(b3sum(&target), hash);
    daemon.kill().await.unwrap();
}
