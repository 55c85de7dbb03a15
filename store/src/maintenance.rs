//! Keeping a store honest: [`Store::verify`] rehashes everything and makes
//! the records match the bytes; [`Store::gc`] removes what was abandoned.

use std::fs::{self, File};
use std::time::Duration;

use p2pmodel_protocol::chunks::chunk_count;
use p2pmodel_protocol::verified::outboard_size;
use p2pmodel_protocol::{ChunkBitmap, Hash, Outboard};
use redb::{ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::store::{Store, remove_if_exists};
use crate::tables::{self, BlobRecord, PartialMode, PartialRecord};

/// What [`Store::verify`] found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Complete blobs whose bytes all matched.
    pub blobs_ok: u64,
    /// Complete blobs with damaged chunks: turned back into partials that
    /// keep their good chunks, so only the damaged ones are fetched again.
    pub blobs_damaged: Vec<Hash>,
    /// Complete blobs whose data file was gone: their records were removed.
    pub blobs_missing: Vec<Hash>,
    /// Partials checked against their outboard.
    pub partials_checked: u64,
    /// Chunks that were recorded as present but whose bytes were wrong
    /// (dropped from the record).
    pub chunks_dropped: u64,
    /// Chunks whose bytes were right but not yet recorded (the crash window),
    /// now recorded.
    pub chunks_recovered: u64,
    /// Partials without an outboard: their bytes can only be checked when
    /// the whole blob has arrived.
    pub partials_unverifiable: u64,
}

impl VerifyReport {
    /// True if and only if nothing needed repair.
    pub fn is_clean(&self) -> bool {
        self.blobs_damaged.is_empty() && self.blobs_missing.is_empty() && self.chunks_dropped == 0
    }
}

/// What [`Store::gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Partial downloads untouched for longer than the limit.
    pub partials_removed: u64,
    /// Files with no record: leftovers of crashes and staging files.
    pub stray_files_removed: u64,
    /// Bytes of disk freed.
    pub bytes_freed: u64,
}

