//! The simulated network: hosts joined through one ideal core, each with an
//! uplink and a downlink of fixed rates, a one-way latency to the core and
//! a loss rate. Connections are pairs of byte pipes ([`SimStream`]) carried
//! by a libp2p transport ([`SimTransport`]), so the real swarm (noise,
//! yamux, the chunk protocol) runs on top unchanged.
//!
//! The model, per segment of at most [`SEGMENT`] bytes written:
//! - it waits for the sender's uplink (first come, first served), then
//!   takes the receiver's downlink in the first free stretch after it
//!   leaves the uplink (so a segment that leaves late, from a backlogged
//!   uplink, does not keep the downlink idle meanwhile), each taking
//!   `bytes / rate`;
//! - it arrives after both latencies, in order within its connection;
//! - a lost segment is sent again: it takes the uplink twice and arrives a
//!   retransmission timeout later, holding back what follows it;
//! - a connection keeps at most a window of bytes on the way (see
//!   [`window`]); a writer waits when its window is full, which is how a
//!   slow receiver slows its senders.
//!
//! All times are `tokio::time` instants: under a paused clock the network
//! runs in virtual time, as fast as the machine computes.

mod calendar;
mod pipe;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use pipe::SimStream;
pub use transport::{SimTransport, memory_addr};

use calendar::Calendar;
use pipe::Pipe;

/// The most bytes one write puts on the wire as one segment.
pub const SEGMENT: usize = 16 * 1024;
/// The smallest window of bytes a connection keeps on the way.
const MIN_WINDOW: u64 = 64 * 1024;
/// The retransmission timeout's floor (Linux's `TCP_RTO_MIN`).
const MIN_RTO: Duration = Duration::from_millis(200);

/// One host's link to the network.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkSpec {
    /// Uplink, bytes per second.
    pub up: u64,
    /// Downlink, bytes per second.
    pub down: u64,
    /// One-way delay between the host and the core.
    #[serde(serialize_with = "crate::report::seconds")]
    pub latency: Duration,
    /// Share of segments lost (and sent again) on this link, 0 to 1.
    pub loss: f64,
}

impl LinkSpec {
    /// A link of `mbit` megabits per second both ways, with `latency`.
    pub fn symmetric(mbit: f64, latency: Duration) -> Self {
        let rate = megabits(mbit);
        Self {
            up: rate,
            down: rate,
            latency,
            loss: 0.0,
        }
    }
}

/// Megabits per second in bytes per second.
pub fn megabits(mbit: f64) -> u64 {
    (mbit * 1_000_000.0 / 8.0).round().max(1.0) as u64
}

/// A host's place in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// Bytes a host moved, as the network counted them (protocol overhead
/// included, retransmissions not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Bytes it sent.
    pub sent: u64,
    /// Bytes it received.
    pub received: u64,
}

/// The network. Cloning is shallow.
#[derive(Clone)]
pub struct Network {
    state: Arc<Mutex<State>>,
}

struct State {
    hosts: Vec<Host>,
    /// Listening port -> the host and where its transport takes new
    /// connections.
    listeners: HashMap<u64, Listening>,
    rng: StdRng,
}

struct Host {
    link: LinkSpec,
    /// When the uplink is next free.
    up_free: Instant,
    /// When the downlink is busy.
    downlink: Calendar,
    traffic: Traffic,
    /// False while crashed: its connections are cut and dials to it fail.
    reachable: bool,
    /// Pipes it sends or receives on, to cut when it crashes.
    pipes: Vec<Weak<Pipe>>,
}

struct Listening {
    host: HostId,
    accept: mpsc::UnboundedSender<(SimStream, HostId)>,
}

impl Network {
    /// An empty network whose losses follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                hosts: Vec::new(),
                listeners: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// Adds a host with `link`.
    pub fn add_host(&self, link: LinkSpec) -> HostId {
        let mut state = self.lock();
        let now = Instant::now();
        state.hosts.push(Host {
            link,
            up_free: now,
            downlink: Calendar::default(),
            traffic: Traffic::default(),
            reachable: true,
            pipes: Vec::new(),
        });
        HostId(state.hosts.len() - 1)
    }

    /// A libp2p transport for `host`.
    pub fn transport(&self, host: HostId) -> SimTransport {
        SimTransport::new(self.clone(), host)
    }

    /// What `host` has sent and received so far.
    pub fn traffic(&self, host: HostId) -> Traffic {
        self.lock().hosts[host.0].traffic
    }

    /// `host`'s link.
    pub fn link(&self, host: HostId) -> LinkSpec {
        self.lock().hosts[host.0].link
    }

    /// Cuts every connection of `host` at once (its peers see a reset) and
    /// makes it unreachable, as when a machine loses power.
    pub fn crash(&self, host: HostId) {
        let pipes = {
            let mut state = self.lock();
            state
                .listeners
                .retain(|_, listening| listening.host != host);
            let host = &mut state.hosts[host.0];
            host.reachable = false;
            std::mem::take(&mut host.pipes)
        };
        for pipe in pipes.iter().filter_map(Weak::upgrade) {
            pipe.reset();
        }
    }

