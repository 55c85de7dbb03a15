//! The DHT: Kademlia on p2pmodel's own protocol name ([`KAD_PROTOCOL`]),
//! so that it never mixes with the public IPFS DHT. It finds peers beyond
//! the ones dialed with `--peer` or found by mDNS; chunks still move over
//! the chunk protocol.
//!
//! - Every node of the swarm runs Kademlia: one that listens answers
//!   queries and keeps records for others (server mode, set explicitly: on
//!   a LAN a node never gets a confirmed external address, and would stay a
//!   client); one that only dials out is a client.
//! - A node given bootstrap peers
//!   ([`SwarmConfig::with_bootstrap`](super::SwarmConfig::with_bootstrap))
//!   also uses the DHT. Once it has joined, it announces itself as a provider of
//!   every complete blob in its store, and of each blob whose verified
//!   download it starts (a partial peer serves its verified chunks). It
//!   puts a record `SHA-256 -> BLAKE3` for each alias it knows whose blob
//!   it holds. Kademlia republishes both on its own schedule.
//! - A fetch asks the DHT for providers of the hash, dials them, and uses
//!   them as it uses any connected peer; a fetch of a URL with a SHA-256
//!   asks the DHT which BLAKE3 hash that SHA-256 names.
//!
//! Announcements are per blob (a model is a blob too), never per chunk.
//! Records are untrusted: a provider is asked what it holds and every
//! chunk it sends is checked against the hash; a blob found through an
//! alias record is checked against the SHA-256 before it is used.
//!
//! Identify feeds the listen addresses of peers that speak Kademlia into
//! the routing table (an inbound connection alone says nothing about where
//! the peer listens). The swarm's event loop owns the `Dht` state and
//! calls it for commands and events.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::kad::{
    self, GetProvidersOk, GetRecordOk, Mode, QueryId, QueryResult, Quorum, Record, RecordKey,
};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify};
use p2pmodel_protocol::{Hash, Sha256};
use p2pmodel_store::{BlobState, Store};
use tokio::sync::oneshot;

use super::{PeerError, Swarm};

/// The Kademlia protocol of p2pmodel's DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmodel/kad/1");
/// Longest wait for the DHT to name providers of a blob, or the blob an
/// alias names, before a fetch goes on without (to its mirrors).
pub const LOOKUP_WAIT: Duration = Duration::from_secs(5);
/// Pause between lookups of a fetch that has no other source.
const LOOKUP_RETRY: Duration = Duration::from_millis(500);
/// Longest run of one query (the default of 60 s outlives any fetch's wait).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Provider keys and records one node keeps (the default, 1,024, is less
/// than the files of a few large models).
const MAX_KEYS: usize = 1 << 16;
/// Prefix of a blob's provider key.
const BLOB_KEY: &[u8] = b"/p2pmodel/blake3/";
/// Prefix of an alias record's key.
const ALIAS_KEY: &[u8] = b"/p2pmodel/sha256/";

