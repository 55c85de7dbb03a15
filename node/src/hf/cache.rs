//! Exporting a fetched snapshot into the Hugging Face cache layout, so that
//! tools reading that cache (huggingface_hub, transformers, llama.cpp) find
//! the files offline.
//!
//! ```text
//! DIR/models--ORG--REPO/blobs/ETAG                  the content (LFS SHA-256, else git blob id)
//! DIR/models--ORG--REPO/snapshots/COMMIT/PATH       relative symlink to ../../blobs/ETAG
//! DIR/models--ORG--REPO/refs/REVISION               the commit hash, no newline
//! ```
//!
//! Blob files are hard links to the store's read-only files, or copies
//! where a link cannot be made; never symlinks into the store, which gc
//! may empty. Every file is put in place by a rename, and an export that
//! is already there is left as it is, so exporting again is harmless.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use p2pmodel_protocol::Hash;
use p2pmodel_protocol::manifest::check_path;
use p2pmodel_store::Store;

use super::hub::Commit;
use super::name::is_name;

/// A fetched revision of a repository, as the cache records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `ORG/REPO`.
    pub repo: String,
    /// The branch, tag or commit asked for.
    pub revision: String,
    /// The commit it pointed to.
    pub commit: Commit,
    /// The files fetched.
    pub files: Vec<SnapshotFile>,
}

/// One file of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Path inside the repository.
    pub path: String,
    /// The cache's name for its content ([`HubFile::etag`](super::HubFile::etag)).
    pub etag: String,
    /// Its blob in the store.
    pub hash: Hash,
}

/// Why a snapshot could not be exported into the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A file system operation failed.
    #[error("Hugging Face cache: {what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// Copying a blob out of the store failed.
    #[error("Hugging Face cache: {0}")]
    Store(#[from] p2pmodel_store::Error),
    /// A name that cannot be used as a file or folder name there.
    #[error("Hugging Face cache: {0:?} cannot be used as a name in the cache")]
    BadName(String),
    /// A folder of the snapshot is a link leading outside it.
    #[error("Hugging Face cache: {0} leads outside the snapshot folder")]
    Escape(PathBuf),
}

/// The cache folder huggingface_hub uses: `HF_HUB_CACHE`, else
/// `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`. `None` when even `HOME` is unset.
pub fn default_dir() -> Option<PathBuf> {
    dir_from(|key| std::env::var_os(key))
}