impl Store {
    /// Rehashes every complete blob and every verifiable partial against
    /// its outboard and repairs the records to match the bytes on disk.
    ///
    /// # Errors
    /// I/O and database errors; repairs done before the error stay done.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (hash, record) in self.complete_records()? {
            self.verify_blob(hash, record, &mut report)?;
        }
        for (id, record) in self.partial_records()? {
            self.verify_partial(id, &record, &mut report)?;
        }
        Ok(report)
    }

    fn verify_blob(&self, hash: Hash, record: BlobRecord, report: &mut VerifyReport) -> Result<()> {
        let data_path = self.blob_path(hash);
        let data = match File::open(&data_path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(%hash, "blob file is missing; forgetting the blob");
                self.remove(hash)?;
                report.blobs_missing.push(hash);
                return Ok(());
            }
            Err(error) => return Err(Error::io("opening blob", &data_path)(error)),
        };
        let obao_path = self.blob_outboard_path(hash);
        let checked = File::open(&obao_path)
            .ok()
            .filter(|obao| {
                obao.metadata()
                    .is_ok_and(|m| m.len() == outboard_size(record.size))
            })
            .and_then(|obao| {
                Outboard::trusted(hash, record.size, obao)
                    .valid_chunks(&data)
                    .ok()
            });
        let valid = match checked {
            Some(valid) => valid,
            None => {
                // Without a usable outboard a blob can still be checked
                // whole, and its outboard rebuilt.
                let computed = Outboard::compute(std::io::BufReader::new(&data), record.size)
                    .map_err(Error::io("hashing blob", &data_path))?;
                if computed.hash() == hash {
                    crate::store::write_synced(&obao_path, computed.as_bytes())?;
                    ChunkBitmap::full(chunk_count(record.size))
                } else {
                    ChunkBitmap::new(chunk_count(record.size))
                }
            }
        };
        if valid.is_complete() {
            report.blobs_ok += 1;
            return Ok(());
        }
        tracing::warn!(%hash, bad = valid.len() - valid.count(), "blob has damaged chunks; keeping the good ones");
        self.demote(hash, &record, &valid)?;
        report.blobs_damaged.push(hash);
        Ok(())
    }

    /// Turns a damaged complete blob back into a verified partial holding
    /// its good chunks.
    fn demote(&self, hash: Hash, record: &BlobRecord, valid: &ChunkBitmap) -> Result<()> {
        let id = *hash.as_bytes();
        let (data, obao) = (
            self.partial_path(&id, "data"),
            self.partial_path(&id, "obao"),
        );
        let blob = self.blob_path(hash);
        let mut permissions = fs::metadata(&blob)
            .map_err(Error::io("reading blob", &blob))?
            .permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        fs::set_permissions(&blob, permissions)
            .map_err(Error::io("making blob writable", &blob))?;
        fs::rename(&blob, &data).map_err(Error::io("moving damaged blob", &data))?;
        let has_obao = fs::rename(self.blob_outboard_path(hash), &obao).is_ok();
        let partial = PartialRecord {
            size: record.size,
            expected: Some(id),
            mode: if has_obao {
                PartialMode::Verified
            } else {
                PartialMode::Unverified {
                    source: String::new(),
                    validator: None,
                }
            },
            touched_at: tables::now(),
        };
        let txn = self.db().begin_write()?;
        {
            txn.open_table(tables::BLOBS)?.remove(&id)?;
            txn.open_table(tables::PARTIALS)?
                .insert(&id, &tables::encode(&partial)[..])?;
            let bitmap = if has_obao {
                valid.clone()
            } else {
                ChunkBitmap::new(valid.len())
            };
            txn.open_table(tables::BITMAPS)?
                .insert(&id, bitmap.as_bytes())?;
            if !has_obao {
                txn.open_table(tables::OUTBOARDS)?.remove(&id)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn verify_partial(
        &self,
        id: [u8; 32],
        record: &PartialRecord,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let obao_path = self.partial_path(&id, "obao");
        let (Some(expected), PartialMode::Verified, Ok(obao)) =
            (record.expected, &record.mode, File::open(&obao_path))
        else {
            report.partials_unverifiable += 1;
            return Ok(());
        };
        let data_path = self.partial_path(&id, "data");
        let chunks = chunk_count(record.size);
        if obao
            .metadata()
            .map_or(true, |m| m.len() != outboard_size(record.size))
        {
            // A torn outboard cannot vouch for anything.
            report.partials_unverifiable += 1;
            return Ok(());
        }
        let valid = match File::open(&data_path) {
            Ok(data) => Outboard::trusted(Hash::from_bytes(expected), record.size, obao)
                .valid_chunks(&data)?,
            Err(_) => ChunkBitmap::new(chunks),
        };
        let recorded = self
            .stored_bitmap(&id, chunks)?
            .unwrap_or_else(|| ChunkBitmap::new(chunks));
        for chunk in 0..chunks {
            match (recorded.get(chunk), valid.get(chunk)) {
                (true, false) => report.chunks_dropped += 1,
                (false, true) => report.chunks_recovered += 1,
                _ => {}
            }
        }
        report.partials_checked += 1;
        if recorded != valid {
            let txn = self.db().begin_write()?;
            txn.open_table(tables::BITMAPS)?
                .insert(&id, valid.as_bytes())?;
            txn.commit()?;
        }
        Ok(())
    }

    /// Removes partial downloads untouched for longer than `older_than`,
    /// and files that no record names (crash leftovers, old staging files).
    ///
    /// # Errors
    /// I/O and database errors.
    pub fn gc(&self, older_than: Duration) -> Result<GcReport> {
        let mut report = GcReport::default();
        let cutoff = tables::now().saturating_sub(older_than.as_secs());
        let mut kept = std::collections::HashSet::new();
        for (id, record) in self.partial_records()? {
            if record.touched_at > cutoff {
                kept.insert(Hash::from_bytes(id).to_hex());
                continue;
            }
            self.forget_partial_records(&id)?;
            for extension in ["data", "obao"] {
                report.bytes_freed += remove_counted(&self.partial_path(&id, extension))?;
            }
            report.partials_removed += 1;
        }
        let own_suffix = format!(".{}", std::process::id());
        for entry in read_dir(&self.root().join("tmp"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(&own_suffix) {
                report.bytes_freed += remove_counted(&entry.path())?;
                report.stray_files_removed += 1;
            }
        }
        for entry in read_dir(&self.root().join("partial"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or_default();
            if !kept.contains(stem) {
                report.bytes_freed += remove_counted(&entry.path())?;
                report.stray_files_removed += 1;
            }
        }
        let complete: std::collections::HashSet<String> = self
            .complete_records()?
            .into_iter()
            .map(|(hash, _)| hash.to_hex())
            .collect();
        for entry in read_dir(&self.root().join("blobs"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or_default();
            if !complete.contains(stem) {
                report.bytes_freed += remove_counted(&entry.path())?;
                report.stray_files_removed += 1;
            }
        }
        Ok(report)
    }

    fn complete_records(&self) -> Result<Vec<(Hash, BlobRecord)>> {
        let txn = self.db().begin_read()?;
        let mut records = Vec::new();
        for entry in txn.open_table(tables::BLOBS)?.iter()? {
            let (key, value) = entry?;
            records.push((
                Hash::from_bytes(*key.value()),
                tables::decode(value.value(), "blob record")?,
            ));
        }
        Ok(records)
    }

    fn partial_records(&self) -> Result<Vec<([u8; 32], PartialRecord)>> {
        let txn = self.db().begin_read()?;
        let mut records = Vec::new();
        for entry in txn.open_table(tables::PARTIALS)?.iter()? {
            let (key, value) = entry?;
            records.push((
                *key.value(),
                tables::decode(value.value(), "partial record")?,
            ));
        }
        Ok(records)
    }
}

fn read_dir(dir: &std::path::Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect())
        .map_err(Error::io("listing store folder", dir))
}

fn remove_counted(path: &std::path::Path) -> Result<u64> {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    remove_if_exists(path)?;
    Ok(len)
}
