//! The chunk exchange between peers: what a getter asks a provider and
//! what the provider answers, and how each message is framed.
//!
//! Participants: a *getter* wants chunks of a blob; a *provider* holds
//! verified chunks (of complete blobs or of blobs it is still fetching).
//! Each request runs on its own stream: the getter writes one
//! [`Request`] frame, the provider answers with one [`Response`] frame and
//! closes. Goals: every length is bounded before anything is allocated,
//! every byte of data arrives with its proof (see [`crate::verified`]), and
//! a provider can refuse politely. Non-goals: discovery and choosing peers
//! (the swarm's), and transport encryption (the transport's).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a
//! postcard-encoded message whose first field is [`WIRE_VERSION`].
//! Decoding refuses a length over [`MAX_FRAME`] before reading the body,
//! and checks every message against the limits below.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::chunks::{CHUNK_SIZE, chunk_count};

/// Version written in every frame.
pub const WIRE_VERSION: u16 = 1;
/// Most chunks one `Get` may ask for (4 MiB of data).
pub const MAX_CHUNKS_PER_GET: u64 = 256;
/// Most bytes of outboard one `GetOutboard` may ask for.
pub const MAX_OUTBOARD_PER_GET: u64 = 4 << 20;
/// Largest frame body: a full `Get` answer (data plus its proof) and slack.
pub const MAX_FRAME: usize = (MAX_CHUNKS_PER_GET * CHUNK_SIZE) as usize + (64 << 10);
/// Largest blob a peer may describe (1 PiB): keeps bitmap sizes bounded.
pub const MAX_BLOB_SIZE: u64 = 1 << 50;

/// What a getter asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Which chunks of `hash` do you hold?
    Have {
        /// The blob.
        hash: Hash,
    },
    /// Send chunks `start..end` of `hash` with their proof.
    Get {
        /// The blob.
        hash: Hash,
        /// First chunk.
        start: u64,
        /// One past the last chunk; at most [`MAX_CHUNKS_PER_GET`] after `start`.
        end: u64,
    },
    /// Send bytes `offset..offset + len` of the outboard of `hash`.
    GetOutboard {
        /// The blob.
        hash: Hash,
        /// First byte of the outboard.
        offset: u64,
        /// Bytes wanted; at most [`MAX_OUTBOARD_PER_GET`].
        len: u64,
    },
    /// Which chunks of `hash` do you hold, as changes since your answer
    /// numbered `since` to me (0: none yet)? Answered with
    /// [`Response::Held`]; a provider that no longer knows that answer
    /// sends the whole bitmap.
    HaveChanges {
        /// The blob.
        hash: Hash,
        /// The number of the last [`Response::Held`] the getter applied.
        since: u64,
    },
}

/// What a provider answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The chunks held, as a [`crate::ChunkBitmap`] in its byte form.
    Have {
        /// Size of the blob.
        size: u64,
        /// One bit per chunk.
        #[serde(with = "serde_bytes")]
        bitmap: Vec<u8>,
    },
    /// The chunks asked for, bao-encoded with their proof (decode with
    /// [`crate::decode_chunks`]).
    Data {
        /// Size of the blob (the tree's shape depends on it).
        size: u64,
        /// Parents and chunk bytes in pre-order.
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
    },
    /// Outboard bytes (check the whole outboard with
    /// [`crate::Outboard::from_untrusted`] once assembled).
    Outboard {
        /// Size of the blob.
        size: u64,
        /// The bytes asked for.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The provider will not answer this request.
    Refused(Refusal),
    /// The chunks held, answering [`Request::HaveChanges`]: the whole
    /// bitmap, or what changed since the answer the getter named.
    Held {
        /// Size of the blob.
        size: u64,
        /// This answer's number, to name in the next `HaveChanges`.
        answer: u64,
        /// The chunks held.
        held: Held,
    },
}

/// The chunks a provider holds, in a [`Response::Held`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Held {
    /// One bit per chunk, as a [`crate::ChunkBitmap`] in its byte form.
    Whole(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The runs of chunks that changed (gained, or no longer shown) since
    /// the answer the getter named: toggle them in its copy of that
    /// answer. Runs are in order and apart.
    Toggled(Vec<Run>),
}

/// A run of chunks in [`Held::Toggled`]: it starts `skip` chunks after
/// the end of the run before it (after chunk 0 for the first) and is
/// `len` chunks long. Small numbers, so small on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Chunks between the previous run's end and this run's start.
    pub skip: u64,
    /// Chunks in this run; at least 1.
    pub len: u64,
}

