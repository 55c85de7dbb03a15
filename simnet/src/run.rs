//! Plays a [`Scenario`] on a paused tokio clock: real nodes (each a
//! `p2pmodel_node::Node` with its own redb store under the work folder),
//! the simulated network between them, and the record of what happened.
//!
//! Virtual time stands still while the machine computes (hashing,
//! encryption, writes to the stores) and jumps when every node waits on
//! the network, so the times reported are those of the modelled links,
//! not of this machine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::core::Transport;
use libp2p::multiaddr::Protocol;
use p2pmodel_node::download::DownloadConfig;
use p2pmodel_node::swarm::{RawStream, SwarmConfig, TransportFactory};
use p2pmodel_node::{FetchRequest, FetcherConfig, Node, NodeBuilder, Progress};
use p2pmodel_protocol::{ChunkBitmap, Hash};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::net::{HostId, LinkSpec, Network, Traffic, memory_addr};
use crate::origin::{Origin, OriginError};
use crate::scenario::{Distribution, Scenario};

/// Why a run could not be set up (a leecher that fails is a result, not
/// an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runtime or the work folder could not be made.
    #[error("cannot set up the run: {0}")]
    Setup(#[from] std::io::Error),
    /// The seed's node could not start or take the blob.
    #[error("cannot start the seed: {0}")]
    Seed(String),
    /// The HTTP origin could not start.
    #[error(transparent)]
    Origin(#[from] OriginError),
}

/// What one leecher did.
#[derive(Debug, Clone, Serialize)]
pub struct LeecherOutcome {
    /// Its link.
    pub link: LinkSpec,
    /// When it started, after the run's start (seconds in JSON).
    #[serde(serialize_with = "crate::report::seconds")]
    pub started: Duration,
    /// How long it took from its start, if it finished (seconds in JSON).
    #[serde(serialize_with = "crate::report::maybe_seconds")]
    pub took: Option<Duration>,
    /// It finished and its file has the blob's hash.
    pub correct: bool,
    /// It crashed (and came back) on the way.
    pub crashed: bool,
    /// Why it did not finish.
    pub error: Option<String>,
    /// What its link carried.
    pub traffic: Traffic,
    /// Verified bytes it took from the seed (or the origin).
    pub from_seed: u64,
    /// Verified bytes it took from other leechers.
    pub from_peers: u64,
}

impl LeecherOutcome {
    /// When it finished, after the run's start.
    pub fn finished(&self) -> Option<Duration> {
        self.took.map(|took| self.started + took)
    }
}

/// What a run recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// What was played.
    pub scenario: Scenario,
    /// Each leecher, in host order.
    pub leechers: Vec<LeecherOutcome>,
    /// Bytes the seed (or the origin) sent.
    pub seed_sent: u64,
    /// Wall-clock time the run took on this machine (seconds in JSON).
    #[serde(serialize_with = "crate::report::seconds")]
    pub wall: Duration,
}

/// Plays `scenario` with its nodes' stores under `work` (which must exist
/// and is left with the stores in it), on a runtime of its own with a
/// paused clock.
///
/// # Errors
/// When the run cannot be set up; see [`RunError`].
pub fn run(
    scenario: &Scenario,
    work: &Path,
    watch: Option<Duration>,
) -> Result<RunResult, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let started = std::time::Instant::now();
    let mut result = runtime.block_on(play(scenario, work, watch))?;
    result.wall = started.elapsed();
    Ok(result)
}

/// The bytes of a run's blob: a keyed BLAKE3 stream, so every run with
/// the same seed moves the same bytes.
pub fn blob(size: u64, seed: u64) -> Vec<u8> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut bytes = vec![0u8; size as usize];
    blake3::Hasher::new_keyed(&key)
        .finalize_xof()
        .fill(&mut bytes);
    bytes
}

/// Where every leecher's node lives, and how it gets the blob.
struct Context {
    scenario: Scenario,
    hash: Hash,
    work: PathBuf,
    start: Instant,
    source: Source,
    /// Each leecher's node while it runs (for the seed's leaving).
    live: Mutex<Vec<Option<Node>>>,
    /// How progress names the seed or the origin.
    seed_names: Vec<String>,
}

impl Context {
    /// Adds what `progress` credits to the seed and to other leechers.
    fn credit(&self, outcome: &mut LeecherOutcome, progress: &Progress) {
        for source in &progress.sources {
            if self.seed_names.contains(&source.source) {
                outcome.from_seed += source.bytes;
            } else {
                outcome.from_peers += source.bytes;
            }
        }
    }

