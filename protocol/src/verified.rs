//! Verified ranges: a blob's [`Outboard`] (its BLAKE3 hash tree) and the
//! checks that let any run of chunks be trusted on arrival.
//!
//! Two shapes of data arrive at a node:
//! - raw bytes (an HTTP mirror): checked with [`Outboard::verify_chunks`]
//!   against an outboard the node already trusts;
//! - bytes with their proof (a swarm peer): produced by
//!   [`Outboard::encode_chunks`] and checked by [`decode_chunks`] against the
//!   root hash alone, so the receiver needs no outboard at all.
//!
//! Everything is built on `bao-tree` with the block size of
//! [`crate::chunks`]: one outboard node per 16 KiB chunk. The root hash of
//! the tree equals `blake3::hash` of the blob.

use std::io::{self, Read};
use std::ops::Range;

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::{self as bao, ReadAt};
use bao_tree::io::{BaoContentItem, DecodeError};
use bao_tree::{BaoTree, ChunkNum, ChunkRanges};
use bytes::Bytes;

use crate::chunks::{CHUNK_LOG, CHUNK_SIZE, block_size, chunk_count};
use crate::{ChunkBitmap, Hash};

/// Size in bytes of the outboard of a blob of `size` bytes (64 bytes per
/// chunk, minus one: 0.39% of the blob).
pub fn outboard_size(size: u64) -> u64 {
    BaoTree::new(size, block_size()).outboard_size()
}

/// Why bytes were not accepted as part of a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes of chunk `chunk` do not hash to what the tree says.
    #[error("chunk {chunk} does not match the blob's hash tree")]
    ChunkMismatch {
        /// Index of the first chunk that failed.
        chunk: u64,
    },
    /// A proof's parent hashes do not lead to the root.
    #[error("the proof does not lead to the blob's root hash")]
    ProofMismatch,
    /// The data does not start on a chunk boundary or does not end on one
    /// (or at the end of the blob).
    #[error("{len} bytes at offset {offset} are not whole chunks of a {size} byte blob")]
    NotWholeChunks {
        /// Offset of the first byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
        /// Size of the blob.
        size: u64,
    },
    /// An outboard whose length is wrong for the blob's size.
    #[error("an outboard for a {size} byte blob is {expected} bytes; got {got}")]
    OutboardLength {
        /// Size of the blob.
        size: u64,
        /// Length the outboard must have.
        expected: u64,
        /// Length it has.
        got: u64,
    },
    /// The encoded stream ended before every requested chunk arrived.
    #[error("the encoded range ended early")]
    Truncated,
    /// Reading the data or the outboard failed.
    #[error("reading data or hash tree failed")]
    Io(#[source] io::Error),
}

impl From<DecodeError> for VerifyError {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::LeafHashMismatch(chunk) => VerifyError::ChunkMismatch {
                chunk: chunk.0 >> CHUNK_LOG,
            },
            DecodeError::ParentHashMismatch(_) => VerifyError::ProofMismatch,
            DecodeError::ParentNotFound(_) | DecodeError::LeafNotFound(_) => VerifyError::Truncated,
            DecodeError::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                VerifyError::Truncated
            }
            DecodeError::Io(error) => VerifyError::Io(error),
        }
    }
}

/// The BLAKE3 hash tree of one blob, stored in pre-order beside the data
/// (`D` is a `Vec<u8>` in memory or a `File` in the store).
///
/// An `Outboard` is trusted: build one with [`Outboard::compute`] from the
/// data, or check untrusted bytes with [`Outboard::from_untrusted`].
#[derive(Debug, Clone)]
pub struct Outboard<D = Vec<u8>> {
    inner: PreOrderOutboard<D>,
}

