//! One seed and N leechers on shaped links, each node in its own network
//! namespace: how close the swarm comes to the fluid lower bound on the
//! time until every leecher has the file, beside the seed alone serving
//! every leecher over HTTP on the same links, in the same run.
//!
//! Run as root (it creates network namespaces), after building both
//! release binaries, from the repository root:
//!
//! ```sh
//! cargo build --release -p p2pmodel -p p2pmodel-bench
//! target/release/swarm-netns [--leechers 4] [--size-mib 128] \
//!     [--seed-up 200] [--leech-up 100] [--leech-down 1000]
//! ```
//!
//! Rates are in Mbit/s. The `p2pmodel` binary is taken from the folder this
//! bench runs from (`target/release`).
//!
//! Every namespace is named `p2pnb<pid>-...`: a bridge in its own namespace,
//! and one namespace per node holding one end of a veth pair (10.77.0.0/24,
//! the other end on the bridge). HTB on a node's veth limits its upload; HTB
//! on its bridge-side veth limits its download. The host's interfaces and
//! routes are never touched, and everything is deleted at the end, on error
//! and on Ctrl+C.
//!
//! The swarm round starts `p2pmodel daemon` on the seed, then every leecher
//! at once with `fetch --json --listen` and `--peer` for the seed and every
//! other leecher (no discovery). The HTTP round runs `p2pmodel serve-mirror`
//! on the seed and `fetch --mirror` on every leecher at once. For each: the
//! time until all finish (T, the slowest leecher's time), the p50 leecher's, the fluid bound
//! T* = max(F/Us, N*F/(Us + sum Ui), F/min Di) and T*/T (1.0 is optimal),
//! and the copies the seed uploaded (for the swarm, from the bytes each
//! leecher's last progress line credits to the seed). Every output's BLAKE3
//! is checked.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::future::try_join_all;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const MIB: u64 = 1 << 20;
const PEER_PORT: u16 = 4001;
const HTTP_PORT: u16 = 8080;

#[tokio::main]
async fn main() -> Result<()> {
    let options = Options::parse()?;
    tokio::select! {
        result = run(&options) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

/// Link rates in Mbit/s, the number of leechers and the file's size.
struct Options {
    leechers: usize,
    size_mib: u64,
    seed_up: f64,
    leech_up: f64,
    leech_down: f64,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut options = Options {
            leechers: 4,
            size_mib: 128,
            seed_up: 200.0,
            leech_up: 100.0,
            leech_down: 1000.0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--leechers" => options.leechers = value.parse()?,
                "--size-mib" => options.size_mib = value.parse()?,
                "--seed-up" => options.seed_up = value.parse()?,
                "--leech-up" => options.leech_up = value.parse()?,
                "--leech-down" => options.leech_down = value.parse()?,
                _ => bail!("unknown flag {flag} (see the doc comment of swarm_netns.rs)"),
            }
        }
        ensure!(
            (1..=200).contains(&options.leechers),
            "--leechers takes 1 to 200"
        );
        Ok(options)
    }

    fn size(&self) -> u64 {
        self.size_mib * MIB
    }

    /// The fluid lower bound on the time until every leecher has the file.
    fn bound(&self) -> Duration {
        let file = (self.size() * 8) as f64 / 1e6;
        let n = self.leechers as f64;
        let seconds = (file / self.seed_up)
            .max(n * file / (self.seed_up + n * self.leech_up))
            .max(file / self.leech_down);
        Duration::from_secs_f64(seconds)
    }
}

