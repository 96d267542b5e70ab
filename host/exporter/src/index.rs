//! An image index over the images of a build, as BuildKit's image exporter writes one: a
//! manifest per platform (several when the build targets several platforms), each followed
//! by its attestation manifest when attestations are asked for. The index is then what the
//! image's names point at.

use std::collections::BTreeMap;

use serde_json::json;

use buildwit_worker::{ContentStore, Descriptor};

use crate::attestation::{Statement, attestation_manifest};
use crate::image::platform_descriptor;
use crate::layout::OCI_INDEX;
use crate::{Annotations, BuiltImage, ExportError};

/// A manifest an index lists besides the first image's own: another platform's image or
/// an attestation manifest, with its bytes and the blobs it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedManifest {
    /// The manifest.
    pub descriptor: Descriptor,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its config and layers.
    pub blobs: Vec<Descriptor>,
}

/// The index over a build's images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIndex {
    /// The index.
    pub index: Descriptor,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Every manifest it lists but the first image's, in its order.
    pub manifests: Vec<IndexedManifest>,
    /// Annotations of its own descriptor in `index.json`: when it was made and
    /// `annotation-index-descriptor.*`.
    pub descriptor_annotations: BTreeMap<String, String>,
}

/// One image for the images of a build (one per platform, in order): the first, with an
/// index over all of them and, for each, its attestation manifest when it has statements
/// (`statements[i]` for image `i`; missing or empty: none). The index gets the
/// `annotation-index*` annotations.
pub fn build_index(
    content: &ContentStore,
    images: Vec<BuiltImage>,
    statements: &[Vec<Statement>],
    names: &[String],
    annotations: &Annotations,
) -> Result<BuiltImage, ExportError> {
    let mut entries = Vec::new();
    let mut manifests = Vec::new();
    // After every platform's manifest, as BuildKit orders them.
    let mut attestations = Vec::new();
    let mut images = images.into_iter();
    let mut first = images
        .next()
        .ok_or_else(|| ExportError::InvalidConfig("an index needs at least one image".into()))?;
    for (i, image) in std::iter::once(&first).chain(images.as_slice()).enumerate() {
        let platform = &image.platform;
        let mut entry = json!({
            "mediaType": image.manifest.media_type,
            "digest": image.manifest.digest,
            "size": image.manifest.size,
        });
        // `annotation-manifest-descriptor.*`; the creation time goes on the index's own
        // descriptor only, as BuildKit's.
        let annotations: BTreeMap<&String, &String> = image
            .descriptor_annotations
            .iter()
            .filter(|(k, _)| k.as_str() != crate::image::ANNOTATION_CREATED)
            .collect();
        if !annotations.is_empty() {
            entry["annotations"] = json!(annotations);
        }
        entry["platform"] = platform_descriptor(platform);
        entries.push(entry);
        if i > 0 {
            manifests.push(IndexedManifest {
                descriptor: image.manifest.clone(),
                bytes: image.manifest_bytes.clone(),
                blobs: std::iter::once(image.config.clone())
                    .chain(image.layers.iter().cloned())
                    .collect(),
            });
        }
        if let Some(statements) = statements.get(i).filter(|s| !s.is_empty()) {
            attestations.push(attestation_manifest(
                content,
                &image.manifest,
                statements,
                names,
                platform,
            )?);
        }
    }
    for (attestation, entry) in attestations {
        manifests.push(attestation);
        entries.push(entry);
    }
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    if !annotations.index.is_empty() {
        index["annotations"] = json!(annotations.index);
    }
    let bytes = serde_json::to_vec(&index).expect("indexes serialize");
    let descriptor = Descriptor {
        media_type: OCI_INDEX.to_string(),
        digest: content
            .write(&bytes)
            .map_err(|e| ExportError::io("storing the image index", e))?,
        size: bytes.len() as u64,
    };
    let mut descriptor_annotations = annotations.index_descriptor.clone();
    if let Some(created) = first
        .descriptor_annotations
        .get(crate::image::ANNOTATION_CREATED)
    {
        descriptor_annotations
            .entry(crate::image::ANNOTATION_CREATED.to_string())
            .or_insert_with(|| created.clone());
    }
    first.index = Some(ImageIndex {
        index: descriptor,
        bytes,
        manifests,
        descriptor_annotations,
    });
    Ok(first)
}