impl Outboard<Vec<u8>> {
    /// Hashes `size` bytes of `data` and builds the outboard in memory.
    ///
    /// # Errors
    /// When `data` fails or ends before `size` bytes.
    pub fn compute(data: impl Read, size: u64) -> io::Result<Self> {
        let tree = BaoTree::new(size, block_size());
        let mut inner = PreOrderOutboard {
            root: blake3::Hash::from_bytes([0; 32]),
            tree,
            data: Vec::with_capacity(tree.outboard_size() as usize),
        };
        inner.root = bao::outboard(data, tree, &mut inner)?;
        Ok(Self { inner })
    }

    /// Checks outboard bytes from an untrusted source (a mirror's `.obao`
    /// sidecar, a peer) against the blob's hash and size.
    ///
    /// # Errors
    /// When the length is wrong for `size` or any hash pair does not lead to
    /// `hash`.
    pub fn from_untrusted(hash: Hash, size: u64, bytes: Vec<u8>) -> Result<Self, VerifyError> {
        let tree = BaoTree::new(size, block_size());
        if bytes.len() as u64 != tree.outboard_size() {
            return Err(VerifyError::OutboardLength {
                size,
                expected: tree.outboard_size(),
                got: bytes.len() as u64,
            });
        }
        let outboard = Self::trusted(hash, size, bytes);
        let all = ChunkRanges::all();
        let mut covered = 0u64;
        for range in bao::valid_outboard_ranges(&outboard.inner, &all) {
            let range = range.map_err(VerifyError::Io)?;
            if range.start.0 != covered {
                return Err(VerifyError::ProofMismatch);
            }
            covered = range.end.0;
        }
        if covered < tree.chunks().0 {
            return Err(VerifyError::ProofMismatch);
        }
        Ok(outboard)
    }

    /// The pre-order hash pairs: what the store writes to disk and a mirror
    /// serves as a `.obao` sidecar.
    pub fn into_bytes(self) -> Vec<u8> {
        self.inner.data
    }

    /// The pre-order hash pairs, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.inner.data
    }
}

impl<D> Outboard<D> {
    /// Wraps hash pairs that the caller already trusts (the store's own
    /// outboard file, written after the whole blob was verified).
    pub fn trusted(hash: Hash, size: u64, data: D) -> Self {
        let tree = BaoTree::new(size, block_size());
        Self {
            inner: PreOrderOutboard {
                root: hash.into(),
                tree,
                data,
            },
        }
    }

    /// Where the hash pairs are kept (a `Vec<u8>` or a `File`).
    pub fn storage(&self) -> &D {
        &self.inner.data
    }

    /// The blob's hash (the tree's root).
    pub fn hash(&self) -> Hash {
        self.inner.root.into()
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.tree.size()
    }

    /// Number of chunks in the blob.
    pub fn chunks(&self) -> u64 {
        chunk_count(self.size())
    }
}

impl<D: ReadAt> Outboard<D> {
    /// Checks raw bytes of whole chunks starting at chunk `first_chunk`.
    ///
    /// `data` must end on a chunk boundary or at the end of the blob.
    ///
    /// # Errors
    /// [`VerifyError::ChunkMismatch`] names the first chunk that is wrong;
    /// chunks before it were right.
    pub fn verify_chunks(&self, first_chunk: u64, data: &[u8]) -> Result<(), VerifyError> {
        let size = self.size();
        let offset = first_chunk.saturating_mul(CHUNK_SIZE);
        let end = offset.saturating_add(data.len() as u64);
        let whole = first_chunk < self.chunks()
            && !data.is_empty()
            && (end == size || (end < size && end % CHUNK_SIZE == 0));
        if !whole {
            return Err(VerifyError::NotWholeChunks {
                offset,
                len: data.len() as u64,
                size,
            });
        }
        let last_chunk = end.div_ceil(CHUNK_SIZE);
        let wanted = chunk_ranges(first_chunk..last_chunk);
        let window = Window { offset, data };
        let mut next = first_chunk;
        for range in bao::valid_ranges(&self.inner, window, &wanted) {
            let range = range.map_err(VerifyError::Io)?;
            let (start, end) = (
                range.start.0 >> CHUNK_LOG,
                range.end.0.div_ceil(1 << CHUNK_LOG),
            );
            if start != next {
                return Err(VerifyError::ChunkMismatch { chunk: next });
            }
            next = end;
        }
        if next < last_chunk {
            return Err(VerifyError::ChunkMismatch { chunk: next });
        }
        Ok(())
    }

