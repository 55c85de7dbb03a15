//! [`Partial`]: a blob still arriving, written in place, with the set of
//! chunks already present persisted in batches.
//!
//! # The durability window
//!
//! Chunks are written to `partial/KEY.data` as they arrive and marked in an
//! in-memory [`ChunkBitmap`]. The bitmap reaches the database only in a
//! commit, and a commit first fsyncs the data file: so the database never
//! marks a chunk whose bytes are not on disk. A commit happens when
//! [`COMMIT_BYTES`] of new chunks have accumulated or [`COMMIT_INTERVAL`]
//! has passed since the last one, and on [`Partial::commit`]. A crash
//! therefore loses at most one window: 64 MiB or one second of chunks,
//! whichever comes first, plus the requests that were in flight. Nothing
//! unwritten or unverified is ever marked present in a verified partial.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_bytes, chunk_count};
use p2pmodel_protocol::{ChunkBitmap, Hash, Outboard};
use redb::{ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::store::{Store, remove_if_exists, write_synced};
use crate::tables::{self, PartialMode, PartialRecord};

/// New chunk bytes after which a commit is due.
pub const COMMIT_BYTES: u64 = 64 << 20;
/// Time after which a commit is due once any chunk is new.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// What a partial download is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PartialKey {
    /// A blob whose hash is known.
    Blob(Hash),
    /// A plain URL whose content's hash is not known yet.
    Url(String),
}

impl PartialKey {
    /// The 32-byte id used for the database and the file names: the blob's
    /// hash, or a keyed BLAKE3 of the URL.
    pub fn id(&self) -> [u8; 32] {
        match self {
            PartialKey::Blob(hash) => *hash.as_bytes(),
            PartialKey::Url(url) => {
                *blake3::keyed_hash(b"p2pmodel partial download of url", url.as_bytes()).as_bytes()
            }
        }
    }

    fn expected(&self) -> Option<[u8; 32]> {
        match self {
            PartialKey::Blob(hash) => Some(*hash.as_bytes()),
            PartialKey::Url(_) => None,
        }
    }
}

/// A blob (complete or still arriving) opened for serving; see
/// [`Store::readable`].
#[derive(Debug)]
pub struct Readable {
    /// Size in bytes.
    pub size: u64,
    /// The data file.
    pub data: File,
    /// Its outboard.
    pub outboard: Outboard<File>,
    /// Chunks that are verified and written (committed, or written by a
    /// partial open in this process).
    pub present: ChunkBitmap,
}

/// A blob being written into the store. Safe to share between tasks:
/// writes of different chunks may run at once.
#[derive(Debug)]
pub struct Partial {
    store: Store,
    key: PartialKey,
    id: [u8; 32],
    size: u64,
    mode: PartialMode,
    file: File,
    path: PathBuf,
    state: Arc<Mutex<State>>,
    commit_lock: Mutex<()>,
    /// Held around each write to the file: the kernel serialises writes to
    /// one file anyway (ext4 takes the inode lock), and spins while it
    /// waits; parking here instead cut a peer fetch's CPU time by a tenth.
    write_lock: Mutex<()>,
}

/// The chunk state of every verified partial open in this process, by id.
pub(crate) type LivePartials = Mutex<HashMap<[u8; 32], Weak<Mutex<State>>>>;

#[derive(Debug)]
pub(crate) struct State {
    present: ChunkBitmap,
    uncommitted_bytes: u64,
    last_commit: Instant,
    /// A sync failed: the kernel may have dropped written pages, so no
    /// later commit may claim them. Reopening starts from the last commit.
    sync_failed: bool,
}

impl Store {
    pub(crate) fn partial_path(&self, id: &[u8; 32], extension: &str) -> PathBuf {
        self.root()
            .join("partial")
            .join(format!("{}.{extension}", Hash::from_bytes(*id)))
    }

