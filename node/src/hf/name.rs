//! [`HfRef`]: what to fetch from the Hub, `hf://ORG/REPO[@REV][:QUANT][/PATH]`
//! plus include globs.

use std::fmt;
use std::str::FromStr;

use p2pmodel_protocol::manifest::check_path;

use super::hub::HubError;
use super::quant::Quant;

/// A Hugging Face file, folder or repository, and which of its files to take.
///
/// The textual form is `hf://ORG/REPO[@REV][:QUANT][/PATH]`: `REV` is a
/// branch, tag or commit (default `main`), `QUANT` a quantization tag such
/// as `Q4_K_M` (matched case-insensitively), `PATH` a file or folder.
/// Include globs have no textual form; add them with
/// [`HfRef::with_include`]. Two `HfRef`s that display alike select the
/// same files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfRef {
    /// `ORG/REPO`.
    pub repo: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// One file or folder inside the repository; `None` for all of it.
    pub path: Option<String>,
    /// The GGUF quantization to take; `None` picks one by
    /// [`QUANT_PREFERENCE`](super::QUANT_PREFERENCE) when there is a choice.
    pub quant: Option<Quant>,
    /// Globs a file's path must match one of (all files when empty).
    pub include: Vec<String>,
}

impl HfRef {
    /// Takes the GGUF files of this quantization (replacing a `:QUANT` of the name).
    pub fn with_quant(mut self, quant: Quant) -> Self {
        self.quant = Some(quant);
        self
    }

    /// Keeps only files whose path matches `glob` or another include glob
    /// (`*` also crosses `/`; case-insensitive).
    pub fn with_include(mut self, glob: impl Into<String>) -> Self {
        self.include.push(glob.into());
        self
    }
}

impl fmt::Display for HfRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf://{}@{}", self.repo, self.revision)?;
        if let Some(quant) = &self.quant {
            write!(f, ":{quant}")?;
        }
        if let Some(path) = &self.path {
            write!(f, "/{path}")?;
        }
        if !self.include.is_empty() {
            write!(f, " (include {})", self.include.join(", "))?;
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
        let repo_rev_quant = parts.next().ok_or_else(bad)?;
        let (repo_rev, quant) = match repo_rev_quant.split_once(':') {
            Some((repo_rev, quant)) => (repo_rev, Some(quant.parse::<Quant>()?)),
            None => (repo_rev_quant, None),
        };
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
            quant,
            include: Vec::new(),
        })
    }
}

/// True if and only if `part` can be an organisation, repository or
/// revision name: letters, digits, `-`, `_`, `.`, and not `.` or `..`.
/// Such a part is also safe as one file name.
pub(crate) fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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
        assert_eq!(name.quant, None);
        let whole: HfRef = "hf://org/repo".parse().unwrap();
        assert_eq!((whole.revision.as_str(), whole.path), ("main", None));
        for bad in [
            "hf://org",
            "hf://../repo",
            "hf://org/repo/../x",
            "http://org/repo",
            "hf://org/re po",
            "hf://org/repo:",
            "hf://org/repo:Q4-K",
            "hf://org/repo@:Q4_K_M",
        ] {
            assert!(bad.parse::<HfRef>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_quantization_follows_the_repository_and_revision() {
        let name: HfRef = "hf://org/repo:q4_k_m".parse().unwrap();
        assert_eq!(name.quant.as_ref().map(Quant::as_str), Some("Q4_K_M"));
        assert_eq!(name.revision, "main");
        let full: HfRef = "hf://org/repo@v2:Q8_0/gguf".parse().unwrap();
        assert_eq!(full.revision, "v2");
        assert_eq!(full.quant.as_ref().map(Quant::as_str), Some("Q8_0"));
        assert_eq!(full.path.as_deref(), Some("gguf"));
        assert_eq!(full.to_string(), "hf://org/repo@v2:Q8_0/gguf");
    }

    #[test]
    fn include_globs_tell_two_selections_apart() {
        let name: HfRef = "hf://org/repo".parse().unwrap();
        let narrowed = name.clone().with_include("*.json");
        assert_ne!(name.to_string(), narrowed.to_string());
        assert_eq!(narrowed.to_string(), "hf://org/repo@main (include *.json)");
    }
}
