//! One direction of a connection ([`Pipe`]), and the stream that joins two
//! of them into a connection's end ([`SimStream`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::{HostId, Network, SEGMENT};

/// Bytes from one host to another, in order, each segment readable once
/// the network says it has arrived.
pub(super) struct Pipe {
    net: Network,
    from: HostId,
    to: HostId,
    /// The most bytes written and not yet read.
    window: u64,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    /// Written and not yet read, in arrival order.
    segments: VecDeque<Segment>,
    /// Bytes in `segments` not yet read.
    queued: u64,
    /// When the last segment arrives (later ones wait for it).
    last_arrival: Option<Instant>,
    /// The writer closed: the end of the stream once `segments` are read.
    finished: bool,
    /// The reader is gone: writes fail.
    abandoned: bool,
    /// Cut by a crash: both ends fail.
    reset: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

struct Segment {
    arrives: Instant,
    data: Vec<u8>,
    /// Bytes of `data` already read.
    read: usize,
}

impl Pipe {
    pub(super) fn new(net: Network, from: HostId, to: HostId, window: u64) -> Self {
        Self {
            net,
            from,
            to,
            window,
            state: Mutex::default(),
        }
    }

    /// Cuts the pipe: both ends fail from now on.
    pub(super) fn reset(&self) {
        let mut state = self.lock();
        state.reset = true;
        state.segments.clear();
        wake(&mut state.reader);
        wake(&mut state.writer);
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        timer: &mut Option<Pin<Box<Sleep>>>,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        loop {
            if state.reset {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            let now = Instant::now();
            let mut copied = 0;
            while copied < buf.len() {
                let Some(segment) = state.segments.front_mut() else {
                    break;
                };
                if segment.arrives > now {
                    break;
                }
                let take = (segment.data.len() - segment.read).min(buf.len() - copied);
                buf[copied..copied + take]
                    .copy_from_slice(&segment.data[segment.read..segment.read + take]);
                segment.read += take;
                copied += take;
                if segment.read == segment.data.len() {
                    state.segments.pop_front();
                }
            }
            if copied > 0 || buf.is_empty() {
                state.queued -= copied as u64;
                wake(&mut state.writer);
                return Poll::Ready(Ok(copied));
            }
            state.reader = Some(cx.waker().clone());
            let Some(next) = state.segments.front().map(|segment| segment.arrives) else {
                return if state.finished {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            };
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            sleep.as_mut().reset(next);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        if state.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if state.abandoned || state.finished {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if state.queued >= self.window {
            state.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let room = (self.window - state.queued) as usize;
        let bytes = buf.len().min(SEGMENT).min(room);
        let Some(arrives) = self.net.send(self.from, self.to, bytes) else {
            state.reset = true;
            wake(&mut state.reader);
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        };
        let arrives = state.last_arrival.map_or(arrives, |last| last.max(arrives));
        state.last_arrival = Some(arrives);
        state.segments.push_back(Segment {
            arrives,
            data: buf[..bytes].to_vec(),
            read: 0,
        });
        state.queued += bytes as u64;
        wake(&mut state.reader);
        Poll::Ready(Ok(bytes))
    }

    /// The writer is done: the reader sees the end after the last segment.
    fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        wake(&mut state.reader);
    }

    /// The reader is gone.
    fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        state.segments.clear();
        state.queued = 0;
        wake(&mut state.writer);
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// One end of a simulated connection: reads what the other end wrote, as
/// the network delivers it. Dropping it closes both directions.
pub struct SimStream {
    outgoing: Arc<Pipe>,
    incoming: Arc<Pipe>,
    read_timer: Option<Pin<Box<Sleep>>>,
}

impl SimStream {
    pub(super) fn new(outgoing: Arc<Pipe>, incoming: Arc<Pipe>) -> Self {
        Self {
            outgoing,
            incoming,
            read_timer: None,
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.incoming.poll_read(cx, buf, &mut this.read_timer)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outgoing.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outgoing.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        self.outgoing.finish();
        self.incoming.abandon();
    }
}
