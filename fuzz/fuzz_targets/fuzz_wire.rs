//! Frames come from any peer: arbitrary bytes must decode to a checked
//! message or an error, never a panic or an allocation past the limits,
//! and whatever decodes must survive encoding and decoding again (the
//! bytes may differ: postcard accepts over-long varints). Changes in a
//! `Held` answer that pass the checks apply to a bitmap of the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::ChunkBitmap;
use p2pmodel_protocol::chunks::chunk_count;
use p2pmodel_protocol::wire::{Held, Request, Response, Run, decode_frame, encode_frame};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Some((request, _))) = decode_frame::<Request>(bytes) {
        let again = encode_frame(&request);
        assert_eq!(decode_frame::<Request>(&again).unwrap().unwrap().0, request);
    }
    if let Ok(Some((response, _))) = decode_frame::<Response>(bytes) {
        let again = encode_frame(&response);
        assert_eq!(
            decode_frame::<Response>(&again).unwrap().unwrap().0,
            response
        );
        if let Response::Held {
            size,
            held: Held::Toggled(runs),
            ..
        } = &response
        {
            let chunks = chunk_count(*size);
            let ranges = Run::ranges(runs, chunks).expect("checked when decoded");
            if chunks <= 1 << 20 {
                let mut bitmap = ChunkBitmap::new(chunks);
                for range in ranges {
                    bitmap.toggle_range(range);
                }
            }
        }
    }
});
