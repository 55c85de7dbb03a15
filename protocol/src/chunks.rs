//! Chunks: the unit that the store tracks, a peer advertises and a request
//! asks for, and [`ChunkBitmap`], the set of chunks a node holds.
//!
//! A chunk is one 16 KiB BLAKE3 chunk group (16 chunks of 1 KiB), the same
//! block size as BitTorrent v2 and iroh. It is also the granularity of the
//! outboard (see [`crate::verified`]): one hash pair per chunk, 0.39% of the
//! blob's size. The last chunk of a blob may be shorter.

use std::ops::Range;

use bao_tree::BlockSize;

/// log2 of the number of 1 KiB BLAKE3 chunks in one p2pmodel chunk.
pub const CHUNK_LOG: u8 = 4;

/// Size of one chunk in bytes (16 KiB).
pub const CHUNK_SIZE: u64 = 1024 << CHUNK_LOG;

/// The bao-tree block size matching [`CHUNK_SIZE`].
pub const fn block_size() -> BlockSize {
    BlockSize::from_chunk_log(CHUNK_LOG)
}

/// Number of chunks in a blob of `size` bytes (0 for an empty blob).
pub const fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE)
}

/// Byte range of chunk `index` in a blob of `size` bytes.
///
/// # Panics
/// If `index` is not a chunk of such a blob.
pub fn chunk_bytes(index: u64, size: u64) -> Range<u64> {
    assert!(
        index < chunk_count(size),
        "chunk {index} is past the end of a {size} byte blob"
    );
    let start = index * CHUNK_SIZE;
    start..size.min(start + CHUNK_SIZE)
}

/// Which chunks of a blob are present: one bit per chunk, chunk 0 in the
/// lowest bit of byte 0.
///
/// Its byte form ([`ChunkBitmap::as_bytes`]) is what the store persists;
/// memory is one bit per 16 KiB, 8 KiB per GiB of blob.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkBitmap {
    bits: Vec<u8>,
    len: u64,
    count: u64,
}

/// A byte form that does not fit the blob it is meant for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a bitmap of {chunks} chunks is {expected} bytes long; got {got} bytes, or bits set past the end"
)]
pub struct BitmapLengthError {
    chunks: u64,
    expected: usize,
    got: usize,
}

impl ChunkBitmap {
    /// An empty bitmap for `len` chunks.
    pub fn new(len: u64) -> Self {
        Self {
            bits: vec![0; Self::byte_len(len)],
            len,
            count: 0,
        }
    }

    /// A bitmap for `len` chunks with every chunk present.
    pub fn full(len: u64) -> Self {
        let mut bits = vec![0xff; Self::byte_len(len)];
        if let (Some(last), tail @ 1..) = (bits.last_mut(), len % 8) {
            *last = (1 << tail) - 1;
        }
        Self {
            bits,
            len,
            count: len,
        }
    }

    /// Reads the byte form written by [`ChunkBitmap::as_bytes`].
    ///
    /// # Errors
    /// When the length does not match `len` or a bit past `len` is set.
    pub fn from_bytes(len: u64, bytes: &[u8]) -> Result<Self, BitmapLengthError> {
        let expected = Self::byte_len(len);
        let error = || BitmapLengthError {
            chunks: len,
            expected,
            got: bytes.len(),
        };
        if bytes.len() != expected {
            return Err(error());
        }
        let tail_bits = len % 8;
        if tail_bits != 0 && bytes[expected - 1] >> tail_bits != 0 {
            return Err(error());
        }
        let count = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
        Ok(Self {
            bits: bytes.to_vec(),
            len,
            count,
        })
    }

    fn byte_len(len: u64) -> usize {
        usize::try_from(len.div_ceil(8)).expect("bitmap fits in memory")
    }

    /// The byte form, for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of chunks the bitmap covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if and only if the bitmap covers no chunk (an empty blob).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of chunks present.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True if and only if every chunk is present.
    pub fn is_complete(&self) -> bool {
        self.count == self.len
    }

