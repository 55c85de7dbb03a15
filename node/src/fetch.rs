//! [`Fetcher`]: a blob or a plain URL from HTTP mirrors and swarm peers
//! into the store. Models (and sharing, pausing, suspending) are the
//! [`Node`](crate::Node)'s.
//!
//! A fetch of a blob goes: ask connected peers what they hold -> probe
//! every mirror (size, validator, Range support) -> find the outboard (the
//! store, a mirror's `URL.obao`, or a peer; always checked against the
//! hash) -> open the partial (resuming what is recorded) -> [`Download`]
//! -> commit -> hash the whole blob -> publish. With an outboard every
//! chunk is checked on arrival and all mirrors and peers are used at once;
//! without one (no peer, no sidecar), bytes come from a single mirror and
//! the whole blob is checked at the end.
//!
//! A model is a blob that decodes as a [`Manifest`];
//! [`Fetcher::fetch_blob_or_manifest`] tells which.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;

use p2pmodel_protocol::manifest::MAX_ENCODED_LEN;
use p2pmodel_protocol::{Hash, Manifest, ManifestEntry, Sha256};
use p2pmodel_store::{Partial, PartialKey, PartialMode, Store};
use sha2::Digest;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::download::{Download, DownloadConfig, DownloadError, MirrorSource};
use crate::error::FetchError;
use crate::hf::{self, HfRef, Hub, HubError, Snapshot, SnapshotFile};
use crate::mirror::{HttpConfig, MirrorClient, Probe};
use crate::progress::{Phase, ProgressTracker};
use crate::swarm::{Swarm, getter};

/// Rounds over the peers holding a blob to get its outboard from one, at
/// least.
const OUTBOARD_ROUNDS: u32 = 3;
/// How long peers whose streams failed or answered late are asked again
/// for the outboard, beyond those rounds: in a flash crowd a seed's
/// uplink can be queued for seconds.
const OUTBOARD_PATIENCE: Duration = Duration::from_secs(30);
/// Longest pause between rounds (the first is 500 ms, doubling).
const OUTBOARD_PAUSE: Duration = Duration::from_secs(4);
/// Times a download whose source changed under it is started again.
const MAX_RESTARTS: u32 = 3;

/// Settings of a [`Fetcher`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FetcherConfig {
    /// Timeouts and retries of mirror requests.
    pub http: HttpConfig,
    /// Requests in flight and request size.
    pub download: DownloadConfig,
}

impl FetcherConfig {
    /// Sets the HTTP settings.
    pub fn with_http(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// Sets the download settings.
    pub fn with_download(mut self, download: DownloadConfig) -> Self {
        self.download = download;
        self
    }
}

/// What a node's fetch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A single blob.
    Blob {
        /// Its hash.
        hash: Hash,
        /// The caller's export, or the read-only file in the store.
        path: PathBuf,
    },
    /// A model: its manifest and every file are in the store.
    Model {
        /// The model's hash.
        hash: Hash,
        /// Its manifest.
        manifest: Manifest,
        /// The folder holding its files: the caller's export, or
        /// `STORE/models/HASH`.
        path: PathBuf,
    },
}

impl Fetched {
    /// The hash that was fetched.
    pub fn hash(&self) -> Hash {
        match self {
            Fetched::Blob { hash, .. } | Fetched::Model { hash, .. } => *hash,
        }
    }

    /// The file in the store (for a model, its manifest).
    pub fn path(&self) -> &std::path::Path {
        match self {
            Fetched::Blob { path, .. } | Fetched::Model { path, .. } => path,
        }
    }
}

/// What a Hugging Face name resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfFetched {
    /// One file: this blob.
    File(Hash),
    /// Several files: this model.
    Model(Hash),
}

/// Fetches blobs, models and URLs into a store. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Fetcher {
    store: Store,
    client: MirrorClient,
    config: FetcherConfig,
    swarm: Option<Swarm>,
}

