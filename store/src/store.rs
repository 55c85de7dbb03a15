//! [`Store`]: opening the store, complete blobs and their outboards,
//! manifests, aliases, listing, removal and export.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use p2pmodel_protocol::manifest::check_path;
use p2pmodel_protocol::{Hash, Manifest, Outboard, Sha256};
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::error::{Error, OpenError, Result};
use crate::tables::{self, BlobRecord, PartialRecord};

/// Name of the database file inside the store folder.
const DB_FILE: &str = "p2pmodel.redb";
/// File in which the process holding the store leaves its id.
const PID_FILE: &str = "owner.pid";

/// A p2pmodel store: one folder holding verified blobs, their outboards,
/// partial downloads and a redb database that says which is which.
///
/// ```text
/// STORE/p2pmodel.redb        metadata: blobs, partials, bitmaps, outboards, manifests, aliases
/// STORE/blobs/HASH           a complete blob, read-only, published only after its hash matched
/// STORE/blobs/HASH.obao      its outboard (pre-order BLAKE3 tree, 16 KiB chunks)
/// STORE/partial/KEY.data     a blob still arriving, written in place
/// STORE/partial/KEY.obao     its outboard, once checked against the root
/// STORE/tmp/                 staging for imports and outboards; emptied by gc
/// ```
///
/// One process holds a store at a time; a second [`Store::open`] fails with
/// [`OpenError::InUse`] instead of waiting. Cloning a `Store` is shallow.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) db: Database,
    /// The verified partials open now, so that peers are served chunks
    /// as soon as they are written, before their bitmap is committed.
    pub(crate) live: crate::partial::LivePartials,
}

/// What the store knows of one blob, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's hash, or for a partial download of a plain URL, the key
    /// under which it is kept.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Complete or still arriving.
    pub state: BlobState,
    /// True if and only if the blob is a model manifest.
    pub is_model: bool,
}

/// Whether a blob is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Every byte is present and the whole-blob hash matched.
    Complete,
    /// Still arriving: this many bytes are recorded as present.
    Partial {
        /// Bytes present.
        present: u64,
    },
}

