//! What a run plays: the blob, the nodes and their links, when they
//! arrive, whether the seed leaves, who crashes, and whether the nodes use
//! the swarm or one HTTP origin.

use std::time::Duration;

use serde::Serialize;

use crate::net::LinkSpec;

/// The named scenarios, each a variation of the flash crowd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One seed; every leecher starts at once.
    FlashCrowd,
    /// Leechers arrive one by one, spread evenly over a while.
    Staggered,
    /// The seed leaves as soon as the leechers together hold every chunk.
    SeedLeaves,
    /// A share of the leechers have slow links both ways.
    Heterogeneous,
    /// A share of the leechers crash at random times and come back later,
    /// resuming from their stores.
    Churn,
    /// No swarm: every leecher fetches from one HTTP origin that has the
    /// seed's uplink.
    HttpOnly,
}

/// How the leechers get the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Over the swarm: each leecher is told the seed and `peers_per_node`
    /// other leechers picked at random (a tracker's answer); whoever dials
    /// it joins too.
    Swarm {
        /// Other leechers each one dials.
        peers_per_node: usize,
    },
    /// From one HTTP origin serving at the seed's uplink rate, all
    /// leechers together.
    Http,
}

/// A share of the leechers on another link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlowShare {
    /// The share, 0 to 1.
    pub share: f64,
    /// Their link.
    pub link: LinkSpec,
    /// What they serve peers at most, in bytes per second (`None`: as
    /// much as their link carries).
    pub upload_limit: Option<u64>,
}

/// A share of the leechers that crash and come back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Crashes {
    /// The share, 0 to 1.
    pub share: f64,
    /// Each crashes at a random time within this long of its start.
    #[serde(serialize_with = "crate::report::seconds")]
    pub within: Duration,
    /// And comes back this long after.
    #[serde(serialize_with = "crate::report::seconds")]
    pub down_for: Duration,
}

/// One run's set-up. Every random choice follows `seed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Its name in reports.
    pub name: String,
    /// Leechers (the seed or origin comes on top).
    pub leechers: usize,
    /// The blob's size in bytes.
    pub blob_size: u64,
    /// The seed's link (or the origin's, over HTTP).
    pub seed_link: LinkSpec,
    /// Every leecher's link, but for `slow`.
    pub leecher_link: LinkSpec,
    /// Leechers on a slower link.
    pub slow: Option<SlowShare>,
    /// Leechers start evenly spread over this long (zero: all at once).
    #[serde(serialize_with = "crate::report::seconds")]
    pub arrivals_over: Duration,
    /// The seed leaves as soon as the leechers together hold every chunk
    /// (one copy is out).
    pub seed_leaves: bool,
    /// Leechers that crash and come back.
    pub crashes: Option<Crashes>,
    /// Swarm or HTTP.
    pub distribution: Distribution,
    /// Seed of every random choice.
    pub seed: u64,
    /// Chunks per request (a piece); `None`: the node's default.
    pub piece_chunks: Option<u64>,
    /// Virtual time after which unfinished leechers count as failed.
    #[serde(serialize_with = "crate::report::seconds")]
    pub deadline: Duration,
}

/// What every preset shares: size, links and randomness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Base {
    /// Leechers.
    pub leechers: usize,
    /// The blob's size in bytes.
    pub blob_size: u64,
    /// Every node's link (the seed's too).
    pub link: LinkSpec,
    /// Other leechers each leecher dials.
    pub peers_per_node: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Chunks per request; `None`: the node's default.
    pub piece_chunks: Option<u64>,
    /// The slow leechers' upload limit (heterogeneous), in bytes per
    /// second; `None`: unlimited.
    pub slow_upload_limit: Option<u64>,
}