    /// Rehashes `blob` against the tree and returns the chunks whose bytes
    /// are right: how the store rebuilds its records after a crash or finds
    /// bytes that rotted on disk.
    ///
    /// # Errors
    /// When reading the outboard fails.
    pub fn valid_chunks(&self, blob: impl ReadAt) -> Result<ChunkBitmap, VerifyError> {
        let mut valid = ChunkBitmap::new(self.chunks());
        for range in bao::valid_ranges(&self.inner, blob, &ChunkRanges::all()) {
            let range = range.map_err(VerifyError::Io)?;
            let start = range.start.0 >> CHUNK_LOG;
            let end = range.end.0.div_ceil(1 << CHUNK_LOG).min(self.chunks());
            valid.set_range(start..end);
        }
        Ok(valid)
    }

    /// Encodes chunks `chunks` of `blob` together with the proof that ties
    /// them to the root: what a peer sends for a range request.
    ///
    /// Every chunk is checked against the outboard while it is read, so a
    /// torn or flipped byte on disk is never sent.
    ///
    /// # Errors
    /// When reading fails or the stored data no longer matches the tree.
    pub fn encode_chunks(
        &self,
        blob: impl ReadAt,
        chunks: Range<u64>,
    ) -> Result<Vec<u8>, VerifyError> {
        let mut encoded = Vec::new();
        bao::encode_ranges_validated(blob, &self.inner, &chunk_ranges(chunks), &mut encoded)
            .map_err(|error| match error {
                bao_tree::io::EncodeError::LeafHashMismatch(chunk) => VerifyError::ChunkMismatch {
                    chunk: chunk.0 >> CHUNK_LOG,
                },
                bao_tree::io::EncodeError::Io(error) => VerifyError::Io(error),
                _ => VerifyError::ProofMismatch,
            })?;
        Ok(encoded)
    }
}

/// Decodes chunks `chunks` of the blob `hash` (of `size` bytes) from a
/// stream of data and proof, and hands each chunk group to `sink` as
/// `(byte offset, bytes)` only after it was verified against the root.
///
/// # Errors
/// At the first bad or missing piece; everything handed to `sink` before
/// it was right. An error from `sink` is returned as [`VerifyError::Io`].
pub fn decode_chunks(
    hash: Hash,
    size: u64,
    chunks: Range<u64>,
    encoded: impl Read,
    mut sink: impl FnMut(u64, Bytes) -> io::Result<()>,
) -> Result<(), VerifyError> {
    let tree = BaoTree::new(size, block_size());
    let ranges = chunk_ranges(chunks);
    for item in bao::DecodeResponseIter::new(hash.into(), tree, encoded, &ranges) {
        if let BaoContentItem::Leaf(leaf) = item? {
            sink(leaf.offset, leaf.data).map_err(VerifyError::Io)?;
        }
    }
    Ok(())
}

/// Chunk indices (16 KiB) as bao-tree chunk ranges (1 KiB).
fn chunk_ranges(chunks: Range<u64>) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(chunks.start << CHUNK_LOG)..ChunkNum(chunks.end << CHUNK_LOG))
}

/// `data` placed at `offset` of a blob, for checking against the outboard.
/// Reads outside it return nothing, which bao-tree treats as missing.
struct Window<'a> {
    offset: u64,
    data: &'a [u8],
}

