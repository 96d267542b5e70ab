//! In-toto attestations attached to an image as BuildKit attaches them: an attestation
//! manifest (an empty config, one `application/vnd.in-toto+json` layer per statement, the
//! image manifest as its `subject`) listed beside the image manifest in an image index,
//! marked `vnd.docker.reference.type: attestation-manifest`. The index is then what the
//! image's names point at.

use serde::Serialize;
use serde_json::{Value, json};

use buildwit_worker::{ContentStore, Descriptor};

use crate::layout::{OCI_INDEX, OCI_MANIFEST};
use crate::{BuiltImage, ExportError, normalize_name};

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

/// The index and the blobs attestations added to an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The image index: the image manifest, then its attestation manifest.
    pub index: Descriptor,
    /// The index's bytes.
    pub index_bytes: Vec<u8>,
    /// The attestation manifest.
    pub manifest: Descriptor,
    /// The attestation manifest's bytes.
    pub manifest_bytes: Vec<u8>,
    /// Its config and statement layers.
    pub blobs: Vec<Descriptor>,
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

/// Attach `statements` to `image`: each names the image manifest as its subject, under each
/// of `names` as a package URL (as BuildKit does; no names, no subject entries), for the
/// image's `platform` (`os/arch[/variant]`).
pub fn attach(
    content: &ContentStore,
    image: &mut BuiltImage,
    statements: &[Statement],
    names: &[String],
    platform: &str,
) -> Result<(), ExportError> {
    let store = |what: &str, bytes: &[u8]| {
        content
            .write(bytes)
            .map_err(|e| ExportError::io(format!("storing the attestation {what}"), e))
    };
    let hex = image
        .manifest
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.manifest.digest);
    let mut subject = Vec::new();
    for name in names {
        let name = normalize_name(name)?;
        subject.push(json!({
            "name": docker_purl(&name.full, Some(platform))?,
            "digest": {"sha256": hex},
        }));
    }
    let mut layers = Vec::new();
    for statement in statements {
        let bytes = serde_json::to_vec(&InToto {
            kind: STATEMENT_V1,
            predicate_type: &statement.predicate_type,
            subject: subject.clone(),
            predicate: &statement.predicate,
        })
        .expect("statements serialize");
        layers.push(json!({
            "mediaType": IN_TOTO,
            "digest": store("statement", &bytes)?,
            "size": bytes.len(),
            "annotations": {ANNOTATION_PREDICATE_TYPE: statement.predicate_type},
        }));
    }
    let empty = Descriptor {
        media_type: OCI_EMPTY.to_string(),
        digest: store("config", b"{}")?,
        size: 2,
    };
    let mut blobs = vec![empty.clone()];
    for layer in &layers {
        blobs.push(serde_json::from_value(layer.clone()).expect("a descriptor"));
    }
    let manifest_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ATTESTATION_ARTIFACT,
        "config": {"mediaType": OCI_EMPTY, "digest": empty.digest, "size": 2, "data": "e30="},
        "layers": layers,
        "subject": image.manifest,
    }))
    .expect("manifests serialize");
    let manifest = Descriptor {
        media_type: OCI_MANIFEST.to_string(),
        digest: store("manifest", &manifest_bytes)?,
        size: manifest_bytes.len() as u64,
    };
    let (os, rest) = platform.split_once('/').unwrap_or((platform, ""));
    let (architecture, variant) = rest.split_once('/').unwrap_or((rest, ""));
    let mut image_platform = json!({"architecture": architecture, "os": os});
    if !variant.is_empty() {
        image_platform["variant"] = json!(variant);
    }
    let index_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": image.manifest.media_type,
                "digest": image.manifest.digest,
                "size": image.manifest.size,
                "platform": image_platform,
            },
            {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": manifest.size,
                "annotations": {
                    ANNOTATION_REFERENCE_DIGEST: image.manifest.digest,
                    ANNOTATION_REFERENCE_TYPE: "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            },
        ],
    }))
    .expect("indexes serialize");
    let index = Descriptor {
        media_type: OCI_INDEX.to_string(),
        digest: store("index", &index_bytes)?,
        size: index_bytes.len() as u64,
    };
    image.attached = Some(Attached {
        index,
        index_bytes,
        manifest,
        manifest_bytes,
        blobs,
    });
    Ok(())
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
