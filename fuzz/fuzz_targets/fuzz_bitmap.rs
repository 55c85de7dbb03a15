//! Bitmaps are read back from the store (and will come from peers): any
//! bytes must parse or fail cleanly, and what parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::ChunkBitmap;

fuzz_target!(|input: (u16, &[u8])| {
    let (chunks, bytes) = input;
    if let Ok(bitmap) = ChunkBitmap::from_bytes(u64::from(chunks), bytes) {
        assert_eq!(bitmap.as_bytes(), bytes);
        let runs: u64 = bitmap.present_runs().map(|run| run.end - run.start).sum();
        assert_eq!(runs, bitmap.count());
    }
});
