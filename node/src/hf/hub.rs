//! [`Hub`]: where the Hub is, how to authenticate to it, and what it says
//! about a repository: the commit a revision points to and the files at
//! that commit.
//!
//! The revision is resolved once (`/api/models/REPO/revision/REV`) and
//! everything after uses the commit, so the files of one fetch always come
//! from one commit, even if a branch moves meanwhile.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use p2pmodel_protocol::Sha256;
use p2pmodel_protocol::manifest::check_path;
use serde::Deserialize;
use url::Url;

use super::cache::CacheError;
use super::name::HfRef;
use super::quant::BadQuant;
use super::select::{SelectError, select};
use crate::mirror::{Bearer, MirrorClient};

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Longest answer read from the Hub's API (a listing page), in bytes.
const MAX_LISTING: usize = 32 << 20;
/// Most listing pages followed.
const MAX_PAGES: usize = 100;

/// Why a Hugging Face fetch cannot go on: a bad name, a Hub that cannot
/// tell what is asked for, files that do not fit the selection, or a
/// cache export that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Not of the form `hf://ORG/REPO[@REV][:QUANT][/PATH]`.
    #[error("{0:?} is not a Hugging Face name; expected hf://ORG/REPO[@REVISION][:QUANT][/PATH]")]
    Name(String),
    /// A quantization name that cannot be one.
    #[error(transparent)]
    Quant(#[from] BadQuant),
    /// The revision is unknown or the Hub could not be asked.
    #[error("resolving {repo}@{revision} on the Hub failed: {detail}")]
    Revision {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// What went wrong.
        detail: String,
    },
    /// The Hub could not be reached or answered an error.
    #[error("listing {repo} on the Hub failed: {detail}")]
    Listing {
        /// The repository.
        repo: String,
        /// What went wrong.
        detail: String,
    },
    /// The path matches no file of the repository.
    #[error("{repo}@{revision} has no file or folder {path:?}")]
    NoSuchPath {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The path asked for.
        path: String,
    },
    /// The files do not fit the quantization or include globs asked for.
    #[error("{repo}@{revision}: {error}")]
    Select {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// Why.
        error: SelectError,
    },
    /// Writing the Hugging Face cache layout failed (the store keeps the files).
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Where the Hub is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The Hub's base URL.
    pub endpoint: Url,
    /// A token for the endpoint (from `HF_TOKEN`).
    pub token: Option<String>,
    /// A Hugging Face cache folder (`.../huggingface/hub`) that every
    /// fetched snapshot is also exported into; `None` for no export.
    pub cache: Option<PathBuf>,
}

impl Hub {
    /// The Hub at `endpoint`, without a token or a cache export.
    pub fn new(endpoint: Url) -> Self {
        Self {
            endpoint,
            token: None,
            cache: None,
        }
    }

