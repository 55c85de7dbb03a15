//! Which piece a source should fetch next: rarest first with a random
//! tie-break, and an endgame that doubles the last pieces in flight.
//!
//! A piece is a run of [`DownloadConfig::request_chunks`](super::DownloadConfig)
//! chunks (the last one shorter). Each is wanted, taken by one or two
//! sources, or done. A source picks among the wanted pieces it can serve
//! the one the fewest peers hold (so that what only one peer has spreads
//! first, and mirrors fetch what peers lack); ties go to a random one.
//! When no wanted piece is left for it, a source may double a piece
//! another source is fetching (the endgame): whichever finishes first
//! wins and the other is cancelled through the piece's token.
//!
//! A pick may be stretched over the wanted pieces that follow it
//! ([`Pieces::extend`]), so that a fast source asks for several pieces in
//! one request; the pieces of such a run share one token.

use std::ops::Range;

use tokio_util::sync::CancellationToken;

/// Wanted pieces looked at per pick: bounds the cost of a pick on huge
/// blobs; the window starts at a random place so every piece gets its turn.
const SCAN: usize = 512;

/// Sources fetching one piece at most (the endgame doubles, no more).
const MAX_TAKERS: usize = 2;

/// The state of every piece of one download.
#[derive(Debug)]
pub(crate) struct Pieces {
    piece_chunks: u64,
    chunks: u64,
    states: Vec<State>,
    /// The wanted pieces, in no order; `slot[piece]` is its index here.
    wanted: Vec<usize>,
    slot: Vec<usize>,
    random: u64,
}

#[derive(Debug)]
enum State {
    Wanted,
    Taken {
        takers: Vec<usize>,
        done: CancellationToken,
    },
    Done,
}

/// Adjacent pieces handed to a source as one request (usually one piece):
/// their numbers, their chunks and the token that fires when another
/// source finished one of them first.
#[derive(Debug, Clone)]
pub(crate) struct Pick {
    pub(crate) pieces: Range<usize>,
    pub(crate) chunks: Range<u64>,
    pub(crate) done: CancellationToken,
}

impl Pieces {
    /// The pieces of a blob of `chunks` chunks; those for which `missing`
    /// is false are done already.
    pub(crate) fn new(
        chunks: u64,
        piece_chunks: u64,
        missing: impl Fn(Range<u64>) -> bool,
    ) -> Self {
        let piece_chunks = piece_chunks.max(1);
        let count = chunks.div_ceil(piece_chunks) as usize;
        let mut pieces = Self {
            piece_chunks,
            chunks,
            states: Vec::with_capacity(count),
            wanted: Vec::new(),
            slot: vec![usize::MAX; count],
            random: seed(),
        };
        for piece in 0..count {
            if missing(pieces.chunks(piece)) {
                pieces.slot[piece] = pieces.wanted.len();
                pieces.wanted.push(piece);
                pieces.states.push(State::Wanted);
            } else {
                pieces.states.push(State::Done);
            }
        }
        pieces
    }

    /// The chunks of `piece`.
    pub(crate) fn chunks(&self, piece: usize) -> Range<u64> {
        let start = piece as u64 * self.piece_chunks;
        start..(start + self.piece_chunks).min(self.chunks)
    }