    /// True if and only if chunk `index` is present.
    pub fn get(&self, index: u64) -> bool {
        index < self.len && self.bits[(index / 8) as usize] & (1 << (index % 8)) != 0
    }

    /// True if and only if every chunk of `range` is present (an empty
    /// range counts as present; chunks past the end as missing).
    pub fn has_range(&self, range: Range<u64>) -> bool {
        if range.end > self.len {
            return range.is_empty();
        }
        let mut index = range.start;
        while index < range.end {
            if index % 8 == 0 && index + 8 <= range.end {
                if self.bits[(index / 8) as usize] != 0xff {
                    return false;
                }
                index += 8;
            } else {
                if !self.get(index) {
                    return false;
                }
                index += 1;
            }
        }
        true
    }

    /// Marks chunk `index` present; returns true if it was missing.
    ///
    /// # Panics
    /// If `index` is past the end.
    pub fn set(&mut self, index: u64) -> bool {
        assert!(
            index < self.len,
            "chunk {index} is past the end of {} chunks",
            self.len
        );
        let byte = &mut self.bits[(index / 8) as usize];
        let mask = 1 << (index % 8);
        let was_missing = *byte & mask == 0;
        *byte |= mask;
        self.count += u64::from(was_missing);
        was_missing
    }

    /// Marks every chunk in `range` present.
    pub fn set_range(&mut self, range: Range<u64>) {
        for index in range {
            self.set(index);
        }
    }

    /// Marks chunk `index` missing; returns true if it was present.
    pub fn clear(&mut self, index: u64) -> bool {
        if !self.get(index) {
            return false;
        }
        self.bits[(index / 8) as usize] &= !(1 << (index % 8));
        self.count -= 1;
        true
    }

    /// Flips every chunk of `range`: present ones become missing and
    /// missing ones present.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn toggle_range(&mut self, range: Range<u64>) {
        assert!(
            range.end <= self.len,
            "chunks {range:?} reach past the end of {} chunks",
            self.len
        );
        for index in range {
            if !self.clear(index) {
                self.set(index);
            }
        }
    }

    /// Runs of chunks present in exactly one of `self` and `other`, in
    /// order: toggling them turns `other` into `self`. Both must cover the
    /// same number of chunks.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn differing_runs<'a>(
        &'a self,
        other: &'a ChunkBitmap,
    ) -> impl Iterator<Item = Range<u64>> + 'a {
        assert_eq!(self.len, other.len, "bitmaps of different lengths");
        let differs = |index: u64| self.get(index) != other.get(index);
        let mut index = 0;
        std::iter::from_fn(move || {
            loop {
                if index >= self.len {
                    return None;
                }
                let byte = (index / 8) as usize;
                if index % 8 == 0 && self.bits[byte] == other.bits[byte] {
                    index += 8;
                } else if differs(index) {
                    break;
                } else {
                    index += 1;
                }
            }
            let start = index;
            while index < self.len && differs(index) {
                index += 1;
            }
            Some(start..index)
        })
    }

    /// Runs of consecutive missing chunks, in order.
    pub fn missing_runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.runs(false)
    }

    /// Runs of consecutive present chunks, in order.
    pub fn present_runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.runs(true)
    }

    fn runs(&self, present: bool) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut index = 0;
        std::iter::from_fn(move || {
            while index < self.len && self.get(index) != present {
                index += 1;
            }
            if index >= self.len {
                return None;
            }
            let start = index;
            while index < self.len && self.get(index) == present {
                index += 1;
            }
            Some(start..index)
        })
    }
}