impl Fetcher {
    /// A fetcher writing into `store`.
    pub fn new(store: Store, config: FetcherConfig) -> Self {
        let client = MirrorClient::new(config.http.clone());
        Self {
            store,
            client,
            config,
            swarm: None,
        }
    }

    /// Also fetches blobs from the connected peers of `swarm` (alone, or
    /// beside mirrors).
    pub fn with_swarm(mut self, swarm: Swarm) -> Self {
        self.swarm = Some(swarm);
        self
    }

    /// The store it writes into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Fetches the blob `hash`; if it is a model's manifest (known as one,
    /// or decoding as one once here), records it and returns it, else
    /// returns the blob's path.
    pub(crate) async fn fetch_blob_or_manifest(
        &self,
        hash: Hash,
        mirrors: &[Url],
        progress: &ProgressTracker,
        cancel: CancellationToken,
    ) -> Result<Result<Manifest, PathBuf>, FetchError> {
        if let Some(manifest) = self.store.manifest(hash)? {
            return Ok(Ok(manifest));
        }
        let path = self
            .fetch_blob(hash, mirrors, None, progress, cancel)
            .await?;
        let size = std::fs::metadata(&path).map_or(u64::MAX, |m| m.len());
        if size <= MAX_ENCODED_LEN as u64 {
            let bytes = std::fs::read(&path).map_err(|source| p2pmodel_store::Error::Io {
                context: "reading fetched blob",
                path: path.clone(),
                source,
            })?;
            if let Ok(manifest) = Manifest::decode(&bytes) {
                self.store.put_manifest(&manifest)?;
                return Ok(Ok(manifest));
            }
        }
        Ok(Err(path))
    }

    /// Fetches the blob `hash` from `mirrors` and from the peers of the
    /// fetcher's swarm into the store, and returns its path there. `size`,
    /// when known (from a manifest), is checked against what sources say.
    /// Peers are the connected ones, and, when the swarm uses the DHT, the
    /// providers it names (waiting a few seconds at most for them).
    ///
    /// # Errors
    /// See [`FetchError`].
    pub async fn fetch_blob(
        &self,
        hash: Hash,
        mirrors: &[Url],
        size: Option<u64>,
        progress: &ProgressTracker,
        cancel: CancellationToken,
    ) -> Result<PathBuf, FetchError> {
        self.fetch_blob_with(hash, mirrors, size, Needs::AnySource, progress, cancel)
            .await
    }

