//! In-toto attestations as BuildKit attaches them to an image: an attestation manifest (an
//! empty config, one `application/vnd.in-toto+json` layer per statement, the image
//! manifest as its `subject`), listed beside the image manifest in the image's index
//! ([`crate::index`]) and marked `vnd.docker.reference.type: attestation-manifest`.

use serde::Serialize;
use serde_json::{Value, json};

use buildwit_worker::{ContentStore, Descriptor};

use crate::index::IndexedManifest;
use crate::layout::OCI_MANIFEST;
use crate::{ExportError, normalize_name};

/// Media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
const ATTESTATION_ARTIFACT: &str = "application/vnd.docker.attestation.manifest.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// A statement to attach, before its subject is known.
#[derive(Clone, Debug)]
pub struct Statement {
    /// `predicateType`, such as `https://slsa.dev/provenance/v1`.
    pub predicate_type: String,
    /// The predicate.
    pub predicate: Value,
}

#[derive(Serialize)]
struct InToto<'a> {
    #[serde(rename = "_type")]
    kind: &'a str,
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    subject: Vec<Value>,
    predicate: &'a Value,
}

/// The attestation manifest of `image` (a manifest for `platform`, `os/arch[/variant]`):
/// each statement names the image as its subject under each of `names` as a package URL
/// (as BuildKit does; no names, no subject entries). Stored in `content`; the index entry
/// that points at it comes with it.
pub(crate) fn attestation_manifest(
    content: &ContentStore,
    image: &Descriptor,
    statements: &[Statement],
    names: &[String],
    platform: &str,
) -> Result<(IndexedManifest, Value), ExportError> {
    let store = |what: &str, bytes: &[u8]| {
        content
            .write(bytes)
            .map_err(|e| ExportError::io(format!("storing the attestation {what}"), e))
    };
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    let mut subject = Vec::new();
    for name in names {
        let name = normalize_name(name)?;
        subject.push(json!({
            "name": docker_purl(&name.full, Some(platform))?,
            "digest": {"sha256": hex},
        }));
    }
    let empty = Descriptor {
        media_type: OCI_EMPTY.to_string(),
        digest: store("config", b"{}")?,
        size: 2,
    };
    let mut blobs = vec![empty.clone()];
    let mut layers = Vec::new();
    for statement in statements {
        let bytes = serde_json::to_vec(&InToto {
            kind: STATEMENT_V1,
            predicate_type: &statement.predicate_type,
            subject: subject.clone(),
            predicate: &statement.predicate,
        })
        .expect("statements serialize");
        let layer = Descriptor {
            media_type: IN_TOTO.to_string(),
            digest: store("statement", &bytes)?,
            size: bytes.len() as u64,
        };
        layers.push(json!({
            "mediaType": layer.media_type,
            "digest": layer.digest,
            "size": layer.size,
            "annotations": {ANNOTATION_PREDICATE_TYPE: statement.predicate_type},
        }));
        blobs.push(layer);
    }
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ATTESTATION_ARTIFACT,
        "config": {"mediaType": OCI_EMPTY, "digest": empty.digest, "size": 2, "data": "e30="},
        "layers": layers,
        "subject": image,
    }))
    .expect("manifests serialize");
    let descriptor = Descriptor {
        media_type: OCI_MANIFEST.to_string(),
        digest: store("manifest", &bytes)?,
        size: bytes.len() as u64,
    };
    let entry = json!({
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
        "annotations": {
            ANNOTATION_REFERENCE_DIGEST: image.digest,
            ANNOTATION_REFERENCE_TYPE: "attestation-manifest",
        },
        "platform": {"architecture": "unknown", "os": "unknown"},
    });
    Ok((
        IndexedManifest {
            descriptor,
            bytes,
            blobs,
        },
        entry,
    ))
}

/// An image reference as a package URL, as BuildKit writes them in provenance:
/// `pkg:docker/NAMESPACE/NAME@TAG?platform=OS%2FARCH` (Docker Hub's `docker.io` and
/// `library` left out; a reference without a tag has its digest as the version).
pub fn docker_purl(reference: &str, platform: Option<&str>) -> Result<String, ExportError> {
    let parsed =
        buildwit_registry::parse_reference(reference).map_err(|e| ExportError::InvalidName {
            name: reference.to_string(),
            reason: e.to_string(),
        })?;
    let mut path = parsed.repository().to_string();
    if parsed.registry() != "docker.io" {
        path = format!("{}/{path}", parsed.registry());
    } else if let Some(official) = path.strip_prefix("library/") {
        path = official.to_string();
    }
    let path: Vec<String> = path.split('/').map(escape).collect();
    let mut purl = format!("pkg:docker/{}", path.join("/"));
    let mut qualifiers = Vec::new();
    match (parsed.tag(), parsed.digest()) {
        (Some(tag), digest) => {
            purl.push('@');
            purl.push_str(&escape(tag));
            if let Some(d) = digest {
                qualifiers.push(format!("digest={}", escape(d)));
            }
        }
        (None, Some(d)) => {
            purl.push('@');
            purl.push_str(&escape(d));
        }
        (None, None) => {}
    }
    if let Some(p) = platform.filter(|p| !p.is_empty()) {
        qualifiers.push(format!("platform={}", escape(p)));
    }
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    Ok(purl)
}

/// Percent-encoding of a package URL component: everything but unreserved characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_urls_are_buildkits() {
        let p = |r: &str| docker_purl(r, Some("linux/amd64")).unwrap();
        assert_eq!(
            p("127.0.0.1:5055/peer/base:1"),
            "pkg:docker/127.0.0.1%3A5055/peer/base@1?platform=linux%2Famd64"
        );
        assert_eq!(
            p("alpine"),
            "pkg:docker/alpine@latest?platform=linux%2Famd64"
        );
        assert_eq!(
            p("docker/dockerfile:1"),
            "pkg:docker/docker/dockerfile@1?platform=linux%2Famd64"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            p(&format!("alpine:3@{digest}")),
            format!(
                "pkg:docker/alpine@3?digest=sha256%3A{}&platform=linux%2Famd64",
                "a".repeat(64)
            )
        );
        assert_eq!(
            docker_purl(&format!("example.com/x@{digest}"), None).unwrap(),
            format!("pkg:docker/example.com/x@sha256%3A{}", "a".repeat(64))
        );
    }
}
