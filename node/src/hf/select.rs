//! Which of a repository's listed files a [`HfRef`] takes: include globs
//! first, then, among GGUF files, one quantization with all its shards.
//!
//! The rules, applied to the files left by the path and the globs:
//! - Files that are not GGUF weights (configs, tokenizers, READMEs, and
//!   `mmproj*.gguf` projectors) are always kept.
//! - A named quantization must be present; otherwise the error lists
//!   those that are.
//! - With none named, a single quantization is taken as it is; among
//!   several, the first in [`QUANT_PREFERENCE`](super::QUANT_PREFERENCE).
//! - The chosen quantization's files are taken together; a split GGUF
//!   missing a shard is refused, naming the missing one.

use std::collections::{BTreeMap, BTreeSet};

use glob::{MatchOptions, Pattern};

use super::hub::HubFile;
use super::name::HfRef;
use super::quant::{Quant, Shard, is_gguf, is_projector};

/// File names shown at most in a "nothing matched" error.
const MAX_LISTED: usize = 20;

/// Why the files of a repository do not fit what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// An include glob that does not parse.
    #[error("--include {pattern:?} is not a glob: {reason}")]
    BadGlob {
        /// The glob.
        pattern: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No file matches the include globs.
    #[error("no file matches --include {}; the files are: {}", .patterns.join(", "), listed(.files))]
    NoMatch {
        /// The globs.
        patterns: Vec<String>,
        /// The files that were there to match.
        files: Vec<String>,
    },
    /// The quantization asked for is not among the GGUF files.
    #[error("there is no {asked} quantization; available: {}", joined(.available))]
    UnknownQuant {
        /// What was asked for.
        asked: Quant,
        /// The quantizations present.
        available: Vec<Quant>,
    },
    /// A quantization was asked for but there are no GGUF weights.
    #[error("there is no {asked} quantization: no GGUF weights are here")]
    NoGguf {
        /// What was asked for.
        asked: Quant,
    },
    /// Several quantizations, none in the preference order.
    #[error("none of the quantizations {} is in the preference order; name one (hf://ORG/REPO:QUANT or --quant)", joined(.available))]
    NoDefault {
        /// The quantizations present.
        available: Vec<Quant>,
    },
    /// A GGUF file whose quantization cannot be told, among several choices.
    #[error("cannot tell the quantization of {path:?}; pick files with --include")]
    Untagged {
        /// The file.
        path: String,
    },
    /// A shard of the chosen split GGUF is not in the repository.
    #[error("shard {path:?} is missing from the repository")]
    MissingShard {
        /// The path the missing shard would have.
        path: String,
    },
    /// A shard number larger than the count, or zero.
    #[error("{path:?} has a shard number outside 1..=count")]
    BadShard {
        /// The file.
        path: String,
    },
}

/// The files of `files` that `name` takes (in the order given).
///
/// # Errors
/// [`SelectError`] when the globs are invalid or match nothing, the
/// quantization is absent or cannot be chosen, or a shard is missing.
pub fn select(files: Vec<HubFile>, name: &HfRef) -> Result<Vec<HubFile>, SelectError> {
    let files = include(files, &name.include)?;
    let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    let Some(quant) = choose_quant(&paths, name.quant.as_ref())? else {
        return Ok(files);
    };
    let files: Vec<HubFile> = files
        .into_iter()
        .filter(|file| {
            !is_weights(&file.path) || Quant::of_path(&file.path).as_ref() == Some(&quant)
        })
        .collect();
    let chosen: Vec<&str> = files
        .iter()
        .map(|file| file.path.as_str())
        .filter(|path| is_weights(path))
        .collect();
    check_shards(&chosen)?;
    Ok(files)
}