impl ReadAt for Window<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(start) = pos.checked_sub(self.offset) else {
            return Ok(0);
        };
        let Ok(start) = usize::try_from(start) else {
            return Ok(0);
        };
        let available = self.data.get(start..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Blob sizes at the edges of the chunk and tree geometry.
    const INTERESTING_SIZES: &[u64] = &[
        0,                  // empty blob: one empty BLAKE3 chunk, no outboard
        1,                  // a single partial chunk
        CHUNK_SIZE - 1,     // just under one chunk
        CHUNK_SIZE,         // exactly one chunk: no parent nodes
        CHUNK_SIZE + 1,     // a second chunk of one byte
        3 * CHUNK_SIZE,     // an unbalanced tree
        8 * CHUNK_SIZE + 7, // deeper tree with a short tail
    ];

    fn blob(size: u64) -> Vec<u8> {
        (0..size)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect()
    }

    #[test]
    fn root_equals_blake3_at_every_interesting_size() {
        for &size in INTERESTING_SIZES {
            let data = blob(size);
            let outboard = Outboard::compute(&data[..], size).unwrap();
            assert_eq!(outboard.hash(), Hash::of(&data), "size {size}");
            assert_eq!(outboard.as_bytes().len() as u64, outboard_size(size));
        }
    }

    #[test]
    fn every_chunk_verifies_alone_and_in_runs() {
        for &size in INTERESTING_SIZES.iter().filter(|&&s| s > 0) {
            let data = blob(size);
            let outboard = Outboard::compute(&data[..], size).unwrap();
            for chunk in 0..chunk_count(size) {
                let bytes = crate::chunks::chunk_bytes(chunk, size);
                outboard
                    .verify_chunks(chunk, &data[bytes.start as usize..bytes.end as usize])
                    .unwrap();
            }
            outboard.verify_chunks(0, &data).unwrap();
        }
    }

    #[test]
    fn partial_chunks_are_refused_as_not_whole() {
        let data = blob(3 * CHUNK_SIZE);
        let outboard = Outboard::compute(&data[..], 3 * CHUNK_SIZE).unwrap();
        let half = &data[..CHUNK_SIZE as usize / 2];
        assert!(matches!(
            outboard.verify_chunks(0, half),
            Err(VerifyError::NotWholeChunks { .. })
        ));
        assert!(matches!(
            outboard.verify_chunks(3, &data[..1]),
            Err(VerifyError::NotWholeChunks { .. })
        ));
    }

    #[test]
    fn a_bad_chunk_in_a_run_is_named() {
        let size = 4 * CHUNK_SIZE;
        let mut data = blob(size);
        let outboard = Outboard::compute(&data[..], size).unwrap();
        data[(2 * CHUNK_SIZE + 5) as usize] ^= 1;
        match outboard.verify_chunks(0, &data) {
            Err(VerifyError::ChunkMismatch { chunk }) => assert_eq!(chunk, 2),
            other => panic!("expected chunk 2 to fail, got {other:?}"),
        }
    }

    #[test]
    fn untrusted_outboard_of_wrong_length_or_root_is_refused() {
        let size = 5 * CHUNK_SIZE;
        let data = blob(size);
        let outboard = Outboard::compute(&data[..], size).unwrap();
        let bytes = outboard.clone().into_bytes();
        assert!(Outboard::from_untrusted(outboard.hash(), size, bytes.clone()).is_ok());
        assert!(Outboard::from_untrusted(Hash::of(b"other"), size, bytes.clone()).is_err());
        assert!(Outboard::from_untrusted(outboard.hash(), size, bytes[1..].to_vec()).is_err());
    }

    #[test]
    fn valid_chunks_finds_exactly_the_damaged_ones() {
        let size = 6 * CHUNK_SIZE + 10;
        let mut data = blob(size);
        let outboard = Outboard::compute(&data[..], size).unwrap();
        assert!(outboard.valid_chunks(&data[..]).unwrap().is_complete());
        data[(CHUNK_SIZE + 3) as usize] ^= 4;
        data[(6 * CHUNK_SIZE + 9) as usize] ^= 4;
        let valid = outboard.valid_chunks(&data[..]).unwrap();
        assert_eq!(valid.missing_runs().collect::<Vec<_>>(), vec![1..2, 6..7]);
    }

    #[test]
    fn decode_refuses_a_proof_for_another_blob() {
        let size = 4 * CHUNK_SIZE;
        let data = blob(size);
        let outboard = Outboard::compute(&data[..], size).unwrap();
        let encoded = outboard.encode_chunks(&data[..], 1..3).unwrap();
        let other = Hash::of(b"another blob");
        let result = decode_chunks(other, size, 1..3, &encoded[..], |_, _| Ok(()));
        assert!(
            matches!(result, Err(VerifyError::ProofMismatch)),
            "{result:?}"
        );
    }

    #[test]
    fn encoding_from_a_torn_file_fails_instead_of_sending() {
        let size = 2 * CHUNK_SIZE;
        let mut data = blob(size);
        let outboard = Outboard::compute(&data[..], size).unwrap();
        data[100] ^= 0x80;
        assert!(outboard.encode_chunks(&data[..], 0..2).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn encoded_ranges_round_trip(size in 1u64..(6 * CHUNK_SIZE), a in 0u64..6, b in 0u64..6) {
            let data = blob(size);
            let outboard = Outboard::compute(&data[..], size).unwrap();
            let chunks = chunk_count(size);
            let start = a % chunks;
            let end = start + 1 + b % (chunks - start);
            let encoded = outboard.encode_chunks(&data[..], start..end).unwrap();
            let mut got = Vec::new();
            decode_chunks(outboard.hash(), size, start..end, &encoded[..], |offset, bytes| {
                got.push((offset, bytes));
                Ok(())
            }).unwrap();
            let first = start * CHUNK_SIZE;
            prop_assert_eq!(got.first().map(|(o, _)| *o), Some(first));
            let joined: Vec<u8> = got.iter().flat_map(|(_, b)| b.iter().copied()).collect();
            let last = (end * CHUNK_SIZE).min(size);
            prop_assert_eq!(&joined[..], &data[first as usize..last as usize]);
        }

        #[test]
        fn any_flipped_bit_in_data_is_rejected(size in 1u64..(5 * CHUNK_SIZE), bit in any::<u64>()) {
            let mut data = blob(size);
            let outboard = Outboard::compute(&data[..], size).unwrap();
            let bit = bit % (size * 8);
            data[(bit / 8) as usize] ^= 1 << (bit % 8);
            prop_assert!(outboard.verify_chunks(0, &data).is_err());
        }

        #[test]
        fn any_flipped_bit_in_an_encoded_range_is_rejected(size in 1u64..(5 * CHUNK_SIZE), bit in any::<u64>()) {
            let data = blob(size);
            let outboard = Outboard::compute(&data[..], size).unwrap();
            let chunks = chunk_count(size);
            let mut encoded = outboard.encode_chunks(&data[..], 0..chunks).unwrap();
            let bit = bit % (encoded.len() as u64 * 8);
            encoded[(bit / 8) as usize] ^= 1 << (bit % 8);
            let result = decode_chunks(outboard.hash(), size, 0..chunks, &encoded[..], |_, _| Ok(()));
            prop_assert!(result.is_err());
        }

        #[test]
        fn any_flipped_bit_in_an_outboard_is_rejected(size in (CHUNK_SIZE + 1)..(6 * CHUNK_SIZE), bit in any::<u64>()) {
            let data = blob(size);
            let outboard = Outboard::compute(&data[..], size).unwrap();
            let hash = outboard.hash();
            let mut bytes = outboard.into_bytes();
            let bit = bit % (bytes.len() as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            prop_assert!(Outboard::from_untrusted(hash, size, bytes).is_err());
        }
    }
}