    /// Pieces being fetched now.
    pub(crate) fn in_flight(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, State::Taken { .. }))
            .count()
    }

    /// The chunks of each wanted piece.
    pub(crate) fn wanted(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.wanted.iter().map(|&piece| self.chunks(piece))
    }

    /// The next piece for `source`: the rarest wanted piece it can serve
    /// (`serves` its chunks), `holders` telling how many peers hold a
    /// piece's chunks; else, in the endgame, a piece in flight elsewhere
    /// that it can serve.
    pub(crate) fn pick(
        &mut self,
        source: usize,
        serves: impl Fn(Range<u64>) -> bool,
        holders: impl Fn(Range<u64>) -> usize,
    ) -> Option<Pick> {
        if !self.wanted.is_empty() {
            let start = (self.next_random() % self.wanted.len() as u64) as usize;
            let mut best: Option<(usize, usize)> = None;
            for step in 0..self.wanted.len().min(SCAN) {
                let piece = self.wanted[(start + step) % self.wanted.len()];
                if !serves(self.chunks(piece)) {
                    continue;
                }
                let count = holders(self.chunks(piece));
                if best.is_none_or(|(_, fewest)| count < fewest) {
                    best = Some((piece, count));
                    if count == 0 {
                        break;
                    }
                }
            }
            if let Some((piece, _)) = best {
                return Some(self.take(piece, source));
            }
            return None;
        }
        // Endgame: double a piece in flight that this source is not on.
        let piece = (0..self.states.len()).find(|&piece| match &self.states[piece] {
            State::Taken { takers, done } => {
                takers.len() < MAX_TAKERS
                    && !done.is_cancelled()
                    && !takers.contains(&source)
                    && serves(self.chunks(piece))
            }
            _ => false,
        })?;
        Some(self.take(piece, source))
    }

    /// A piece in flight only on sources `slow` says yes to (a seed or a
    /// mirror that a crowd shares) that `source` can serve: the peer that
    /// has it by now fetches it too, and whichever ends first wins.
    pub(crate) fn overtake(
        &mut self,
        source: usize,
        serves: impl Fn(Range<u64>) -> bool,
        slow: impl Fn(usize) -> bool,
    ) -> Option<Pick> {
        let count = self.states.len();
        if count == 0 {
            return None;
        }
        let start = (self.next_random() % count as u64) as usize;
        let piece = (0..count)
            .map(|step| (start + step) % count)
            .find(|&piece| match &self.states[piece] {
                State::Taken { takers, done } => {
                    takers.len() < MAX_TAKERS
                        && !done.is_cancelled()
                        && takers.iter().all(|&taker| taker != source && slow(taker))
                        && serves(self.chunks(piece))
                }
                _ => false,
            })?;
        Some(self.take(piece, source))
    }

    fn take(&mut self, piece: usize, source: usize) -> Pick {
        let chunks = self.chunks(piece);
        let done = match &mut self.states[piece] {
            State::Taken { takers, done } => {
                takers.push(source);
                done.clone()
            }
            state => {
                debug_assert!(matches!(state, State::Wanted));
                let done = CancellationToken::new();
                self.claim(piece, source, done.clone());
                done
            }
        };
        Pick {
            pieces: piece..piece + 1,
            chunks,
            done,
        }
    }

    /// The wanted `piece` is taken by `source` alone, finished when `done`
    /// fires.
    fn claim(&mut self, piece: usize, source: usize, done: CancellationToken) {
        self.states[piece] = State::Taken {
            takers: vec![source],
            done,
        };
        self.unwant(piece);
    }

    /// Stretches `pick`, a piece `source` has just taken, over the wanted
    /// pieces right after it that `serves` says the source can serve,
    /// until it spans `max_pieces`. The pieces taken share the pick's token.
    pub(crate) fn extend(
        &mut self,
        pick: &mut Pick,
        source: usize,
        max_pieces: usize,
        serves: impl Fn(Range<u64>) -> bool,
    ) {
        while pick.pieces.len() < max_pieces {
            let next = pick.pieces.end;
            if !matches!(self.states.get(next), Some(State::Wanted)) || !serves(self.chunks(next)) {
                return;
            }
            self.claim(next, source, pick.done.clone());
            pick.pieces.end += 1;
            pick.chunks.end = self.chunks(next).end;
        }
    }

    /// `pieces` are written: done for every source fetching them. The other
    /// pieces of a run that shared their token stay taken, with the token
    /// fired, until their source gives them up; nobody doubles them
    /// meanwhile (a fired token would end the double at once).
    pub(crate) fn finished(&mut self, pieces: Range<usize>) {
        for piece in pieces {
            if let State::Taken { done, .. } = &self.states[piece] {
                done.cancel();
            }
            if matches!(self.states[piece], State::Wanted) {
                self.unwant(piece);
            }
            self.states[piece] = State::Done;
        }
    }

    /// `source` gave `pieces` up; each is wanted again unless another
    /// source still fetches it or it is done.
    pub(crate) fn released(&mut self, pieces: Range<usize>, source: usize) {
        for piece in pieces {
            if let State::Taken { takers, .. } = &mut self.states[piece] {
                takers.retain(|s| *s != source);
                if takers.is_empty() {
                    self.states[piece] = State::Wanted;
                    self.slot[piece] = self.wanted.len();
                    self.wanted.push(piece);
                }
            }
        }
    }

    fn unwant(&mut self, piece: usize) {
        let at = self.slot[piece];
        self.wanted.swap_remove(at);
        if let Some(&moved) = self.wanted.get(at) {
            self.slot[moved] = at;
        }
        self.slot[piece] = usize::MAX;
    }

    /// xorshift64: enough to spread picks, no need for a crate.
    fn next_random(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }
}

