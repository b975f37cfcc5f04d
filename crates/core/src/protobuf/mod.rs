//! Decodes Kubernetes protobuf request bodies
//! (`application/vnd.kubernetes.protobuf`) into `serde_json::Value` in the
//! JSON shape Kubernetes itself uses, for every built-in kind.
//!
//! kubectl and client-go typed clients send protobuf for built-in kinds and
//! do not fall back to JSON, so an API server must accept it. Rather than
//! compiling k8s-pb's ~1300 prost types, a build script derives a compact
//! field schema from k8s-pb's generated source and exact JSON names from
//! k8s-openapi's (see `build/`); decoding is then a small table-driven walk.
//!
//! ```text
//! body = "k8s\0" ++ runtime.Unknown{1: typeMeta{1: apiVersion, 2: kind},
//!                                   2: raw (the object), 3: contentEncoding,
//!                                   4: contentType}
//! ```
//!
//! Pure, no IO; never panics on any input (fuzz-tested); recursion is capped
//! at [`MAX_DEPTH`].

mod decode;
mod schema;
mod special;
mod wire;

use serde_json::Value;

pub use decode::MAX_DEPTH;
use wire::{LEN, Reader};

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type this crate decodes.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("bad magic: protobuf body does not start with \"k8s\\0\"")]
    BadMagic,
    #[error("truncated varint in {0}")]
    TruncatedVarint(&'static str),
    #[error("varint longer than 64 bits in {0}")]
    VarintOverflow(&'static str),
    #[error("truncated {message}: value needs {needed} bytes but only {available} remain")]
    Truncated { message: &'static str, needed: u64, available: usize },
    #[error("invalid field number {number} in {message}")]
    InvalidFieldNumber { message: &'static str, number: u64 },
    #[error("unsupported wire type {wire_type} in {message}")]
    UnsupportedWireType { message: &'static str, wire_type: u8 },
    #[error("wrong wire type {wire_type} for field {field} of {message}")]
    WrongWireType { field: &'static str, message: &'static str, wire_type: u8 },
    #[error("invalid value for field {field} of {message}: {reason}")]
    InvalidValue { field: &'static str, message: &'static str, reason: String },
    #[error("nesting too deep (more than {0} levels)")]
    TooDeep(usize),
    #[error("envelope has no apiVersion or kind")]
    MissingTypeMeta,
    #[error("unknown kind `{api_version}, Kind={kind}`")]
    UnknownKind { api_version: String, kind: String },
    #[error("unknown message type {0}")]
    UnknownMessageType(String),
    #[error("unsupported content encoding {0:?} (only identity is supported)")]
    UnsupportedContentEncoding(String),
    #[error("unsupported content type {0:?} inside protobuf envelope")]
    UnsupportedContentType(String),
}

/// The parsed `runtime.Unknown` envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub api_version: String,
    pub kind: String,
    /// The protobuf-encoded object.
    pub raw: &'a [u8],
    pub content_encoding: String,
    pub content_type: String,
}

/// Parses the magic and `runtime.Unknown` envelope without decoding the
/// object (e.g. to route on apiVersion/kind first).
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    let rest = body.strip_prefix(MAGIC).ok_or(DecodeError::BadMagic)?;
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut r = Reader::new(rest, UNKNOWN);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        if !(1..=4).contains(&tag) {
            r.skip(wt)?;
            continue;
        }
        if wt != LEN {
            let field = ["typeMeta", "raw", "contentEncoding", "contentType"][tag as usize - 1];
            return Err(DecodeError::WrongWireType { field, message: UNKNOWN, wire_type: wt });
        }
        let bytes = r.len_delimited()?;
        let text = || String::from_utf8_lossy(bytes).into_owned();
        match tag {
            1 => type_meta(bytes, &mut env)?,
            2 => env.raw = bytes,
            3 => env.content_encoding = text(),
            _ => env.content_type = text(),
        }
    }
    Ok(env)
}

/// Merges a `runtime.TypeMeta {1: apiVersion, 2: kind}` into `env`.
fn type_meta(bytes: &[u8], env: &mut Envelope<'_>) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes, TYPE_META);
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) => env.api_version = String::from_utf8_lossy(r.len_delimited()?).into_owned(),
            (2, LEN) => env.kind = String::from_utf8_lossy(r.len_delimited()?).into_owned(),
            (tag @ (1 | 2), wire_type) => {
                let field = if tag == 1 { "apiVersion" } else { "kind" };
                return Err(DecodeError::WrongWireType { field, message: TYPE_META, wire_type });
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(())
}

/// Decodes a full protobuf request body into a JSON object that includes
/// `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    decode_at(body, 0)
}

/// `decode` at a given nesting depth (RawExtension may embed envelopes).
pub(crate) fn decode_at(body: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let env = envelope(body)?;
    if !env.content_encoding.is_empty() {
        return Err(DecodeError::UnsupportedContentEncoding(env.content_encoding));
    }
    if !(env.content_type.is_empty() || env.content_type == CONTENT_TYPE) {
        return Err(DecodeError::UnsupportedContentType(env.content_type));
    }
    if env.api_version.is_empty() || env.kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta);
    }
    let unknown = || DecodeError::UnknownKind { api_version: env.api_version.clone(), kind: env.kind.clone() };
    let idx = schema::message_for_kind(&env.api_version, &env.kind).ok_or_else(unknown)?;
    // build.rs excludes special messages from kinds, so this is an object.
    let Some(Value::Object(mut obj)) = decode::message(idx, &[env.raw], depth + 1)? else {
        return Err(unknown());
    };
    obj.insert("apiVersion".into(), Value::String(env.api_version));
    obj.insert("kind".into(), Value::String(env.kind));
    Ok(Value::Object(obj))
}

/// Decodes a bare protobuf message (no magic, no envelope) given its
/// protobuf full name, e.g. `k8s.io.api.core.v1.PodSpec` (case-insensitive).
/// Returns `null` for values Go renders as null (zero Time, empty RawExtension).
pub fn decode_message(type_name: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
    let idx =
        schema::message_by_name(type_name).ok_or_else(|| DecodeError::UnknownMessageType(type_name.to_string()))?;
    Ok(decode::message(idx, &[bytes], 0)?.unwrap_or(Value::Null))
}

/// The protobuf message name used for `(apiVersion, kind)`, if known.
pub fn message_type(api_version: &str, kind: &str) -> Option<&'static str> {
    schema::message_for_kind(api_version, kind).map(|i| schema::MESSAGES[usize::from(i)].name)
}