fn dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("HF_HUB_CACHE")
        .or_else(|| set("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| set("XDG_CACHE_HOME").map(|cache| cache.join("huggingface").join("hub")))
        .or_else(|| set("HOME").map(|home| home.join(".cache").join("huggingface").join("hub")))
}

/// The folder of `repo` in a cache: `models--ORG--REPO`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// Writes `snapshot` into the cache at `dir` (blobs from `store`) and
/// returns its snapshot folder.
///
/// # Errors
/// [`CacheError`] for names unfit for the layout, a snapshot folder whose
/// subfolder is a link leading out of it, and I/O errors.
pub fn export(store: &Store, dir: &Path, snapshot: &Snapshot) -> Result<PathBuf, CacheError> {
    let mut repo_parts = snapshot.repo.split('/');
    let fits = repo_parts.next().is_some_and(is_name)
        && repo_parts.next().is_some_and(is_name)
        && repo_parts.next().is_none();
    if !fits {
        return Err(CacheError::BadName(snapshot.repo.clone()));
    }
    if !is_name(&snapshot.revision) {
        return Err(CacheError::BadName(snapshot.revision.clone()));
    }
    let repo_dir = dir.join(repo_folder(&snapshot.repo));
    let blobs = repo_dir.join("blobs");
    let folder = repo_dir.join("snapshots").join(snapshot.commit.as_str());
    create_dir(&blobs)?;
    create_dir(&folder)?;
    let root = folder
        .canonicalize()
        .map_err(io_error("resolving", &folder))?;
    for file in &snapshot.files {
        check_path(&file.path).map_err(|_| CacheError::BadName(file.path.clone()))?;
        let etag_fits =
            matches!(file.etag.len(), 40 | 64) && file.etag.chars().all(|c| c.is_ascii_hexdigit());
        if !etag_fits {
            return Err(CacheError::BadName(file.etag.clone()));
        }
        store.export(file.hash, &blobs.join(&file.etag))?;
        let link = root.join(&file.path);
        let parent = link.parent().expect("a joined relative path has a parent");
        create_dir(parent)?;
        let resolved = parent
            .canonicalize()
            .map_err(io_error("resolving", parent))?;
        if !resolved.starts_with(&root) {
            return Err(CacheError::Escape(link));
        }
        let depth = file.path.matches('/').count();
        let target = format!("{}blobs/{}", "../".repeat(depth + 2), file.etag);
        place_link(store, file.hash, Path::new(&target), &link)?;
    }
    if snapshot.revision != snapshot.commit.as_str() {
        let refs = repo_dir.join("refs");
        create_dir(&refs)?;
        write_if_changed(&refs.join(&snapshot.revision), snapshot.commit.as_str())?;
    }
    Ok(folder)
}

/// Makes `link` a symlink to `target`, unless it already is one.
#[cfg(unix)]
fn place_link(_: &Store, _: Hash, target: &Path, link: &Path) -> Result<(), CacheError> {
    if fs::read_link(link).is_ok_and(|existing| existing == target) {
        return Ok(());
    }
    let staging = staging_beside(link);
    remove_if_exists(&staging)?;
    std::os::unix::fs::symlink(target, &staging).map_err(io_error("linking", &staging))?;
    fs::rename(&staging, link).map_err(|error| {
        let _ = fs::remove_file(&staging);
        io_error("linking", link)(error)
    })
}

/// Where symlinks need privileges, the snapshot holds the file itself (as
/// huggingface_hub does there).
#[cfg(not(unix))]
fn place_link(store: &Store, hash: Hash, _: &Path, link: &Path) -> Result<(), CacheError> {
    store.export(hash, link)?;
    Ok(())
}

/// Writes `content` to `path` by a rename, unless it already holds it.
fn write_if_changed(path: &Path, content: &str) -> Result<(), CacheError> {
    if fs::read(path).is_ok_and(|existing| existing == content.as_bytes()) {
        return Ok(());
    }
    let staging = staging_beside(path);
    fs::write(&staging, content).map_err(io_error("writing", &staging))?;
    fs::rename(&staging, path).map_err(|error| {
        let _ = fs::remove_file(&staging);
        io_error("writing", path)(error)
    })
}

fn staging_beside(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.p2pmodel-{}", std::process::id()))
}

fn create_dir(path: &Path) -> Result<(), CacheError> {
    fs::create_dir_all(path).map_err(io_error("creating", path))
}

fn remove_if_exists(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(io_error("removing", path)(error))
        }
        _ => Ok(()),
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |error| CacheError::Io { what, path, error }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn dir_with(vars: &[(&str, &str)]) -> Option<PathBuf> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        dir_from(|key| vars.get(key).cloned())
    }

    #[test]
    fn the_default_folder_follows_huggingface_hub() {
        let all = [
            ("HF_HUB_CACHE", "/c"),
            ("HF_HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(dir_with(&all), Some(PathBuf::from("/c")));
        assert_eq!(dir_with(&all[1..]), Some(PathBuf::from("/h/hub")));
        assert_eq!(
            dir_with(&all[2..]),
            Some(PathBuf::from("/x/huggingface/hub"))
        );
        assert_eq!(
            dir_with(&all[3..]),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(
            dir_with(&[("HF_HUB_CACHE", ""), ("HOME", "/r")]),
            Some(PathBuf::from("/r/.cache/huggingface/hub"))
        );
        assert_eq!(dir_with(&[]), None);
    }

    #[test]
    fn repository_folders_replace_the_slash() {
        assert_eq!(repo_folder("org/repo"), "models--org--repo");
    }
}
