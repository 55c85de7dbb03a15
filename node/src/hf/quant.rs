//! GGUF file names: the quantization tag (`Q4_K_M`, `IQ4_XS`, `F16`, ...)
//! and the shard number (`-00001-of-00003`) they carry, and the order in
//! which quantizations are preferred when none is named.
//!
//! Only names are read here; which files to take is
//! [`select`](super::select)'s job.

use std::fmt;
use std::str::FromStr;

/// The quantizations taken, best first, when a repository offers several
/// and the caller named none. A 4-bit K-quant is the usual balance of size
/// and quality; then larger, better ones up to 8 bits; then other 4- and
/// 5-bit formats; then smaller, lossier ones; unquantized weights last.
pub const QUANT_PREFERENCE: &[&str] = &[
    "Q4_K_M", "Q4_K_S", "Q4_K_XL", "Q5_K_M", "Q5_K_S", "Q5_K_XL", "Q6_K", "Q6_K_XL", "Q8_0",
    "Q8_K_XL", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q3_K_L", "Q3_K_M", "Q3_K_XL",
    "IQ3_M", "Q3_K_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_XL", "Q2_K_L", "IQ2_M", "IQ2_S",
    "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "F16", "BF16", "F32",
];

/// Longest quantization name accepted from a caller.
const MAX_QUANT_LEN: usize = 32;

/// A quantization tag, kept in upper case: `Q4_K_M`, `IQ4_XS`, `BF16`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quant(String);

/// A quantization name that cannot be one (letters, digits and `_` only).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is not a quantization name; expected letters, digits and _ (e.g. Q4_K_M)")]
pub struct BadQuant(pub String);

impl Quant {
    /// The tag, upper case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quantization a GGUF file's path names: the last quantization-like
    /// part of the file name (without `.gguf` and a shard suffix), else of
    /// its folders, innermost first. Parts are cut at `-` and `.`, so
    /// `model-Q4_K_M.gguf`, `model.q4_k_m.gguf` and
    /// `Q4_K_M/model-Q4_K_M-00001-of-00002.gguf` all give `Q4_K_M`.
    pub fn of_path(path: &str) -> Option<Quant> {
        let mut parts = path.rsplit('/');
        let file = parts.next()?;
        let stem = strip_gguf(file).unwrap_or(file);
        let stem = Shard::split(stem).map_or(stem, |(prefix, _)| prefix);
        std::iter::once(stem).chain(parts).find_map(|part| {
            part.rsplit(['-', '.'])
                .find(|token| is_quant_tag(token))
                .map(|token| Quant(token.to_ascii_uppercase()))
        })
    }

