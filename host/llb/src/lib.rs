//! BuildKit's LLB wire format: the protobuf types, canonical encoding and digests,
//! validation, and the `buildctl debug dump-llb` JSON and Graphviz views.
//!
//! An op's digest is the SHA-256 of its exact bytes in `Definition.def`. [`encode_op`]
//! writes ops as BuildKit's Go client does (deterministic protobuf: fields in number order
//! with oneofs last, maps sorted by key with every entry's key and value written, zero
//! scalars omitted, set-but-empty messages kept), so re-encoding an op BuildKit wrote gives
//! the same bytes and the same digest.

mod dump;
mod encode;
pub mod pb;
mod validate;

use std::fmt;
use std::str::FromStr;

use prost::Message;
use sha2::{Digest as _, Sha256};

pub use dump::{dump_json_lines, to_dot};
pub use encode::{encode_definition, encode_op};
pub use validate::{Graph, LlbError, Vertex, output_count, validate, validate_allow_empty};

/// An op digest, `sha256:<64 lower-case hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest as a string, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl FromStr for Digest {
    type Err = LlbError;

    fn from_str(s: &str) -> Result<Self, LlbError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(LlbError::BadDigest(s.to_string()))
        }
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of some bytes (of an op: its exact bytes in `Definition.def`).
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

/// Decode a definition; 0 bytes decode to the empty (scratch) definition.
pub fn decode_definition(bytes: &[u8]) -> Result<pb::Definition, LlbError> {
    pb::Definition::decode(bytes).map_err(|e| LlbError::Decode {
        what: "definition".into(),
        reason: e.to_string(),
    })
}

/// Decode one op of a definition; `index` only names it in the error.
pub fn decode_op(index: usize, bytes: &[u8]) -> Result<pb::Op, LlbError> {
    pb::Op::decode(bytes).map_err(|e| LlbError::Decode {
        what: format!("op {index} ({})", digest_of(bytes)),
        reason: e.to_string(),
    })
}
