//! The swarm over QUIC. With the `quic` feature: a peer fetches a blob
//! from a seed over QUIC alone (neither listens on TCP). Without it: QUIC
//! addresses are refused with an error that says why, never a panic.

use libp2p::Multiaddr;
use p2pmodel_node::swarm::{Swarm, SwarmConfig};
use p2pmodel_store::Store;

fn quic_loopback() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

#[cfg(feature = "quic")]
mod with_quic {
    use super::*;
    use libp2p::multiaddr::Protocol;
    use p2pmodel_node::{FetchRequest, NodeBuilder};
    use testkit::listen_addr;

    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn a_peer_fetches_a_blob_from_a_seed_over_quic_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = testkit::generate(6 * MIB + 77, 11);
        let seed = NodeBuilder::new(dir.path().join("seed"))
            .swarm(SwarmConfig::listen([quic_loopback()]))
            .spawn()
            .unwrap();
        let hash = seed.store().import_bytes(&data).unwrap();
        let addr = listen_addr(seed.swarm().unwrap()).await;
        assert!(
            addr.iter().any(|p| p == Protocol::QuicV1),
            "the seed listens on QUIC only: {addr}"
        );
        assert!(
            !addr.iter().any(|p| matches!(p, Protocol::Tcp(_))),
            "{addr}"
        );
        let leech = NodeBuilder::new(dir.path().join("leech"))
            .swarm(SwarmConfig::listen([quic_loopback()]))
            .spawn()
            .unwrap();

        let handle = leech
            .fetch(FetchRequest::hash(hash).with_peer(addr))
            .unwrap();
        let progress = handle.progress();
        let fetched = handle.await.unwrap();
        assert_eq!(testkit::b3sum(fetched.path()), hash.to_hex());
        let progress = progress.borrow().clone();
        let from_seed = format!("peer {}", seed.swarm().unwrap().peer_id());
        let served = progress
            .sources
            .iter()
            .find(|s| s.source == from_seed)
            .map_or(0, |s| s.bytes);
        assert_eq!(served, data.len() as u64, "{progress:?}");
        assert_eq!(
            leech.swarm().unwrap().connected_peers().await,
            vec![seed.swarm().unwrap().peer_id()]
        );
    }

    #[tokio::test]
    async fn quic_listen_with_the_feature_binds_a_udp_port() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("node")).unwrap();
        let swarm = Swarm::spawn(store, SwarmConfig::listen([quic_loopback()])).unwrap();
        let addr = listen_addr(&swarm).await;
        let port = addr.iter().find_map(|p| match p {
            Protocol::Udp(port) => Some(port),
            _ => None,
        });
        assert!(port.is_some_and(|port| port != 0), "{addr}");
        swarm.shutdown().await;
    }
}

#[cfg(not(feature = "quic"))]
mod without_quic {
    use super::*;
    use p2pmodel_node::swarm::PeerError;

    #[tokio::test]
    async fn a_quic_listen_address_is_refused_without_the_quic_feature() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("node")).unwrap();
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let error = Swarm::spawn(store, SwarmConfig::listen([tcp, quic_loopback()]))
            .expect_err("a QUIC address without the feature");
        assert!(matches!(&error, PeerError::NoQuic(addr) if *addr == quic_loopback()));
        let message = error.to_string();
        assert!(message.contains("/udp/0/quic-v1"), "{message}");
        assert!(message.contains("--features quic"), "{message}");
    }

    #[tokio::test]
    async fn dialing_a_quic_address_is_refused_without_the_quic_feature() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("node")).unwrap();
        let swarm = Swarm::spawn(store, SwarmConfig::default()).unwrap();
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let error = swarm.dial(addr.clone()).await.expect_err("no QUIC here");
        assert!(
            matches!(&error, PeerError::NoQuic(a) if *a == addr),
            "{error}"
        );
        swarm.shutdown().await;
    }
}