    /// The record of a partial download, if there is one.
    pub fn partial_record(&self, id: &[u8; 32]) -> Result<Option<PartialRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(tables::PARTIALS)?;
        match table.get(id)? {
            Some(value) => Ok(Some(tables::decode(value.value(), "partial record")?)),
            None => Ok(None),
        }
    }

    /// Opens the partial download `key` of `size` bytes, resuming the
    /// chunks already recorded, or starts one.
    ///
    /// Recorded chunks are kept only when they are still good: the size is
    /// the same, and the mode is the same (for an unverified partial: the
    /// same source and the same content validator). Otherwise the partial
    /// starts empty, so bytes of two versions are never mixed.
    ///
    /// # Errors
    /// I/O and database errors.
    pub fn open_partial(&self, key: PartialKey, size: u64, mode: PartialMode) -> Result<Partial> {
        let id = key.id();
        let path = self.partial_path(&id, "data");
        let existing = self.partial_record(&id)?;
        // The recorded chunks hold only if their bytes are still there and
        // still the same content: same size, same mode, an unverified source
        // that names its version (no validator: no way to tell a change),
        // and a data file at least as long as the blob.
        let file_len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let versioned = match &mode {
            PartialMode::Verified => true,
            PartialMode::Unverified { validator, .. } => validator.is_some(),
        };
        let keep = versioned
            && file_len >= size
            && existing
                .as_ref()
                .is_some_and(|record| record.size == size && record.mode == mode);
        let chunks = chunk_count(size);
        let present = if keep {
            self.stored_bitmap(&id, chunks)?
                .unwrap_or_else(|| ChunkBitmap::new(chunks))
        } else {
            if existing.is_some() {
                tracing::info!(key = %Hash::from_bytes(id), "starting over: the partial download no longer matches its source");
            }
            ChunkBitmap::new(chunks)
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("opening partial file", &path))?;
        file.set_len(size)
            .map_err(Error::io("sizing partial file", &path))?;
        if !keep {
            let record = PartialRecord {
                size,
                expected: key.expected(),
                mode: mode.clone(),
                touched_at: tables::now(),
            };
            let txn = self.db().begin_write()?;
            txn.open_table(tables::PARTIALS)?
                .insert(&id, &tables::encode(&record)[..])?;
            txn.open_table(tables::BITMAPS)?
                .insert(&id, present.as_bytes())?;
            txn.commit()?;
        }
        let state = Arc::new(Mutex::new(State {
            present,
            uncommitted_bytes: 0,
            last_commit: Instant::now(),
            sync_failed: false,
        }));
        if mode == PartialMode::Verified {
            let mut live = self
                .inner
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            live.retain(|_, state| state.strong_count() > 0);
            live.insert(id, Arc::downgrade(&state));
        }
        Ok(Partial {
            store: self.clone(),
            key,
            id,
            size,
            mode,
            file,
            path,
            state,
            commit_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
        })
    }

    /// Deletes the partial download `key` (records and files), if there is
    /// one; returns true if there was. A complete blob is not touched.
    ///
    /// # Errors
    /// I/O and database errors.
    pub fn discard_partial(&self, key: &PartialKey) -> Result<bool> {
        let id = key.id();
        if self.partial_record(&id)?.is_none() {
            return Ok(false);
        }
        self.forget_partial_records(&id)?;
        remove_if_exists(&self.partial_path(&id, "data"))?;
        remove_if_exists(&self.partial_path(&id, "obao"))?;
        Ok(true)
    }

    /// Removes the records of partial `id` in one transaction: its record,
    /// its bitmap, and its outboard's unless a complete blob owns it. The
    /// files are the caller's to remove (after this commit).
    pub(crate) fn forget_partial_records(&self, id: &[u8; 32]) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            txn.open_table(tables::PARTIALS)?.remove(id)?;
            txn.open_table(tables::BITMAPS)?.remove(id)?;
            if txn.open_table(tables::BLOBS)?.get(id)?.is_none() {
                txn.open_table(tables::OUTBOARDS)?.remove(id)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn stored_bitmap(&self, id: &[u8; 32], chunks: u64) -> Result<Option<ChunkBitmap>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(tables::BITMAPS)?;
        let Some(bytes) = table.get(id)? else {
            return Ok(None);
        };
        ChunkBitmap::from_bytes(chunks, bytes.value())
            .map(Some)
            .map_err(|error| Error::Corrupt(error.to_string()))
    }

    /// What of blob `hash` can be served to a peer: its data file, its
    /// outboard and the chunks that are verified and written (all of them
    /// for a complete blob; for a verified partial, those written so far
    /// if it is open in this process, else the committed ones). Serving a
    /// written chunk before its commit is safe: it was verified on
    /// arrival and is verified again as it is read. `None` when the store
    /// holds nothing servable.
    ///
    /// # Errors
    /// I/O and database errors.
    pub fn readable(&self, hash: Hash) -> Result<Option<Readable>> {
        let Some(outboard) = self.outboard(hash)? else {
            return Ok(None);
        };
        let size = outboard.size();
        let (path, present) = if self.has(hash)? {
            (self.blob_path(hash), ChunkBitmap::full(chunk_count(size)))
        } else {
            let id = *hash.as_bytes();
            match self.partial_record(&id)? {
                Some(record) if record.mode == PartialMode::Verified && record.size == size => {
                    let present = match self.live_present(&id) {
                        Some(present) => present,
                        None => self
                            .stored_bitmap(&id, chunk_count(size))?
                            .unwrap_or_else(|| ChunkBitmap::new(chunk_count(size))),
                    };
                    (self.partial_path(&id, "data"), present)
                }
                _ => return Ok(None),
            }
        };
        let data = File::open(&path).map_err(Error::io("opening blob to serve", &path))?;
        Ok(Some(Readable {
            size,
            data,
            outboard,
            present,
        }))
    }

    /// The chunks written so far (committed or not) of the verified partial
    /// `id`, if it is open in this process.
    fn live_present(&self, id: &[u8; 32]) -> Option<ChunkBitmap> {
        let live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = live.get(id)?.upgrade()?;
        let present = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .present
            .clone();
        Some(present)
    }

    /// Keeps a checked outboard for the blob `hash` that is still arriving,
    /// so that a resumed download verifies per chunk without fetching the
    /// outboard again.
    ///
    /// # Errors
    /// I/O and database errors.
    pub fn put_partial_outboard(&self, outboard: &Outboard) -> Result<()> {
        let hash = outboard.hash();
        let path = self.partial_path(hash.as_bytes(), "obao");
        let staging = self.tmp_path(&format!("{hash}.partial.obao"));
        write_synced(&staging, outboard.as_bytes())?;
        fs::rename(&staging, &path).map_err(Error::io("saving outboard", &path))?;
        let txn = self.db().begin_write()?;
        txn.open_table(tables::OUTBOARDS)?
            .insert(hash.as_bytes(), outboard.size())?;
        txn.commit()?;
        Ok(())
    }
}

