//! Steering a crowd to what it lacks, a light form of BitTorrent's
//! super-seeding: a node that holds a whole blob hides from a peer's
//! `Have` the regions it sent to *another* peer in the last [`HIDE_FOR`].
//!
//! Leechers pick what is rarest among their own peers, so without this
//! several of them, each unaware of what the others got, ask the seed for
//! the same piece and the seed sends a blob two or three times while the
//! crowd holds it once. Hidden regions are left to the peer that got them
//! (and the crowd it feeds); the seed's upload goes to regions nobody has.
//! A peer alone with the seed loses nothing: only sends to other peers
//! that are still fetching (asked for chunks in the last [`ACTIVE`]) hide
//! anything, and a hidden region shows again after [`HIDE_FOR`], so a peer
//! whose neighbours never got it is served too. A request for a hidden
//! region (from an older bitmap) is refused as busy, except from the peer
//! that got it.
//!
//! Memory is bounded: one entry per [`REGION_CHUNKS`] chunks of at most
//! [`MAX_BLOBS`] blobs (the least recently served is forgotten first), and
//! peers beyond [`MAX_PEERS`] per blob all count as "another peer".

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use libp2p::PeerId;
use p2pmodel_protocol::{ChunkBitmap, Hash};
use tokio::time::Instant;

/// How long a region sent to one peer stays hidden from the others: long
/// enough for a crowd to pass it around, short enough that a peer whose
/// neighbours lack it does not wait long.
pub(crate) const HIDE_FOR: Duration = Duration::from_secs(2);
/// A peer that asked for no chunk for this long is taken to be done (or
/// gone): what it got is no longer hidden from others.
pub(crate) const ACTIVE: Duration = Duration::from_secs(1);
/// Chunks per region (256 KiB, the piece size of a download with peers).
const REGION_CHUNKS: u64 = 16;
/// Blobs tracked at once.
const MAX_BLOBS: usize = 8;
/// Peers told apart per blob.
const MAX_PEERS: usize = 4096;

/// What this node sent recently, per whole blob it serves.
#[derive(Debug, Default)]
pub(crate) struct Steer {
    blobs: Mutex<HashMap<Hash, Sends>>,
}

#[derive(Debug)]
struct Sends {
    /// Peers told apart, by index + 1 (0: one past [`MAX_PEERS`]), with
    /// the time of their last request.
    peers: Vec<(PeerId, Instant)>,
    /// Per region: who it was last sent to, and when.
    last: Vec<Option<(u32, Instant)>>,
    used: Instant,
}

impl Steer {
    /// Notes that `chunks` of the whole blob `hash` (of `chunk_count`
    /// chunks) were sent to `peer`.
    pub(crate) fn sent(&self, hash: Hash, chunk_count: u64, chunks: Range<u64>, peer: PeerId) {
        let now = Instant::now();
        let mut blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        if !blobs.contains_key(&hash) && blobs.len() >= MAX_BLOBS {
            let oldest = blobs
                .iter()
                .min_by_key(|(_, sends)| sends.used)
                .map(|(hash, _)| *hash);
            if let Some(oldest) = oldest {
                blobs.remove(&oldest);
            }
        }
        let sends = blobs.entry(hash).or_insert_with(|| Sends {
            peers: Vec::new(),
            last: vec![None; chunk_count.div_ceil(REGION_CHUNKS) as usize],
            used: now,
        });
        sends.used = now;
        let who = sends.index(peer, now);
        let regions = chunks.start / REGION_CHUNKS..chunks.end.div_ceil(REGION_CHUNKS);
        for region in regions {
            if let Some(slot) = sends.last.get_mut(region as usize) {
                *slot = Some((who, now));
            }
        }
    }

    /// Clears from `present` (the whole blob `hash`) the regions hidden
    /// from `peer`: those sent to another peer in the last [`HIDE_FOR`].
    /// Nothing is cleared if that would clear everything.
    pub(crate) fn hide(&self, hash: Hash, peer: PeerId, present: &mut ChunkBitmap) {
        let blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sends) = blobs.get(&hash) else {
            return;
        };
        let hidden = sends.hidden_from(peer);
        if !sends.last.iter().any(&hidden) || sends.last.iter().all(&hidden) {
            return;
        }
        for (region, _) in sends
            .last
            .iter()
            .enumerate()
            .filter(|(_, slot)| hidden(slot))
        {
            let start = region as u64 * REGION_CHUNKS;
            for chunk in start..(start + REGION_CHUNKS).min(present.len()) {
                present.clear(chunk);
            }
        }
    }

    /// True if any of `chunks` of the whole blob `hash` is hidden from
    /// `peer` (see [`Steer::hide`]): asked for from an older bitmap.
    pub(crate) fn hides(&self, hash: Hash, peer: PeerId, chunks: Range<u64>) -> bool {
        let blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sends) = blobs.get(&hash) else {
            return false;
        };
        let hidden = sends.hidden_from(peer);
        let regions = chunks.start / REGION_CHUNKS..chunks.end.div_ceil(REGION_CHUNKS);
        // The requested regions first: the whole table only when one is.
        regions
            .filter_map(|region| sends.last.get(region as usize))
            .any(&hidden)
            && !sends.last.iter().all(&hidden)
    }
}