    /// Its place in [`QUANT_PREFERENCE`]; `None` when it is not listed.
    pub fn preference(&self) -> Option<usize> {
        QUANT_PREFERENCE.iter().position(|q| *q == self.0)
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Quant {
    type Err = BadQuant;

    /// Any non-empty name of letters, digits and `_`; whether a repository
    /// has it is checked against its files.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fits = !text.is_empty()
            && text.len() <= MAX_QUANT_LEN
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if fits {
            Ok(Quant(text.to_ascii_uppercase()))
        } else {
            Err(BadQuant(text.to_owned()))
        }
    }
}

/// True if and only if `path` names a GGUF file (`.gguf`, any case).
pub fn is_gguf(path: &str) -> bool {
    strip_gguf(path).is_some()
}

/// True if and only if `path` names a multimodal projector (`mmproj*.gguf`):
/// a companion of the weights, not a quantization of them.
pub fn is_projector(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    is_gguf(file) && file.to_ascii_lowercase().starts_with("mmproj")
}

/// `name` without a final `.gguf` (any case), if it has one.
fn strip_gguf(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(".gguf".len())?;
    let (stem, ext) = (name.get(..cut)?, name.get(cut..)?);
    ext.eq_ignore_ascii_case(".gguf").then_some(stem)
}

/// `f16`, `bf16`, `f32`, `fp16`, `mxfp4`, or `[i|t]q<digits>_<part>[_<part>...]`
/// with parts of letters and digits (`q4_k_m`, `iq2_xxs`, `q4_0_4_4`).
fn is_quant_tag(token: &str) -> bool {
    let token = token.to_ascii_lowercase();
    if matches!(
        token.as_str(),
        "f16" | "bf16" | "f32" | "fp16" | "fp32" | "mxfp4"
    ) {
        return true;
    }
    let rest = token
        .strip_prefix("iq")
        .or_else(|| token.strip_prefix("tq"))
        .or_else(|| token.strip_prefix('q'));
    let Some(rest) = rest else { return false };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let mut parts = rest[digits..].split('_');
    digits > 0
        && parts.next() == Some("")
        && parts.clone().next().is_some()
        && parts.all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Where a file sits in a split GGUF (`NAME-00002-of-00005.gguf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The path up to the shard suffix; the same for every shard of a set.
    pub prefix: String,
    /// This shard's number, from 1.
    pub index: u32,
    /// How many shards the set has.
    pub count: u32,
    /// Digits written per number (`00002` is 5).
    width: usize,
    /// The extension as written (`.gguf`, any case).
    extension: String,
}

impl Shard {
    /// The shard suffix of a GGUF path, if it has one.
    pub fn of_path(path: &str) -> Option<Shard> {
        let stem = strip_gguf(path)?;
        let (prefix, (index, count, width)) = Shard::split(stem)?;
        Some(Shard {
            prefix: prefix.to_owned(),
            index,
            count,
            width,
            extension: path[stem.len()..].to_owned(),
        })
    }

    /// The path of shard `index` of the same set.
    pub fn sibling(&self, index: u32) -> String {
        let width = self.width;
        format!(
            "{}-{index:0width$}-of-{:0width$}{}",
            self.prefix, self.count, self.extension
        )
    }

    /// `stem` cut into its prefix and (index, count, digits per number).
    fn split(stem: &str) -> Option<(&str, (u32, u32, usize))> {
        let (head, count_text) = stem.rsplit_once("-of-")?;
        let (prefix, index_text) = head.rsplit_once('-')?;
        let number = |text: &str| -> Option<u32> {
            if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        };
        let (index, count) = (number(index_text)?, number(count_text)?);
        Some((prefix, (index, count, count_text.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(path: &str) -> Option<String> {
        Quant::of_path(path).map(|q| q.to_string())
    }

    #[test]
    fn tags_are_found_in_the_usual_file_names() {
        for (path, expected) in [
            ("model-Q4_K_M.gguf", "Q4_K_M"),
            ("model.Q4_K_M.gguf", "Q4_K_M"),
            ("llama-2-7b.q5_k_s.gguf", "Q5_K_S"),
            ("model-q4_k_m-00001-of-00003.gguf", "Q4_K_M"),
            ("Qwen2.5-7B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
            ("gemma-3-4b-it-UD-Q4_K_XL.gguf", "Q4_K_XL"),
            ("ggml-model-f16.gguf", "F16"),
            ("Model-BF16.GGUF", "BF16"),
            ("model-Q4_0_4_4.gguf", "Q4_0_4_4"),
            ("model-TQ1_0.gguf", "TQ1_0"),
            ("BF16/Model-00001-of-00002.gguf", "BF16"),
            ("Q8_0/model-Q8_0-00002-of-00002.gguf", "Q8_0"),
        ] {
            assert_eq!(tag(path).as_deref(), Some(expected), "{path}");
        }
    }

    #[test]
    fn names_without_a_tag_have_none() {
        for path in [
            "model.gguf",
            "qwen2_5-7b.gguf",
            "q4/model.gguf",
            "model-Q4.gguf",
            "Mixtral-8x7B-v0.1.gguf",
            "model-q4_.gguf",
        ] {
            assert_eq!(tag(path), None, "{path}");
        }
    }

    #[test]
    fn names_are_case_insensitive_and_upper_cased() {
        assert_eq!("q4_k_m".parse::<Quant>().unwrap().as_str(), "Q4_K_M");
        for bad in ["", "Q4-K-M", "Q4 K", "../x", &"Q".repeat(33)] {
            assert!(bad.parse::<Quant>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_preference_order_starts_with_q4_k_m_and_ends_unquantized() {
        let rank = |q: &str| q.parse::<Quant>().unwrap().preference();
        assert_eq!(rank("Q4_K_M"), Some(0));
        assert!(rank("Q8_0") < rank("IQ4_XS"));
        assert!(rank("Q2_K") < rank("F16"));
        assert_eq!(rank("F32"), Some(QUANT_PREFERENCE.len() - 1));
        assert_eq!(rank("Q9_Z"), None);
        for q in QUANT_PREFERENCE {
            assert!(is_quant_tag(q), "{q} is listed but not recognised");
        }
    }

    #[test]
    fn shard_suffixes_are_parsed_and_siblings_named_alike() {
        let shard = Shard::of_path("Q4/model-q4_k_m-00002-of-00003.gguf").unwrap();
        assert_eq!((shard.index, shard.count), (2, 3));
        assert_eq!(shard.prefix, "Q4/model-q4_k_m");
        assert_eq!(shard.sibling(3), "Q4/model-q4_k_m-00003-of-00003.gguf");
        assert_eq!(
            Shard::of_path("m-1-of-2.GGUF").unwrap().sibling(2),
            "m-2-of-2.GGUF"
        );
        for path in [
            "model-Q4_K_M.gguf",
            "model-00001-of-00003.bin",
            "model-x-of-00003.gguf",
            "model-00001-of-.gguf",
        ] {
            assert_eq!(Shard::of_path(path), None, "{path}");
        }
    }

    #[test]
    fn projectors_are_told_apart() {
        assert!(is_projector("vision/mmproj-model-F16.gguf"));
        assert!(!is_projector("model-F16.gguf"));
        assert!(!is_projector("mmproj-notes.txt"));
        assert!(is_gguf("a.GgUf") && !is_gguf("gguf") && !is_gguf("a.gguf.json"));
    }
}