/// A non-zero seed that differs between downloads and processes.
fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u64) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_overtakes_only_pieces_that_slow_sources_alone_fetch() {
        let mut pieces = Pieces::new(8, 4, |_| true);
        let seed = pieces
            .pick(0, |_| true, |_| 0)
            .expect("a piece for the seed");
        let peer = pieces.pick(1, |_| true, |_| 0).expect("a piece for a peer");
        assert_ne!(seed.pieces.start, peer.pieces.start);
        // Source 2 holds both; only the seed's piece may be overtaken.
        let overtaken = pieces
            .overtake(2, |_| true, |source| source == 0)
            .expect("the seed's piece is overtaken");
        assert_eq!(overtaken.pieces.start, seed.pieces.start);
        // Two takers at most, and never the same source twice.
        assert!(pieces.overtake(3, |_| true, |source| source == 0).is_none());
        assert!(pieces.overtake(1, |_| true, |_| true).is_none());
        // The first to finish wins: the other's token fires.
        pieces.finished(overtaken.pieces.clone());
        assert!(seed.done.is_cancelled());
    }

    #[test]
    fn a_pick_stretches_over_the_wanted_pieces_after_it_and_no_further() {
        // Ten pieces of 2 chunks; piece 4 is done, piece 7 is not served.
        let mut pieces = Pieces::new(20, 2, |range| range.start != 8);
        let serves = |chunks: Range<u64>| chunks.start != 14;
        let mut first = pieces
            .pick(0, serves, |chunks| usize::from(chunks.start != 0))
            .unwrap();
        assert_eq!(first.pieces, 0..1);
        pieces.extend(&mut first, 0, 3, serves);
        assert_eq!((first.pieces.clone(), first.chunks.clone()), (0..3, 0..6));
        // Piece 3 alone is left before the done piece 4.
        let mut second = pieces
            .pick(1, serves, |chunks| usize::from(chunks.start != 6))
            .unwrap();
        pieces.extend(&mut second, 1, 3, serves);
        assert_eq!(second.pieces, 3..4);
        // Pieces 5 and 6, then 7 is not served.
        let mut third = pieces
            .pick(2, serves, |chunks| usize::from(chunks.start != 10))
            .unwrap();
        pieces.extend(&mut third, 2, 8, serves);
        assert_eq!(third.pieces, 5..7);
        // The pieces of a run share a token; given up, they are wanted again.
        pieces.released(first.pieces.clone(), 0);
        let mut wanted: Vec<u64> = pieces.wanted().map(|chunks| chunks.start).collect();
        wanted.sort_unstable();
        assert_eq!(wanted, vec![0, 2, 4, 14, 16, 18]);
        pieces.finished(third.pieces.start..third.pieces.start + 1);
        assert!(third.done.is_cancelled());
        assert!(!second.done.is_cancelled());
    }

    #[test]
    fn the_rest_of_a_beaten_run_is_not_doubled_until_it_is_given_up() {
        let mut pieces = Pieces::new(8, 2, |_| true);
        let mut run = pieces
            .pick(0, |_| true, |chunks| usize::from(chunks.start != 0))
            .unwrap();
        pieces.extend(&mut run, 0, 4, |_| true);
        assert_eq!(run.pieces, 0..4);
        // Another source doubles piece 0 and finishes it first.
        let double = pieces.pick(1, |_| true, |_| 0).unwrap();
        assert_eq!(double.pieces, 0..1);
        pieces.finished(double.pieces);
        assert!(run.done.is_cancelled());
        // Pieces 1 to 3 wait for the run's source to give them up.
        assert!(pieces.pick(1, |_| true, |_| 0).is_none());
        assert!(pieces.overtake(1, |_| true, |_| true).is_none());
        pieces.released(run.pieces, 0);
        let again = pieces.pick(1, |_| true, |_| 0).unwrap();
        assert!(!again.done.is_cancelled());
    }

    #[test]
    fn present_pieces_start_done_and_the_last_piece_is_short() {
        let pieces = Pieces::new(10, 4, |range| range.start != 4);
        assert_eq!(pieces.chunks(2), 8..10);
        assert_eq!(pieces.wanted().collect::<Vec<_>>(), vec![0..4, 8..10]);
    }

    #[test]
    fn the_rarest_piece_goes_first() {
        let mut pieces = Pieces::new(40, 4, |_| true);
        // Piece 7 is held by one peer, all others by three.
        for _ in 0..20 {
            let pick = pieces
                .pick(0, |_| true, |chunks| if chunks.start == 28 { 1 } else { 3 })
                .unwrap();
            assert_eq!(pick.pieces.start, 7);
            pieces.released(7..8, 0);
        }
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut pieces = Pieces::new(64, 1, |_| true);
            seen.insert(pieces.pick(0, |_| true, |_| 1).unwrap().pieces.start);
        }
        assert!(seen.len() > 5, "picks were {seen:?}");
    }

    #[test]
    fn a_source_gets_only_pieces_it_serves() {
        let mut pieces = Pieces::new(16, 4, |_| true);
        let pick = pieces.pick(0, |chunks| chunks == (8..12), |_| 1).unwrap();
        assert_eq!(pick.pieces.start, 2);
        assert!(pieces.pick(0, |chunks| chunks == (8..12), |_| 1).is_none());
    }

    #[test]
    fn the_endgame_doubles_a_piece_once_and_the_winner_cancels_the_other() {
        let mut pieces = Pieces::new(8, 4, |_| true);
        let a = pieces.pick(0, |_| true, |_| 0).unwrap();
        let b = pieces.pick(0, |_| true, |_| 0).unwrap();
        assert_ne!(a.pieces.start, b.pieces.start);
        // Source 0 is on both: nothing for it to double.
        assert!(pieces.pick(0, |_| true, |_| 0).is_none());
        let double = pieces.pick(1, |_| true, |_| 0).unwrap();
        let again = pieces.pick(1, |_| true, |_| 0).unwrap();
        assert_ne!(double.pieces.start, again.pieces.start);
        assert!(
            pieces.pick(2, |_| true, |_| 0).is_none(),
            "two takers at most"
        );
        pieces.finished(double.pieces.clone());
        let first = if double.pieces == a.pieces { &a } else { &b };
        assert!(first.done.is_cancelled());
        pieces.released(double.pieces.clone(), 0);
        assert_eq!(
            pieces.wanted().count(),
            0,
            "a finished piece is not wanted again"
        );
    }

    #[test]
    fn a_released_piece_is_wanted_again_and_all_done_at_the_end() {
        let mut pieces = Pieces::new(4, 2, |_| true);
        let a = pieces.pick(0, |_| true, |_| 0).unwrap();
        pieces.released(a.pieces.clone(), 0);
        assert_eq!(pieces.wanted().count(), 2);
        for _ in 0..2 {
            let pick = pieces.pick(0, |_| true, |_| 0).unwrap();
            pieces.finished(pick.pieces);
        }
        assert_eq!(pieces.wanted().count(), 0);
        assert_eq!(pieces.in_flight(), 0);
    }
}