impl Run {
    /// The runs for `ranges` (in order and apart).
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Run> {
        let mut end = 0;
        ranges
            .into_iter()
            .map(|range| {
                let run = Run {
                    skip: range.start - end,
                    len: range.end - range.start,
                };
                end = range.end;
                run
            })
            .collect()
    }

    /// The chunk ranges of `runs`, in order; `None` if a run is empty or
    /// they reach past `chunks`.
    pub fn ranges(runs: &[Run], chunks: u64) -> Option<Vec<Range<u64>>> {
        let mut end = 0u64;
        runs.iter()
            .map(|run| {
                let start = end.checked_add(run.skip)?;
                end = start.checked_add(run.len)?;
                (run.len > 0 && end <= chunks).then_some(start..end)
            })
            .collect()
    }
}

/// Why a provider refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// It does not hold the blob, or not those chunks.
    NotFound,
    /// Too many requests now; ask again later or elsewhere.
    Busy,
    /// The request is past a limit or malformed.
    Invalid,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// A version this build does not speak.
    #[error("wire version {0} is not supported (this build speaks {WIRE_VERSION})")]
    Version(u16),
    /// The body is not a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message breaks a limit or makes no sense.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Framed<T> {
    version: u16,
    message: T,
}

/// A message that can be framed: requests and responses.
pub trait Message: Serialize + for<'de> Deserialize<'de> + Sized {
    /// Checks the limits that decoding alone cannot.
    ///
    /// # Errors
    /// [`WireError::Invalid`] naming the broken limit.
    fn check(&self) -> Result<(), WireError>;
}

impl Message for Request {
    fn check(&self) -> Result<(), WireError> {
        match *self {
            Request::Have { .. } | Request::HaveChanges { .. } => Ok(()),
            Request::Get { start, end, .. } => {
                if start >= end {
                    return Err(WireError::Invalid("an empty chunk range"));
                }
                if end - start > MAX_CHUNKS_PER_GET {
                    return Err(WireError::Invalid(
                        "more chunks than one request may ask for",
                    ));
                }
                if end > chunk_count(MAX_BLOB_SIZE) {
                    return Err(WireError::Invalid("chunks past the largest blob"));
                }
                Ok(())
            }
            Request::GetOutboard { len, offset, .. } => {
                if len == 0 || len > MAX_OUTBOARD_PER_GET || offset.checked_add(len).is_none() {
                    return Err(WireError::Invalid(
                        "an outboard range that is empty or too long",
                    ));
                }
                Ok(())
            }
        }
    }
}

impl Message for Response {
    fn check(&self) -> Result<(), WireError> {
        let size_ok = |size: u64| {
            if size <= MAX_BLOB_SIZE {
                Ok(())
            } else {
                Err(WireError::Invalid("a blob larger than 1 PiB"))
            }
        };
        match self {
            Response::Have { size, bitmap }
            | Response::Held {
                size,
                held: Held::Whole(bitmap),
                ..
            } => {
                size_ok(*size)?;
                if bitmap.len() as u64 != chunk_count(*size).div_ceil(8) {
                    return Err(WireError::Invalid(
                        "a bitmap whose length does not fit the size",
                    ));
                }
                Ok(())
            }
            Response::Held {
                size,
                held: Held::Toggled(runs),
                ..
            } => {
                size_ok(*size)?;
                if Run::ranges(runs, chunk_count(*size)).is_none() {
                    return Err(WireError::Invalid(
                        "changed runs that are empty or past the end",
                    ));
                }
                Ok(())
            }
            Response::Data { size, .. } | Response::Outboard { size, .. } => size_ok(*size),
            Response::Refused(_) => Ok(()),
        }
    }
}

impl Request {
    /// The chunk range of a `Get`.
    pub fn chunks(&self) -> Option<Range<u64>> {
        match *self {
            Request::Get { start, end, .. } => Some(start..end),
            _ => None,
        }
    }
}