    fn set_live(&self, index: usize, node: Option<Node>) {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)[index] = node;
    }

    /// What each running leecher holds of the blob (those that hold
    /// nothing yet are left out).
    fn held_by_running(&self) -> Vec<ChunkBitmap> {
        let nodes: Vec<Node> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect();
        nodes
            .iter()
            .filter_map(|node| node.store().readable(self.hash).ok().flatten())
            .map(|readable| readable.present)
            .collect()
    }

    /// True once the running leechers together hold every chunk.
    fn copy_is_out(&self) -> bool {
        let mut union: Option<(u64, Vec<u8>)> = None;
        for present in self.held_by_running() {
            let (_, bytes) =
                union.get_or_insert_with(|| (present.len(), vec![0; present.as_bytes().len()]));
            for (all, held) in bytes.iter_mut().zip(present.as_bytes()) {
                *all |= held;
            }
        }
        union.is_some_and(|(len, bytes)| {
            ChunkBitmap::from_bytes(len, &bytes).is_ok_and(|bitmap| bitmap.is_complete())
        })
    }
}

enum Source {
    /// Over the swarm; the seed is host 0, leecher `i` host `i + 1`.
    Swarm { net: Network, seed: Node },
    /// From an HTTP origin.
    Http { origin: Origin },
}

impl Source {
    /// Bytes the seed or the origin has sent.
    fn seed_sent(&self) -> u64 {
        match self {
            Self::Swarm { net, .. } => net.traffic(SEED_HOST).sent,
            Self::Http { origin } => origin.sent(),
        }
    }
}

/// The seed's host on the simulated network.
const SEED_HOST: HostId = HostId(0);

/// One leecher's part in the run.
struct Plan {
    index: usize,
    link: LinkSpec,
    /// What it serves peers at most, in bytes per second.
    upload_limit: Option<u64>,
    /// Its host on the simulated network (swarm runs only).
    host: Option<HostId>,
    starts: Duration,
    /// When, after its start, it crashes (and for how long).
    crash: Option<(Duration, Duration)>,
    /// Whom it is told to dial.
    peers: Vec<Multiaddr>,
}

async fn play(
    scenario: &Scenario,
    work: &Path,
    watch: Option<Duration>,
) -> Result<RunResult, RunError> {
    let start = Instant::now();
    let bytes = blob(scenario.blob_size, scenario.seed);
    let (source, hash) = match scenario.distribution {
        Distribution::Swarm { .. } => {
            let net = Network::new(scenario.seed);
            let host = net.add_host(scenario.seed_link);
            let seed = start_node(
                &work.join("seed"),
                Some((&net, host)),
                scenario.piece_chunks,
                None,
            )
            .map_err(|e| RunError::Seed(e.to_string()))?;
            let hash = seed
                .store()
                .import_bytes(&bytes)
                .map_err(|e| RunError::Seed(e.to_string()))?;
            (Source::Swarm { net, seed }, hash)
        }
        Distribution::Http => {
            let (origin, hash) =
                Origin::start(&work.join("origin"), &bytes, scenario.seed_link.up).await?;
            (Source::Http { origin }, hash)
        }
    };
    drop(bytes);
    let plans = plan(scenario, &source);
    let seed_names = seed_names(&source);
    let context = Arc::new(Context {
        scenario: scenario.clone(),
        hash,
        work: work.to_owned(),
        start,
        source,
        live: Mutex::new(vec![None; plans.len()]),
        seed_names,
    });
    let leaving = match &context.source {
        Source::Swarm { seed, .. } if scenario.seed_leaves => Some(tokio::spawn(
            leave_when_a_copy_is_out(context.clone(), seed.clone()),
        )),
        _ => None,
    };
    let watching = watch.map(|every| tokio::spawn(print_progress(context.clone(), every)));
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|plan| tokio::spawn(leecher(context.clone(), plan)))
        .collect();
    let mut leechers = Vec::with_capacity(tasks.len());
    let mut nodes = Vec::new();
    for task in tasks {
        let (outcome, node) = task
            .await
            .map_err(|e| std::io::Error::other(format!("a leecher's task failed: {e}")))?;
        leechers.push(outcome);
        nodes.extend(node);
    }
    for task in [leaving, watching].into_iter().flatten() {
        task.abort();
    }
    if let Source::Swarm { net, .. } = &context.source {
        for (outcome, host) in leechers.iter_mut().zip(1..) {
            outcome.traffic = net.traffic(HostId(host));
        }
    }
    let seed_sent = context.source.seed_sent();
    for node in nodes {
        node.shutdown().await;
    }
    if let Source::Swarm { seed, .. } = &context.source {
        seed.clone().shutdown().await;
    }
    Ok(RunResult {
        scenario: scenario.clone(),
        leechers,
        seed_sent,
        wall: Duration::ZERO,
    })
}

