//! What this node last told each peer it holds of each blob, so that the
//! next answer to that peer can be the changes since then
//! ([`Request::HaveChanges`](p2pmodel_protocol::wire::Request)) rather
//! than the whole bitmap: peers fetching a blob ask several times a
//! second, and a 100 GB blob's bitmap is 800 KiB.
//!
//! Each answer gets a number, unique on this node; a getter names the last
//! one it applied. When that is not the last answer this node sent it for
//! that blob (a lost answer, a restart, an entry forgotten), the whole
//! bitmap goes instead, so a getter's copy never drifts. What a peer is
//! shown can also lose chunks (a seed's steering hides regions), so the
//! changes are toggles, not additions.
//!
//! Memory is bounded: at most [`MAX_ENTRIES`] (blob, peer) entries and
//! [`MAX_BYTES`] of bitmaps; the least recently asked is forgotten first.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use libp2p::PeerId;
use p2pmodel_protocol::wire::{Held, Run};
use p2pmodel_protocol::{ChunkBitmap, Hash};

/// (blob, peer) entries kept.
const MAX_ENTRIES: usize = 1024;
/// Bitmap bytes kept, all entries together (80 peers of a 100 GB blob).
const MAX_BYTES: usize = 64 << 20;
/// Bytes a run takes on the wire at most (two varints of up to 10 bytes):
/// the changes go as runs only while they are smaller than the bitmap.
const RUN_BYTES: usize = 20;

/// The last bitmap this node showed each peer, per blob.
#[derive(Debug, Default)]
pub(crate) struct Told {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<(Hash, PeerId), Entry>,
    bytes: usize,
    /// The last answer number given (numbers start at 1).
    answers: u64,
}

#[derive(Debug)]
struct Entry {
    answer: u64,
    shown: ChunkBitmap,
}

impl Told {
    /// The answer to `peer`, who last applied answer `since`, for the blob
    /// `hash` of which it is now shown `shown`: this answer's number and
    /// the changes since `since`, or the whole bitmap.
    pub(crate) fn answer(
        &self,
        hash: Hash,
        peer: PeerId,
        since: u64,
        shown: ChunkBitmap,
    ) -> (u64, Held) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.answers += 1;
        let answer = table.answers;
        let key = (hash, peer);
        let held = match table.entries.remove(&key) {
            Some(entry) => {
                table.bytes -= entry.shown.as_bytes().len();
                changes(&entry, since, &shown)
            }
            None => None,
        }
        .unwrap_or_else(|| Held::Whole(shown.as_bytes().to_vec()));
        table.bytes += shown.as_bytes().len();
        table.entries.insert(key, Entry { answer, shown });
        table.forget_beyond_bounds(&key);
        (answer, held)
    }
}

/// The runs that turn what `entry` showed into `shown`, if the getter
/// applied that answer and the runs are smaller than the bitmap.
fn changes(entry: &Entry, since: u64, shown: &ChunkBitmap) -> Option<Held> {
    if since != entry.answer || entry.shown.len() != shown.len() {
        return None;
    }
    let limit = shown.as_bytes().len() / RUN_BYTES;
    let mut ranges = Vec::new();
    for range in shown.differing_runs(&entry.shown) {
        if ranges.len() >= limit {
            return None;
        }
        ranges.push(range);
    }
    Some(Held::Toggled(Run::from_ranges(ranges)))
}

impl Table {
    /// Forgets the oldest answers (never `keep`, the newest) until the
    /// table is within its bounds.
    fn forget_beyond_bounds(&mut self, keep: &(Hash, PeerId)) {
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let oldest = self
                .entries
                .iter()
                .filter(|(key, _)| *key != keep)
                .min_by_key(|(_, entry)| entry.answer)
                .map(|(key, _)| *key);
            let Some(oldest) = oldest else { break };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.shown.as_bytes().len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(len: u64, present: &[u64]) -> ChunkBitmap {
        let mut bitmap = ChunkBitmap::new(len);
        for &chunk in present {
            bitmap.set(chunk);
        }
        bitmap
    }

    #[test]
    fn a_peer_is_sent_the_whole_bitmap_first_and_then_what_changed() {
        let told = Told::default();
        let (hash, peer) = (Hash::of(b"blob"), PeerId::random());
        let (first, held) = told.answer(hash, peer, 0, bitmap(1000, &[1, 2]));
        assert_eq!(held, Held::Whole(bitmap(1000, &[1, 2]).as_bytes().to_vec()));
        // Chunk 2 is hidden now, 7 to 9 were gained.
        let (second, held) = told.answer(hash, peer, first, bitmap(1000, &[1, 7, 8, 9]));
        assert!(second > first);
        assert_eq!(held, Held::Toggled(Run::from_ranges([2..3, 7..10])));
        let (_, held) = told.answer(hash, peer, second, bitmap(1000, &[1, 7, 8, 9]));
        assert_eq!(held, Held::Toggled(Vec::new()), "nothing changed");
    }

    #[test]
    fn a_getter_that_missed_an_answer_gets_the_whole_bitmap() {
        let told = Told::default();
        let (hash, peer) = (Hash::of(b"blob"), PeerId::random());
        let (first, _) = told.answer(hash, peer, 0, bitmap(1000, &[1]));
        let (_lost, _) = told.answer(hash, peer, first, bitmap(1000, &[1, 2]));
        let (_, held) = told.answer(hash, peer, first, bitmap(1000, &[1, 2, 3]));
        assert_eq!(
            held,
            Held::Whole(bitmap(1000, &[1, 2, 3]).as_bytes().to_vec())
        );
        // Another peer's numbers are not this one's.
        let (_, held) = told.answer(hash, PeerId::random(), first, bitmap(1000, &[1]));
        assert!(matches!(held, Held::Whole(_)));
    }

    #[test]
    fn changes_larger_than_the_bitmap_go_as_the_bitmap() {
        let told = Told::default();
        let (hash, peer) = (Hash::of(b"blob"), PeerId::random());
        let (first, _) = told.answer(hash, peer, 0, bitmap(1000, &[]));
        let every_other: Vec<u64> = (0..1000).step_by(2).collect();
        let (_, held) = told.answer(hash, peer, first, bitmap(1000, &every_other));
        assert!(matches!(held, Held::Whole(_)));
    }

    #[test]
    fn the_oldest_entries_are_forgotten_past_the_bounds() {
        let told = Told::default();
        let hash = Hash::of(b"blob");
        let first_peer = PeerId::random();
        let (first, _) = told.answer(hash, first_peer, 0, bitmap(64, &[1]));
        for _ in 0..MAX_ENTRIES {
            told.answer(hash, PeerId::random(), 0, bitmap(64, &[1]));
        }
        let table = told.table.lock().unwrap();
        assert_eq!(table.entries.len(), MAX_ENTRIES);
        assert_eq!(table.bytes, MAX_ENTRIES * 8);
        drop(table);
        let (_, held) = told.answer(hash, first_peer, first, bitmap(64, &[1]));
        assert!(matches!(held, Held::Whole(_)), "forgotten, so sent whole");
    }
}