impl Partial {
    /// What this partial is kept under.
    pub fn key(&self) -> &PartialKey {
        &self.key
    }

    /// Size of the blob in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How recorded chunks were checked.
    pub fn mode(&self) -> &PartialMode {
        &self.mode
    }

    /// The chunks present now (including ones not yet committed).
    pub fn present(&self) -> ChunkBitmap {
        self.lock().present.clone()
    }

    /// Bytes present now.
    pub fn present_bytes(&self) -> u64 {
        let state = self.lock();
        let last = state.present.len().checked_sub(1);
        let short_tail = last
            .filter(|&last| state.present.get(last))
            .map_or(0, |last| {
                CHUNK_SIZE - (chunk_bytes(last, self.size).end - last * CHUNK_SIZE)
            });
        state.present.count() * CHUNK_SIZE - short_tail
    }

    /// True if and only if every chunk is present.
    pub fn is_complete(&self) -> bool {
        self.lock().present.is_complete()
    }

    /// Runs of chunks still missing.
    pub fn missing(&self) -> Vec<Range<u64>> {
        self.lock().present.missing_runs().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True if and only if chunk `index` is present.
    pub fn has_chunk(&self, index: u64) -> bool {
        self.lock().present.get(index)
    }

    /// Writes whole chunks starting at chunk `first_chunk` and marks them
    /// present; returns how many of those bytes were new. In a verified
    /// partial the caller must have checked them against the outboard.
    /// Commits when the window is full.
    ///
    /// # Errors
    /// A write error (a full disk, say); chunks already recorded stay.
    pub fn write_chunks(&self, first_chunk: u64, data: &[u8]) -> Result<u64> {
        let offset = first_chunk * CHUNK_SIZE;
        let end = offset + data.len() as u64;
        assert!(
            end <= self.size && (end % CHUNK_SIZE == 0 || end == self.size),
            "write of {} bytes at chunk {first_chunk} is not whole chunks of a {} byte blob",
            data.len(),
            self.size
        );
        {
            let _one_writer = self.write_lock.lock();
            self.file
                .write_all_at(data, offset)
                .map_err(Error::io("writing partial file", &self.path))?;
        }
        let (new_bytes, due) = {
            let mut state = self.lock();
            let mut new_bytes = 0;
            for chunk in first_chunk..end.div_ceil(CHUNK_SIZE) {
                if state.present.set(chunk) {
                    new_bytes += chunk_bytes(chunk, self.size).end - chunk * CHUNK_SIZE;
                }
            }
            state.uncommitted_bytes += new_bytes;
            let due = state.uncommitted_bytes >= COMMIT_BYTES
                || (state.uncommitted_bytes > 0 && state.last_commit.elapsed() >= COMMIT_INTERVAL);
            (new_bytes, due)
        };
        if due {
            self.commit()?;
        }
        Ok(new_bytes)
    }

    /// Reads whole chunks from the partial file (for the final hash, or to
    /// serve present chunks).
    ///
    /// # Errors
    /// I/O errors.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(Error::io("reading partial file", &self.path))
    }

