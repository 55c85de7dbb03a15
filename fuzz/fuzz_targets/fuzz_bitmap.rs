//! Bitmaps are read back from the store and come from peers: any bytes
//! must parse or fail cleanly, and what parses round-trips. Toggling the
//! runs where two bitmaps differ turns one into the other (how a peer's
//! changes are sent and applied).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::ChunkBitmap;

fuzz_target!(|input: (u16, &[u8], &[u8])| {
    let (chunks, bytes, other) = input;
    let Ok(bitmap) = ChunkBitmap::from_bytes(u64::from(chunks), bytes) else {
        return;
    };
    assert_eq!(bitmap.as_bytes(), bytes);
    let runs: u64 = bitmap.present_runs().map(|run| run.end - run.start).sum();
    assert_eq!(runs, bitmap.count());
    if let Ok(other) = ChunkBitmap::from_bytes(u64::from(chunks), other) {
        let mut turned = other.clone();
        for run in bitmap.differing_runs(&other) {
            turned.toggle_range(run);
        }
        assert_eq!(turned, bitmap);
    }
});
