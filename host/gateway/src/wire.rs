//! Between the engine's frontend types and the gateway's messages, for both sides of the
//! protocol: results with their refs named by id, file stats, and errors by gRPC code.

use std::collections::HashMap;

use buildwit_frontend::bridge::{self, ErrorKind, FrontendOutput, GatewayError, SolvedRef};
use prost::Message;

use crate::proto::fsutil::types::Stat;
use crate::proto::moby::buildkit::v1::frontend::{Ref, RefMap, Result as GatewayResult, result};

/// `out` as a gateway `Result`, each ref named by `id_of` (scratch: an empty ref).
pub fn to_result<E>(
    out: FrontendOutput,
    mut id_of: impl FnMut(&SolvedRef) -> Result<String, E>,
) -> Result<GatewayResult, E> {
    let mut wire = |r: &SolvedRef| -> Result<Ref, E> {
        Ok(Ref {
            id: id_of(r)?,
            def: r.definition.encode_to_vec(),
        })
    };
    let result = match out.refs.is_empty() {
        true => result::Result::Ref(match &out.reference {
            Some(r) => wire(r)?,
            None => Ref::default(),
        }),
        false => {
            let mut refs = HashMap::new();
            for (platform, r) in &out.refs {
                refs.insert(platform.clone(), wire(r)?);
            }
            result::Result::Refs(RefMap { refs })
        }
    };
    Ok(GatewayResult {
        result: Some(result),
        metadata: out.metadata.into_iter().collect(),
    })
}

/// A gateway `Result` as an output, each ref found by `lookup` (an empty id is scratch);
/// metadata and platforms in sorted order.
pub fn from_result<E>(
    r: GatewayResult,
    mut lookup: impl FnMut(Ref) -> Result<SolvedRef, E>,
) -> Result<FrontendOutput, E> {
    let mut found = |r: Ref| match r.id.is_empty() {
        true => Ok(None),
        false => lookup(r).map(Some),
    };
    let mut out = FrontendOutput {
        metadata: r.metadata.into_iter().collect(),
        ..Default::default()
    };
    out.metadata.sort_by(|a, b| a.0.cmp(&b.0));
    match r.result {
        Some(result::Result::Ref(r)) => out.reference = found(r)?,
        Some(result::Result::Refs(map)) => {
            for (platform, r) in map.refs {
                if let Some(solved) = found(r)? {
                    out.refs.push((platform, solved));
                }
            }
            out.refs.sort_by(|a, b| a.0.cmp(&b.0));
        }
        None => {}
    }
    Ok(out)
}

/// A file stat as fsutil sends it.
pub fn to_stat(s: bridge::Stat) -> Stat {
    Stat {
        path: s.path,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        mod_time: s.mod_time,
        linkname: s.linkname,
        devmajor: s.devmajor as i64,
        devminor: s.devminor as i64,
        xattrs: Default::default(),
    }
}

/// A file stat fsutil sent.
pub fn from_stat(s: Stat) -> bridge::Stat {
    bridge::Stat {
        path: s.path,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        mod_time: s.mod_time,
        linkname: s.linkname,
        devmajor: s.devmajor as u64,
        devminor: s.devminor as u64,
    }
}

/// The gRPC code of an error kind.
pub fn code_of(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::Unsupported => tonic::Code::Unimplemented,
        ErrorKind::Failed => tonic::Code::Unknown,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

/// An error from a gRPC code and message.
pub fn error_of(code: tonic::Code, message: String) -> GatewayError {
    let kind = match code {
        tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
        tonic::Code::NotFound => ErrorKind::NotFound,
        tonic::Code::PermissionDenied => ErrorKind::PermissionDenied,
        tonic::Code::Unimplemented => ErrorKind::Unsupported,
        tonic::Code::Internal => ErrorKind::Internal,
        _ => ErrorKind::Failed,
    };
    GatewayError::new(kind, message)
}