async fn run(options: &Options) -> Result<()> {
    let bin = p2pmodel_binary()?;
    let work = tempfile::tempdir()?;
    let blob = work.path().join("blob");
    let hash = write_blob(&blob, options.size())?;
    let seed_store = work.path().join("seed");
    let added = output(
        std::process::Command::new(&bin)
            .arg("--store")
            .arg(&seed_store)
            .arg("add")
            .arg(&blob),
    )?;
    ensure!(
        added.trim() == hash,
        "p2pmodel add printed {added}, expected {hash}"
    );
    let mirror = work.path().join("mirror");
    let entry = output(
        std::process::Command::new(&bin)
            .arg("--store")
            .arg(&seed_store)
            .args(["publish", &hash, "--dir"])
            .arg(&mirror),
    )?;
    std::fs::remove_file(&blob)?;

    let lab = Lab::new(options)?;
    let bench = Bench {
        bin,
        lab: &lab,
        work: work.path().to_path_buf(),
        hash,
        size: options.size(),
    };
    let swarm = bench.swarm_round(&seed_store).await?;
    let http = bench.http_round(&mirror, entry.trim()).await?;
    print_table(
        options,
        &[
            ("p2pmodel swarm", swarm),
            ("HTTP mirror, seed alone (baseline)", http),
        ],
    );
    Ok(())
}

