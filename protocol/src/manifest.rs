//! [`Manifest`]: the list of files that makes up a model. Its BLAKE3 hash
//! names the whole model, so fetching that hash fetches every file.
//!
//! The encoding is versioned and canonical: entries sorted by path, postcard
//! fields in a fixed order, and [`Manifest::decode`] refuses any input that
//! does not re-encode to the same bytes. So one model has exactly one hash.
//! Manifests come from peers and mirrors, so decoding is bounded and every
//! path is checked before anything touches a disk.

use serde::{Deserialize, Serialize};

use crate::{Hash, Sha256};

/// Encoding version written in front of every manifest.
pub const MANIFEST_VERSION: u32 = 1;
/// Most files one manifest may list.
pub const MAX_FILES: usize = 100_000;
/// Longest relative path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Most mirror URLs per file.
pub const MAX_MIRRORS: usize = 16;
/// Longest mirror URL, in bytes.
pub const MAX_URL_LEN: usize = 4096;
/// Largest encoded manifest, in bytes.
pub const MAX_ENCODED_LEN: usize = 32 << 20;

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative path inside the model, `/`-separated (checked: see [`check_path`]).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the file's bytes.
    pub hash: Hash,
    /// SHA-256 of the file's bytes, when known (Hugging Face's LFS oid).
    pub sha256: Option<Sha256>,
    /// HTTP URLs that serve exactly these bytes.
    pub mirrors: Vec<String>,
}

/// A model: a set of files, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    files: Vec<ManifestEntry>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u32,
    files: Vec<ManifestEntry>,
}

/// Why bytes or entries are not a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not a manifest encoding at all.
    #[error("not a p2pmodel manifest: {0}")]
    Malformed(String),
    /// A version this build does not read.
    #[error("manifest version {0} is not supported (this build reads version {MANIFEST_VERSION})")]
    Version(u32),
    /// Decodes, but is not the one canonical encoding of its content.
    #[error("manifest is not in canonical form (entries must be sorted, no trailing bytes)")]
    NotCanonical,
    /// Past one of the size limits.
    #[error("manifest is too large: {0}")]
    TooLarge(String),
    /// A path that could leave the model's folder or is not portable.
    #[error("invalid path {path:?} in manifest: {reason}")]
    Path {
        /// The offending path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two entries with the same path, or a file where another needs a folder.
    #[error("path {0:?} appears twice in the manifest, or as both a file and a folder")]
    Duplicate(String),
    /// A mirror URL that is not http or https.
    #[error("mirror {0:?} is not an http:// or https:// URL")]
    Mirror(String),
}

impl Manifest {
    /// Builds a manifest from entries in any order.
    ///
    /// # Errors
    /// When a path is invalid or repeated, a mirror is not HTTP, or a limit is passed.
    pub fn new(mut files: Vec<ManifestEntry>) -> Result<Self, ManifestError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Self { files };
        manifest.check()?;
        Ok(manifest)
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[ManifestEntry] {
        &self.files
    }

    /// Total size of all files in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            version: MANIFEST_VERSION,
            files: self.files.clone(),
        };
        postcard::to_stdvec(&wire).expect("encoding to memory cannot fail")
    }

    /// The model's hash: BLAKE3 of [`Manifest::encode`].
    pub fn hash(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Decodes and checks untrusted bytes.
    ///
    /// # Errors
    /// Any [`ManifestError`]; nothing is trusted until this returns `Ok`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(ManifestError::TooLarge(format!("{} bytes", bytes.len())));
        }
        let version: u32 = postcard::take_from_bytes(bytes)
            .map_err(|error| ManifestError::Malformed(error.to_string()))?
            .0;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Version(version));
        }
        let wire: Wire = postcard::from_bytes(bytes)
            .map_err(|error| ManifestError::Malformed(error.to_string()))?;
        let manifest = Self { files: wire.files };
        manifest.check()?;
        if manifest.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooLarge(format!(
                "{} files",
                self.files.len()
            )));
        }
        for file in &self.files {
            check_path(&file.path)?;
            if file.mirrors.len() > MAX_MIRRORS {
                return Err(ManifestError::TooLarge(format!(
                    "{} mirrors for {}",
                    file.mirrors.len(),
                    file.path
                )));
            }
            for mirror in &file.mirrors {
                let http = mirror.starts_with("http://") || mirror.starts_with("https://");
                if !http || mirror.len() > MAX_URL_LEN {
                    return Err(ManifestError::Mirror(mirror.clone()));
                }
            }
        }
        // Sorted by path, so a repeat or a file that is also a folder
        // ("a" and "a/b") sits right after its twin or within its run.
        for pair in self.files.windows(2) {
            let (a, b) = (&pair[0].path, &pair[1].path);
            if a >= b {
                return Err(ManifestError::Duplicate(b.clone()));
            }
        }
        let mut folders = std::collections::HashSet::new();
        for file in &self.files {
            let mut end = 0;
            while let Some(slash) = file.path[end..].find('/') {
                end += slash;
                folders.insert(&file.path[..end]);
                end += 1;
            }
        }
        if let Some(file) = self
            .files
            .iter()
            .find(|file| folders.contains(file.path.as_str()))
        {
            return Err(ManifestError::Duplicate(file.path.clone()));
        }
        Ok(())
    }
}

