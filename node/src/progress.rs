//! [`Progress`]: what a running fetch reports, and the tracker that the
//! sources of one fetch update together.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a fetch is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for a transfer slot (the node's concurrency limit).
    Queued,
    /// Waiting for the node to resume (it is suspended).
    Paused,
    /// Asking sources for sizes and outboards.
    Probing,
    /// Moving bytes.
    Downloading,
    /// Hashing the whole blob before it is published.
    Verifying,
    /// Done: the blob or model is in the store.
    Complete,
}

/// Bytes received from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceProgress {
    /// The source: a mirror's origin (`http://host:port`), which serves
    /// every file of a model.
    pub source: String,
    /// Verified bytes it delivered in this fetch.
    pub bytes: u64,
}

/// A snapshot of a fetch's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// What the fetch is doing.
    pub phase: Phase,
    /// Bytes present (including those resumed from an earlier run).
    pub done: u64,
    /// Bytes in all (0 while probing).
    pub total: u64,
    /// Bytes present when the fetch started (resumed work).
    pub resumed: u64,
    /// Verified bytes per second over the last few seconds.
    pub bytes_per_second: u64,
    /// Bytes per source in this fetch.
    pub sources: Vec<SourceProgress>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            phase: Phase::Probing,
            done: 0,
            total: 0,
            resumed: 0,
            bytes_per_second: 0,
            sources: Vec::new(),
        }
    }
}

/// Shared by the downloads of one fetch (the files of a model share one);
/// every update is published on a `watch` channel. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    sender: Arc<watch::Sender<Progress>>,
    rate: Arc<Mutex<RateWindow>>,
}

/// How far back the rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Samples of (time, bytes received so far) over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct RateWindow {
    received: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// Records `bytes` more, received at `now`; returns the rate over the window.
    fn add(&mut self, bytes: u64, now: Instant) -> u64 {
        self.received += bytes;
        self.samples.push_back((now, self.received));
        while self.samples.len() > 2 && self.samples[1].0 + RATE_WINDOW < now {
            self.samples.pop_front();
        }
        let (first_at, first) = self.samples[0];
        let span = now.duration_since(first_at).as_secs_f64();
        if span < 0.1 {
            0
        } else {
            ((self.received - first) as f64 / span) as u64
        }
    }
}

impl Default for ProgressTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressTracker {
    /// A tracker in the probing phase.
    pub fn new() -> Self {
        Self {
            sender: Arc::new(watch::channel(Progress::default()).0),
            rate: Arc::default(),
        }
    }

    /// A receiver that sees the current snapshot first, then every change.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.sender.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Progress {
        self.sender.borrow().clone()
    }

    /// Replaces the snapshot (a transfer forwarding what its current
    /// attempt reports).
    pub fn set(&self, progress: Progress) {
        self.sender.send_replace(progress);
    }

    /// Adds a blob of `size` bytes of which `present` are already there.
    pub fn add_blob(&self, size: u64, present: u64) {
        self.sender.send_modify(|p| {
            p.total += size;
            p.done += present;
            p.resumed += present;
        });
    }

    /// Records `bytes` new verified bytes from `source`.
    pub fn received(&self, source: &str, bytes: u64) {
        let rate = self
            .rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(bytes, Instant::now());
        self.sender.send_modify(|p| {
            p.done += bytes;
            p.bytes_per_second = rate;
            match p.sources.iter_mut().find(|s| s.source == source) {
                Some(entry) => entry.bytes += bytes,
                None => p.sources.push(SourceProgress {
                    source: source.to_owned(),
                    bytes,
                }),
            }
        });
    }

    /// Takes back `bytes` that were counted but then discarded (an
    /// unverified partial whose source changed).
    pub fn discarded(&self, bytes: u64) {
        self.sender
            .send_modify(|p| p.done = p.done.saturating_sub(bytes));
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.sender.send_if_modified(|p| {
            let changed = p.phase != phase;
            p.phase = phase;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_covers_the_last_few_seconds_only() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut window = RateWindow::default();
        assert_eq!(window.add(1_000, at(0)), 0, "no rate from a single sample");
        assert_eq!(window.add(1_000, at(500)), 2_000);
        // Ten seconds later at 100 bytes/s: the fast start has left the window.
        let mut rate = 0;
        for second in 1..=10 {
            rate = window.add(100, at(500 + second * 1_000));
        }
        assert_eq!(rate, 100);
    }
}