/// The files matching at least one glob (all of them when there is none).
fn include(files: Vec<HubFile>, globs: &[String]) -> Result<Vec<HubFile>, SelectError> {
    if globs.is_empty() {
        return Ok(files);
    }
    let patterns = globs
        .iter()
        .map(|glob| {
            Pattern::new(glob).map_err(|error| SelectError::BadGlob {
                pattern: glob.clone(),
                reason: error.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = MatchOptions {
        case_sensitive: false,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    let matches = |path: &str| patterns.iter().any(|p| p.matches_with(path, options));
    if !files.iter().any(|file| matches(&file.path)) {
        return Err(SelectError::NoMatch {
            patterns: globs.to_vec(),
            files: files.into_iter().map(|file| file.path).collect(),
        });
    }
    Ok(files
        .into_iter()
        .filter(|file| matches(&file.path))
        .collect())
}

/// GGUF weights: a `.gguf` file that is not a projector.
fn is_weights(path: &str) -> bool {
    is_gguf(path) && !is_projector(path)
}

/// The quantization to keep among `paths`, or `None` when there is nothing
/// to choose (no GGUF weights, or only untagged ones, and none asked for).
///
/// # Errors
/// See [`SelectError`].
pub fn choose_quant(paths: &[&str], asked: Option<&Quant>) -> Result<Option<Quant>, SelectError> {
    let weights: Vec<&str> = paths.iter().copied().filter(|p| is_weights(p)).collect();
    let mut available = BTreeSet::new();
    let mut untagged = None;
    for path in &weights {
        match Quant::of_path(path) {
            Some(quant) => {
                available.insert(quant);
            }
            None => untagged = untagged.or(Some(*path)),
        }
    }
    let mut available: Vec<Quant> = available.into_iter().collect();
    available.sort_by_key(|q| (q.preference().unwrap_or(usize::MAX), q.clone()));
    if let Some(asked) = asked {
        if weights.is_empty() {
            return Err(SelectError::NoGguf {
                asked: asked.clone(),
            });
        }
        if !available.contains(asked) {
            return Err(SelectError::UnknownQuant {
                asked: asked.clone(),
                available,
            });
        }
        return Ok(Some(asked.clone()));
    }
    match (available.len(), untagged) {
        (0, _) => Ok(None),
        (1, None) => Ok(available.pop()),
        (_, Some(path)) => Err(SelectError::Untagged {
            path: path.to_owned(),
        }),
        (_, None) => match available.first().filter(|q| q.preference().is_some()) {
            Some(best) => Ok(Some(best.clone())),
            None => Err(SelectError::NoDefault { available }),
        },
    }
}

/// Every split GGUF among `paths` has all its shards.
///
/// # Errors
/// [`SelectError::MissingShard`] naming the first missing shard,
/// [`SelectError::BadShard`] for a number outside `1..=count`.
pub fn check_shards(paths: &[&str]) -> Result<(), SelectError> {
    let mut sets: BTreeMap<(String, u32), (Shard, BTreeSet<u32>)> = BTreeMap::new();
    for path in paths {
        let Some(shard) = Shard::of_path(path) else {
            continue;
        };
        if shard.index == 0 || shard.index > shard.count {
            return Err(SelectError::BadShard {
                path: (*path).to_owned(),
            });
        }
        let key = (shard.prefix.clone(), shard.count);
        let index = shard.index;
        sets.entry(key)
            .or_insert_with(|| (shard, BTreeSet::new()))
            .1
            .insert(index);
    }
    for (shard, present) in sets.values() {
        if let Some(missing) = (1..=shard.count).find(|i| !present.contains(i)) {
            return Err(SelectError::MissingShard {
                path: shard.sibling(missing),
            });
        }
    }
    Ok(())
}

fn joined(quants: &[Quant]) -> String {
    if quants.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = quants.iter().map(Quant::as_str).collect();
    names.join(", ")
}

fn listed(files: &[String]) -> String {
    let mut text = files
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", files.len() - MAX_LISTED));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quant(text: &str) -> Quant {
        text.parse().unwrap()
    }

    fn chosen(paths: &[&str], asked: Option<&str>) -> Result<Option<String>, SelectError> {
        let asked = asked.map(quant);
        choose_quant(paths, asked.as_ref()).map(|q| q.map(|q| q.to_string()))
    }

    const REPO: &[&str] = &[
        "README.md",
        "config.json",
        "model-F16.gguf",
        "model-Q8_0.gguf",
        "model-Q5_K_M.gguf",
        "model-IQ4_XS.gguf",
    ];

    #[test]
    fn a_named_quantization_is_taken_case_insensitively() {
        assert_eq!(chosen(REPO, Some("q8_0")).unwrap().as_deref(), Some("Q8_0"));
    }

    #[test]
    fn an_absent_quantization_lists_those_present_best_first() {
        let error = chosen(REPO, Some("Q4_K_M")).unwrap_err();
        assert!(matches!(error, SelectError::UnknownQuant { .. }));
        assert_eq!(
            error.to_string(),
            "there is no Q4_K_M quantization; available: Q5_K_M, Q8_0, IQ4_XS, F16"
        );
        let none = chosen(&["config.json"], Some("Q4_K_M")).unwrap_err();
        assert!(matches!(none, SelectError::NoGguf { .. }), "{none}");
    }

    #[test]
    fn the_preference_order_picks_among_several() {
        assert_eq!(chosen(REPO, None).unwrap().as_deref(), Some("Q5_K_M"));
        let with_q4 = [REPO, &["model-Q4_K_M.gguf"]].concat();
        assert_eq!(chosen(&with_q4, None).unwrap().as_deref(), Some("Q4_K_M"));
        let odd = ["m-Q9_Z.gguf", "m-Q7_Y.gguf"];
        assert!(matches!(
            chosen(&odd, None),
            Err(SelectError::NoDefault { .. })
        ));
    }

    #[test]
    fn a_single_option_is_taken_even_if_unranked() {
        assert_eq!(
            chosen(&["a.json", "m-Q9_Z.gguf"], None).unwrap().as_deref(),
            Some("Q9_Z")
        );
        assert_eq!(chosen(&["a.json", "model.gguf"], None).unwrap(), None);
        assert_eq!(chosen(&["a.json", "b.safetensors"], None).unwrap(), None);
    }

    #[test]
    fn projectors_are_not_quantizations_and_untagged_weights_block_a_choice() {
        let repo = ["m-Q4_K_M.gguf", "mmproj-F16.gguf"];
        assert_eq!(chosen(&repo, None).unwrap().as_deref(), Some("Q4_K_M"));
        let repo = ["m-Q4_K_M.gguf", "m-Q8_0.gguf", "other.gguf"];
        assert!(matches!(
            chosen(&repo, None),
            Err(SelectError::Untagged { .. })
        ));
    }

    #[test]
    fn shards_must_all_be_there() {
        let whole = [
            "m-Q8_0-00001-of-00003.gguf",
            "m-Q8_0-00002-of-00003.gguf",
            "m-Q8_0-00003-of-00003.gguf",
        ];
        check_shards(&whole).unwrap();
        let error = check_shards(&[whole[0], whole[2]]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "shard \"m-Q8_0-00002-of-00003.gguf\" is missing from the repository"
        );
        assert!(matches!(
            check_shards(&["m-00004-of-00003.gguf"]),
            Err(SelectError::BadShard { .. })
        ));
    }

    #[test]
    fn globs_match_across_folders_and_case() {
        let files = |paths: &[&str]| -> Vec<HubFile> {
            paths
                .iter()
                .map(|path| HubFile {
                    path: (*path).to_owned(),
                    size: 1,
                    sha256: None,
                    blob_id: "0".repeat(40),
                })
                .collect()
        };
        let kept = include(files(&["a/config.JSON", "b.gguf"]), &["*.json".into()]).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].path, "a/config.JSON");
        let error = include(files(&["b.gguf"]), &["*.json".into()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no file matches --include *.json; the files are: b.gguf"
        );
        assert!(matches!(
            include(files(&["b.gguf"]), &["[".into()]),
            Err(SelectError::BadGlob { .. })
        ));
    }
}
