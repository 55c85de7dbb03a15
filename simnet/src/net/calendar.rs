//! When a downlink is busy: the segments booked on it, as intervals of
//! time. A segment takes the first free stretch long enough at or after
//! the time it can arrive, so a segment that leaves a backlogged uplink
//! late does not keep the downlink idle for segments that come sooner
//! from elsewhere (a link carries whatever reaches it, in the order it
//! comes).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The busy stretches of one link, disjoint, and apart (touching ones are
/// merged), each from its start to its end.
#[derive(Debug, Default)]
pub(super) struct Calendar {
    busy: BTreeMap<Instant, Instant>,
}

impl Calendar {
    /// Books `length` of the link in the first free stretch that starts at
    /// or after `earliest` (and `now`); returns when the booking ends.
    /// Stretches that ended by `now` are forgotten.
    pub(super) fn book(&mut self, now: Instant, earliest: Instant, length: Duration) -> Instant {
        while let Some(first) = self.busy.first_entry() {
            if *first.get() > now {
                break;
            }
            first.remove();
        }
        let mut start = earliest.max(now);
        if let Some((_, &end)) = self.busy.range(..=start).next_back() {
            start = start.max(end);
        }
        while let Some((&next, &end)) = self.busy.range(start..).next() {
            if next >= start + length {
                break;
            }
            start = end;
        }
        let end = start + length;
        if length.is_zero() {
            return end;
        }
        let mut merged = start..end;
        if let Some((&before, &before_end)) = self.busy.range(..start).next_back()
            && before_end == start
        {
            self.busy.remove(&before);
            merged.start = before;
        }
        if let Some(after_end) = self.busy.remove(&end) {
            merged.end = after_end;
        }
        self.busy.insert(merged.start, merged.end);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn bookings_from_now_queue_one_after_another() {
        let now = Instant::now();
        let mut link = Calendar::default();
        assert_eq!(link.book(now, now, ms(10)), now + ms(10));
        assert_eq!(link.book(now, now, ms(10)), now + ms(20));
        assert_eq!(link.busy.len(), 1, "touching stretches are merged");
    }

    #[test]
    fn a_late_booking_leaves_the_time_before_it_free() {
        let now = Instant::now();
        let mut link = Calendar::default();
        assert_eq!(link.book(now, now + ms(500), ms(10)), now + ms(510));
        // Sooner segments use the link before the late one...
        assert_eq!(link.book(now, now, ms(300)), now + ms(300));
        // ...and one that does not fit in what is left goes after it.
        assert_eq!(link.book(now, now, ms(300)), now + ms(810));
        assert_eq!(link.book(now, now, ms(200)), now + ms(500));
        assert_eq!(link.busy.len(), 1);
    }

    #[test]
    fn past_stretches_are_forgotten() {
        let now = Instant::now();
        let mut link = Calendar::default();
        link.book(now, now, ms(10));
        link.book(now, now + ms(20), ms(10));
        let later = now + ms(25);
        // The first stretch is gone; the second still holds the link.
        assert_eq!(link.book(later, now, ms(10)), now + ms(40));
        assert_eq!(link.busy.len(), 1);
    }
}
