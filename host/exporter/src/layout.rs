//! Image layouts on disk: the OCI image layout as a tarball (`type=oci`) or a directory
//! (`type=oci,tar=false`), and the Docker tarball (`type=docker`), which BuildKit writes as
//! the same OCI layout plus Docker's `manifest.json` (and no `repositories` file).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use buildwit_worker::content::digest_hex;
use buildwit_worker::{ContentStore, Descriptor};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::ExportError;
use crate::atomic::{AtomicDir, AtomicFile};
use crate::image::BuiltImage;
use crate::reference::{ImageName, normalize_name};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Write the image as an OCI image layout tarball to `w`. Each name gets its own entry in
/// `index.json` (none: one unnamed entry).
pub fn write_oci_archive(
    content: &ContentStore,
    image: &BuiltImage,
    names: &[String],
    w: impl Write,
) -> Result<(), ExportError> {
    write_archive(content, image, names, false, w)
}

/// Write the image as a Docker tarball (`docker load`) to `w`: the OCI layout plus
/// `manifest.json`.
pub fn write_docker_archive(
    content: &ContentStore,
    image: &BuiltImage,
    names: &[String],
    w: impl Write,
) -> Result<(), ExportError> {
    write_archive(content, image, names, true, w)
}

/// [`write_oci_archive`] to a file that appears only once it is complete.
pub fn write_oci_tar(
    content: &ContentStore,
    image: &BuiltImage,
    names: &[String],
    dest: &Path,
) -> Result<(), ExportError> {
    let mut file = AtomicFile::create(dest)?;
    write_oci_archive(content, image, names, &mut file)?;
    file.commit()
}

/// [`write_docker_archive`] to a file that appears only once it is complete.
pub fn write_docker_tar(
    content: &ContentStore,
    image: &BuiltImage,
    names: &[String],
    dest: &Path,
) -> Result<(), ExportError> {
    let mut file = AtomicFile::create(dest)?;
    write_docker_archive(content, image, names, &mut file)?;
    file.commit()
}

/// Write the image as an OCI image layout directory. It is built beside `dest` and moved
/// there when complete; an existing directory at `dest` is replaced.
pub fn write_oci_dir(
    content: &ContentStore,
    image: &BuiltImage,
    names: &[String],
    dest: &Path,
) -> Result<(), ExportError> {
    let dir = AtomicDir::create(dest)?;
    let what = || format!("writing {}", dest.display());
    let files = layout_files(image, names, false)?;
    let blobs = dir.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| ExportError::io(what(), e))?;
    for (name, bytes) in &files {
        fs::write(dir.path().join(name), bytes).map_err(|e| ExportError::io(what(), e))?;
    }
    for desc in blobs_of(image) {
        let path = dir.path().join(blob_path(desc)?);
        let mut out = File::create(&path).map_err(|e| ExportError::io(what(), e))?;
        copy_blob(content, desc, &mut out)?;
    }
    dir.commit()
}

/// The layout's JSON files: `oci-layout`, `index.json` and, for Docker, `manifest.json`.
fn layout_files(
    image: &BuiltImage,
    names: &[String],
    docker: bool,
) -> Result<Vec<(&'static str, Vec<u8>)>, ExportError> {
    let names = names
        .iter()
        .map(|n| normalize_name(n))
        .collect::<Result<Vec<ImageName>, _>>()?;
    let mut files = vec![
        ("oci-layout", OCI_LAYOUT.to_vec()),
        ("index.json", index_json(image, &names)),
    ];
    if docker {
        files.push(("manifest.json", docker_manifest_json(image, &names)?));
    }
    Ok(files)
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<IndexEntry<'a>>,
}

#[derive(Serialize)]
struct IndexEntry<'a> {
    #[serde(flatten)]
    descriptor: &'a Descriptor,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<serde_json::Value>,
}

/// `index.json`: the manifest once per name, with the name annotations containerd's
/// archive writer (which BuildKit uses) gives it.
fn index_json(image: &BuiltImage, names: &[ImageName]) -> Vec<u8> {
    let entry = |name: Option<&ImageName>| {
        let mut annotations = match &image.index {
            Some(index) => index.descriptor_annotations.clone(),
            None => image.descriptor_annotations.clone(),
        };
        if let Some(name) = name {
            annotations.insert(ANNOTATION_IMAGE_NAME.to_string(), name.full.clone());
            annotations.insert(ANNOTATION_REF_NAME.to_string(), name.ref_name.clone());
        }
        // An index lists the platforms itself.
        let descriptor = image.top();
        IndexEntry {
            descriptor,
            annotations,
            platform: image
                .index
                .is_none()
                .then(|| crate::image::platform_descriptor(&image.platform)),
        }
    };
    let manifests = if names.is_empty() {
        vec![entry(None)]
    } else {
        names.iter().map(|n| entry(Some(n))).collect()
    };
    serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    })
    .expect("index serializes")
}