impl std::fmt::Debug for ChunkBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBitmap({}/{} chunks)", self.count, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_arithmetic_at_the_edges() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_SIZE), 1);
        assert_eq!(chunk_count(CHUNK_SIZE + 1), 2);
        assert_eq!(chunk_bytes(1, CHUNK_SIZE + 1), CHUNK_SIZE..CHUNK_SIZE + 1);
    }

    #[test]
    fn runs_alternate_between_present_and_missing() {
        let mut bitmap = ChunkBitmap::new(10);
        bitmap.set_range(2..4);
        bitmap.set(9);
        assert_eq!(bitmap.missing_runs().collect::<Vec<_>>(), vec![0..2, 4..9]);
        assert_eq!(bitmap.present_runs().collect::<Vec<_>>(), vec![2..4, 9..10]);
        assert_eq!(bitmap.count(), 3);
        assert!(bitmap.clear(9));
        assert!(!bitmap.clear(9));
        assert_eq!(bitmap.count(), 2);
    }

    #[test]
    fn byte_form_refuses_wrong_length_and_stray_bits() {
        assert!(ChunkBitmap::from_bytes(9, &[0]).is_err());
        assert!(ChunkBitmap::from_bytes(9, &[0, 0b10]).is_err());
        assert_eq!(
            ChunkBitmap::from_bytes(9, &[0xff, 1]).unwrap(),
            ChunkBitmap::full(9)
        );
    }

    proptest! {
        #[test]
        fn full_holds_every_chunk_and_no_more(len in 0u64..300) {
            let mut set_one_by_one = ChunkBitmap::new(len);
            set_one_by_one.set_range(0..len);
            let full = ChunkBitmap::full(len);
            prop_assert_eq!(full.count(), len);
            prop_assert!(ChunkBitmap::from_bytes(len, full.as_bytes()).is_ok());
            prop_assert_eq!(full, set_one_by_one);
        }

        #[test]
        fn toggling_the_differing_runs_turns_one_bitmap_into_the_other(
            len in 0u64..300,
            old in proptest::collection::vec(any::<u64>(), 0..100),
            new in proptest::collection::vec(any::<u64>(), 0..100),
        ) {
            let bitmap = |picks: &[u64]| {
                let mut bitmap = ChunkBitmap::new(len);
                for pick in picks.iter().filter(|_| len > 0) {
                    bitmap.set(pick % len);
                }
                bitmap
            };
            let (old, new) = (bitmap(&old), bitmap(&new));
            let runs: Vec<_> = new.differing_runs(&old).collect();
            // Runs are in order, apart, and cover exactly the differences.
            prop_assert!(runs.windows(2).all(|pair| pair[0].end < pair[1].start));
            let flips: u64 = runs.iter().map(|run| run.end - run.start).sum();
            prop_assert_eq!(flips, (0..len).filter(|&i| old.get(i) != new.get(i)).count() as u64);
            let mut turned = old.clone();
            for run in runs {
                turned.toggle_range(run);
            }
            prop_assert_eq!(turned.count(), new.count());
            prop_assert_eq!(turned, new);
        }

        #[test]
        fn byte_form_round_trips(len in 0u64..300, picks in proptest::collection::vec(any::<u64>(), 0..50)) {
            let mut bitmap = ChunkBitmap::new(len);
            for pick in picks.iter().filter(|_| len > 0) {
                bitmap.set(pick % len);
            }
            let back = ChunkBitmap::from_bytes(len, bitmap.as_bytes()).unwrap();
            prop_assert_eq!(back.count(), bitmap.count());
            prop_assert_eq!(back, bitmap);
        }

        #[test]
        fn has_range_agrees_with_get(len in 1u64..200, picks in proptest::collection::vec(any::<u64>(), 0..200), a in any::<u64>(), b in any::<u64>()) {
            let mut bitmap = ChunkBitmap::new(len);
            for pick in &picks {
                bitmap.set(pick % len);
            }
            let (a, b) = (a % (len + 1), b % (len + 1));
            let range = a.min(b)..a.max(b);
            prop_assert_eq!(bitmap.has_range(range.clone()), range.clone().all(|i| bitmap.get(i)));
            prop_assert!(!bitmap.has_range(0..len + 1));
        }
    }
}