    /// [`Fetcher::fetch_blob`], which with [`Needs::VerifyingPeer`] fails
    /// with [`FetchError::NoSource`] unless a peer holds the blob and gives
    /// its outboard (before any byte moves).
    async fn fetch_blob_with(
        &self,
        hash: Hash,
        mirrors: &[Url],
        size: Option<u64>,
        needs: Needs,
        progress: &ProgressTracker,
        cancel: CancellationToken,
    ) -> Result<PathBuf, FetchError> {
        let mut counter = BlobProgress::new(progress);
        if let Some(record) = self.store.blob(hash)? {
            counter.opened(record.size, record.size);
            return Ok(self.store.blob_path(hash));
        }
        let holders = match &self.swarm {
            Some(swarm) => tokio::select! {
                holders = find_holders(swarm, hash, mirrors.is_empty()) => holders,
                () = cancel.cancelled() => return Err(FetchError::Cancelled),
            },
            None => Vec::new(),
        };
        if holders.is_empty() && (mirrors.is_empty() || needs == Needs::VerifyingPeer) {
            return Err(FetchError::NoSource(hash));
        }
        // A known outboard fixes the size: sources that disagree are left
        // out, and never shrink or reset a verified partial.
        let size = match self.store.outboard(hash)? {
            Some(outboard) => Some(outboard.size()),
            None if size.is_some() => size,
            // A peer's word on the size counts only with an outboard that
            // matches the hash: a lying peer cannot pick it for the others.
            None => match tokio::select! {
                found = self.size_from_peers(hash, &holders) => found?,
                () = cancel.cancelled() => return Err(FetchError::Cancelled),
            } {
                Ok(size) => Some(size),
                Err(failures) if mirrors.is_empty() => {
                    return Err(FetchError::Sources(failures));
                }
                Err(_) => None,
            },
        };
        let holders: Vec<(PeerId, u64)> = holders
            .into_iter()
            .filter(|(_, held)| Some(*held) == size)
            .collect();
        let mut announced = false;
        for _ in 0..MAX_RESTARTS {
            let (sources, size) = match self.probe_all(mirrors, size, &cancel).await {
                Ok(probed) => probed,
                // Peers can do without mirrors.
                Err(FetchError::Sources(failures)) if !holders.is_empty() => {
                    for failure in &failures {
                        tracing::warn!(%failure, "mirror left out");
                    }
                    (Vec::new(), size.expect("holders give a size"))
                }
                Err(error) => return Err(error),
            };
            let outboard = tokio::select! {
                outboard = self.find_outboard(hash, size, &sources, &holders) => outboard?,
                () = cancel.cancelled() => return Err(FetchError::Cancelled),
            };
            match (&self.swarm, &outboard) {
                (_, None) if needs == Needs::VerifyingPeer => {
                    return Err(FetchError::NoSource(hash));
                }
                // Verified chunks are served as they arrive: say so.
                (Some(swarm), Some(_)) if !announced => {
                    swarm.provide(hash).await;
                    announced = true;
                }
                _ => {}
            }
            let (mode, sources) = match &outboard {
                Some(_) => (PartialMode::Verified, sources),
                None => self.unverified_source(hash, sources)?,
            };
            let source_url = sources
                .first()
                .map(|source| source.url.to_string())
                .unwrap_or_else(|| "peers".into());
            let attempt = Attempt {
                key: PartialKey::Blob(hash),
                size,
                mode,
                outboard,
                sources,
                peers: self.swarm.clone().map(|swarm| (swarm, hash)),
            };
            let Some(partial) = self.download(attempt, &mut counter, &cancel).await? else {
                continue;
            };
            progress.set_phase(Phase::Verifying);
            return match blocking(move || partial.finish()).await {
                Ok(_) => Ok(self.store.blob_path(hash)),
                Err(FetchError::Store(p2pmodel_store::Error::HashMismatch {
                    expected,
                    actual,
                })) => Err(FetchError::Mismatch {
                    source_url,
                    expected,
                    actual,
                }),
                Err(error) => Err(error),
            };
        }
        Err(FetchError::Sources(vec![
            "the content changed under every attempt".into(),
        ]))
    }

