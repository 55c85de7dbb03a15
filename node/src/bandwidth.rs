//! [`Bandwidth`]: one byte budget shared by every download that holds a
//! clone, so a model's files (or all transfers of a node) stay under one
//! limit together.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of `bytes_per_second`, holding at most one second of
/// burst. Cloning shares the budget.
#[derive(Debug, Clone)]
pub struct Bandwidth {
    rate: u64,
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bandwidth {
    /// A budget of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1);
        Self {
            rate,
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: rate as f64,
                refilled: Instant::now(),
            })),
        }
    }

    /// The budget in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `bytes` may pass, then takes them from the budget.
    /// Amounts larger than one second of budget wait proportionally.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes takes nothing.
    pub async fn take(&self, bytes: u64) {
        loop {
            let wait = {
                let mut bucket = self
                    .bucket
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                let refill = now.duration_since(bucket.refilled).as_secs_f64() * self.rate as f64;
                bucket.tokens = (bucket.tokens + refill).min(self.rate as f64);
                bucket.refilled = now;
                // A request bigger than the bucket passes once the bucket is full.
                let needed = (bytes as f64).min(self.rate as f64);
                if bucket.tokens >= needed {
                    bucket.tokens -= bytes as f64;
                    return;
                }
                Duration::from_secs_f64((needed - bucket.tokens) / self.rate as f64)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_budget_holds_the_long_run_rate() {
        let budget = Bandwidth::new(1000);
        let started = tokio::time::Instant::now();
        for _ in 0..10 {
            budget.take(500).await;
        }
        // 5000 bytes at 1000/s with one second of burst: about 4 seconds.
        let elapsed = started.elapsed().as_secs_f64();
        assert!((3.9..=4.2).contains(&elapsed), "took {elapsed} s");
    }
}