/// The Kademlia behaviour of a node: a server when it listens.
pub(super) fn behaviour(me: PeerId, listens: bool) -> kad::Behaviour<MemoryStore> {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_query_timeout(QUERY_TIMEOUT);
    let store = MemoryStore::with_config(
        me,
        MemoryStoreConfig {
            max_records: MAX_KEYS,
            max_provided_keys: MAX_KEYS,
            ..MemoryStoreConfig::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(me, store, config);
    kad.set_mode(Some(if listens { Mode::Server } else { Mode::Client }));
    kad
}

/// The peer id of each bootstrap address.
///
/// # Errors
/// [`PeerError::Bootstrap`] for an address that does not end in
/// `/p2p/PEER_ID`.
pub fn bootstrap_peers(addrs: &[Multiaddr]) -> Result<Vec<(PeerId, Multiaddr)>, PeerError> {
    addrs
        .iter()
        .map(|addr| match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Ok((peer, addr.clone())),
            _ => Err(PeerError::Bootstrap(addr.clone())),
        })
        .collect()
}

/// The DHT key under which providers of the blob `hash` are announced.
fn blob_key(hash: Hash) -> RecordKey {
    RecordKey::new(&[BLOB_KEY, hash.as_bytes().as_slice()].concat())
}

/// The DHT key of the record naming the BLAKE3 hash of `sha256`'s bytes.
fn alias_key(sha256: Sha256) -> RecordKey {
    RecordKey::new(&[ALIAS_KEY, sha256.0.as_slice()].concat())
}

/// What [`Swarm`] asks the event loop about the DHT.
pub(super) enum Command {
    Provide(Hash),
    FindProviders(Hash, oneshot::Sender<Vec<PeerId>>),
    PutAlias(Sha256, Hash),
    ResolveAlias(Sha256, oneshot::Sender<Vec<Hash>>),
}

impl Swarm {
    /// True if and only if this node uses the DHT: it was given bootstrap
    /// peers ([`SwarmConfig::with_bootstrap`](super::SwarmConfig::with_bootstrap)).
    pub fn uses_dht(&self) -> bool {
        self.dht
    }

    /// Announces this node as a provider of the blob `hash` (complete or
    /// with verified chunks on the way). Does nothing unless the node uses
    /// the DHT and listens.
    pub async fn provide(&self, hash: Hash) {
        if self.dht {
            let _ = self.send(super::Command::Dht(Command::Provide(hash))).await;
        }
    }

    /// Asks the DHT for providers of the blob `hash` and dials them; returns
    /// those it is connected to (more may connect afterwards, and a
    /// download picks them up). Waits at most [`LOOKUP_WAIT`]: with
    /// `patient`, lookups repeat until a provider connects or that time is
    /// up (for a fetch with no other source); without, one lookup is made
    /// and its answer taken. Empty unless the node uses the DHT.
    pub async fn find_providers(&self, hash: Hash, patient: bool) -> Vec<PeerId> {
        if !self.dht {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + LOOKUP_WAIT;
        loop {
            let (reply, answer) = oneshot::channel();
            if self
                .send(super::Command::Dht(Command::FindProviders(hash, reply)))
                .await
                .is_err()
            {
                return Vec::new();
            }
            let found = tokio::time::timeout_at(deadline, answer)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let now = tokio::time::Instant::now();
            if !found.is_empty() || !patient || now + LOOKUP_RETRY >= deadline {
                tracing::debug!(%hash, providers = found.len(), "DHT lookup");
                return found;
            }
            tokio::time::sleep(LOOKUP_RETRY).await;
        }
    }

    /// Puts the record "`sha256` names the blob `hash`" into the DHT. Does
    /// nothing unless the node uses the DHT and listens.
    pub async fn announce_alias(&self, sha256: Sha256, hash: Hash) {
        if self.dht {
            let _ = self
                .send(super::Command::Dht(Command::PutAlias(sha256, hash)))
                .await;
        }
    }

    /// The BLAKE3 hashes the DHT's records give for the bytes whose SHA-256
    /// is `sha256`, waiting at most [`LOOKUP_WAIT`]. The answer is a claim
    /// of other peers: check what it names against `sha256` before use.
    /// Empty unless the node uses the DHT.
    pub async fn resolve_alias(&self, sha256: Sha256) -> Vec<Hash> {
        if !self.dht {
            return Vec::new();
        }
        let (reply, answer) = oneshot::channel();
        if self
            .send(super::Command::Dht(Command::ResolveAlias(sha256, reply)))
            .await
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::timeout(LOOKUP_WAIT, answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }
}

/// The DHT's state in the event loop.
pub(super) struct Dht {
    store: Store,
    /// Bootstrap peers; none: the node answers queries but makes none.
    bootstrap: Vec<(PeerId, Multiaddr)>,
    /// It listens, so announcing itself makes sense.
    listens: bool,
    /// The store was announced since the node last joined.
    announced: bool,
    /// The queries of the store's announcement still running.
    announcing: HashSet<QueryId>,
    lookups: HashMap<QueryId, Lookup>,
    resolving: HashMap<QueryId, Resolving>,
}

/// A running search for providers.
struct Lookup {
    /// The caller, until answered.
    reply: Option<oneshot::Sender<Vec<PeerId>>>,
    connected: Vec<PeerId>,
    dialing: HashSet<PeerId>,
    finished: bool,
}

/// A running search for alias records.
struct Resolving {
    reply: oneshot::Sender<Vec<Hash>>,
    found: Vec<Hash>,
}

/// The libp2p swarm the event loop owns.
type Inner = libp2p::Swarm<super::Behaviour>;

impl Dht {
    /// The DHT state for a node on `store` with these bootstrap peers;
    /// joins the DHT at once when there are any.
    pub(super) fn start(
        swarm: &mut Inner,
        store: Store,
        bootstrap: Vec<(PeerId, Multiaddr)>,
        listens: bool,
    ) -> Self {
        let mut dht = Self {
            store,
            bootstrap,
            listens,
            announced: false,
            announcing: HashSet::new(),
            lookups: HashMap::new(),
            resolving: HashMap::new(),
        };
        dht.join(swarm);
        dht
    }

    /// Puts the bootstrap peers in the routing table and bootstraps. The
    /// store is announced once a bootstrap query reaches a peer.
    pub(super) fn join(&mut self, swarm: &mut Inner) {
        if self.bootstrap.is_empty() {
            return;
        }
        let kad = &mut swarm.behaviour_mut().kad;
        for (peer, addr) in &self.bootstrap {
            kad.add_address(peer, addr.clone());
        }
        if let Err(error) = kad.bootstrap() {
            tracing::debug!(%error, "cannot bootstrap the DHT");
        }
    }

    /// Called every few seconds: when the routing table is empty (the
    /// bootstrap peers were down, or went away), joins again, and will
    /// announce the store again once it has.
    pub(super) fn tick(&mut self, swarm: &mut Inner) {
        if self.bootstrap.is_empty() {
            return;
        }
        let known: usize = swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|bucket| bucket.num_entries())
            .sum();
        if known == 0 {
            self.announced = false;
            self.join(swarm);
        }
    }

    pub(super) fn command(&mut self, swarm: &mut Inner, command: Command) {
        match command {
            Command::Provide(hash) => {
                self.provide(swarm, hash);
            }
            Command::PutAlias(sha256, hash) => {
                self.put_alias(swarm, sha256, hash);
            }
            Command::FindProviders(hash, reply) => {
                let id = swarm.behaviour_mut().kad.get_providers(blob_key(hash));
                self.lookups.insert(
                    id,
                    Lookup {
                        reply: Some(reply),
                        connected: Vec::new(),
                        dialing: HashSet::new(),
                        finished: false,
                    },
                );
            }
            Command::ResolveAlias(sha256, reply) => {
                let id = swarm.behaviour_mut().kad.get_record(alias_key(sha256));
                self.resolving.insert(
                    id,
                    Resolving {
                        reply,
                        found: Vec::new(),
                    },
                );
            }
        }
    }

    fn provide(&self, swarm: &mut Inner, hash: Hash) -> Option<QueryId> {
        if !self.listens {
            return None;
        }
        match swarm.behaviour_mut().kad.start_providing(blob_key(hash)) {
            Ok(id) => Some(id),
            Err(error) => {
                tracing::warn!(%hash, %error, "cannot announce a blob to the DHT");
                None
            }
        }
    }

    fn put_alias(&self, swarm: &mut Inner, sha256: Sha256, hash: Hash) -> Option<QueryId> {
        if !self.listens {
            return None;
        }
        let record = Record::new(alias_key(sha256), hash.as_bytes().to_vec());
        match swarm.behaviour_mut().kad.put_record(record, Quorum::One) {
            Ok(id) => Some(id),
            Err(error) => {
                tracing::warn!(%sha256, %error, "cannot put an alias record in the DHT");
                None
            }
        }
    }

    /// Announces every complete blob of the store, and every alias whose
    /// blob is complete.
    fn announce_store(&mut self, swarm: &mut Inner) {
        self.announced = true;
        if !self.listens {
            // No peer could reach it at an address it announced.
            return;
        }
        let blobs = match self.store.list() {
            Ok(blobs) => blobs,
            Err(error) => {
                tracing::warn!(%error, "cannot list the store to announce it");
                return;
            }
        };
        let complete: HashSet<Hash> = blobs
            .into_iter()
            .filter(|blob| blob.state == BlobState::Complete)
            .map(|blob| blob.hash)
            .collect();
        let aliases = self.store.aliases().unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list the store's aliases to announce them");
            Vec::new()
        });
        let mut queries: Vec<QueryId> = complete
            .iter()
            .filter_map(|hash| self.provide(swarm, *hash))
            .collect();
        for (sha256, hash) in aliases {
            if complete.contains(&hash) {
                queries.extend(self.put_alias(swarm, sha256, hash));
            }
        }
        tracing::debug!(queries = queries.len(), "announcing the store to the DHT");
        self.announcing.extend(queries);
        if self.announcing.is_empty() {
            tracing::info!("joined the DHT; nothing to announce");
        }
    }

    /// The listen addresses of a peer that speaks Kademlia go into the
    /// routing table.
    pub(super) fn identified(&mut self, swarm: &mut Inner, peer: PeerId, info: &identify::Info) {
        if !info.protocols.contains(&KAD_PROTOCOL) {
            return;
        }
        for addr in &info.listen_addrs {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
    }

    /// A connection to `peer` is up.
    pub(super) fn connected(&mut self, peer: PeerId) {
        for lookup in self.lookups.values_mut() {
            if lookup.dialing.remove(&peer) {
                lookup.connected.push(peer);
                lookup.settle();
            }
        }
        self.lookups.retain(|_, lookup| !lookup.is_done());
    }

    /// A dial of `peer` failed.
    pub(super) fn dial_failed(&mut self, peer: PeerId) {
        for lookup in self.lookups.values_mut() {
            if lookup.dialing.remove(&peer) {
                lookup.settle();
            }
        }
        self.lookups.retain(|_, lookup| !lookup.is_done());
    }

    pub(super) fn event(&mut self, swarm: &mut Inner, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            QueryResult::Bootstrap(result) => {
                // A bootstrap peer that cannot be reached leaves the routing
                // table: joined means a bootstrap query ended with a peer in it.
                match result {
                    Ok(_) if !self.announced && self.known(swarm) => self.announce_store(swarm),
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "DHT bootstrap"),
                }
            }
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                if let Some(lookup) = self.lookups.get_mut(&id) {
                    let me = *swarm.local_peer_id();
                    for peer in providers.into_iter().filter(|peer| *peer != me) {
                        lookup.reach(swarm, peer);
                    }
                }
            }
            QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                if let Some(resolving) = self.resolving.get_mut(&id) {
                    match <[u8; 32]>::try_from(found.record.value.as_slice()) {
                        Ok(bytes) if !resolving.found.contains(&Hash::from_bytes(bytes)) => {
                            resolving.found.push(Hash::from_bytes(bytes));
                        }
                        Ok(_) => {}
                        Err(_) => tracing::debug!(
                            peer = ?found.peer,
                            "an alias record that is not a hash"
                        ),
                    }
                }
            }
            QueryResult::StartProviding(Err(error)) => {
                tracing::debug!(%error, "announcing a blob to the DHT");
            }
            QueryResult::PutRecord(Err(error)) => {
                tracing::debug!(%error, "putting an alias record in the DHT");
            }
            _ => {}
        }
        if step.last {
            self.finished(id);
        }
    }

    /// True if and only if the routing table holds a peer.
    fn known(&self, swarm: &mut Inner) -> bool {
        swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .any(|bucket| bucket.num_entries() > 0)
    }

    /// The query `id` will report nothing more.
    fn finished(&mut self, id: QueryId) {
        if let Some(mut lookup) = self.lookups.remove(&id) {
            lookup.finished = true;
            lookup.settle();
            if !lookup.is_done() {
                self.lookups.insert(id, lookup);
            }
        }
        if let Some(resolving) = self.resolving.remove(&id) {
            let _ = resolving.reply.send(resolving.found);
        }
        if self.announcing.remove(&id) && self.announcing.is_empty() {
            tracing::info!("announced the store to the DHT");
        }
    }
}