/// Frames a message: 4-byte big-endian length, then the versioned body.
///
/// # Panics
/// If the body would exceed [`MAX_FRAME`] (a sender bug: limits are
/// checked before anything is encoded).
pub fn encode_frame<M: Message>(message: &M) -> Vec<u8> {
    // The body is written after a placeholder for its length, so that a
    // large answer is copied once.
    let mut frame = postcard::serialize_with_flavor(
        &Framed {
            version: WIRE_VERSION,
            message,
        },
        FrameBuffer(vec![0u8; 4]),
    )
    .expect("encoding to memory cannot fail");
    let body_len = frame.len() - 4;
    assert!(
        body_len <= MAX_FRAME,
        "a frame of {body_len} bytes exceeds the limit"
    );
    frame[..4].copy_from_slice(
        &u32::try_from(body_len)
            .expect("bounded by MAX_FRAME")
            .to_be_bytes(),
    );
    frame
}

/// A postcard output that appends to a vector with one copy per slice
/// (postcard's own `to_extend` goes byte by byte through `Extend`, which
/// showed in profiles of 1 MiB answers).
struct FrameBuffer(Vec<u8>);

impl postcard::ser_flavors::Flavor for FrameBuffer {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Reads the length prefix of a frame: `Ok(None)` until 4 bytes are there.
///
/// # Errors
/// [`WireError::TooLarge`] before any body is read.
pub fn frame_len(buffer: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buffer.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(Some(len))
}

/// Decodes one frame from the front of `buffer`: `Ok(None)` while it is
/// incomplete, else the message and the bytes it used.
///
/// # Errors
/// Any [`WireError`]; the stream should then be dropped.
pub fn decode_frame<M: Message>(buffer: &[u8]) -> Result<Option<(M, usize)>, WireError> {
    let Some(len) = frame_len(buffer)? else {
        return Ok(None);
    };
    let Some(body) = buffer.get(4..4 + len) else {
        return Ok(None);
    };
    let version: u16 = postcard::take_from_bytes(body)
        .map_err(|e| WireError::Malformed(e.to_string()))?
        .0;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (framed, rest): (Framed<M>, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    framed.message.check()?;
    Ok(Some((framed.message, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bytes of a `Get` for chunks 2..5 of the hash of "p2pmodel",
    /// field by field.
    #[test]
    fn get_request_wire_format() {
        let hash = Hash::of(b"p2pmodel");
        let frame = encode_frame(&Request::Get {
            hash,
            start: 2,
            end: 5,
        });
        let mut expected = vec![0, 0, 0, 36]; // body length, big-endian
        expected.push(1); // version 1 (varint)
        expected.push(1); // Request::Get is variant 1
        expected.extend_from_slice(hash.as_bytes()); // the hash, 32 raw bytes
        expected.push(2); // start (varint)
        expected.push(5); // end (varint)
        assert_eq!(frame, expected);
    }

    #[test]
    fn refusal_wire_format() {
        let frame = encode_frame(&Response::Refused(Refusal::Busy));
        // length 3; version 1; Response::Refused = variant 3; Refusal::Busy = 1
        assert_eq!(frame, [0, 0, 0, 3, 1, 3, 1]);
    }

    #[test]
    fn changes_travel_as_runs_relative_to_the_previous_one() {
        let runs = Run::from_ranges([3..5, 9..10]);
        assert_eq!(runs, [Run { skip: 3, len: 2 }, Run { skip: 4, len: 1 }]);
        assert_eq!(Run::ranges(&runs, 10), Some(vec![3..5, 9..10]));
        assert_eq!(Run::ranges(&runs, 9), None, "past the end");
        let frame = encode_frame(&Response::Held {
            size: 10 * CHUNK_SIZE,
            answer: 7,
            held: Held::Toggled(runs),
        });
        // length 12; version 1; Response::Held = variant 4; size 163840 as
        // a varint; answer 7; Held::Toggled = variant 1; 2 runs: (3, 2), (4, 1)
        assert_eq!(
            frame,
            [0, 0, 0, 12, 1, 4, 0x80, 0x80, 0x0a, 7, 1, 2, 3, 2, 4, 1]
        );
    }

    #[test]
    fn changes_past_the_end_or_empty_are_refused() {
        for runs in [
            vec![Run { skip: 9, len: 2 }],
            vec![Run { skip: 1, len: 0 }],
            vec![Run {
                skip: u64::MAX,
                len: 2,
            }],
        ] {
            let answer = Response::Held {
                size: 10 * CHUNK_SIZE,
                answer: 1,
                held: Held::Toggled(runs.clone()),
            };
            assert!(answer.check().is_err(), "{runs:?}");
        }
        let short = Response::Held {
            size: 10 * CHUNK_SIZE,
            answer: 1,
            held: Held::Whole(vec![0]),
        };
        assert!(short.check().is_err());
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        let frame = encode_frame(&Request::Have {
            hash: Hash::of(b"x"),
        });
        for cut in 0..frame.len() {
            assert_eq!(
                decode_frame::<Request>(&frame[..cut]),
                Ok(None),
                "cut at {cut}"
            );
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (_, used) = decode_frame::<Request>(&two).unwrap().unwrap();
        assert_eq!(used, frame.len());
    }

    #[test]
    fn limits_are_enforced_before_and_after_decoding() {
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_frame::<Request>(&huge),
            Err(WireError::TooLarge(MAX_FRAME + 1))
        );
        let hash = Hash::of(b"x");
        let too_many = Request::Get {
            hash,
            start: 0,
            end: MAX_CHUNKS_PER_GET + 1,
        };
        let body = postcard::to_stdvec(&Framed {
            version: WIRE_VERSION,
            message: &too_many,
        })
        .unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        assert!(matches!(
            decode_frame::<Request>(&frame),
            Err(WireError::Invalid(_))
        ));
        let empty = Request::Get {
            hash,
            start: 3,
            end: 3,
        };
        assert!(empty.check().is_err());
        let bad_bitmap = Response::Have {
            size: 10 * CHUNK_SIZE,
            bitmap: vec![0],
        };
        assert!(bad_bitmap.check().is_err());
    }

    #[test]
    fn other_versions_are_refused() {
        let body = postcard::to_stdvec(&Framed {
            version: 2,
            message: Request::Have {
                hash: Hash::of(b"x"),
            },
        })
        .unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        assert_eq!(decode_frame::<Request>(&frame), Err(WireError::Version(2)));
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let hash = any::<[u8; 32]>().prop_map(Hash::from_bytes);
        prop_oneof![
            hash.clone().prop_map(|hash| Request::Have { hash }),
            (hash.clone(), 0u64..1 << 30, 1u64..=MAX_CHUNKS_PER_GET).prop_map(
                |(hash, start, n)| Request::Get {
                    hash,
                    start,
                    end: start + n
                }
            ),
            (hash.clone(), any::<u32>(), 1u64..=MAX_OUTBOARD_PER_GET).prop_map(
                |(hash, offset, len)| {
                    Request::GetOutboard {
                        hash,
                        offset: u64::from(offset),
                        len,
                    }
                }
            ),
            (hash, any::<u64>()).prop_map(|(hash, since)| Request::HaveChanges { hash, since }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        prop_oneof![
            (0u64..1 << 24).prop_map(|size| Response::Have {
                size,
                bitmap: vec![0xaa; chunk_count(size).div_ceil(8) as usize]
            }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(
                |(size, encoded)| Response::Data {
                    size: size % MAX_BLOB_SIZE,
                    encoded
                }
            ),
            Just(Response::Refused(Refusal::NotFound)),
            (0u64..1 << 24, any::<u64>()).prop_map(|(size, answer)| Response::Held {
                size,
                answer,
                held: Held::Whole(vec![0x55; chunk_count(size).div_ceil(8) as usize]),
            }),
            (
                any::<u64>(),
                proptest::collection::vec((0u64..100, 1u64..100), 0..20)
            )
                .prop_map(|(answer, runs)| Response::Held {
                    size: 1 << 40,
                    answer,
                    held: Held::Toggled(
                        runs.into_iter()
                            .map(|(skip, len)| Run { skip, len })
                            .collect()
                    ),
                }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in arb_request()) {
            let frame = encode_frame(&request);
            prop_assert_eq!(decode_frame::<Request>(&frame).unwrap(), Some((request, frame.len())));
        }

        #[test]
        fn responses_round_trip(response in arb_response()) {
            let frame = encode_frame(&response);
            prop_assert_eq!(decode_frame::<Response>(&frame).unwrap(), Some((response, frame.len())));
        }

        #[test]
        fn byte_fields_travel_as_a_length_and_the_raw_bytes(encoded in proptest::collection::vec(any::<u8>(), 0..600)) {
            // The same bytes postcard writes for a sequence of u8, so nodes
            // that encode either way understand each other.
            let frame = encode_frame(&Response::Data { size: 7, encoded: encoded.clone() });
            let as_sequence = postcard::to_stdvec(&encoded).unwrap();
            prop_assert!(frame.ends_with(&as_sequence));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Response>(&bytes);
        }
    }
}