    /// Syncs the data file, then records the present chunks in the database.
    ///
    /// # Errors
    /// I/O and database errors; chunks committed before stay committed.
    pub fn commit(&self) -> Result<()> {
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (snapshot, uncommitted) = {
            let mut state = self.lock();
            if state.sync_failed {
                let poisoned = std::io::Error::other(
                    "an earlier sync of this file failed; reopen the download",
                );
                return Err(Error::io("syncing partial file", &self.path)(poisoned));
            }
            if state.uncommitted_bytes == 0 {
                return Ok(());
            }
            let uncommitted = std::mem::take(&mut state.uncommitted_bytes);
            state.last_commit = Instant::now();
            (state.present.clone(), uncommitted)
        };
        if let Err(error) = self.file.sync_data() {
            let mut state = self.lock();
            state.sync_failed = true;
            state.uncommitted_bytes += uncommitted;
            return Err(Error::io("syncing partial file", &self.path)(error));
        }
        let record = PartialRecord {
            size: self.size,
            expected: self.key.expected(),
            mode: self.mode.clone(),
            touched_at: tables::now(),
        };
        let persisted = (|| -> Result<()> {
            let txn = self.store.db().begin_write()?;
            txn.open_table(tables::PARTIALS)?
                .insert(&self.id, &tables::encode(&record)[..])?;
            txn.open_table(tables::BITMAPS)?
                .insert(&self.id, snapshot.as_bytes())?;
            txn.commit()?;
            Ok(())
        })();
        if persisted.is_err() {
            // Still uncommitted: the next commit tries again.
            self.lock().uncommitted_bytes += uncommitted;
        }
        persisted
    }