/// `p2pmodel` in the folder of this binary (`target/release`).
fn p2pmodel_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("p2pmodel");
    ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p p2pmodel` first",
        bin.display()
    );
    Ok(bin)
}

/// Writes `size` bytes of deterministic data; returns their BLAKE3 hash.
fn write_blob(path: &Path, size: u64) -> Result<String> {
    use std::io::Write;
    let mut xof = blake3::Hasher::new()
        .update(b"swarm-netns bench")
        .finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        xof.fill(&mut block);
        hasher.update(&block);
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Runs a command to its end; returns its stdout, or an error with its stderr.
fn output(command: &mut std::process::Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn sh(program: &str, args: &[&str]) -> Result<()> {
    output(std::process::Command::new(program).args(args)).map(drop)
}

/// One node: its namespace and address.
struct Node {
    namespace: String,
    ip: String,
}

impl Node {
    fn multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{PEER_PORT}", self.ip)
    }
}

/// Network namespaces, deleted on drop.
#[derive(Default)]
struct Namespaces(Vec<String>);

impl Namespaces {
    /// Adds a namespace with its loopback up.
    fn add(&mut self, name: &str) -> Result<()> {
        sh("ip", &["netns", "add", name])?;
        self.0.push(name.to_owned());
        sh("ip", &["-n", name, "link", "set", "lo", "up"])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            if let Err(e) = sh("ip", &["netns", "del", name]) {
                eprintln!("could not delete namespace {name}: {e:#}");
            }
        }
    }
}

/// A bridge in its own namespace, and the seed and the leechers each in
/// theirs, wired to it.
struct Lab {
    _namespaces: Namespaces,
    seed: Node,
    leechers: Vec<Node>,
}

impl Lab {
    fn new(options: &Options) -> Result<Lab> {
        let prefix = format!("p2pnb{}", std::process::id());
        let bridge = format!("{prefix}-br");
        let mut namespaces = Namespaces::default();
        namespaces.add(&bridge)?;
        sh(
            "ip",
            &["-n", &bridge, "link", "add", "br0", "type", "bridge"],
        )?;
        sh("ip", &["-n", &bridge, "link", "set", "br0", "up"])?;
        let seed = Node {
            namespace: format!("{prefix}-seed"),
            ip: "10.77.0.1".into(),
        };
        wire(
            &mut namespaces,
            &bridge,
            "vseed",
            &seed,
            options.seed_up,
            None,
        )?;
        let mut leechers = Vec::new();
        for i in 0..options.leechers {
            let node = Node {
                namespace: format!("{prefix}-l{i}"),
                ip: format!("10.77.0.{}", i + 2),
            };
            let down = Some(options.leech_down);
            wire(
                &mut namespaces,
                &bridge,
                &format!("v{i}"),
                &node,
                options.leech_up,
                down,
            )?;
            leechers.push(node);
        }
        Ok(Lab {
            _namespaces: namespaces,
            seed,
            leechers,
        })
    }

    /// `p2pmodel --store STORE` run in `node`'s namespace.
    fn p2pmodel(&self, bin: &Path, node: &Node, store: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &node.namespace])
            .arg(bin)
            .arg("--store")
            .arg(store)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// Creates `node`'s namespace, wired to the bridge through the veth `port`:
/// its upload shaped to `up` Mbit/s, its download to `down` if given.
fn wire(
    namespaces: &mut Namespaces,
    bridge: &str,
    port: &str,
    node: &Node,
    up: f64,
    down: Option<f64>,
) -> Result<()> {
    let namespace = node.namespace.as_str();
    namespaces.add(namespace)?;
    sh(
        "ip",
        &[
            "link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", port,
            "netns", bridge,
        ],
    )?;
    let address = format!("{}/24", node.ip);
    sh(
        "ip",
        &["-n", namespace, "addr", "add", &address, "dev", "eth0"],
    )?;
    sh("ip", &["-n", namespace, "link", "set", "eth0", "up"])?;
    sh(
        "ip",
        &["-n", bridge, "link", "set", port, "master", "br0", "up"],
    )?;
    shape(namespace, "eth0", up)?;
    if let Some(down) = down {
        shape(bridge, port, down)?;
    }
    Ok(())
}

/// Limits what leaves `dev` to `mbit` Mbit/s with HTB, behind it a byte
/// FIFO holding 50 ms at that rate (at least 256 KiB): this kernel has no
/// fq_codel, and the default 1000-packet FIFO would queue seconds.
fn shape(namespace: &str, dev: &str, mbit: f64) -> Result<()> {
    let rate = format!("{}kbit", (mbit * 1000.0) as u64);
    let limit = ((mbit * 1e6 / 8.0 * 0.05) as u64)
        .max(256 << 10)
        .to_string();
    let tc = |args: &[&str]| {
        let mut all = vec!["-n", namespace];
        all.extend_from_slice(args);
        sh("tc", &all)
    };
    tc(&[
        "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
    ])?;
    tc(&[
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
        "quantum", "60000",
    ])?;
    tc(&[
        "qdisc", "add", "dev", dev, "parent", "1:1", "bfifo", "limit", &limit,
    ])
}

/// One round's times and what the seed uploaded.
struct Round {
    all: Duration,
    per_leecher: Vec<Duration>,
    seed_copies: f64,
}

struct Bench<'a> {
    bin: PathBuf,
    lab: &'a Lab,
    work: PathBuf,
    hash: String,
    size: u64,
}

impl Bench<'_> {
    async fn swarm_round(&self, seed_store: &Path) -> Result<Round> {
        let lab = self.lab;
        let _daemon = lab
            .p2pmodel(&self.bin, &lab.seed, seed_store)
            .args(["daemon", "--listen", &lab.seed.multiaddr()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let seed_addr = daemon_addr(seed_store).await?;
        let seed_source = format!("peer {}", seed_addr.rsplit("/p2p/").next().unwrap_or(""));
        let started = Instant::now();
        let leechers = lab
            .leechers
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut command = self.fetch(i, node);
                command.args(["--listen", &node.multiaddr(), "--peer", &seed_addr]);
                for other in lab.leechers.iter().filter(|o| o.ip != node.ip) {
                    command.args(["--peer", &other.multiaddr()]);
                }
                command.spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let finished = self.finish("swarm", leechers, started).await?;
        let from_seed: u64 = finished
            .iter()
            .map(|(_, stdout)| bytes_from(stdout, &seed_source))
            .sum();
        Ok(self.round(finished, from_seed as f64 / self.size as f64))
    }

    async fn http_round(&self, mirror: &Path, entry: &str) -> Result<Round> {
        let lab = self.lab;
        let listen = format!("{}:{HTTP_PORT}", lab.seed.ip);
        let mut server = lab
            .p2pmodel(&self.bin, &lab.seed, &self.work.join("mirror-store"))
            .arg("serve-mirror")
            .arg(mirror)
            .args(["--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // Kept open until the round ends: the server may still write to it.
        let mut log =
            BufReader::new(server.stderr.take().context("serve-mirror's stderr")?).lines();
        let first = log.next_line().await?.unwrap_or_default();
        ensure!(first.starts_with("serving"), "serve-mirror: {first}");
        let url = format!("http://{listen}/{entry}");
        let started = Instant::now();
        let leechers = lab
            .leechers
            .iter()
            .enumerate()
            .map(|(i, node)| self.fetch(i, node).args(["--mirror", &url]).spawn())
            .collect::<std::io::Result<Vec<_>>>()?;
        let finished = self.finish("HTTP", leechers, started).await?;
        Ok(self.round(finished, lab.leechers.len() as f64))
    }

    /// `p2pmodel fetch HASH --json -o OUT` for leecher `i`, on a fresh store.
    fn fetch(&self, i: usize, node: &Node) -> Command {
        let dir = self.leecher_dir(i);
        let mut command = self.lab.p2pmodel(&self.bin, node, &dir.join("store"));
        command
            .args(["fetch", &self.hash, "--json", "-o"])
            .arg(dir.join("blob"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn leecher_dir(&self, i: usize) -> PathBuf {
        self.work.join(format!("leecher-{i}"))
    }

    /// Waits for every leecher; returns when each finished and its stdout.
    /// Checks every output, then deletes the leechers' folders.
    async fn finish(
        &self,
        round: &str,
        leechers: Vec<Child>,
        started: Instant,
    ) -> Result<Vec<(Duration, String)>> {
        let finished = try_join_all(leechers.into_iter().enumerate().map(
            |(i, child)| async move {
                let out = child.wait_with_output().await?;
                let elapsed = started.elapsed();
                ensure!(
                    out.status.success(),
                    "{round}: leecher {i} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok((elapsed, String::from_utf8(out.stdout)?))
            },
        ))
        .await?;
        for i in 0..finished.len() {
            let dir = self.leecher_dir(i);
            let mut hasher = blake3::Hasher::new();
            hasher.update_mmap_rayon(dir.join("blob"))?;
            let got = hasher.finalize().to_hex();
            ensure!(got.as_str() == self.hash, "{round}: leecher {i} got {got}");
            std::fs::remove_dir_all(dir)?;
        }
        Ok(finished)
    }

    fn round(&self, finished: Vec<(Duration, String)>, seed_copies: f64) -> Round {
        let mut per_leecher: Vec<Duration> = finished.into_iter().map(|(t, _)| t).collect();
        per_leecher.sort();
        Round {
            all: *per_leecher.last().expect("at least one leecher"),
            per_leecher,
            seed_copies,
        }
    }
}

/// The first address the daemon on `store` wrote to `daemon.addrs`.
async fn daemon_addr(store: &Path) -> Result<String> {
    let file = store.join("daemon.addrs");
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(line) = text.lines().next()
        {
            return Ok(line.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the seed's daemon wrote no address in 30 s")
}

/// Bytes credited to `source` in the last progress line of `fetch --json`.
fn bytes_from(stdout: &str, source: &str) -> u64 {
    stdout
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["event"] == "progress")
        .and_then(|line| {
            line["sources"]
                .as_array()?
                .iter()
                .find(|s| s["source"] == source)?["bytes"]
                .as_u64()
        })
        .unwrap_or(0)
}

fn print_table(options: &Options, rounds: &[(&str, Round)]) {
    let bound = options.bound().as_secs_f64();
    println!(
        "{} leechers, {} MiB; seed up {} Mbit/s, leechers up {} / down {} Mbit/s; T* = {bound:.2} s",
        options.leechers, options.size_mib, options.seed_up, options.leech_up, options.leech_down
    );
    println!(
        "{:<36} {:>8} {:>8} {:>7} {:>11}",
        "method", "T s", "p50 s", "T*/T", "seed copies"
    );
    for (name, round) in rounds {
        let p50 = round.per_leecher[round.per_leecher.len() / 2];
        println!(
            "{:<36} {:>8.2} {:>8.2} {:>7.2} {:>11.2}",
            name,
            round.all.as_secs_f64(),
            p50.as_secs_f64(),
            bound / round.all.as_secs_f64(),
            round.seed_copies
        );
    }
    println!("T: until every leecher finished (the slowest leecher's time); T*/T = 1.0 is optimal");
}
