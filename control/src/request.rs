//! Decoding the bodies of control API requests: untrusted bytes in, a
//! validated [`JobRequest`] (or a position, or limits) out, or a
//! [`RequestError`] whose [`code`](RequestError::code) the API returns.
//!
//! Pure functions with no I/O, so that the fuzz target calls exactly what
//! the server calls. What needs the node (resolving an `hf://` name
//! against the Hub, say) happens later, when the job is queued.

use std::path::PathBuf;

use p2pmodel_protocol::{Hash, Sha256};
use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, Target};

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The most mirrors or peers one job may name.
pub const MAX_SOURCES: usize = 64;

/// The longest group name, in bytes.
pub const MAX_GROUP: usize = 128;

/// The longest URL, `hf://` name, peer address or output path, in bytes.
pub const MAX_TEXT: usize = 4096;

/// A decoded `POST /v1/jobs` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// What to fetch.
    pub spec: JobSpec,
    /// Queue and make sure the queue is being processed (the default);
    /// `false` only queues.
    pub start: bool,
    /// Return an existing job for the same target and output instead of
    /// adding one (a paused or failed one is queued again).
    pub smart: bool,
}

/// Why a request body was refused. Each variant has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is larger than [`MAX_BODY`].
    #[error("the request body has more than {MAX_BODY} bytes")]
    TooLarge,
    /// The body is not the JSON object expected.
    #[error("the request body is not valid: {0}")]
    Json(String),
    /// None of `hash`, `url` and `hf` was given.
    #[error("say what to fetch: one of \"hash\", \"url\" or \"hf\"")]
    NoTarget,
    /// More than one of `hash`, `url` and `hf` was given.
    #[error("give only one of \"hash\", \"url\" and \"hf\"")]
    SeveralTargets,
    /// A field has a value that cannot be used.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field that does not go with the target given.
    #[error("\"{field}\" does not go with {target}")]
    Mismatched {
        /// The field.
        field: &'static str,
        /// The kind of target it was given with.
        target: &'static str,
    },
}

impl RequestError {
    /// A stable `snake_case` code for this kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::TooLarge => "body_too_large",
            RequestError::Json(_) => "invalid_json",
            RequestError::NoTarget => "missing_target",
            RequestError::SeveralTargets => "several_targets",
            RequestError::Invalid { .. } => "invalid_field",
            RequestError::Mismatched { .. } => "mismatched_field",
        }
    }
}

/// The body of `POST /v1/jobs` as JSON spells it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default = "yes")]
    start: bool,
    #[serde(default)]
    smart: bool,
}

fn yes() -> bool {
    true
}

/// Decodes and validates the body of `POST /v1/jobs`.
///
/// # Errors
/// A [`RequestError`] naming the first problem found.
pub fn decode_job_request(body: &[u8]) -> Result<JobRequest, RequestError> {
    let body: JobBody = decode_json(body)?;
    let target =
        match (body.hash, body.url, body.hf) {
            (Some(hash), None, None) => {
                let hash: Hash = hash.trim().to_ascii_lowercase().parse().map_err(|_| {
                    RequestError::Invalid {
                        field: "hash",
                        reason: "not a BLAKE3 hash (64 hex digits)".into(),
                    }
                })?;
                Target::Hash {
                    hash: hash.to_hex(),
                }
            }
            (None, Some(url), None) => Target::Url {
                url: http_url("url", &url)?,
                sha256: body.sha256.as_deref().map(sha256).transpose()?,
            },
            (None, None, Some(name)) => Target::Hf {
                name: hf_name(&name)?,
            },
            (None, None, None) => return Err(RequestError::NoTarget),
            _ => return Err(RequestError::SeveralTargets),
        };
    let kind = match &target {
        Target::Hash { .. } => "a hash",
        Target::Url { .. } => "a URL",
        Target::Hf { .. } => "an hf:// name",
    };
    if body.sha256.is_some() && !matches!(target, Target::Url { .. }) {
        return Err(RequestError::Mismatched {
            field: "sha256",
            target: kind,
        });
    }
    for (field, list) in [("mirrors", &body.mirrors), ("peers", &body.peers)] {
        if !list.is_empty() && !matches!(target, Target::Hash { .. }) {
            return Err(RequestError::Mismatched {
                field,
                target: kind,
            });
        }
        if list.len() > MAX_SOURCES {
            return Err(invalid(field, format!("more than {MAX_SOURCES} entries")));
        }
    }
    let mirrors = body
        .mirrors
        .iter()
        .map(|text| http_url("mirrors", text))
        .collect::<Result<_, _>>()?;
    let peers = body
        .peers
        .iter()
        .map(|text| peer(text))
        .collect::<Result<_, _>>()?;
    let output = body.output.as_deref().map(output).transpose()?;
    let group = body.group.as_deref().map(group).transpose()?;
    Ok(JobRequest {
        spec: JobSpec {
            target,
            mirrors,
            peers,
            output,
            group,
        },
        start: body.start,
        smart: body.smart,
    })
}

