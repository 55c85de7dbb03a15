//! Frames as a reader meets them on a peer's stream: arbitrary bytes that
//! arrive in pieces of arbitrary size, holding several frames back to back
//! or a length prefix of any value. The reader must refuse a length over
//! `MAX_FRAME` from the prefix alone (before buffering any body), must
//! wait while a frame is incomplete, and must read exactly the frame's
//! bytes: a frame decodes the same whatever follows it.
//!
//! The first input byte sets the piece size; the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::wire::{
    MAX_FRAME, Message, Request, Response, WireError, decode_frame, frame_len,
};

fuzz_target!(|bytes: &[u8]| {
    let Some((&piece, stream)) = bytes.split_first() else {
        return;
    };
    let piece = usize::from(piece.max(1));
    read_all::<Request>(stream, piece);
    read_all::<Response>(stream, piece);
});

/// Reads frames of `M` from `stream` delivered `piece` bytes at a time,
/// until the stream ends or a frame is refused.
fn read_all<M: Message + PartialEq + std::fmt::Debug>(stream: &[u8], piece: usize) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut rest = stream;
    loop {
        // Consume every complete frame in the buffer.
        loop {
            let len = match frame_len(&buffer) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    assert!(buffer.len() < 4, "a prefix is read once 4 bytes are there");
                    break;
                }
                Err(WireError::TooLarge(len)) => {
                    assert!(len > MAX_FRAME);
                    assert_eq!(
                        frame_len(&buffer[..4]),
                        Err(WireError::TooLarge(len)),
                        "refused from the prefix alone"
                    );
                    assert!(decode_frame::<M>(&buffer).is_err());
                    return;
                }
                Err(other) => panic!("the prefix alone gave {other:?}"),
            };
            assert!(len <= MAX_FRAME);
            if buffer.len() < 4 + len {
                assert_eq!(
                    decode_frame::<M>(&buffer),
                    Ok(None),
                    "an incomplete frame waits"
                );
                break;
            }
            let exact = decode_frame::<M>(&buffer[..4 + len]);
            let with_rest = decode_frame::<M>(&buffer);
            assert_eq!(exact, with_rest, "what follows a frame does not change it");
            match exact {
                Ok(Some((_, used))) => {
                    assert_eq!(used, 4 + len);
                    buffer.drain(..used);
                }
                Ok(None) => unreachable!("the whole frame is there"),
                // A bad frame ends the stream.
                Err(_) => return,
            }
        }
        if rest.is_empty() {
            return;
        }
        let take = piece.min(rest.len());
        buffer.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        // Never more than one frame's worth is buffered before deciding.
        assert!(buffer.len() <= 4 + MAX_FRAME + piece);
    }
}