/// Prints, every `every` of virtual time, what the seed (or origin) has
/// sent and how much of the blob the running leechers hold: how a run
/// unfolds, to tell a slow start from a slow end.
async fn print_progress(context: Arc<Context>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let mut held: Vec<u64> = context
            .held_by_running()
            .iter()
            .map(|present| present.count() * 100 / present.len().max(1))
            .collect();
        held.sort_unstable();
        let percent = |at: usize| held.get(at).map_or("-".to_owned(), |p| format!("{p}%"));
        eprintln!(
            "  {:>7.1} s  from seed {:>6} MiB  {} running: held min {} / median {} / max {}",
            context.start.elapsed().as_secs_f64(),
            context.source.seed_sent() >> 20,
            held.len(),
            percent(0),
            percent(held.len() / 2),
            percent(held.len().saturating_sub(1)),
        );
    }
}

/// Every leecher's link, start, crash and peers, drawn from the
/// scenario's seed; on the swarm, each gets its host.
fn plan(scenario: &Scenario, source: &Source) -> Vec<Plan> {
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    let links = scenario.leecher_links();
    let count = links.len();
    let mut crashing = vec![false; count];
    if let Some(crashes) = scenario.crashes {
        let picked = ((crashes.share * count as f64).round() as usize).min(count);
        for index in index::sample(&mut rng, count, picked) {
            crashing[index] = true;
        }
    }
    let spacing = if count > 1 {
        scenario.arrivals_over / (count as u32 - 1).max(1)
    } else {
        Duration::ZERO
    };
    links
        .into_iter()
        .enumerate()
        .map(|(index, link)| {
            let crash = scenario.crashes.filter(|_| crashing[index]).map(|crashes| {
                let at = crashes.within.mul_f64(rng.random::<f64>());
                (at, crashes.down_for)
            });
            let (host, peers) = match (source, scenario.distribution) {
                (Source::Swarm { net, seed }, Distribution::Swarm { peers_per_node }) => {
                    let host = net.add_host(link);
                    let others = count - 1;
                    let mut peers: Vec<Multiaddr> =
                        index::sample(&mut rng, others, peers_per_node.min(others))
                            .into_iter()
                            .map(|other| if other >= index { other + 1 } else { other })
                            .map(|other| memory_addr(port_of(HostId(other + 1))))
                            .collect();
                    peers.push(memory_addr(port_of(SEED_HOST)).with(Protocol::P2p(
                        seed.swarm().expect("the seed runs a swarm").peer_id(),
                    )));
                    (Some(host), peers)
                }
                _ => (None, Vec::new()),
            };
            let upload_limit = scenario
                .slow
                .filter(|_| index < scenario.slow_leechers())
                .and_then(|slow| slow.upload_limit);
            Plan {
                index,
                link,
                upload_limit,
                host,
                starts: spacing * index as u32,
                crash,
                peers,
            }
        })
        .collect()
}

/// The names progress gives the seed or the origin as a source.
fn seed_names(source: &Source) -> Vec<String> {
    match source {
        Source::Swarm { seed, .. } => seed
            .swarm()
            .map(|swarm| vec![format!("peer {}", swarm.peer_id())])
            .unwrap_or_default(),
        Source::Http { origin } => {
            let url = origin.url();
            vec![url.origin().ascii_serialization(), url.to_string()]
        }
    }
}

/// How long a handshake may take on the wall clock (see `start_node`).
const WALL_CLOCK_HANDSHAKE: Duration = Duration::from_secs(3600);

/// The port `host` listens on.
fn port_of(host: HostId) -> u64 {
    host.0 as u64 + 1
}

/// A node with its store at `dir`; on the simulated network when `net` is
/// given, listening on its host's port.
fn start_node(
    dir: &Path,
    net: Option<(&Network, HostId)>,
    piece_chunks: Option<u64>,
    upload_limit: Option<u64>,
) -> Result<Node, p2pmodel_node::SpawnError> {
    let mut builder = NodeBuilder::new(dir);
    if let Some(chunks) = piece_chunks {
        let download = DownloadConfig::default()
            .with_request_chunks(chunks)
            .with_peer_request_chunks(chunks);
        builder = builder.fetcher_config(FetcherConfig::default().with_download(download));
    }
    if let Some((net, host)) = net {
        let net = net.clone();
        let transport = TransportFactory::new(move || {
            net.transport(host)
                .map(|stream, _| Box::new(stream) as Box<dyn RawStream>)
                .boxed()
        });
        // libp2p times handshakes on the wall clock: a loaded machine
        // must not fail connections that take no virtual time at all.
        let mut swarm = SwarmConfig::listen([memory_addr(port_of(host))])
            .with_transport(transport)
            .with_handshake_timeout(WALL_CLOCK_HANDSHAKE);
        if let Some(limit) = upload_limit {
            swarm = swarm.with_upload_limit(limit);
        }
        builder = builder.swarm(swarm);
    }
    builder.spawn()
}