    /// Makes a crashed `host` reachable again (with no connections).
    pub fn restore(&self, host: HostId) {
        self.lock().hosts[host.0].reachable = true;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts taking connections to `port` for `host`.
    fn listen(
        &self,
        host: HostId,
        port: u64,
        accept: mpsc::UnboundedSender<(SimStream, HostId)>,
    ) -> bool {
        let mut state = self.lock();
        if state.listeners.contains_key(&port) || !state.hosts[host.0].reachable {
            return false;
        }
        state.listeners.insert(port, Listening { host, accept });
        true
    }

    fn unlisten(&self, port: u64) {
        self.lock().listeners.remove(&port);
    }

    /// The round trip between `from` and whoever listens on `port`, with
    /// no queueing: what a dial waits before the connection is up.
    fn round_trip_to_port(&self, from: HostId, port: u64) -> std::io::Result<Duration> {
        let state = self.lock();
        let Some(listening) = state.listeners.get(&port) else {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        };
        let path = state.hosts[from.0].link.latency + state.hosts[listening.host.0].link.latency;
        Ok(2 * path)
    }

    /// Connects `from` to whoever listens on `port`: returns `from`'s end,
    /// and hands the other end to the listener.
    fn connect(&self, from: HostId, port: u64) -> std::io::Result<SimStream> {
        let mut state = self.lock();
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        if !state.hosts[from.0].reachable {
            return Err(std::io::Error::from(std::io::ErrorKind::NetworkDown));
        }
        let Some(listening) = state.listeners.get(&port) else {
            return Err(refused());
        };
        let to = listening.host;
        if !state.hosts[to.0].reachable {
            return Err(refused());
        }
        let window = window(&state.hosts[from.0].link, &state.hosts[to.0].link);
        let forth = Arc::new(Pipe::new(self.clone(), from, to, window));
        let back = Arc::new(Pipe::new(self.clone(), to, from, window));
        let ours = SimStream::new(forth.clone(), back.clone());
        let theirs = SimStream::new(back.clone(), forth.clone());
        listening
            .accept
            .send((theirs, from))
            .map_err(|_| refused())?;
        for host in [from, to] {
            let pipes = &mut state.hosts[host.0].pipes;
            pipes.retain(|pipe| pipe.strong_count() > 0);
            pipes.push(Arc::downgrade(&forth));
            pipes.push(Arc::downgrade(&back));
        }
        Ok(ours)
    }

    /// Books `bytes` from `from` to `to` leaving now; returns when they
    /// arrive, or `None` when either end is unreachable.
    fn send(&self, from: HostId, to: HostId, bytes: usize) -> Option<Instant> {
        let mut state = self.lock();
        if !state.hosts[from.0].reachable || !state.hosts[to.0].reachable {
            return None;
        }
        let now = Instant::now();
        let (sender, receiver) = (state.hosts[from.0].link, state.hosts[to.0].link);
        let loss = (sender.loss + receiver.loss).clamp(0.0, 1.0);
        let lost = loss > 0.0 && state.rng.random_bool(loss);
        let on_wire = if lost { 2 * bytes } else { bytes } as f64;

        let up = &mut state.hosts[from.0];
        let left = up.up_free.max(now) + seconds(on_wire / sender.up as f64);
        up.up_free = left;
        up.traffic.sent += bytes as u64;

        let down = &mut state.hosts[to.0];
        let received = down
            .downlink
            .book(now, left, seconds(bytes as f64 / receiver.down as f64));
        down.traffic.received += bytes as u64;

        let path = sender.latency + receiver.latency;
        let retransmission = if lost {
            MIN_RTO.max(4 * path)
        } else {
            Duration::ZERO
        };
        Some(received + path + retransmission)
    }
}

/// The bytes a connection between two links keeps on the way: twice the
/// bandwidth-delay product of the path, at least [`MIN_WINDOW`] (so a
/// single connection can fill its path, and many share a link fairly).
fn window(a: &LinkSpec, b: &LinkSpec) -> u64 {
    let rate = a.up.min(b.down) as f64;
    let round_trip = 2.0 * (a.latency + b.latency).as_secs_f64();
    ((2.0 * rate * round_trip) as u64).max(MIN_WINDOW)
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_covers_the_bandwidth_delay_product() {
        let fast = LinkSpec::symmetric(1000.0, Duration::from_millis(25));
        // 125 MB/s over a 100 ms round trip: 12.5 MB on the way, twice.
        assert_eq!(window(&fast, &fast), 25_000_000);
        let near = LinkSpec::symmetric(10.0, Duration::ZERO);
        assert_eq!(window(&near, &near), MIN_WINDOW);
    }

    #[test]
    fn megabits_are_bytes_over_eight() {
        assert_eq!(megabits(100.0), 12_500_000);
    }
}

#[cfg(test)]
mod transfer_tests {
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Two hosts, a listener on port 7 of the second; returns both ends.
    async fn pair(net: &Network, a: LinkSpec, b: LinkSpec) -> (SimStream, SimStream, HostId) {
        let (first, second) = (net.add_host(a), net.add_host(b));
        let (accept, mut incoming) = mpsc::unbounded_channel();
        assert!(net.listen(second, 7, accept));
        let ours = net.connect(first, 7).expect("connects");
        let (theirs, from) = incoming.recv().await.expect("accepted");
        assert_eq!(from, first);
        (ours, theirs, first)
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_takes_its_bytes_over_the_slower_link_plus_the_latency() {
        let net = Network::new(1);
        let fast = LinkSpec::symmetric(100.0, Duration::from_millis(5));
        let slow = LinkSpec::symmetric(10.0, Duration::from_millis(5));
        let (mut sender, mut receiver, _) = pair(&net, fast, slow).await;
        let bytes = vec![7u8; 1_250_000];
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            sender.write_all(&bytes).await.unwrap();
            sender.close().await.unwrap();
        });
        let mut got = Vec::new();
        receiver.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let took = started.elapsed().as_secs_f64();
        assert_eq!(got.len(), 1_250_000);
        // 1.25 MB at 10 Mbit/s is one second, plus 10 ms on the way.
        assert!((1.0..1.05).contains(&took), "took {took} s");
        assert_eq!(net.traffic(HostId(0)).sent, 1_250_000);
        assert_eq!(net.traffic(HostId(1)).received, 1_250_000);
    }

