//! What a peer sends for a range request is untrusted: decoding arbitrary
//! bytes against the real root must never panic, and every chunk handed
//! out as verified must be the blob's real bytes at that offset.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::chunks::chunk_count;
use p2pmodel_protocol::decode_chunks;

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (a, b, encoded) = input;
    let blob = common::blob();
    let hash = common::outboard(&blob).hash();
    let chunks = chunk_count(common::SIZE);
    let start = u64::from(a) % chunks;
    let end = start + 1 + u64::from(b) % (chunks - start);
    let _ = decode_chunks(hash, common::SIZE, start..end, encoded, |offset, bytes| {
        let offset = offset as usize;
        assert_eq!(
            &blob[offset..offset + bytes.len()],
            &bytes[..],
            "unverified bytes were handed out"
        );
        Ok(())
    });
});
