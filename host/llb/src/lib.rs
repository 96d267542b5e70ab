//! BuildKit's LLB wire format: the protobuf types, canonical encoding and digests,
//! validation, and the `buildctl debug dump-llb` JSON and Graphviz views.
//!
//! An op's digest is the SHA-256 of its exact bytes in `Definition.def`; ops are encoded
//! deterministically (fields in tag order, maps sorted by key, zero scalars omitted, set but
//! empty messages kept), so re-encoding an op BuildKit wrote gives the same bytes.

mod dump;
pub mod pb;
mod validate;

use std::fmt;
use std::str::FromStr;

use prost::Message;
use sha2::{Digest as _, Sha256};

pub use dump::{dump_json_lines, to_dot};
pub use validate::{Graph, LlbError, Vertex, validate};

/// An op digest, `sha256:<64 hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = LlbError;

    fn from_str(s: &str) -> Result<Self, LlbError> {
        let hex = s.strip_prefix("sha256:").filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        match hex {
            Some(_) => Ok(Digest(s.to_string())),
            None => Err(LlbError::BadDigest(s.to_string())),
        }
    }
}

/// The digest of some bytes.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

/// Encode an op canonically, as BuildKit's deterministic marshalling does: fields in tag
/// order, except that Go's protobuf writes the `op` oneof after `platform` and
/// `constraints`. Always use this, not `Message::encode`, for bytes that get a digest.
pub fn encode_op(op: &pb::Op) -> Vec<u8> {
    use prost::encoding::message;
    let mut buf = Vec::with_capacity(op.encoded_len());
    for input in &op.inputs {
        message::encode(1, input, &mut buf);
    }
    if let Some(p) = &op.platform {
        message::encode(10, p, &mut buf);
    }
    if let Some(c) = &op.constraints {
        message::encode(11, c, &mut buf);
    }
    if let Some(kind) = &op.op {
        kind.encode(&mut buf);
    }
    buf
}

/// Encode a whole definition (its metadata map sorted by digest).
pub fn encode_definition(def: &pb::Definition) -> Vec<u8> {
    def.encode_to_vec()
}

/// Decode a definition; a 0-byte input is the empty (scratch) definition.
pub fn decode_definition(bytes: &[u8]) -> Result<pb::Definition, LlbError> {
    pb::Definition::decode(bytes).map_err(|e| LlbError::Decode {
        what: "definition".into(),
        reason: e.to_string(),
    })
}
