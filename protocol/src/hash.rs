//! [`Hash`]: the BLAKE3 name of a blob, and [`Sha256`], the digest that
//! Hugging Face and many mirrors publish, kept as an alias of a [`Hash`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The BLAKE3 hash of a blob's bytes: its name everywhere in p2pmodel.
///
/// It prints and parses as 64 lowercase hex digits, exactly what `b3sum FILE`
/// prints, so users can check any file with standard tools. Serde writes hex
/// text in human-readable formats and 32 raw bytes in binary ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; 32]);

impl Hash {
    /// Length of a hash in bytes.
    pub const LEN: usize = 32;

    /// The hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for log lines and progress bars.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl From<blake3::Hash> for Hash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl From<Hash> for blake3::Hash {
    fn from(hash: Hash) -> Self {
        blake3::Hash::from_bytes(hash.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// Why a string is not a [`Hash`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseHashError {
    /// The string is not 64 characters long.
    #[error("a BLAKE3 hash is 64 hex digits, as b3sum prints it; got {0} characters")]
    Length(usize),
    /// A character is not a lowercase hex digit.
    #[error("a BLAKE3 hash is lowercase hex (0-9, a-f); found {0:?}")]
    Digit(char),
}

impl FromStr for Hash {
    type Err = ParseHashError;

    /// Parses 64 lowercase hex digits. Uppercase is refused so that one hash
    /// has exactly one spelling (file names and logs compare as text).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseHashError::Length(s.chars().count()));
        }
        if let Some(bad) = s.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(ParseHashError::Digit(bad));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).expect("checked: 64 lowercase hex digits");
        Ok(Self(bytes))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Self)
        }
    }
}

/// A SHA-256 digest, as Hugging Face publishes for LFS files and as
/// `sha256sum` prints it (64 lowercase hex digits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sha256(pub [u8; 32]);

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = ParseHashError;

    /// Parses 64 hex digits; uppercase is accepted, since tools differ.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        lower.parse::<Hash>().map(|hash| Self(hash.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_b3sum_does() {
        // `printf 'hello' | b3sum` prints this digest.
        let hash = Hash::of(b"hello");
        assert_eq!(
            hash.to_string(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert_eq!(hash.to_string().parse::<Hash>().unwrap(), hash);
    }

    #[test]
    fn refuses_wrong_length_uppercase_and_junk() {
        let good = Hash::of(b"x").to_string();
        assert_eq!(good[..63].parse::<Hash>(), Err(ParseHashError::Length(63)));
        assert_eq!(
            good.to_uppercase().parse::<Hash>().unwrap_err(),
            ParseHashError::Digit(
                good.to_uppercase()
                    .chars()
                    .find(|c| c.is_ascii_uppercase())
                    .unwrap()
            )
        );
        let junk = format!("{}g", &good[..63]);
        assert_eq!(junk.parse::<Hash>(), Err(ParseHashError::Digit('g')));
    }

    #[test]
    fn serde_is_hex_in_text_and_raw_in_binary() {
        let hash = Hash::of(b"serde");
        let text = serde_json::to_string(&hash).unwrap();
        assert_eq!(text, format!("\"{hash}\""));
        assert_eq!(serde_json::from_str::<Hash>(&text).unwrap(), hash);
        let bytes = postcard::to_stdvec(&hash).unwrap();
        assert_eq!(bytes, hash.as_bytes());
        assert_eq!(postcard::from_bytes::<Hash>(&bytes).unwrap(), hash);
    }
}