impl Sends {
    /// Whether a region's entry hides it from `peer` now: sent in the last
    /// [`HIDE_FOR`] to another peer that is still fetching.
    fn hidden_from(&self, peer: PeerId) -> impl Fn(&Option<(u32, Instant)>) -> bool + '_ {
        let now = Instant::now();
        let me = self.peers.iter().position(|(known, _)| *known == peer);
        let fetching = move |who: u32| match who.checked_sub(1) {
            None => true,
            Some(at) => {
                let (_, last) = self.peers[at as usize];
                Some(at as usize) != me && now.duration_since(last) < ACTIVE
            }
        };
        move |slot: &Option<(u32, Instant)>| match slot {
            Some((who, at)) => now.duration_since(*at) < HIDE_FOR && fetching(*who),
            None => false,
        }
    }

    /// The index + 1 of `peer`, which asked for chunks at `now` (added if
    /// there is room; 0 past [`MAX_PEERS`]).
    fn index(&mut self, peer: PeerId, now: Instant) -> u32 {
        if let Some(at) = self.peers.iter().position(|(known, _)| *known == peer) {
            self.peers[at].1 = now;
            return at as u32 + 1;
        }
        if self.peers.len() >= MAX_PEERS {
            return 0;
        }
        self.peers.push((peer, now));
        self.peers.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> Hash {
        Hash::from_bytes([7; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn a_region_sent_to_one_peer_is_hidden_from_the_others_for_a_while() {
        let steer = Steer::default();
        let (first, second) = (PeerId::random(), PeerId::random());
        // 64 chunks: four regions; region 1 goes to the first peer.
        steer.sent(hash(), 64, 16..32, first);
        let mut seen_by_second = ChunkBitmap::full(64);
        steer.hide(hash(), second, &mut seen_by_second);
        assert_eq!(
            seen_by_second.missing_runs().collect::<Vec<_>>(),
            vec![16..32]
        );
        // The peer it went to still sees it (a retry is answered).
        let mut seen_by_first = ChunkBitmap::full(64);
        steer.hide(hash(), first, &mut seen_by_first);
        assert!(seen_by_first.is_complete());
        // It shows again after a while, even while the first peer fetches.
        for _ in 0..HIDE_FOR.as_secs() {
            tokio::time::advance(Duration::from_secs(1)).await;
            steer.sent(hash(), 64, 0..16, first);
        }
        let mut later = ChunkBitmap::full(64);
        steer.hide(hash(), second, &mut later);
        assert_eq!(later.missing_runs().collect::<Vec<_>>(), vec![0..16]);
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_peer_that_stopped_fetching_got_shows_again() {
        let steer = Steer::default();
        let (done, late) = (PeerId::random(), PeerId::random());
        steer.sent(hash(), 64, 16..32, done);
        tokio::time::advance(ACTIVE).await;
        let mut seen = ChunkBitmap::full(64);
        steer.hide(hash(), late, &mut seen);
        assert!(seen.is_complete());
        assert!(!steer.hides(hash(), late, 16..32));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_never_sees_an_empty_bitmap_from_a_whole_blob() {
        let steer = Steer::default();
        steer.sent(hash(), 20, 0..20, PeerId::random());
        let mut seen = ChunkBitmap::full(20);
        steer.hide(hash(), PeerId::random(), &mut seen);
        assert!(seen.is_complete(), "hiding everything would stall the peer");
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_served_blob_is_forgotten_first() {
        let steer = Steer::default();
        let (sender, other) = (PeerId::random(), PeerId::random());
        for blob in 0..=MAX_BLOBS as u8 {
            steer.sent(Hash::from_bytes([blob; 32]), 64, 0..16, sender);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let mut first = ChunkBitmap::full(64);
        steer.hide(Hash::from_bytes([0; 32]), other, &mut first);
        assert!(first.is_complete(), "the oldest blob was forgotten");
        let mut last = ChunkBitmap::full(64);
        steer.hide(Hash::from_bytes([MAX_BLOBS as u8; 32]), other, &mut last);
        assert_eq!(last.count(), 48);
    }
}