    /// Fetches a plain `url` into the store and returns the hash of its
    /// content. With `sha256`, the content must have that SHA-256 (checked
    /// before anything is published) and is recorded as its alias; a URL
    /// whose SHA-256 the store already knows is not fetched at all. When
    /// the swarm uses the DHT and its alias records name a blob that peers
    /// provide, the blob comes from those peers (`url` beside them) and is
    /// then checked against `sha256`.
    ///
    /// # Errors
    /// See [`FetchError`].
    pub async fn fetch_url(
        &self,
        url: &Url,
        sha256: Option<Sha256>,
        progress: &ProgressTracker,
        cancel: CancellationToken,
    ) -> Result<Hash, FetchError> {
        if let Some(sha) = sha256 {
            if let Some(hash) = self.store.alias(sha)? {
                if let Some(record) = self.store.blob(hash)? {
                    progress.add_blob(record.size, record.size);
                    progress.set_phase(Phase::Complete);
                    return Ok(hash);
                }
            }
            if let Some(hash) = self.fetch_by_alias(url, sha, progress, &cancel).await? {
                return Ok(hash);
            }
        }
        let mut counter = BlobProgress::new(progress);
        for _ in 0..MAX_RESTARTS {
            let (mut sources, size) = self
                .probe_all(std::slice::from_ref(url), None, &cancel)
                .await?;
            let source = sources.remove(0);
            let mode = PartialMode::Unverified {
                source: url.to_string(),
                validator: source.probe.validator.clone(),
            };
            let key = PartialKey::Url(url.to_string());
            let attempt = Attempt {
                key,
                size,
                mode,
                outboard: None,
                sources: vec![source],
                peers: None,
            };
            let Some(partial) = self.download(attempt, &mut counter, &cancel).await? else {
                continue;
            };
            progress.set_phase(Phase::Verifying);
            if let Some(expected) = sha256 {
                let (partial_back, actual) =
                    blocking(move || sha256_of(&partial).map(|sha| (partial, sha))).await?;
                if actual != expected {
                    blocking(move || partial_back.discard()).await?;
                    return Err(FetchError::Sha256Mismatch {
                        url: url.to_string(),
                        expected,
                        actual,
                    });
                }
                let hash = blocking(move || partial_back.finish()).await?;
                self.store.put_alias(expected, hash)?;
                if let Some(swarm) = &self.swarm {
                    swarm.provide(hash).await;
                    swarm.announce_alias(expected, hash).await;
                }
                progress.set_phase(Phase::Complete);
                return Ok(hash);
            }
            let hash = blocking(move || partial.finish()).await?;
            progress.set_phase(Phase::Complete);
            return Ok(hash);
        }
        Err(FetchError::Sources(vec![format!(
            "{url}: the content changed under every attempt"
        )]))
    }