/// Waits until the leechers together hold every chunk, then stops the
/// seed.
async fn leave_when_a_copy_is_out(context: Arc<Context>, seed: Node) {
    while !context.copy_is_out() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!("the seed leaves");
    seed.shutdown().await;
}

/// Runs one leecher: waits for its start, fetches (crashing and coming
/// back if planned), checks the file. Returns its node, still seeding.
async fn leecher(context: Arc<Context>, plan: Plan) -> (LeecherOutcome, Option<Node>) {
    let mut outcome = LeecherOutcome {
        link: plan.link,
        started: plan.starts,
        took: None,
        correct: false,
        crashed: false,
        error: None,
        traffic: Traffic::default(),
        from_seed: 0,
        from_peers: 0,
    };
    let began = context.start + plan.starts;
    tokio::time::sleep_until(began).await;
    let deadline = context.start + context.scenario.deadline;
    let dir = context.work.join(format!("leecher-{:04}", plan.index));
    let network = match &context.source {
        Source::Swarm { net, .. } => plan.host.map(|host| (net, host)),
        Source::Http { .. } => None,
    };
    let request = match &context.source {
        Source::Swarm { .. } => FetchRequest::hash(context.hash).with_peers(plan.peers.clone()),
        Source::Http { origin } => {
            FetchRequest::hash(context.hash).with_mirror(origin.url().clone())
        }
    };
    let mut node = match start_node(
        &dir,
        network,
        context.scenario.piece_chunks,
        plan.upload_limit,
    ) {
        Ok(node) => node,
        Err(error) => {
            outcome.error = Some(format!("cannot start: {error}"));
            return (outcome, None);
        }
    };
    context.set_live(plan.index, Some(node.clone()));
    if let (Some((at, down_for)), Some((net, host))) = (plan.crash, network) {
        let fetch = match node.fetch(request.clone()) {
            Ok(handle) => handle,
            Err(error) => {
                outcome.error = Some(error.to_string());
                return (outcome, Some(node));
            }
        };
        let progress = fetch.progress();
        tokio::select! {
            done = fetch => {
                context.credit(&mut outcome, &progress.borrow());
                return finish(&context, outcome, node, began, done).await;
            }
            () = tokio::time::sleep_until(began + at) => {}
        }
        context.credit(&mut outcome, &progress.borrow());
        outcome.crashed = true;
        context.set_live(plan.index, None);
        net.crash(host);
        node.shutdown().await;
        tokio::time::sleep(down_for).await;
        net.restore(host);
        node = match start_node(
            &dir,
            network,
            context.scenario.piece_chunks,
            plan.upload_limit,
        ) {
            Ok(node) => node,
            Err(error) => {
                outcome.error = Some(format!("cannot restart: {error}"));
                return (outcome, None);
            }
        };
        context.set_live(plan.index, Some(node.clone()));
    }
    let done = match node.fetch(request) {
        Ok(handle) => {
            let progress = handle.progress();
            let done = tokio::time::timeout_at(deadline, handle).await;
            context.credit(&mut outcome, &progress.borrow());
            match done {
                Ok(done) => done,
                Err(_) => {
                    outcome.error = Some("not finished by the deadline".into());
                    return (outcome, Some(node));
                }
            }
        }
        Err(error) => Err(error),
    };
    finish(&context, outcome, node, began, done).await
}

/// Records a leecher's end: when, and whether its file is the blob.
async fn finish(
    context: &Context,
    mut outcome: LeecherOutcome,
    node: Node,
    began: Instant,
    done: Result<p2pmodel_node::Fetched, p2pmodel_node::NodeError>,
) -> (LeecherOutcome, Option<Node>) {
    match done {
        Ok(fetched) => {
            outcome.took = Some(Instant::now() - began);
            let path = fetched.path().to_owned();
            let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<Hash> {
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(path)?)?;
                Ok(hasher.finalize().into())
            })
            .await;
            match hashed {
                Ok(Ok(hash)) if hash == context.hash => outcome.correct = true,
                Ok(Ok(hash)) => outcome.error = Some(format!("the file hashes to {hash}")),
                Ok(Err(error)) => outcome.error = Some(format!("cannot read the file: {error}")),
                Err(error) => outcome.error = Some(error.to_string()),
            }
        }
        Err(error) => outcome.error = Some(error.to_string()),
    }
    (outcome, Some(node))
}