/// How [`Store::export`] placed a blob at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMethod {
    /// A hard link to the store's read-only copy (same filesystem).
    HardLink,
    /// A full copy (another filesystem, or links not allowed).
    Copy,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed.
    ///
    /// Partials whose publication was cut short by a crash (data renamed
    /// into `blobs/` but not yet recorded) are completed here.
    ///
    /// # Errors
    /// [`OpenError::InUse`] when another process holds the store,
    /// [`OpenError::Schema`] for a store of another version, and I/O or
    /// database errors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, OpenError> {
        let root = dir.as_ref().to_path_buf();
        let io_error = |source| OpenError::Io {
            path: root.clone(),
            source,
        };
        for sub in ["blobs", "partial", "tmp"] {
            fs::create_dir_all(root.join(sub)).map_err(io_error)?;
        }
        let db_path = root.join(DB_FILE);
        let db = match Database::create(&db_path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                let pid = fs::read_to_string(root.join(PID_FILE))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(OpenError::InUse { path: root, pid });
            }
            Err(error) => {
                return Err(OpenError::Database {
                    path: db_path,
                    source: error.into(),
                });
            }
        };
        let db_error = |source: redb::Error| OpenError::Database {
            path: db_path.clone(),
            source,
        };
        check_schema(&db, &root).map_err(|error| match error {
            SchemaCheck::Db(error) => db_error(error),
            SchemaCheck::Mismatch(open_error) => open_error,
        })?;
        // Best effort: only used to name the holder in `InUse`.
        let _ = fs::write(root.join(PID_FILE), std::process::id().to_string());
        let store = Self {
            inner: Arc::new(Inner {
                root,
                db,
                live: Default::default(),
            }),
        };
        store
            .recover_interrupted_publishes()
            .map_err(|error| OpenError::Io {
                path: store.root().to_path_buf(),
                source: io::Error::other(error.to_string()),
            })?;
        Ok(store)
    }

    /// The store folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Path of a complete blob's data (whether or not it exists).
    pub fn blob_path(&self, hash: Hash) -> PathBuf {
        self.root().join("blobs").join(hash.to_hex())
    }

    pub(crate) fn blob_outboard_path(&self, hash: Hash) -> PathBuf {
        self.root().join("blobs").join(format!("{hash}.obao"))
    }

    pub(crate) fn tmp_path(&self, name: &str) -> PathBuf {
        self.root()
            .join("tmp")
            .join(format!("{name}.{}", std::process::id()))
    }

    /// The record of a complete blob, if the store has it.
    pub fn blob(&self, hash: Hash) -> Result<Option<BlobRecord>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(tables::BLOBS)?;
        match table.get(hash.as_bytes())? {
            Some(value) => Ok(Some(tables::decode(value.value(), "blob record")?)),
            None => Ok(None),
        }
    }

    /// True if and only if the store holds the complete, verified blob.
    pub fn has(&self, hash: Hash) -> Result<bool> {
        Ok(self.blob(hash)?.is_some())
    }

    /// The outboard of `hash`, from a complete blob or a partial whose
    /// outboard was checked, opened from its file.
    pub fn outboard(&self, hash: Hash) -> Result<Option<Outboard<File>>> {
        let size = {
            let txn = self.db().begin_read()?;
            let table = txn.open_table(tables::OUTBOARDS)?;
            let Some(size) = table.get(hash.as_bytes())? else {
                return Ok(None);
            };
            size.value()
        };
        let path = if self.has(hash)? {
            self.blob_outboard_path(hash)
        } else {
            self.partial_path(hash.as_bytes(), "obao")
        };
        let file = File::open(&path).map_err(Error::io("opening outboard", &path))?;
        Ok(Some(Outboard::trusted(hash, size, file)))
    }

    /// Hashes `source` and adds it as a blob; returns its hash. Importing a
    /// blob the store already has is cheap and changes nothing.
    ///
    /// The file is copied in one pass that also builds its outboard, then
    /// published; a crash leaves at most a file in `tmp/`.
    ///
    /// # Errors
    /// When the file cannot be read or the copy cannot be written.
    pub fn import_file(&self, source: &Path) -> Result<Hash> {
        let file = File::open(source).map_err(Error::io("opening file to add", source))?;
        let size = file
            .metadata()
            .map_err(Error::io("reading file to add", source))?
            .len();
        self.import_reader(file, size, source)
    }

    /// Adds `bytes` as a blob; returns its hash.
    ///
    /// # Errors
    /// When the copy cannot be written.
    pub fn import_bytes(&self, bytes: &[u8]) -> Result<Hash> {
        self.import_reader(bytes, bytes.len() as u64, Path::new("<memory>"))
    }

    fn import_reader(&self, source: impl Read, size: u64, source_path: &Path) -> Result<Hash> {
        let tmp = self.tmp_path(&format!("import-{}", tables::now_nanos()));
        let copy = File::create(&tmp).map_err(Error::io("creating staging file", &tmp))?;
        let mut tee = Tee {
            source,
            copy: io::BufWriter::with_capacity(1 << 20, copy),
            failed_write: None,
        };
        let computed = Outboard::compute(&mut tee, size);
        if let Some(error) = tee.failed_write.take() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("writing staging file", &tmp)(error));
        }
        let outboard = match computed {
            Ok(outboard) => outboard,
            Err(error) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io("reading file to add", source_path)(error));
            }
        };
        let copy = tee
            .copy
            .into_inner()
            .map_err(|error| Error::io("writing staging file", &tmp)(error.into_error()))?;
        copy.sync_all()
            .map_err(Error::io("syncing staging file", &tmp))?;
        drop(copy);
        let hash = outboard.hash();
        if self.has(hash)? {
            let _ = fs::remove_file(&tmp);
            return Ok(hash);
        }
        let obao_tmp = self.tmp_path(&format!("{hash}.obao"));
        write_synced(&obao_tmp, outboard.as_bytes())?;
        self.publish(hash, size, &tmp, &obao_tmp, None)?;
        Ok(hash)
    }

    /// Moves a verified data file and its staged outboard file into
    /// `blobs/` and records both in one transaction (removing the partial
    /// `key`, if any).
    ///
    /// The caller has checked that `data` hashes to `hash` and that the
    /// outboard at `outboard` (already synced) belongs to it.
    pub(crate) fn publish(
        &self,
        hash: Hash,
        size: u64,
        data: &Path,
        outboard: &Path,
        partial_key: Option<[u8; 32]>,
    ) -> Result<()> {
        // Data first: until the commit, a crash leaves the partial record
        // pointing at a blob in `blobs/`, which `open` finishes publishing.
        let target = self.blob_path(hash);
        fs::rename(data, &target).map_err(Error::io("publishing blob", &target))?;
        set_read_only(&target)?;
        let obao = self.blob_outboard_path(hash);
        fs::rename(outboard, &obao).map_err(Error::io("publishing outboard", &obao))?;
        sync_dir(&self.root().join("blobs"))?;
        let txn = self.db().begin_write()?;
        {
            let record = BlobRecord {
                size,
                completed_at: tables::now(),
            };
            txn.open_table(tables::BLOBS)?
                .insert(hash.as_bytes(), &tables::encode(&record)[..])?;
            txn.open_table(tables::OUTBOARDS)?
                .insert(hash.as_bytes(), size)?;
            if let Some(key) = partial_key {
                txn.open_table(tables::PARTIALS)?.remove(&key)?;
                txn.open_table(tables::BITMAPS)?.remove(&key)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Publishes partials whose data already sits in `blobs/` (a crash came
    /// between the rename and the commit in [`Store::publish`]). The data
    /// was renamed only after its hash matched; its outboard is moved
    /// beside it, or rebuilt (and checked) if it never got there.
    fn recover_interrupted_publishes(&self) -> Result<()> {
        let stranded: Vec<([u8; 32], PartialRecord)> = {
            let txn = self.db().begin_read()?;
            let table = txn.open_table(tables::PARTIALS)?;
            let mut found = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let record: PartialRecord = tables::decode(value.value(), "partial record")?;
                let key = *key.value();
                let data_gone = !self.partial_path(&key, "data").exists();
                if let Some(expected) = record.expected.filter(|_| data_gone) {
                    if self.blob_path(Hash::from_bytes(expected)).exists() {
                        found.push((key, record));
                    }
                }
            }
            found
        };
        for (key, record) in stranded {
            let hash = Hash::from_bytes(record.expected.expect("filtered above"));
            tracing::info!(%hash, "completing a publish interrupted by a crash");
            let obao = self.blob_outboard_path(hash);
            if !obao.exists() {
                let partial_obao = self.partial_path(&key, "obao");
                if fs::rename(&partial_obao, &obao).is_err() {
                    let blob = self.blob_path(hash);
                    let file = File::open(&blob).map_err(Error::io("reading blob", &blob))?;
                    let outboard = Outboard::compute(io::BufReader::new(file), record.size)
                        .map_err(Error::io("hashing blob", &blob))?;
                    if outboard.hash() != hash {
                        // Cannot happen unless the disk lost data: forget it.
                        remove_if_exists(&blob)?;
                        continue;
                    }
                    write_synced(&obao, outboard.as_bytes())?;
                }
            }
            let txn = self.db().begin_write()?;
            {
                let blob = BlobRecord {
                    size: record.size,
                    completed_at: tables::now(),
                };
                txn.open_table(tables::BLOBS)?
                    .insert(hash.as_bytes(), &tables::encode(&blob)[..])?;
                txn.open_table(tables::OUTBOARDS)?
                    .insert(hash.as_bytes(), record.size)?;
                txn.open_table(tables::PARTIALS)?.remove(&key)?;
                txn.open_table(tables::BITMAPS)?.remove(&key)?;
            }
            txn.commit()?;
        }
        Ok(())
    }

    /// Stores a manifest as a blob and records it as a model; returns the
    /// model's hash.
    ///
    /// # Errors
    /// When writing fails.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<Hash> {
        let bytes = manifest.encode();
        let hash = self.import_bytes(&bytes)?;
        let txn = self.db().begin_write()?;
        txn.open_table(tables::MANIFESTS)?
            .insert(hash.as_bytes(), &bytes[..])?;
        txn.commit()?;
        Ok(hash)
    }

    /// The manifest named `hash`, if the store knows it as a model.
    ///
    /// # Errors
    /// [`Error::Manifest`] if the stored encoding no longer decodes.
    pub fn manifest(&self, hash: Hash) -> Result<Option<Manifest>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(tables::MANIFESTS)?;
        let Some(bytes) = table.get(hash.as_bytes())? else {
            return Ok(None);
        };
        Ok(Some(Manifest::decode(bytes.value())?))
    }

    /// Records that `sha256` and `hash` name the same bytes.
    ///
    /// # Errors
    /// When the database write fails.
    pub fn put_alias(&self, sha256: Sha256, hash: Hash) -> Result<()> {
        let txn = self.db().begin_write()?;
        txn.open_table(tables::ALIASES)?
            .insert(&sha256.0, hash.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// The BLAKE3 hash of the bytes whose SHA-256 is `sha256`, if known.
    pub fn alias(&self, sha256: Sha256) -> Result<Option<Hash>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(tables::ALIASES)?;
        Ok(table
            .get(&sha256.0)?
            .map(|value| Hash::from_bytes(*value.value())))
    }

    /// Every alias the store knows, as (SHA-256, BLAKE3) pairs ordered by
    /// SHA-256. The blob an alias names may be absent (removed, or never
    /// fetched).
    ///
    /// # Errors
    /// When the database read fails.
    pub fn aliases(&self) -> Result<Vec<(Sha256, Hash)>> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(tables::ALIASES)?;
        let mut aliases = Vec::new();
        for entry in table.iter()? {
            let (sha256, hash) = entry?;
            aliases.push((Sha256(*sha256.value()), Hash::from_bytes(*hash.value())));
        }
        Ok(aliases)
    }

    /// Every complete and partial blob, complete ones first, each group by hash.
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let txn = self.db().begin_read()?;
        let manifests = txn.open_table(tables::MANIFESTS)?;
        let mut infos = Vec::new();
        for entry in txn.open_table(tables::BLOBS)?.iter()? {
            let (key, value) = entry?;
            let record: BlobRecord = tables::decode(value.value(), "blob record")?;
            let hash = Hash::from_bytes(*key.value());
            let is_model = manifests.get(hash.as_bytes())?.is_some();
            infos.push(BlobInfo {
                hash,
                size: record.size,
                state: BlobState::Complete,
                is_model,
            });
        }
        let bitmaps = txn.open_table(tables::BITMAPS)?;
        for entry in txn.open_table(tables::PARTIALS)?.iter()? {
            let (key, value) = entry?;
            let record: PartialRecord = tables::decode(value.value(), "partial record")?;
            let chunks = bitmaps
                .get(key.value())?
                .map(|bits| {
                    bits.value()
                        .iter()
                        .map(|b| u64::from(b.count_ones()))
                        .sum::<u64>()
                })
                .unwrap_or(0);
            let present = (chunks * p2pmodel_protocol::CHUNK_SIZE).min(record.size);
            let hash = Hash::from_bytes(record.expected.unwrap_or(*key.value()));
            infos.push(BlobInfo {
                hash,
                size: record.size,
                state: BlobState::Partial { present },
                is_model: false,
            });
        }
        Ok(infos)
    }

    /// Removes a blob, complete or partial, with its outboard and records.
    /// Aliases and manifests that name it stay (they are facts about bytes).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the store has neither.
    pub fn remove(&self, hash: Hash) -> Result<()> {
        let key = crate::PartialKey::Blob(hash);
        let had_partial = self.partial_record(&key.id())?.is_some();
        let had_blob = self.has(hash)?;
        if !had_blob && !had_partial {
            return Err(Error::NotFound(hash));
        }
        let txn = self.db().begin_write()?;
        {
            txn.open_table(tables::BLOBS)?.remove(hash.as_bytes())?;
            txn.open_table(tables::OUTBOARDS)?.remove(hash.as_bytes())?;
            txn.open_table(tables::PARTIALS)?.remove(hash.as_bytes())?;
            txn.open_table(tables::BITMAPS)?.remove(hash.as_bytes())?;
        }
        txn.commit()?;
        for path in [
            self.blob_path(hash),
            self.blob_outboard_path(hash),
            self.partial_path(&key.id(), "data"),
            self.partial_path(&key.id(), "obao"),
        ] {
            remove_if_exists(&path)?;
        }
        Ok(())
    }

    /// Places a complete blob at `dest`: a hard link when the filesystem
    /// allows, otherwise a copy. Either way the file appears at `dest` only
    /// when whole (staged beside it, then renamed); an existing file there
    /// is replaced.
    ///
    /// The store's copy is read-only; a hard-linked export shares it, so
    /// writing to an exported file would need a `chmod` first and would
    /// then be caught by `verify`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a blob the store does not have, and I/O errors.
    pub fn export(&self, hash: Hash, dest: &Path) -> Result<ExportMethod> {
        if !self.has(hash)? {
            return Err(Error::NotFound(hash));
        }
        let source = self.blob_path(hash);
        let parent = match dest.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(name) = dest.file_name() else {
            return Err(Error::BadPath {
                path: dest.to_path_buf(),
                reason: "export destination has no file name",
            });
        };
        if dest.is_dir() {
            return Err(Error::BadPath {
                path: dest.to_path_buf(),
                reason: "export destination is a folder",
            });
        }
        if same_file(&source, dest) {
            return Ok(ExportMethod::HardLink);
        }
        fs::create_dir_all(&parent).map_err(Error::io("creating export folder", &parent))?;
        let staging = parent.join(format!(
            ".{}.p2pmodel-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        remove_if_exists(&staging)?;
        let method = match fs::hard_link(&source, &staging) {
            Ok(()) => ExportMethod::HardLink,
            Err(_) => {
                copy_synced(&source, &staging)?;
                ExportMethod::Copy
            }
        };
        if let Err(error) = fs::rename(&staging, dest) {
            let _ = fs::remove_file(&staging);
            return Err(Error::io("moving export into place", dest)(error));
        }
        Ok(method)
    }

    /// Exports every file of the model `hash` under the folder `dest`.
    ///
    /// Paths come from a checked manifest and are checked again here; a
    /// path whose folder inside `dest` is a link that leads outside is refused.
    ///
    /// # Errors
    /// When the store lacks the manifest or a file, and I/O errors.
    pub fn export_model(&self, hash: Hash, dest: &Path) -> Result<Vec<PathBuf>> {
        let manifest = self.manifest(hash)?.ok_or(Error::NotFound(hash))?;
        fs::create_dir_all(dest).map_err(Error::io("creating export folder", dest))?;
        let root = dest
            .canonicalize()
            .map_err(Error::io("resolving export folder", dest))?;
        let mut written = Vec::new();
        for file in manifest.files() {
            check_path(&file.path)?;
            let target = root.join(&file.path);
            let parent = target
                .parent()
                .expect("a joined relative path has a parent");
            fs::create_dir_all(parent).map_err(Error::io("creating export folder", parent))?;
            let resolved = parent
                .canonicalize()
                .map_err(Error::io("resolving export folder", parent))?;
            if !resolved.starts_with(&root) {
                return Err(Error::BadPath {
                    path: target,
                    reason: "export path leads outside the target folder",
                });
            }
            self.export(file.hash, &target)?;
            written.push(target);
        }
        Ok(written)
    }
}

/// Name of the manifest file in a mirror folder written by
/// [`Store::export_mirror`].
pub const MIRROR_MANIFEST: &str = "model.p2pmodel";

impl Store {
    /// Writes `hash` into `dir` in the layout a p2pmodel mirror serves, and
    /// returns the path (relative to `dir`) that clients give as `--mirror`:
    /// for a blob, `HASH` with its `HASH.obao` sidecar; for a model, every
    /// file at its path with a `.obao` sidecar, plus [`MIRROR_MANIFEST`].
    /// Files are hard links where possible.
    ///
    /// # Errors
    /// [`Error::NotFound`] for what the store lacks, and I/O errors.
    pub fn export_mirror(&self, hash: Hash, dir: &Path) -> Result<String> {
        let blobs: Vec<(Hash, String)> = match self.manifest(hash)? {
            Some(manifest) => manifest
                .files()
                .iter()
                .map(|file| (file.hash, file.path.clone()))
                .collect(),
            None => vec![(hash, hash.to_hex())],
        };
        let entry = if blobs.len() == 1 && blobs[0].1 == hash.to_hex() {
            hash.to_hex()
        } else {
            self.export(hash, &dir.join(MIRROR_MANIFEST))?;
            MIRROR_MANIFEST.to_owned()
        };
        for (blob, path) in blobs {
            check_path(&path)?;
            let target = dir.join(&path);
            self.export(blob, &target)?;
            let sidecar = dir.join(format!("{path}.obao"));
            let source = self.blob_outboard_path(blob);
            let staging = dir.join(format!("{path}.obao.p2pmodel-{}", std::process::id()));
            copy_synced(&source, &staging)?;
            fs::rename(&staging, &sidecar)
                .map_err(Error::io("writing sidecar outboard", &sidecar))?;
        }
        Ok(entry)
    }
}

/// The schema check on open: either the database failed or the version is foreign.
enum SchemaCheck {
    Db(redb::Error),
    Mismatch(OpenError),
}

fn check_schema(db: &Database, root: &Path) -> Result<(), SchemaCheck> {
    let db_error = |error: redb::Error| SchemaCheck::Db(error);
    let txn = db.begin_write().map_err(|e| db_error(e.into()))?;
    {
        let mut meta = txn
            .open_table(tables::META)
            .map_err(|e| db_error(e.into()))?;
        let found = meta
            .get("schema")
            .map_err(|e| db_error(e.into()))?
            .map(|v| v.value());
        match found {
            Some(found) if found != tables::SCHEMA_VERSION => {
                return Err(SchemaCheck::Mismatch(OpenError::Schema {
                    path: root.to_path_buf(),
                    found,
                    expected: tables::SCHEMA_VERSION,
                }));
            }
            Some(_) => {}
            None => {
                meta.insert("schema", tables::SCHEMA_VERSION)
                    .map_err(|e| db_error(e.into()))?;
            }
        }
        // Create every table so that readers never meet a missing one.
        txn.open_table(tables::BLOBS)
            .map_err(|e| db_error(e.into()))?;
        txn.open_table(tables::PARTIALS)
            .map_err(|e| db_error(e.into()))?;
        txn.open_table(tables::BITMAPS)
            .map_err(|e| db_error(e.into()))?;
        txn.open_table(tables::OUTBOARDS)
            .map_err(|e| db_error(e.into()))?;
        txn.open_table(tables::MANIFESTS)
            .map_err(|e| db_error(e.into()))?;
        txn.open_table(tables::ALIASES)
            .map_err(|e| db_error(e.into()))?;
    }
    txn.commit().map_err(|e| db_error(e.into()))?;
    Ok(())
}

/// Copies what it reads into `copy`; remembers a failed write so that the
/// reader (the outboard computation) stops at once.
struct Tee<R, W> {
    source: R,
    copy: W,
    failed_write: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read(buf)?;
        if let Err(error) = self.copy.write_all(&buf[..n]) {
            let kind = error.kind();
            self.failed_write = Some(error);
            return Err(io::Error::new(kind, "staging copy failed"));
        }
        Ok(n)
    }
}

/// True if and only if both paths exist and are the same file (a hard
/// link), in which case renaming one onto the other would do nothing.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Writes `bytes` to a new file at `path` and syncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(Error::io("creating file", path))?;
    file.write_all(bytes)
        .map_err(Error::io("writing file", path))?;
    file.sync_all().map_err(Error::io("syncing file", path))
}

fn copy_synced(source: &Path, dest: &Path) -> Result<()> {
    let mut from = File::open(source).map_err(Error::io("opening blob", source))?;
    let mut to = File::create(dest).map_err(Error::io("creating export", dest))?;
    io::copy(&mut from, &mut to).map_err(Error::io("copying export", dest))?;
    to.sync_all().map_err(Error::io("syncing export", dest))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing folder", dir))
}

fn set_read_only(path: &Path) -> Result<()> {
    let mut permissions = fs::metadata(path)
        .map_err(Error::io("reading blob", path))?
        .permissions();
    permissions.set_readonly(true);
    fs::set_permissions(path, permissions).map_err(Error::io("making blob read-only", path))
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(Error::io("removing file", path)(error))
        }
        _ => Ok(()),
    }
}
