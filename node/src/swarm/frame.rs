//! Reading and writing [`wire`](p2pmodel_protocol::wire) frames on a
//! stream, with the length checked before the body is read.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use p2pmodel_protocol::wire::{Message, WireError, decode_frame, encode_frame};

use super::PeerError;

/// Reads one frame of at most `max` body bytes.
pub(crate) async fn read<M: Message>(
    io: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<M, PeerError> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(PeerError::Wire(WireError::TooLarge(len)));
    }
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    io.read_exact(&mut frame[4..]).await?;
    match decode_frame::<M>(&frame)? {
        Some((message, _)) => Ok(message),
        None => Err(PeerError::Wire(WireError::Malformed(
            "a frame shorter than its length".into(),
        ))),
    }
}

/// Writes one frame and flushes it.
pub(crate) async fn write<M: Message>(
    io: &mut (impl AsyncWrite + Unpin),
    message: &M,
) -> Result<(), PeerError> {
    io.write_all(&encode_frame(message)).await?;
    io.flush().await?;
    Ok(())
}
