//! Frames come from any peer: arbitrary bytes must decode to a checked
//! message or an error, never a panic or an allocation past the limits,
//! and whatever decodes must survive encoding and decoding again (the
//! bytes may differ: postcard accepts over-long varints).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::wire::{Request, Response, decode_frame, encode_frame};

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
    }
});
