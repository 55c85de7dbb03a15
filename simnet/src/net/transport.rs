//! A libp2p transport over the simulated network. Addresses are
//! `/memory/PORT`; a dial takes one round trip, then yields a
//! [`SimStream`] that the swarm secures and multiplexes as it would a TCP
//! socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::future::{BoxFuture, Ready};
use futures::{FutureExt, future};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use tokio::sync::mpsc;

use super::{HostId, Network, SimStream};

/// One host's transport. Listening ports are shared by the whole network.
pub struct SimTransport {
    net: Network,
    host: HostId,
    listeners: Vec<Listener>,
    events: VecDeque<TransportEvent<Ready<std::io::Result<SimStream>>, std::io::Error>>,
    waker: Option<Waker>,
}

struct Listener {
    id: ListenerId,
    port: u64,
    incoming: mpsc::UnboundedReceiver<(SimStream, HostId)>,
}

impl SimTransport {
    pub(super) fn new(net: Network, host: HostId) -> Self {
        Self {
            net,
            host,
            listeners: Vec::new(),
            events: VecDeque::new(),
            waker: None,
        }
    }

    fn push(&mut self, event: TransportEvent<Ready<std::io::Result<SimStream>>, std::io::Error>) {
        self.events.push_back(event);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The port of `/memory/PORT`, and nothing else.
fn memory_port(addr: &Multiaddr) -> Option<u64> {
    let mut parts = addr.iter();
    let port = match parts.next()? {
        Protocol::Memory(port) => port,
        _ => return None,
    };
    match parts.next() {
        None | Some(Protocol::P2p(_)) => Some(port),
        Some(_) => None,
    }
}

/// The address of `port`.
pub fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

impl Transport for SimTransport {
    type Output = SimStream;
    type Error = std::io::Error;
    type ListenerUpgrade = Ready<std::io::Result<SimStream>>;
    type Dial = BoxFuture<'static, std::io::Result<SimStream>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(port) = memory_port(&addr).filter(|&port| port != 0) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let (accept, incoming) = mpsc::unbounded_channel();
        if !self.net.listen(self.host, port, accept) {
            return Err(TransportError::Other(std::io::ErrorKind::AddrInUse.into()));
        }
        self.listeners.push(Listener { id, port, incoming });
        self.push(TransportEvent::NewAddress {
            listener_id: id,
            listen_addr: memory_addr(port),
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(index) = self.listeners.iter().position(|listener| listener.id == id) else {
            return false;
        };
        let listener = self.listeners.remove(index);
        self.net.unlisten(listener.port);
        self.push(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(port) = memory_port(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let (net, host) = (self.net.clone(), self.host);
        Ok(async move {
            let round_trip = net.round_trip_to_port(host, port)?;
            tokio::time::sleep(round_trip).await;
            net.connect(host, port)
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        for listener in &mut self.listeners {
            if let Poll::Ready(Some((stream, dialer))) = listener.incoming.poll_recv(cx) {
                return Poll::Ready(TransportEvent::Incoming {
                    listener_id: listener.id,
                    upgrade: future::ready(Ok(stream)),
                    local_addr: memory_addr(listener.port),
                    send_back_addr: memory_addr(dialer_port(dialer)),
                });
            }
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The port a dialer is seen from (not one it listens on).
fn dialer_port(host: HostId) -> u64 {
    1_000_000 + host.0 as u64
}