/// Docker's `manifest.json`: one image, with its names in familiar form and paths to the
/// config and layer blobs of the OCI layout it sits in.
fn docker_manifest_json(image: &BuiltImage, names: &[ImageName]) -> Result<Vec<u8>, ExportError> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let repo_tags = (!names.is_empty()).then(|| names.iter().map(|n| n.familiar.clone()).collect());
    let entry = Entry {
        config: blob_path(&image.config)?,
        repo_tags,
        layers: image
            .layers
            .iter()
            .map(blob_path)
            .collect::<Result<_, _>>()?,
    };
    Ok(serde_json::to_vec(&[entry]).expect("manifest.json serializes"))
}

/// Every blob of the image once: config, manifest and layers, and with an index, the index
/// and every manifest it lists with their blobs.
fn blobs_of(image: &BuiltImage) -> Vec<&Descriptor> {
    let mut blobs: Vec<&Descriptor> = [&image.config, &image.manifest]
        .into_iter()
        .chain(&image.layers)
        .collect();
    if let Some(index) = &image.index {
        blobs.push(&index.index);
        for m in &index.manifests {
            blobs.push(&m.descriptor);
            blobs.extend(&m.blobs);
        }
    }
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    blobs
}

/// `blobs/sha256/<hex>`, the path of a blob in the layout.
fn blob_path(desc: &Descriptor) -> Result<String, ExportError> {
    let hex = digest_hex(&desc.digest)
        .map_err(|e| ExportError::io(format!("exporting blob {:?}", desc.digest), e))?;
    Ok(format!("blobs/sha256/{hex}"))
}

/// Copy a blob from the store, checking its size and digest on the way (a blob that
/// changed on disk must not end up in an image under its old digest).
fn copy_blob(
    content: &ContentStore,
    desc: &Descriptor,
    out: &mut impl Write,
) -> Result<(), ExportError> {
    let path = content
        .path(&desc.digest)
        .map_err(|e| ExportError::io(format!("reading blob {:?}", desc.digest), e))?;
    let what = || format!("reading blob {} ({})", desc.digest, path.display());
    let file = File::open(&path).map_err(|e| ExportError::io(what(), e))?;
    let mut hasher = Sha256::new();
    let mut reader = file.take(desc.size);
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| ExportError::io(what(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| ExportError::io(format!("writing blob {}", desc.digest), e))?;
        copied += n as u64;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if copied != desc.size || actual != desc.digest {
        return Err(ExportError::CorruptBlob {
            digest: desc.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// The layout as a tarball, entries sorted by name with fixed headers (mode, no owner, no
/// time), like containerd's archive writer.
fn write_archive(
    content: &ContentStore,
    image: &BuiltImage,
    names: &[String],
    docker: bool,
    w: impl Write,
) -> Result<(), ExportError> {
    let mut files = layout_files(image, names, docker)?;
    files.sort_by_key(|(name, _)| *name);
    let mut tar = tar::Builder::new(w);
    // Sorted: "blobs/", "blobs/sha256/", blobs, then "index.json", "manifest.json",
    // "oci-layout".
    append_header(&mut tar, "blobs/", EntryType::Directory, 0o755, 0)?;
    append_header(&mut tar, "blobs/sha256/", EntryType::Directory, 0o755, 0)?;
    for desc in blobs_of(image) {
        append_header(
            &mut tar,
            &blob_path(desc)?,
            EntryType::Regular,
            0o444,
            desc.size,
        )?;
        // The header promised desc.size bytes: copy exactly those, then pad the block.
        copy_blob(content, desc, tar.get_mut())?;
        let pad = (512 - desc.size % 512) % 512;
        tar.get_mut()
            .write_all(&vec![0u8; pad as usize])
            .map_err(|e| ExportError::io(ARCHIVE, e))?;
    }
    for (name, bytes) in &files {
        let mode = if *name == "oci-layout" { 0o444 } else { 0o644 };
        append_header(&mut tar, name, EntryType::Regular, mode, bytes.len() as u64)?;
        tar.get_mut()
            .write_all(bytes)
            .map_err(|e| ExportError::io(ARCHIVE, e))?;
        let pad = (512 - bytes.len() % 512) % 512;
        tar.get_mut()
            .write_all(&vec![0u8; pad])
            .map_err(|e| ExportError::io(ARCHIVE, e))?;
    }
    let mut w = tar.into_inner().map_err(|e| ExportError::io(ARCHIVE, e))?;
    w.flush().map_err(|e| ExportError::io(ARCHIVE, e))
}

const ARCHIVE: &str = "writing the image archive";

/// A ustar header with only a name, type, mode and size; its data follows.
fn append_header<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    kind: EntryType,
    mode: u32,
    size: u64,
) -> Result<(), ExportError> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    // Layout names are short ASCII (at most 78 bytes), so they fit the name field.
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_cksum();
    tar.get_mut()
        .write_all(header.as_bytes())
        .map_err(|e| ExportError::io(ARCHIVE, e))
}
