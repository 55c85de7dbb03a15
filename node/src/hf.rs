//! Hugging Face names: `hf://ORG/REPO[@REV][/PATH]`.
//!
//! The file list comes from the Hub's tree API; each file is fetched from
//! its `resolve` URL (which usually redirects to a CDN). An LFS file's
//! SHA-256 is checked before it is published and recorded as its alias, so
//! the next fetch of the same file needs no network. `HF_ENDPOINT` replaces
//! the Hub's address and `HF_TOKEN` is sent as a bearer token to that
//! endpoint only, never to the host a redirect leads to.

use std::fmt;
use std::str::FromStr;

use p2pmodel_protocol::Sha256;
use p2pmodel_protocol::manifest::check_path;
use serde::Deserialize;
use url::Url;

use crate::mirror::{Bearer, MirrorClient};

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Longest tree listing page read, in bytes.
const MAX_LISTING: usize = 32 << 20;
/// Most listing pages followed.
const MAX_PAGES: usize = 100;

/// A parsed `hf://ORG/REPO[@REV][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfRef {
    /// `ORG/REPO`.
    pub repo: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// One file or folder inside the repository; `None` for all of it.
    pub path: Option<String>,
}

/// Why a `hf://` name or a Hub answer cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Not of the form `hf://ORG/REPO[@REV][/PATH]`.
    #[error("{0:?} is not a Hugging Face name; expected hf://ORG/REPO[@REVISION][/PATH]")]
    Name(String),
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
}

impl fmt::Display for HfRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf://{}@{}", self.repo, self.revision)?;
        if let Some(path) = &self.path {
            write!(f, "/{path}")?;
        }
        Ok(())
    }
}

impl FromStr for HfRef {
    type Err = HubError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || HubError::Name(text.to_owned());
        let rest = text.strip_prefix("hf://").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().filter(|s| is_name(s)).ok_or_else(bad)?;
        let repo_rev = parts.next().ok_or_else(bad)?;
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (repo_rev, "main"),
        };
        if !is_name(repo) || !is_name(revision) {
            return Err(bad());
        }
        let path = match parts.next() {
            None | Some("") => None,
            Some(path) => {
                let path = path.trim_end_matches('/');
                check_path(path).map_err(|_| bad())?;
                Some(path.to_owned())
            }
        };
        Ok(Self {
            repo: format!("{org}/{repo}"),
            revision: revision.to_owned(),
            path,
        })
    }
}

fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Where the Hub is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The Hub's base URL.
    pub endpoint: Url,
    /// A token for the endpoint (from `HF_TOKEN`).
    pub token: Option<String>,
}

impl Hub {
    /// `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]) and `HF_TOKEN`.
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
        Ok(Self { endpoint, token })
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
    pub fn resolve_url(&self, name: &HfRef, path: &str) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("an http endpoint has a path");
            segments
                .pop_if_empty()
                .extend(name.repo.split('/'))
                .push("resolve")
                .push(&name.revision);
            segments.extend(path.split('/'));
        }
        url
    }

    fn tree_url(&self, name: &HfRef) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .expect("an http endpoint has a path")
            .pop_if_empty()
            .extend(["api", "models"])
            .extend(name.repo.split('/'))
            .push("tree")
            .push(&name.revision);
        url.set_query(Some("recursive=true"));
        url
    }

    /// The files of `name` (all of the repository, or those under its path).
    ///
    /// # Errors
    /// [`HubError`] when the listing fails or the path matches nothing.
    pub async fn files(
        &self,
        client: &MirrorClient,
        name: &HfRef,
    ) -> Result<Vec<HubFile>, HubError> {
        let listing_error = |detail: String| HubError::Listing {
            repo: name.repo.clone(),
            detail,
        };
        let mut files = Vec::new();
        let mut next = Some(self.tree_url(name));
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
                check_path(&entry.path).map_err(|e| listing_error(e.to_string()))?;
                let sha256 = match entry.lfs {
                    Some(lfs) => Some(
                        lfs.oid
                            .parse::<Sha256>()
                            .map_err(|e| listing_error(e.to_string()))?,
                    ),
                    None => None,
                };
                files.push(HubFile {
                    path: entry.path,
                    size: entry.size,
                    sha256,
                });
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

/// One file of a repository, as the Hub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Path inside the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The LFS SHA-256, for files stored in LFS.
    pub sha256: Option<Sha256>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
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
            return Err("the listing is larger than 32 MiB".into());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_revision_and_path() {
        let name: HfRef = "hf://org/repo@v1.0/weights/model.gguf".parse().unwrap();
        assert_eq!(name.repo, "org/repo");
        assert_eq!(name.revision, "v1.0");
        assert_eq!(name.path.as_deref(), Some("weights/model.gguf"));
        let whole: HfRef = "hf://org/repo".parse().unwrap();
        assert_eq!((whole.revision.as_str(), whole.path), ("main", None));
        for bad in [
            "hf://org",
            "hf://../repo",
            "hf://org/repo/../x",
            "http://org/repo",
            "hf://org/re po",
        ] {
            assert!(bad.parse::<HfRef>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn resolve_urls_are_encoded_under_the_endpoint() {
        let hub = Hub {
            endpoint: Url::parse("http://127.0.0.1:9/mirror").unwrap(),
            token: None,
        };
        let name: HfRef = "hf://org/repo@main".parse().unwrap();
        assert_eq!(
            hub.resolve_url(&name, "a b/c.gguf").as_str(),
            "http://127.0.0.1:9/mirror/org/repo/resolve/main/a%20b/c.gguf"
        );
    }
}
