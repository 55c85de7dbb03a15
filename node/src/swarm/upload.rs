//! The provider's upload limit. Answers pass at the budget's rate, in
//! slices (so an answer the peer gave up on stops taking the budget at
//! once), and no more answer bytes are admitted than the budget sends in
//! [`QUEUE_TIME`]: beyond that, requests are refused as busy, so that
//! requesters turn to other peers instead of waiting in a queue longer
//! than their timeouts (where the budget would then be spent on answers
//! nobody reads).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{AsyncWrite, AsyncWriteExt};

use crate::bandwidth::Bandwidth;

/// Most time an admitted answer should wait for the budget.
pub(super) const QUEUE_TIME: Duration = Duration::from_secs(2);
/// Bytes that take the budget at once, then go to the stream.
const SLICE: usize = 64 << 10;

/// An upload budget with a bounded queue. Cloning shares both.
#[derive(Debug, Clone)]
pub(super) struct Upload {
    budget: Bandwidth,
    queued: Arc<Mutex<u64>>,
}

/// An answer's place in the queue, given back when dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    bytes: u64,
    queued: Arc<Mutex<u64>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        *lock(&self.queued) -= self.bytes;
    }
}

impl Upload {
    /// Uploads within `budget`.
    pub(super) fn new(budget: Bandwidth) -> Self {
        Self {
            budget,
            queued: Arc::default(),
        }
    }

    /// A place for an answer of `bytes`, unless the answers already
    /// admitted hold [`QUEUE_TIME`] of the budget; an empty queue admits
    /// any one answer, however large.
    pub(super) fn admit(&self, bytes: u64) -> Option<Admitted> {
        let mut queued = lock(&self.queued);
        let room = (self.budget.rate() as f64 * QUEUE_TIME.as_secs_f64()) as u64;
        if *queued > 0 && *queued + bytes > room {
            return None;
        }
        *queued += bytes;
        Some(Admitted {
            bytes,
            queued: Arc::clone(&self.queued),
        })
    }

    /// Writes `bytes` to `io`, each slice once the budget lets it pass.
    pub(super) async fn write(
        &self,
        io: &mut (impl AsyncWrite + Unpin),
        bytes: &[u8],
    ) -> std::io::Result<()> {
        for slice in bytes.chunks(SLICE) {
            self.budget.take(slice.len() as u64).await;
            io.write_all(slice).await?;
        }
        Ok(())
    }
}

fn lock(queued: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    queued.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_beyond_two_seconds_of_budget_are_refused_until_one_is_sent() {
        let upload = Upload::new(Bandwidth::new(1 << 20));
        // An empty queue takes an answer larger than its room.
        let big = upload
            .admit(3 << 20)
            .expect("an empty queue admits one answer");
        assert!(upload.admit(1).is_none(), "the queue is full");
        drop(big);
        let first = upload.admit(1 << 20).unwrap();
        let second = upload.admit(1 << 20).unwrap();
        assert!(
            upload.admit(1).is_none(),
            "two seconds of budget are queued"
        );
        drop(first);
        assert!(upload.admit(1 << 20).is_some(), "a sent answer makes room");
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_written_at_the_budgets_rate() {
        let upload = Upload::new(Bandwidth::new(256 << 10));
        let mut sink = futures::io::Cursor::new(Vec::new());
        let bytes = vec![7u8; 1 << 20];
        let started = tokio::time::Instant::now();
        upload.write(&mut sink, &bytes).await.unwrap();
        // 1 MiB at 256 KiB/s with one second of burst: about 3 s.
        let elapsed = started.elapsed().as_secs_f64();
        assert!((2.9..=3.3).contains(&elapsed), "took {elapsed} s");
        assert_eq!(sink.into_inner(), bytes);
    }
}