    /// Forgets every recorded chunk (the source's content changed under an
    /// unverified partial).
    ///
    /// # Errors
    /// Database errors.
    pub fn reset(&self) -> Result<()> {
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let empty = ChunkBitmap::new(chunk_count(self.size));
        {
            let mut state = self.lock();
            state.present = empty.clone();
            state.uncommitted_bytes = 0;
        }
        let txn = self.store.db().begin_write()?;
        txn.open_table(tables::BITMAPS)?
            .insert(&self.id, empty.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Checks the whole blob and publishes it under its hash.
    ///
    /// The data file is hashed from disk (and, without a stored outboard,
    /// its outboard built in the same pass); only when the hash is the
    /// expected one does the blob appear in `blobs/`.
    ///
    /// # Errors
    /// [`Error::Incomplete`] when chunks are missing, [`Error::HashMismatch`]
    /// when the bytes are wrong (the partial is then emptied, since no
    /// recorded chunk can be trusted), and I/O and database errors.
    pub fn finish(self) -> Result<Hash> {
        let present = self.present();
        if !present.is_complete() {
            return Err(Error::Incomplete {
                key: Hash::from_bytes(self.id).to_string(),
                present: present.count(),
                total: present.len(),
            });
        }
        self.file
            .sync_all()
            .map_err(Error::io("syncing partial file", &self.path))?;
        let stored_outboard = self.store.partial_path(&self.id, "obao");
        let (actual, outboard_path) =
            if self.mode == PartialMode::Verified && stored_outboard.exists() {
                let mut hasher = blake3::Hasher::new();
                hasher
                    .update_mmap_rayon(&self.path)
                    .map_err(Error::io("hashing partial file", &self.path))?;
                (Hash::from(hasher.finalize()), stored_outboard)
            } else {
                let reader = File::open(&self.path)
                    .map_err(Error::io("reading partial file", &self.path))?;
                let reader = std::io::BufReader::with_capacity(1 << 20, reader);
                let outboard = Outboard::compute(reader, self.size)
                    .map_err(Error::io("hashing partial file", &self.path))?;
                let staging = self.store.tmp_path(&format!("{}.obao", outboard.hash()));
                write_synced(&staging, outboard.as_bytes())?;
                (outboard.hash(), staging)
            };
        if let Some(expected) = self.key.expected().map(Hash::from_bytes) {
            if actual != expected {
                self.forget_bad_chunks(expected)?;
                return Err(Error::HashMismatch { expected, actual });
            }
        }
        if self.store.has(actual)? {
            let _ = self.discard_files();
            self.store.forget_partial_records(&self.id)?;
            return Ok(actual);
        }
        self.store
            .publish(actual, self.size, &self.path, &outboard_path, Some(self.id))?;
        Ok(actual)
    }

    /// After a failed whole-blob hash: a verified partial keeps exactly the
    /// chunks that still match its outboard (bytes that rotted on disk are
    /// dropped); an unverified one can trust none and starts over.
    fn forget_bad_chunks(&self, expected: Hash) -> Result<()> {
        let obao = self.store.partial_path(&self.id, "obao");
        let outboard = match (&self.mode, File::open(&obao)) {
            (PartialMode::Verified, Ok(obao)) => Outboard::trusted(expected, self.size, obao),
            _ => return self.reset(),
        };
        let valid = outboard.valid_chunks(&self.file)?;
        tracing::warn!(hash = %expected, bad = valid.len() - valid.count(), "dropping chunks whose bytes changed on disk");
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.lock().present = valid.clone();
        let txn = self.store.db().begin_write()?;
        txn.open_table(tables::BITMAPS)?
            .insert(&self.id, valid.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes the partial: its records and its files.
    ///
    /// # Errors
    /// I/O and database errors.
    pub fn discard(self) -> Result<()> {
        self.store.forget_partial_records(&self.id)?;
        self.discard_files()
    }

    fn discard_files(&self) -> Result<()> {
        remove_if_exists(&self.path)?;
        remove_if_exists(&self.store.partial_path(&self.id, "obao"))
    }
}