    /// `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]) and `HF_TOKEN`; no cache
    /// export (see [`Hub::with_cache`]).
    ///
    /// # Errors
    /// [`HubError::Name`] when `HF_ENDPOINT` is not a URL.
    pub fn from_env() -> Result<Self, HubError> {
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned());
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|_| HubError::Name(endpoint.clone()))?;
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|token| !token.is_empty());
        Ok(Self {
            token,
            ..Self::new(endpoint)
        })
    }

    /// Sends `token` to the endpoint (and only there).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Also exports every fetched snapshot into the Hugging Face cache
    /// folder `dir` (see [`cache`](super::cache)).
    pub fn with_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    /// The bearer token, bound to the endpoint's origin.
    pub fn bearer(&self) -> Option<Bearer> {
        let token = self.token.clone()?;
        Some(Bearer {
            origin: self.endpoint.origin().ascii_serialization(),
            token,
        })
    }

    /// `ENDPOINT/REPO/resolve/REV/PATH`, each part percent-encoded.
    pub fn resolve_url(&self, repo: &str, revision: &str, path: &str) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("an http endpoint has a path");
            segments
                .pop_if_empty()
                .extend(repo.split('/'))
                .push("resolve")
                .push(revision);
            segments.extend(path.split('/'));
        }
        url
    }

    /// `ENDPOINT/api/models/REPO/KIND/REV`.
    fn api_url(&self, repo: &str, kind: &str, revision: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .expect("an http endpoint has a path")
            .pop_if_empty()
            .extend(["api", "models"])
            .extend(repo.split('/'))
            .push(kind)
            .push(revision);
        url
    }

    /// The commit `name`'s revision points to and the files of it that
    /// `name` selects (path, include globs, quantization).
    ///
    /// # Errors
    /// See [`Hub::commit`] and [`Hub::files`]; [`HubError::Select`] when the
    /// files do not fit the selection.
    pub async fn list(&self, client: &MirrorClient, name: &HfRef) -> Result<Listing, HubError> {
        let commit = self.commit(client, name).await?;
        let files = self.files(client, name, &commit).await?;
        let files = select(files, name).map_err(|error| HubError::Select {
            repo: name.repo.clone(),
            revision: name.revision.clone(),
            error,
        })?;
        Ok(Listing { commit, files })
    }

    /// The commit `name`'s revision points to now.
    ///
    /// # Errors
    /// [`HubError::Revision`] when the Hub cannot be asked, does not know
    /// the revision, or answers something other than a commit.
    pub async fn commit(&self, client: &MirrorClient, name: &HfRef) -> Result<Commit, HubError> {
        let fail = |detail: String| HubError::Revision {
            repo: name.repo.clone(),
            revision: name.revision.clone(),
            detail,
        };
        let url = self.api_url(&name.repo, "revision", &name.revision);
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = read_bounded(response).await.map_err(fail)?;
        let info: RevisionInfo =
            serde_json::from_slice(&body).map_err(|e| fail(format!("unexpected answer: {e}")))?;
        info.sha.parse().map_err(fail)
    }

    /// The files of `name` at `commit` (all of the repository, or those
    /// under its path), sorted by path. Include globs and quantization are
    /// [`select`](super::select)'s.
    ///
    /// # Errors
    /// [`HubError`] when the listing fails or the path matches nothing.
    pub async fn files(
        &self,
        client: &MirrorClient,
        name: &HfRef,
        commit: &Commit,
    ) -> Result<Vec<HubFile>, HubError> {
        let listing_error = |detail: String| HubError::Listing {
            repo: name.repo.clone(),
            detail,
        };
        let mut files = Vec::new();
        let mut first = self.api_url(&name.repo, "tree", commit.as_str());
        first.set_query(Some("recursive=true"));
        let mut next = Some(first);
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else { break };
            let response = client
                .get(&url)
                .send()
                .await
                .map_err(|e| listing_error(e.to_string()))?;
            if !response.status().is_success() {
                return Err(listing_error(format!("HTTP {}", response.status())));
            }
            next = next_page(response.headers())
                .filter(|next| next.origin() == self.endpoint.origin());
            let body = read_bounded(response).await.map_err(listing_error)?;
            let entries: Vec<TreeEntry> = serde_json::from_slice(&body)
                .map_err(|e| listing_error(format!("unexpected listing: {e}")))?;
            for entry in entries.into_iter().filter(|entry| entry.kind == "file") {
                files.push(HubFile::from_entry(entry).map_err(listing_error)?);
            }
        }
        if let Some(path) = &name.path {
            let prefix = format!("{path}/");
            files.retain(|file| file.path == *path || file.path.starts_with(&prefix));
            if files.is_empty() {
                return Err(HubError::NoSuchPath {
                    repo: name.repo.clone(),
                    revision: name.revision.clone(),
                    path: path.clone(),
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// What one fetch of a [`HfRef`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The commit the revision points to; files are fetched from it.
    pub commit: Commit,
    /// The selected files, sorted by path.
    pub files: Vec<HubFile>,
}

/// A commit of a repository: 40 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Commit(String);

impl Commit {
    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Commit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if is_hex(text, &[40]) {
            Ok(Commit(text.to_ascii_lowercase()))
        } else {
            Err(format!("{text:?} is not a commit hash"))
        }
    }
}

/// One file of a repository, as the Hub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Path inside the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The LFS SHA-256, for files stored in LFS.
    pub sha256: Option<Sha256>,
    /// The git blob id (hex; for an LFS file, its pointer's).
    pub blob_id: String,
}

impl HubFile {
    /// The name the Hugging Face cache gives this file's content (its
    /// ETag): the LFS SHA-256, else the git blob id.
    pub fn etag(&self) -> String {
        match &self.sha256 {
            Some(sha) => sha.to_string(),
            None => self.blob_id.clone(),
        }
    }

    fn from_entry(entry: TreeEntry) -> Result<Self, String> {
        check_path(&entry.path).map_err(|e| e.to_string())?;
        if !is_hex(&entry.oid, &[40, 64]) {
            return Err(format!(
                "{}: {:?} is not a git object id",
                entry.path, entry.oid
            ));
        }
        let sha256 = match entry.lfs {
            Some(lfs) => Some(lfs.oid.parse::<Sha256>().map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(HubFile {
            path: entry.path,
            size: entry.size,
            sha256,
            blob_id: entry.oid.to_ascii_lowercase(),
        })
    }
}

/// True if and only if `text` is hex digits of one of `lengths`.
fn is_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    size: u64,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
}

/// The `rel="next"` target of a `Link` header.
fn next_page(headers: &reqwest::header::HeaderMap) -> Option<Url> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Url::parse(part.get(start..end)?).ok()
        })
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(piece) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + piece.len() > MAX_LISTING {
            return Err("the answer is larger than 32 MiB".into());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(Url::parse("http://127.0.0.1:9/mirror").unwrap())
    }

    #[test]
    fn resolve_urls_are_encoded_under_the_endpoint() {
        assert_eq!(
            hub().resolve_url("org/repo", "main", "a b/c.gguf").as_str(),
            "http://127.0.0.1:9/mirror/org/repo/resolve/main/a%20b/c.gguf"
        );
    }

    #[test]
    fn api_urls_name_the_repository_and_revision() {
        assert_eq!(
            hub().api_url("org/repo", "revision", "v1.0").as_str(),
            "http://127.0.0.1:9/mirror/api/models/org/repo/revision/v1.0"
        );
    }

    #[test]
    fn commits_are_forty_hex_digits() {
        let commit: Commit = "A".repeat(40).parse().unwrap();
        assert_eq!(commit.as_str(), "a".repeat(40));
        for bad in [
            "",
            "main",
            &"a".repeat(39),
            &"g".repeat(40),
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<Commit>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_etag_is_the_lfs_sha256_else_the_blob_id() {
        let entry = |lfs: Option<&str>| TreeEntry {
            kind: "file".into(),
            path: "m.gguf".into(),
            oid: "b".repeat(40),
            size: 3,
            lfs: lfs.map(|oid| Lfs { oid: oid.into() }),
        };
        let plain = HubFile::from_entry(entry(None)).unwrap();
        assert_eq!(plain.etag(), "b".repeat(40));
        let lfs = HubFile::from_entry(entry(Some(&"c".repeat(64)))).unwrap();
        assert_eq!(lfs.etag(), "c".repeat(64));
        let mut bad = entry(None);
        bad.oid = "../x".into();
        assert!(HubFile::from_entry(bad).is_err());
    }
}