impl Lookup {
    /// Counts `peer` in, dialing it when it is not connected.
    fn reach(&mut self, swarm: &mut Inner, peer: PeerId) {
        if self.connected.contains(&peer) || self.dialing.contains(&peer) {
            return;
        }
        if swarm.is_connected(&peer) {
            self.connected.push(peer);
            self.settle();
            return;
        }
        // The query knows the provider's addresses while it runs: Kademlia
        // gives them to the dial.
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                self.dialing.insert(peer);
            }
            Err(error) => tracing::debug!(%peer, %error, "cannot dial a provider"),
        }
    }

    /// Answers the caller once a provider is connected, or once the query
    /// has ended and no dial is left.
    fn settle(&mut self) {
        let ready = !self.connected.is_empty() || (self.finished && self.dialing.is_empty());
        if ready && let Some(reply) = self.reply.take() {
            let _ = reply.send(self.connected.clone());
        }
    }

    /// Nothing is left to do: answered, query ended, dials settled.
    fn is_done(&self) -> bool {
        self.reply.is_none() && self.finished && self.dialing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_addresses_must_name_their_peer() {
        let peer = PeerId::random();
        let good: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
            .parse()
            .unwrap();
        assert_eq!(
            bootstrap_peers(std::slice::from_ref(&good)).unwrap(),
            vec![(peer, good)]
        );
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let error = bootstrap_peers(&[bare]).unwrap_err();
        assert!(error.to_string().contains("/p2p/"), "{error}");
    }

    #[test]
    fn blob_and_alias_keys_never_collide() {
        let bytes = [7; 32];
        assert_ne!(blob_key(Hash::from_bytes(bytes)), alias_key(Sha256(bytes)));
        assert!(blob_key(Hash::from_bytes(bytes)).as_ref().ends_with(&bytes));
    }
}
