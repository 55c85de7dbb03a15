//! A fixed blob shared by the verifier targets.

use p2pmodel_protocol::{CHUNK_SIZE, Outboard};

/// Five and a half chunks: a tree with a short last chunk.
pub const SIZE: u64 = 5 * CHUNK_SIZE + CHUNK_SIZE / 2;

pub fn blob() -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect()
}

pub fn outboard(blob: &[u8]) -> Outboard {
    Outboard::compute(blob, SIZE).expect("hashing memory cannot fail")
}
