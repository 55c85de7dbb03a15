//! The queue on disk: `STORE/jobs.json`, rewritten whole after every change
//! of a job's state (not after progress, which the node keeps itself).
//!
//! A write goes to `jobs.json.tmp`, is synced, renamed over `jobs.json`,
//! and the folder is synced: after `kill -9` or a power cut the file holds
//! either the queue before the change or after it, never a torn mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::Job;

/// The file's name in the store folder.
pub const JOBS_FILE: &str = "jobs.json";

/// The version written into the file; a file of another version is refused.
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The file format's version.
    pub version: u32,
    /// The number the next job's id gets.
    pub next_id: u64,
    /// Whether queued jobs were being started.
    pub processing: bool,
    /// Every job; queued jobs in queue order.
    pub jobs: Vec<Job>,
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The file is not a queue this version understands.
    #[error(
        "{path} is not a queue file this version understands ({reason}); move it aside to start with an empty queue"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The queue file of one store.
#[derive(Debug, Clone)]
pub struct JobsFile {
    path: PathBuf,
}

impl JobsFile {
    /// The queue file in the store folder `root`.
    pub fn in_store(root: &Path) -> Self {
        Self {
            path: root.join(JOBS_FILE),
        }
    }

    /// Reads the file; an absent file is an empty queue.
    ///
    /// # Errors
    /// [`PersistError`] when it cannot be read or understood.
    pub fn load(&self) -> Result<Saved, PersistError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Saved {
                    version: VERSION,
                    next_id: 1,
                    ..Saved::default()
                });
            }
            Err(source) => return Err(self.io(source)),
        };
        let saved: Saved =
            serde_json::from_slice(&bytes).map_err(|error| PersistError::Unreadable {
                path: self.path.clone(),
                reason: error.to_string(),
            })?;
        if saved.version != VERSION {
            return Err(PersistError::Unreadable {
                path: self.path.clone(),
                reason: format!("version {}, expected {VERSION}", saved.version),
            });
        }
        Ok(saved)
    }

    /// Replaces the file with `saved`, durably, all or nothing.
    ///
    /// # Errors
    /// [`PersistError::Io`]; the previous file is then still whole.
    pub fn save(&self, saved: &Saved) -> Result<(), PersistError> {
        let staging = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(saved).expect("jobs serialise");
        let write = || -> io::Result<()> {
            let mut file = File::create(&staging)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&staging, &self.path)?;
            if let Some(folder) = self.path.parent() {
                File::open(folder)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|source| self.io(source))
    }

    fn io(&self, source: io::Error) -> PersistError {
        PersistError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Builds a [`Saved`] with this version's number.
pub fn saved(next_id: u64, processing: bool, jobs: Vec<Job>) -> Saved {
    Saved {
        version: VERSION,
        next_id,
        processing,
        jobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, JobSpec, Target};

    #[test]
    fn a_saved_queue_loads_back_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = JobsFile::in_store(dir.path());
        assert!(file.load().unwrap().jobs.is_empty(), "no file, no jobs");
        let spec = JobSpec {
            target: Target::Hf {
                name: "hf://org/repo".into(),
            },
            mirrors: vec![],
            peers: vec![],
            output: None,
            group: None,
        };
        let jobs = vec![Job::new(JobId::numbered(1), spec)];
        file.save(&saved(2, true, jobs.clone())).unwrap();
        let back = file.load().unwrap();
        assert_eq!((back.next_id, back.processing), (2, true));
        assert_eq!(back.jobs, jobs);
        assert!(!dir.path().join("jobs.json.tmp").exists());

        fs::write(dir.path().join(JOBS_FILE), b"{\"version\": 9}").unwrap();
        assert!(matches!(file.load(), Err(PersistError::Unreadable { .. })));
    }
}
