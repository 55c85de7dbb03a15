//! What the provider spends on peers at once: streams being read or
//! answered, answers being built or written, and the bytes of those
//! answers; all peers together, and at most an eighth of each for any one
//! peer, so that a peer flooding requests can neither grow memory past
//! the limits nor take every slot from the others (eight peers flooding
//! at once can: the others are then refused as busy and ask again).
//!
//! A [`Ticket`] is taken per stream and holds what its answer uses until
//! it is dropped (after the answer is written, or the stream given up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;

/// The most one peer may hold of each limit: an eighth.
const PEER_SHARE: usize = 8;

/// The limits, and what is used of them now.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Use,
    used: Mutex<Used>,
}

/// An amount of each thing the budget counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Use {
    /// Streams being read or answered.
    pub(crate) streams: usize,
    /// Answers being built or written.
    pub(crate) answers: usize,
    /// Bytes of those answers.
    pub(crate) bytes: usize,
}

#[derive(Debug, Default)]
struct Used {
    all: Use,
    peers: HashMap<PeerId, Use>,
}

impl Use {
    fn fits(&self, more: Use, limit: &Use) -> bool {
        self.streams + more.streams <= limit.streams
            && self.answers + more.answers <= limit.answers
            && self.bytes + more.bytes <= limit.bytes
    }

    fn add(&mut self, more: Use) {
        self.streams += more.streams;
        self.answers += more.answers;
        self.bytes += more.bytes;
    }

    fn sub(&mut self, less: Use) {
        self.streams -= less.streams;
        self.answers -= less.answers;
        self.bytes -= less.bytes;
    }

    fn share(&self) -> Use {
        Use {
            streams: self.streams / PEER_SHARE,
            answers: self.answers / PEER_SHARE,
            bytes: self.bytes / PEER_SHARE,
        }
    }
}

impl Budget {
    /// A budget of `limits`, all peers together.
    pub(crate) fn new(limits: Use) -> Arc<Self> {
        Arc::new(Self {
            limits,
            used: Mutex::new(Used::default()),
        })
    }

    /// A ticket for one more stream of `peer`; `None` when every stream
    /// slot is taken or the peer holds its share.
    pub(crate) fn stream(self: &Arc<Self>, peer: PeerId) -> Option<Ticket> {
        let mut ticket = Ticket {
            budget: Arc::clone(self),
            peer,
            held: Use::default(),
        };
        ticket
            .take(Use {
                streams: 1,
                ..Use::default()
            })
            .then_some(ticket)
    }

    /// What is used now, all peers together.
    #[cfg(test)]
    fn used(&self) -> Use {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).all
    }
}

/// One stream's part of the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    budget: Arc<Budget>,
    peer: PeerId,
    held: Use,
}

impl Ticket {
    /// Takes an answer slot; false when all are taken or the peer holds
    /// its share.
    pub(crate) fn answer(&mut self) -> bool {
        self.take(Use {
            answers: 1,
            ..Use::default()
        })
    }

    /// Takes `bytes` more for the answer; false when the budget, or the
    /// peer's share, lacks them.
    pub(crate) fn reserve(&mut self, bytes: usize) -> bool {
        self.take(Use {
            bytes,
            ..Use::default()
        })
    }

    fn take(&mut self, more: Use) -> bool {
        let budget = &self.budget;
        let mut used = budget.used.lock().unwrap_or_else(PoisonError::into_inner);
        let share = budget.limits.share();
        let peer = used.peers.get(&self.peer).copied().unwrap_or_default();
        if !used.all.fits(more, &budget.limits) || !peer.fits(more, &share) {
            return false;
        }
        used.all.add(more);
        used.peers.entry(self.peer).or_default().add(more);
        self.held.add(more);
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        used.all.sub(self.held);
        if let Some(peer) = used.peers.get_mut(&self.peer) {
            peer.sub(self.held);
            if *peer == Use::default() {
                used.peers.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Use {
        Use {
            streams: 16,
            answers: 8,
            bytes: 800,
        }
    }

    #[test]
    fn one_peer_gets_an_eighth_and_others_the_rest() {
        let budget = Budget::new(limits());
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let mut first = budget.stream(greedy).unwrap();
        let second = budget.stream(greedy).unwrap();
        assert!(budget.stream(greedy).is_none(), "an eighth of 16 streams");
        assert!(first.answer());
        assert!(first.reserve(100));
        assert!(!first.reserve(1), "an eighth of 800 bytes");
        let mut theirs = budget.stream(other).unwrap();
        assert!(theirs.answer() && theirs.reserve(100));
        drop((first, second));
        assert!(budget.stream(greedy).is_some());
        drop(theirs);
        assert_eq!(budget.used(), Use::default(), "everything given back");
    }

    #[test]
    fn all_peers_together_stay_within_the_limits() {
        let budget = Budget::new(limits());
        let mut tickets: Vec<Ticket> = (0..40)
            .filter_map(|_| budget.stream(PeerId::random()))
            .collect();
        assert_eq!(tickets.len(), 16);
        let answering = tickets
            .iter_mut()
            .map(Ticket::answer)
            .filter(|ok| *ok)
            .count();
        assert_eq!(answering, 8);
        assert_eq!(budget.used().streams, 16);
    }
}