    #[tokio::test(start_paused = true)]
    async fn two_senders_share_a_downlink() {
        let net = Network::new(1);
        let link = LinkSpec::symmetric(10.0, Duration::ZERO);
        let sink = net.add_host(link);
        let (accept, mut incoming) = mpsc::unbounded_channel();
        assert!(net.listen(sink, 9, accept));
        let started = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..2 {
            let host = net.add_host(link);
            let mut stream = net.connect(host, 9).unwrap();
            senders.push(tokio::spawn(async move {
                stream.write_all(&vec![1u8; 625_000]).await.unwrap();
                stream.close().await.unwrap();
            }));
        }
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = incoming.recv().await.unwrap();
            readers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.unwrap();
                (got.len(), Instant::now())
            }));
        }
        for reader in readers {
            let (len, done) = reader.await.unwrap();
            assert_eq!(len, 625_000);
            // Both end together: each had half of the sink's downlink.
            let took = (done - started).as_secs_f64();
            assert!((0.95..1.05).contains(&took), "took {took} s");
        }
        for sender in senders {
            sender.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_senders_backlog_does_not_hold_up_a_fast_senders_bytes() {
        let net = Network::new(1);
        let fast = LinkSpec::symmetric(100.0, Duration::ZERO);
        let slow = LinkSpec {
            up: megabits(1.0),
            ..fast
        };
        let sink = net.add_host(fast);
        let (accept, mut incoming) = mpsc::unbounded_channel();
        assert!(net.listen(sink, 9, accept));
        // A slow uplink with half a second of bytes queued on it.
        let mut trickle = net.connect(net.add_host(slow), 9).unwrap();
        trickle.write_all(&[2u8; 62_500]).await.unwrap();
        let mut burst = net.connect(net.add_host(fast), 9).unwrap();
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            burst.write_all(&[3u8; 1_250_000]).await.unwrap();
            burst.close().await.unwrap();
        });
        let (_trickle, _) = incoming.recv().await.unwrap();
        let (mut burst, _) = incoming.recv().await.unwrap();
        let mut got = Vec::new();
        burst.read_to_end(&mut got).await.unwrap();
        sender.await.unwrap();
        assert_eq!(got.len(), 1_250_000);
        // 0.1 s at 100 Mbit/s plus the trickle's few segments: the sink's
        // downlink is not kept idle for what the slow uplink sends later.
        let took = started.elapsed().as_secs_f64();
        assert!(took < 0.15, "took {took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_resets_both_ends_and_refuses_new_connections() {
        let net = Network::new(1);
        let link = LinkSpec::symmetric(10.0, Duration::from_millis(1));
        let (mut ours, mut theirs, first) = pair(&net, link, link).await;
        net.crash(HostId(1));
        let mut buf = [0u8; 8];
        let read = theirs.read(&mut buf).await.unwrap_err();
        assert_eq!(read.kind(), std::io::ErrorKind::ConnectionReset);
        let write = ours.write(b"hello").await.unwrap_err();
        assert_eq!(write.kind(), std::io::ErrorKind::ConnectionReset);
        let refused = net.connect(first, 7).err().expect("nobody listens");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_segments_come_later_and_in_order() {
        let net = Network::new(3);
        let lossy = LinkSpec {
            loss: 0.5,
            ..LinkSpec::symmetric(100.0, Duration::from_millis(1))
        };
        let (mut sender, mut receiver, _) = pair(&net, lossy, lossy).await;
        let bytes: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let expected = bytes.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            sender.write_all(&bytes).await.unwrap();
            sender.close().await.unwrap();
        });
        let mut got = Vec::new();
        receiver.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expected);
        // Without loss this is 32 ms; retransmissions wait 200 ms each.
        assert!(started.elapsed() >= MIN_RTO, "took {:?}", started.elapsed());
    }
}