impl Scenario {
    /// The scenario `kind` on `base`.
    pub fn preset(kind: Kind, base: Base) -> Self {
        let mut scenario = Self {
            name: kind.name().to_owned(),
            leechers: base.leechers,
            blob_size: base.blob_size,
            seed_link: base.link,
            leecher_link: base.link,
            slow: None,
            arrivals_over: Duration::ZERO,
            seed_leaves: false,
            crashes: None,
            distribution: Distribution::Swarm {
                peers_per_node: base.peers_per_node,
            },
            seed: base.seed,
            piece_chunks: base.piece_chunks,
            deadline: Duration::ZERO,
        };
        // The time one node would take alone at its link's rate.
        let one_copy = Duration::from_secs_f64(base.blob_size as f64 / base.link.up as f64);
        match kind {
            Kind::FlashCrowd => {}
            Kind::Staggered => scenario.arrivals_over = one_copy * 2,
            Kind::SeedLeaves => scenario.seed_leaves = true,
            Kind::Heterogeneous => {
                let slow = LinkSpec {
                    up: base.link.up / 10,
                    down: base.link.down / 4,
                    ..base.link
                };
                scenario.slow = Some(SlowShare {
                    share: 0.3,
                    link: slow,
                    upload_limit: base.slow_upload_limit,
                });
            }
            Kind::Churn => {
                scenario.crashes = Some(Crashes {
                    share: 0.2,
                    within: one_copy * 2,
                    down_for: Duration::from_secs(5),
                });
            }
            Kind::HttpOnly => scenario.distribution = Distribution::Http,
        }
        // Twenty times the bound, and room for the origin to send N copies.
        let origin_alone = one_copy.mul_f64(base.leechers as f64);
        scenario.deadline = (scenario.fluid_bound() * 20)
            .max(origin_alone * 2)
            .max(Duration::from_secs(120))
            + scenario.arrivals_over;
        scenario
    }

    /// The leechers' links, in order: the slow share first, the rest after.
    pub fn leecher_links(&self) -> Vec<LinkSpec> {
        let mut links = vec![self.leecher_link; self.leechers];
        if let Some(share) = self.slow {
            links[..self.slow_leechers()].fill(share.link);
        }
        links
    }

    /// How many leechers are slow: the first ones, in plan order.
    pub fn slow_leechers(&self) -> usize {
        self.slow
            .map_or(0, |slow| {
                (slow.share * self.leechers as f64).round() as usize
            })
            .min(self.leechers)
    }

    /// The fluid lower bound of the time until every leecher has the blob,
    /// all starting together: no leecher can finish before the seed has
    /// sent every byte once (F/Us), before the uploads together have
    /// carried N copies (N·F / (Us + ΣUi)), or before its own downlink has
    /// carried one (F / min Di).
    pub fn fluid_bound(&self) -> Duration {
        let size = self.blob_size as f64;
        let links = self.leecher_links();
        let uploads: f64 = links.iter().map(|link| link.up as f64).sum();
        let slowest_down = links.iter().map(|link| link.down).min().unwrap_or(u64::MAX) as f64;
        let seed_up = self.seed_link.up as f64;
        let bound = (size / seed_up)
            .max(links.len() as f64 * size / (seed_up + uploads))
            .max(size / slowest_down);
        Duration::from_secs_f64(bound)
    }
}

impl Kind {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::FlashCrowd => "flash-crowd",
            Self::Staggered => "staggered",
            Self::SeedLeaves => "seed-leaves",
            Self::Heterogeneous => "heterogeneous",
            Self::Churn => "churn",
            Self::HttpOnly => "http-only",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::megabits;

    fn base(leechers: usize) -> Base {
        Base {
            leechers,
            blob_size: 256 << 20,
            link: LinkSpec::symmetric(100.0, Duration::from_millis(5)),
            peers_per_node: 8,
            seed: 1,
            piece_chunks: None,
            slow_upload_limit: None,
        }
    }

    #[test]
    fn the_bound_of_a_flash_crowd_is_the_seeds_one_copy_when_leechers_upload() {
        let scenario = Scenario::preset(Kind::FlashCrowd, base(100));
        let one_copy = (256u64 << 20) as f64 / megabits(100.0) as f64;
        // N·F/(Us + N·U) = 100/101 of one copy, below F/Us.
        assert!((scenario.fluid_bound().as_secs_f64() - one_copy).abs() < 1e-6);
    }

    #[test]
    fn slow_downlinks_bound_the_heterogeneous_crowd() {
        let scenario = Scenario::preset(Kind::Heterogeneous, base(10));
        let links = scenario.leecher_links();
        assert_eq!(
            links
                .iter()
                .filter(|link| link.up < megabits(100.0))
                .count(),
            3
        );
        let slow_down = megabits(25.0) as f64;
        let expected = (256u64 << 20) as f64 / slow_down;
        assert!((scenario.fluid_bound().as_secs_f64() - expected).abs() < 1e-3);
    }

    #[test]
    fn without_leecher_uploads_the_bound_is_n_copies_from_the_seed() {
        let mut scenario = Scenario::preset(Kind::FlashCrowd, base(4));
        scenario.leecher_link.up = 1;
        let seed_rate = megabits(100.0) as f64;
        let expected = 4.0 * (256u64 << 20) as f64 / (seed_rate + 4.0);
        assert!((scenario.fluid_bound().as_secs_f64() - expected).abs() < 1e-3);
    }
}