    /// Opens the partial, runs one download into it and commits what was
    /// written. `None` when the source's content changed under an
    /// unverified download (the caller starts again from a new probe).
    async fn download(
        &self,
        attempt: Attempt,
        counter: &mut BlobProgress<'_>,
        cancel: &CancellationToken,
    ) -> Result<Option<Partial>, FetchError> {
        let Attempt {
            key,
            size,
            mode,
            outboard,
            sources,
            peers,
        } = attempt;
        let store = self.store.clone();
        let partial = Arc::new(blocking(move || store.open_partial(key, size, mode)).await?);
        counter.opened(size, partial.present_bytes());
        counter.progress.set_phase(Phase::Downloading);
        let verified = outboard.is_some();
        let mut download = Download::new(
            self.client.clone(),
            Arc::clone(&partial),
            outboard.map(Arc::new),
            sources,
            counter.progress.clone(),
            self.config.download.clone(),
        );
        if let (Some((swarm, hash)), true) = (peers, verified) {
            download = download.with_peers(swarm, hash);
        }
        let result = download.run(cancel.clone()).await;
        let partial = commit(partial).await?;
        counter.ended(partial.present_bytes());
        match result {
            Ok(()) => Ok(Some(partial)),
            Err(DownloadError::Changed(error)) => {
                tracing::warn!(%error, "starting the download again from the new content");
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Fetches a Hugging Face file, folder or repository at the commit its
    /// revision points to, taking the files `name` selects (see
    /// [`hf::select`](crate::hf::select)). Each file comes from its
    /// `resolve` URL, LFS files checked against their SHA-256; one file
    /// named by its path is a blob, anything else becomes a model (the
    /// manifest records SHA-256 beside BLAKE3), so that the files of one
    /// quantization, shards included, succeed or fail together. With a
    /// cache folder on `hub`, the snapshot is then exported there.
    ///
    /// # Errors
    /// [`FetchError::Hub`] when the listing fails, the selection does not
    /// fit the files or the cache export fails, and the errors of
    /// [`Fetcher::fetch_url`].
    pub async fn fetch_hf(
        &self,
        hub: &Hub,
        name: &HfRef,
        progress: &ProgressTracker,
        cancel: CancellationToken,
    ) -> Result<HfFetched, FetchError> {
        let listing = tokio::select! {
            listing = hub.list(&self.client, name) => listing?,
            () = cancel.cancelled() => return Err(FetchError::Cancelled),
        };
        let mut entries = Vec::with_capacity(listing.files.len());
        let mut snapshot_files = Vec::with_capacity(listing.files.len());
        for file in listing.files {
            let url = hub.resolve_url(&name.repo, listing.commit.as_str(), &file.path);
            let hash = self
                .fetch_url(&url, file.sha256, progress, cancel.clone())
                .await?;
            snapshot_files.push(SnapshotFile {
                path: file.path.clone(),
                etag: file.etag(),
                hash,
            });
            entries.push(ManifestEntry {
                path: file.path,
                size: file.size,
                hash,
                sha256: file.sha256,
                mirrors: Vec::new(),
            });
        }
        if let Some(dir) = hub.cache.clone() {
            let snapshot = Snapshot {
                repo: name.repo.clone(),
                revision: name.revision.clone(),
                commit: listing.commit,
                files: snapshot_files,
            };
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || hf::cache::export(&store, &dir, &snapshot))
                .await
                .expect("the cache export does not panic")
                .map_err(HubError::from)?;
        }
        let single_file =
            entries.len() == 1 && name.path.as_deref() == Some(entries[0].path.as_str());
        if single_file {
            return Ok(HfFetched::File(entries[0].hash));
        }
        let manifest = Manifest::new(entries)?;
        let model = self.store.put_manifest(&manifest)?;
        if let Some(swarm) = &self.swarm {
            swarm.provide(model).await;
        }
        Ok(HfFetched::Model(model))
    }

    /// The blob whose SHA-256 is `sha256`, from the peers that provide the
    /// blob the DHT's alias records name (`url` serving beside them, each
    /// chunk checked against the named hash); `None` when no record names a
    /// blob that a peer provides with its outboard. The records are claims
    /// of other peers: the blob is checked against `sha256` before the
    /// alias is recorded.
    ///
    /// # Errors
    /// [`FetchError::AliasMismatch`] when the named blob has another
    /// SHA-256 (it is removed again unless the store held it before), and
    /// the errors of [`Fetcher::fetch_blob`].
    async fn fetch_by_alias(
        &self,
        url: &Url,
        sha256: Sha256,
        progress: &ProgressTracker,
        cancel: &CancellationToken,
    ) -> Result<Option<Hash>, FetchError> {
        let Some(swarm) = self.swarm.as_ref().filter(|swarm| swarm.uses_dht()) else {
            return Ok(None);
        };
        let named = tokio::select! {
            named = swarm.resolve_alias(sha256) => named,
            () = cancel.cancelled() => return Err(FetchError::Cancelled),
        };
        for hash in named {
            let had = self.store.blob(hash)?.is_some();
            let mirrors = std::slice::from_ref(url);
            let path = match self
                .fetch_blob_with(
                    hash,
                    mirrors,
                    None,
                    Needs::VerifyingPeer,
                    progress,
                    cancel.clone(),
                )
                .await
            {
                Ok(path) => path,
                Err(FetchError::NoSource(_)) => {
                    tracing::debug!(%sha256, %hash, "no peer provides the blob an alias names");
                    continue;
                }
                Err(error) => return Err(error),
            };
            progress.set_phase(Phase::Verifying);
            let actual = blocking(move || sha256_of_file(&path)).await?;
            if actual != sha256 {
                if !had {
                    let store = self.store.clone();
                    blocking(move || store.remove(hash)).await?;
                }
                return Err(FetchError::AliasMismatch {
                    sha256,
                    hash,
                    actual,
                });
            }
            self.store.put_alias(sha256, hash)?;
            swarm.announce_alias(sha256, hash).await;
            progress.set_phase(Phase::Complete);
            return Ok(Some(hash));
        }
        Ok(None)
    }

    /// Probes every mirror at once (retrying transient failures) and keeps
    /// those that agree on the size.
    async fn probe_all(
        &self,
        mirrors: &[Url],
        size: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<(Vec<MirrorSource>, u64), FetchError> {
        let probes =
            futures_util::future::join_all(mirrors.iter().map(|url| self.probe_with_retry(url)));
        let probes = tokio::select! {
            () = cancel.cancelled() => return Err(FetchError::Cancelled),
            probes = probes => probes,
        };
        let mut failures = Vec::new();
        let mut sources: Vec<MirrorSource> = Vec::new();
        for (url, probe) in mirrors.iter().zip(probes) {
            match probe {
                Ok(probe) => sources.push(MirrorSource {
                    url: url.clone(),
                    probe,
                }),
                Err(error) => failures.push(error.to_string()),
            }
        }
        let Some(size) = size.or_else(|| sources.first().map(|source| source.probe.size)) else {
            return Err(FetchError::Sources(failures));
        };
        sources.retain(|source| {
            let agrees = source.probe.size == size;
            if !agrees {
                failures.push(format!(
                    "{}: serves {} bytes, expected {size}",
                    source.url, source.probe.size
                ));
            }
            agrees
        });
        if sources.is_empty() {
            return Err(FetchError::Sources(failures));
        }
        for failure in &failures {
            tracing::warn!(%failure, "mirror left out");
        }
        Ok((sources, size))
    }

    async fn probe_with_retry(&self, url: &Url) -> Result<Probe, crate::mirror::MirrorError> {
        let mut failures = 0;
        loop {
            match self.client.probe(url).await {
                Ok(probe) => return Ok(probe),
                Err(error)
                    if error.is_retryable() && failures + 1 < self.config.http.max_failures =>
                {
                    failures += 1;
                    tracing::debug!(%url, %error, "probe failed; retrying");
                    tokio::time::sleep(self.config.http.backoff_for(failures)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The blob's outboard: from the store, else from the first mirror
    /// that offers a sidecar that checks out, else from the first peer
    /// whose copy checks out (then kept in the store).
    async fn find_outboard(
        &self,
        hash: Hash,
        size: u64,
        sources: &[MirrorSource],
        holders: &[(PeerId, u64)],
    ) -> Result<Option<p2pmodel_protocol::Outboard<std::fs::File>>, FetchError> {
        if let Some(outboard) = self.store.outboard(hash)? {
            return Ok(Some(outboard));
        }
        let mut found = None;
        for source in sources {
            found = self.client.sidecar_outboard(&source.url, hash, size).await;
            if found.is_some() {
                tracing::debug!(url = %source.url, "using the sidecar outboard");
                break;
            }
        }
        if found.is_none() {
            let candidates: Vec<(PeerId, u64)> = holders
                .iter()
                .copied()
                .filter(|(_, held)| *held == size)
                .collect();
            match self.outboard_from_peers(hash, &candidates).await {
                Ok((outboard, _)) => found = Some(outboard),
                Err(failures) => {
                    for failure in failures {
                        tracing::warn!(%failure, "no outboard from this peer");
                    }
                }
            }
        }
        let Some(outboard) = found else {
            return Ok(None);
        };
        let store = self.store.clone();
        blocking(move || store.put_partial_outboard(&outboard)).await?;
        Ok(self.store.outboard(hash)?)
    }

    /// The size of the blob `hash` as the first of `holders` whose outboard
    /// matches the hash gives it (the outboard is kept); else what each
    /// holder did wrong.
    async fn size_from_peers(
        &self,
        hash: Hash,
        holders: &[(PeerId, u64)],
    ) -> Result<Result<u64, Vec<String>>, FetchError> {
        match self.outboard_from_peers(hash, holders).await {
            Ok((outboard, size)) => {
                let store = self.store.clone();
                blocking(move || store.put_partial_outboard(&outboard)).await?;
                Ok(Ok(size))
            }
            Err(failures) => Ok(Err(failures)),
        }
    }

    /// The outboard of `hash` from the first of `candidates` (each with
    /// the size it gives) whose copy matches the hash, and that size; else
    /// what each did wrong. [`OUTBOARD_ROUNDS`] rounds, then more for up
    /// to [`OUTBOARD_PATIENCE`] while some peer's failure was transient (a
    /// connection may close under the first request, a seed in a crowd
    /// may answer late); a peer that answered wrongly is not asked again.
    async fn outboard_from_peers(
        &self,
        hash: Hash,
        candidates: &[(PeerId, u64)],
    ) -> Result<(p2pmodel_protocol::Outboard, u64), Vec<String>> {
        let Some(swarm) = self.swarm.as_ref().filter(|_| !candidates.is_empty()) else {
            return Err(Vec::new());
        };
        let started = tokio::time::Instant::now();
        let mut asking: Vec<(PeerId, u64)> = candidates.to_vec();
        let mut failures = Vec::new();
        let mut pause = Duration::from_millis(500);
        for round in 0.. {
            let patient = round < OUTBOARD_ROUNDS || started.elapsed() < OUTBOARD_PATIENCE;
            if asking.is_empty() || !patient {
                break;
            }
            if round > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(OUTBOARD_PAUSE);
            }
            let mut again = Vec::new();
            for (peer, size) in asking {
                match getter::fetch_outboard(swarm, peer, hash, size).await {
                    Ok(outboard) => {
                        tracing::debug!(%peer, "using the outboard of a peer");
                        return Ok((outboard, size));
                    }
                    Err(error) => {
                        failures.retain(|(failed, _)| *failed != peer);
                        failures.push((peer, format!("peer {peer}: no usable outboard: {error}")));
                        if error.is_transient() {
                            again.push((peer, size));
                        }
                    }
                }
            }
            asking = again;
        }
        Err(failures.into_iter().map(|(_, failure)| failure).collect())
    }

    /// Without an outboard, bytes must come from one mirror: the one an
    /// earlier run used, if it is still offered, else the first.
    fn unverified_source(
        &self,
        hash: Hash,
        mut sources: Vec<MirrorSource>,
    ) -> Result<(PartialMode, Vec<MirrorSource>), FetchError> {
        if sources.is_empty() {
            // Peers serve verified downloads only.
            return Err(FetchError::Sources(vec![format!(
                "no mirror is left and no peer gave an outboard matching {hash}"
            )]));
        }
        let earlier = match self.store.partial_record(hash.as_bytes())? {
            Some(record) => match record.mode {
                PartialMode::Unverified { source, .. } => Some(source),
                PartialMode::Verified => None,
            },
            None => None,
        };
        let index = earlier
            .and_then(|earlier| {
                sources
                    .iter()
                    .position(|source| source.url.as_str() == earlier)
            })
            .unwrap_or(0);
        let source = sources.swap_remove(index);
        let mode = PartialMode::Unverified {
            source: source.url.to_string(),
            validator: source.probe.validator.clone(),
        };
        Ok((mode, vec![source]))
    }
}

/// What a blob fetch may settle for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Any source: peers, mirrors, or both.
    AnySource,
    /// A peer holding the blob that gives its outboard, so that every chunk
    /// (from peers or mirrors) is checked against the hash on arrival.
    VerifyingPeer,
}

/// The peers holding chunks of `hash` with the size each gives: the
/// connected ones, once the DHT's providers (if the swarm uses the DHT)
/// were dialed. With `patient` (no other source) the DHT is asked until a
/// provider answers or its wait is up, and peers that may hold chunks soon
/// (busy, or fetching the blob themselves) are asked again for up to
/// [`PEER_PATIENCE`].
async fn find_holders(swarm: &Swarm, hash: Hash, patient: bool) -> Vec<(PeerId, u64)> {
    swarm.find_providers(hash, patient).await;
    let deadline = tokio::time::Instant::now() + PEER_PATIENCE;
    loop {
        let survey = getter::survey(swarm, hash).await;
        if !survey.holders.is_empty()
            || !patient
            || !survey.worth_asking_again
            || tokio::time::Instant::now() >= deadline
        {
            return survey.holders;
        }
        tracing::debug!(%hash, "no peer holds a chunk yet; asking again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long a fetch with no mirror keeps asking peers that may hold
/// chunks soon: a seed in a flash crowd drops streams while it is busy,
/// and peers fetching the same blob get their first chunks within moments.
const PEER_PATIENCE: Duration = Duration::from_secs(20);

/// One download of one partial: what to open and where bytes come from.
struct Attempt {
    key: PartialKey,
    size: u64,
    mode: PartialMode,
    outboard: Option<p2pmodel_protocol::Outboard<std::fs::File>>,
    sources: Vec<MirrorSource>,
    /// The swarm whose peers serve the blob (verified downloads only).
    peers: Option<(Swarm, Hash)>,
}

/// Counts one blob into a fetch's progress across restarts of its download.
struct BlobProgress<'a> {
    progress: &'a ProgressTracker,
    /// Bytes present when the last attempt ended.
    present: Option<u64>,
}

impl<'a> BlobProgress<'a> {
    fn new(progress: &'a ProgressTracker) -> Self {
        Self {
            progress,
            present: None,
        }
    }

    /// The blob was opened with `present` of its `size` bytes there. After a
    /// restart, bytes the reopened partial no longer holds are taken back.
    fn opened(&mut self, size: u64, present: u64) {
        match self.present {
            None => self.progress.add_blob(size, present),
            Some(before) => self.progress.discarded(before.saturating_sub(present)),
        }
        self.present = Some(present);
    }

    fn ended(&mut self, present: u64) {
        self.present = Some(present);
    }
}

/// The URL of `path` next to the manifest at `manifest_url`, each part
/// percent-encoded.
pub(crate) fn sibling(manifest_url: &Url, path: &str) -> Option<Url> {
    let mut url = manifest_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut().ok()?.pop().extend(path.split('/'));
    Some(url)
}

/// Commits what the download wrote and takes the partial back.
async fn commit(partial: Arc<Partial>) -> Result<Partial, FetchError> {
    let partial = blocking(move || partial.commit().map(|()| partial)).await?;
    // Every worker has ended, so this is the last reference.
    Ok(Arc::into_inner(partial).expect("download workers have ended"))
}

/// The SHA-256 of a complete partial's bytes.
fn sha256_of(partial: &Partial) -> Result<Sha256, p2pmodel_store::Error> {
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < partial.size() {
        let n = buffer.len().min((partial.size() - offset) as usize);
        partial.read_at(offset, &mut buffer[..n])?;
        hasher.update(&buffer[..n]);
        offset += n as u64;
    }
    Ok(Sha256(hasher.finalize().into()))
}

/// The SHA-256 of the file at `path`.
fn sha256_of_file(path: &std::path::Path) -> Result<Sha256, p2pmodel_store::Error> {
    use std::io::Read;
    let io = |source| p2pmodel_store::Error::Io {
        context: "hashing a blob",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            return Ok(Sha256(hasher.finalize().into()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, p2pmodel_store::Error> + Send + 'static,
) -> Result<T, FetchError> {
    Ok(tokio::task::spawn_blocking(work)
        .await
        .expect("store work does not panic")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_sit_beside_the_manifest_and_are_encoded() {
        let manifest = Url::parse("http://m:8080/models/tiny/model.p2pmodel?x=1").unwrap();
        let url = sibling(&manifest, "weights/a b#1.gguf").unwrap();
        assert_eq!(
            url.as_str(),
            "http://m:8080/models/tiny/weights/a%20b%231.gguf"
        );
        let folder = Url::parse("http://m/models/tiny/").unwrap();
        assert_eq!(
            sibling(&folder, "c.json").unwrap().as_str(),
            "http://m/models/tiny/c.json"
        );
    }
}