impl JobRequest {
    /// The JSON body that [`decode_job_request`] turns back into `self`.
    pub fn encode(&self) -> Vec<u8> {
        let spec = &self.spec;
        let mut body = JobBody {
            mirrors: spec.mirrors.clone(),
            peers: spec.peers.clone(),
            output: spec
                .output
                .as_ref()
                .map(|path| path.to_string_lossy().into_owned()),
            group: spec.group.clone(),
            start: self.start,
            smart: self.smart,
            ..JobBody::default()
        };
        match &spec.target {
            Target::Hash { hash } => body.hash = Some(hash.clone()),
            Target::Url { url, sha256 } => {
                body.url = Some(url.clone());
                body.sha256 = sha256.clone();
            }
            Target::Hf { name } => body.hf = Some(name.clone()),
        }
        serde_json::to_vec(&body).expect("a JSON object of strings serialises")
    }
}

/// Decodes the body of `POST /v1/jobs/{id}/position`: `{"position": N}`,
/// with N counted from 1 (the next job to start).
///
/// # Errors
/// [`RequestError`] for anything else, position 0 included.
pub fn decode_position(body: &[u8]) -> Result<usize, RequestError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        position: u64,
    }
    let body: Body = decode_json(body)?;
    match usize::try_from(body.position) {
        Ok(position) if position >= 1 => Ok(position),
        _ => Err(invalid("position", "counts from 1".into())),
    }
}

/// New queue limits, as `POST /v1/queue/limits` takes them; a missing field
/// keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Jobs that may wait in the queue at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<usize>,
    /// Jobs whose transfers run at once (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
}

/// Decodes the body of `POST /v1/queue/limits`.
///
/// # Errors
/// [`RequestError`] for a body that is not such an object, or a
/// `max_concurrent` of 0.
pub fn decode_limits(body: &[u8]) -> Result<Limits, RequestError> {
    let limits: Limits = decode_json(body)?;
    if limits.max_concurrent == Some(0) {
        return Err(invalid("max_concurrent", "must be at least 1".into()));
    }
    Ok(limits)
}

/// Returns an error unless `name` is a usable group name: 1 to
/// 128 bytes of ASCII letters, digits, `.`, `_` and `-`.
///
/// # Errors
/// [`RequestError::Invalid`] for field `group`.
pub fn check_group(name: &str) -> Result<(), RequestError> {
    group(name).map(drop)
}

fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    if body.len() > MAX_BODY {
        return Err(RequestError::TooLarge);
    }
    // serde would also take a struct from a JSON array, by position.
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(RequestError::Json("expected a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|error| RequestError::Json(error.to_string()))
}

fn invalid(field: &'static str, reason: String) -> RequestError {
    RequestError::Invalid { field, reason }
}

fn bounded<'a>(field: &'static str, text: &'a str) -> Result<&'a str, RequestError> {
    if text.len() > MAX_TEXT {
        return Err(invalid(field, format!("longer than {MAX_TEXT} bytes")));
    }
    Ok(text)
}

fn http_url(field: &'static str, text: &str) -> Result<String, RequestError> {
    let url = url::Url::parse(bounded(field, text)?)
        .map_err(|error| invalid(field, format!("{text:?} is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid(field, format!("{text:?} is not an http(s) URL")));
    }
    Ok(url.to_string())
}

fn sha256(text: &str) -> Result<String, RequestError> {
    let sha: Sha256 = text
        .trim()
        .parse()
        .map_err(|_| invalid("sha256", "not a SHA-256 (64 hex digits)".into()))?;
    Ok(sha.to_string())
}

fn hf_name(text: &str) -> Result<String, RequestError> {
    let rest = bounded("hf", text)?
        .strip_prefix("hf://")
        .ok_or_else(|| invalid("hf", "must start with hf://".into()))?;
    if rest.is_empty() || rest.chars().any(char::is_control) {
        return Err(invalid("hf", "expected hf://ORG/REPO[@REV][/PATH]".into()));
    }
    Ok(text.to_owned())
}

fn peer(text: &str) -> Result<String, RequestError> {
    let text = bounded("peers", text)?;
    if !text.starts_with('/') || text.chars().any(char::is_whitespace) {
        return Err(invalid(
            "peers",
            format!("{text:?} is not a multiaddr (/ip4/IP/tcp/PORT[/p2p/PEER_ID])"),
        ));
    }
    Ok(text.to_owned())
}

fn output(text: &str) -> Result<PathBuf, RequestError> {
    let text = bounded("output", text)?;
    let path = PathBuf::from(text);
    if !path.is_absolute() || text.contains('\0') {
        return Err(invalid(
            "output",
            "must be an absolute path (the daemon's working folder is not the caller's)".into(),
        ));
    }
    Ok(path)
}

fn group(name: &str) -> Result<String, RequestError> {
    let usable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_GROUP || !name.chars().all(usable) {
        return Err(invalid(
            "group",
            format!("1 to {MAX_GROUP} letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f";

    fn code(body: &str) -> &'static str {
        decode_job_request(body.as_bytes()).unwrap_err().code()
    }

    #[test]
    fn a_hash_with_mirrors_decodes_and_round_trips() {
        let body = format!(
            r#"{{"hash":"{}","mirrors":["http://127.0.0.1:9/m.bin"],"group":"llama-q4","output":"/tmp/x","smart":true}}"#,
            HASH.to_uppercase()
        );
        let request = decode_job_request(body.as_bytes()).unwrap();
        assert_eq!(
            request.spec.target,
            Target::Hash {
                hash: HASH.to_owned()
            }
        );
        assert!(request.start, "start defaults to true");
        assert!(request.smart);
        assert_eq!(decode_job_request(&request.encode()).unwrap(), request);
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_own_code() {
        assert_eq!(code("[]"), "invalid_json");
        assert_eq!(code("{\"hash\":1}"), "invalid_json");
        assert_eq!(code("{\"surprise\":true}"), "invalid_json");
        assert_eq!(code("{}"), "missing_target");
        assert_eq!(
            code(&format!(r#"{{"hash":"{HASH}","url":"http://a/b"}}"#)),
            "several_targets"
        );
        assert_eq!(code(r#"{"hash":"abc"}"#), "invalid_field");
        assert_eq!(code(r#"{"url":"ftp://a/b"}"#), "invalid_field");
        assert_eq!(
            code(r#"{"url":"http://a/b","sha256":"zz"}"#),
            "invalid_field"
        );
        assert_eq!(code(r#"{"hf":"org/repo"}"#), "invalid_field");
        assert_eq!(
            code(&format!(r#"{{"hash":"{HASH}","output":"relative/path"}}"#)),
            "invalid_field"
        );
        assert_eq!(
            code(&format!(r#"{{"hash":"{HASH}","group":"a b"}}"#)),
            "invalid_field"
        );
        assert_eq!(
            code(&format!(
                r#"{{"hash":"{HASH}","peers":["not-an-address"]}}"#
            )),
            "invalid_field"
        );
        assert_eq!(
            code(&format!(r#"{{"hash":"{HASH}","sha256":"{HASH}"}}"#)),
            "mismatched_field"
        );
        assert_eq!(
            code(r#"{"url":"http://a/b","mirrors":["http://c/d"]}"#),
            "mismatched_field"
        );
        let huge = format!(r#"{{"url":"http://a/{}"}}"#, "x".repeat(MAX_BODY));
        assert_eq!(code(&huge), "body_too_large");
    }

    #[test]
    fn positions_count_from_one_and_limits_need_one_slot() {
        assert_eq!(decode_position(br#"{"position":3}"#).unwrap(), 3);
        assert_eq!(
            decode_position(br#"{"position":0}"#).unwrap_err().code(),
            "invalid_field"
        );
        assert_eq!(
            decode_position(br#"{"position":-1}"#).unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(
            decode_limits(br#"{"max_queued":5}"#).unwrap(),
            Limits {
                max_queued: Some(5),
                max_concurrent: None
            }
        );
        assert!(decode_limits(br#"{"max_concurrent":0}"#).is_err());
        assert!(check_group("shards.v1").is_ok());
        assert!(check_group("../x").is_err());
    }
}