/// Checks that `path` is a relative, portable path that stays inside the
/// model's folder: `/`-separated, no empty, `.` or `..` part, no leading
/// `/`, no backslash, no control characters, at most [`MAX_PATH_LEN`] bytes.
///
/// # Errors
/// [`ManifestError::Path`] with the reason.
pub fn check_path(path: &str) -> Result<(), ManifestError> {
    let fail = |reason| {
        Err(ManifestError::Path {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return fail("longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return fail("absolute");
    }
    if path.contains('\\') {
        return fail("contains a backslash");
    }
    if path.chars().any(char::is_control) {
        return fail("contains a control character");
    }
    for part in path.split('/') {
        match part {
            "" => return fail("has an empty part (// or a trailing /)"),
            "." | ".." => return fail("has a . or .. part"),
            _ => {}
        }
    }
    if path.len() >= 2 && path.as_bytes()[1] == b':' {
        return fail("looks like a drive letter");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size: path.len() as u64,
            hash: Hash::of(path.as_bytes()),
            sha256: None,
            mirrors: vec![],
        }
    }

    #[test]
    fn order_of_entries_does_not_change_the_hash() {
        let a = Manifest::new(vec![entry("b.gguf"), entry("a/config.json")]).unwrap();
        let b = Manifest::new(vec![entry("a/config.json"), entry("b.gguf")]).unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.files()[0].path, "a/config.json");
    }

    #[test]
    fn refuses_paths_that_leave_the_folder() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            "C:x",
            "a\nb",
        ] {
            assert!(
                matches!(
                    Manifest::new(vec![entry(bad)]),
                    Err(ManifestError::Path { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn refuses_duplicates_and_file_folder_clashes() {
        assert_eq!(
            Manifest::new(vec![entry("a"), entry("a")]),
            Err(ManifestError::Duplicate("a".into()))
        );
        assert_eq!(
            Manifest::new(vec![entry("a"), entry("a/b")]),
            Err(ManifestError::Duplicate("a".into()))
        );
    }

    #[test]
    fn refuses_other_versions_trailing_bytes_and_unsorted_encodings() {
        let manifest = Manifest::new(vec![entry("a"), entry("b")]).unwrap();
        let mut bytes = manifest.encode();
        bytes.push(0);
        assert_eq!(Manifest::decode(&bytes), Err(ManifestError::NotCanonical));

        let swapped = Wire {
            version: 1,
            files: vec![entry("b"), entry("a")],
        };
        let bytes = postcard::to_stdvec(&swapped).unwrap();
        assert!(Manifest::decode(&bytes).is_err());

        let future = Wire {
            version: 2,
            files: vec![],
        };
        let bytes = postcard::to_stdvec(&future).unwrap();
        assert_eq!(Manifest::decode(&bytes), Err(ManifestError::Version(2)));
    }

    #[test]
    fn refuses_non_http_mirrors() {
        let mut file = entry("a");
        file.mirrors.push("file:///etc/passwd".into());
        assert!(matches!(
            Manifest::new(vec![file]),
            Err(ManifestError::Mirror(_))
        ));
    }

    fn arb_entry() -> impl Strategy<Value = ManifestEntry> {
        (
            "[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,2}",
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::vec("https://[a-z]{1,10}/[a-z]{1,10}", 0..3),
        )
            .prop_map(|(path, size, hash, sha256, mirrors)| ManifestEntry {
                path,
                size,
                hash: Hash::from_bytes(hash),
                sha256: sha256.map(Sha256),
                mirrors,
            })
    }

    proptest! {
        #[test]
        fn valid_manifests_round_trip(files in proptest::collection::vec(arb_entry(), 0..20)) {
            if let Ok(manifest) = Manifest::new(files) {
                let bytes = manifest.encode();
                prop_assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(manifest) = Manifest::decode(&bytes) {
                prop_assert_eq!(manifest.encode(), bytes);
            }
        }
    }
}
