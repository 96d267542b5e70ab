//! Exporters: turn a build's result (a snapshot and its image config) into an OCI or Docker
//! image tarball, an image in a registry, a local directory or a tar stream.
//!
//! - [`layer_blob`]: a layer directory (overlayfs format) as a compressed OCI layer in the
//!   content store, made once and reused afterwards.
//! - [`build_image`]: the layers, config and manifest of an image, with the config's rootfs
//!   and history made to agree with the layers the way BuildKit's image exporter does.
//! - [`write_oci_tar`], [`write_docker_tar`], [`write_oci_dir`]: the image as files, written
//!   atomically.
//! - [`export_local`], [`export_tar`]: the files of a build result (`type=local`,
//!   `type=tar`).
//! - [`parse_output`]: buildx/buildctl `--output` strings.
//! - [`index`]: an image index over a build's platforms and their [`attestation`]s
//!   (in-toto statements such as provenance).
//! - [`cache`]: build cache export/import (`--cache-to`, `--cache-from`).

#![warn(missing_docs)]

mod atomic;
pub mod attestation;
pub mod cache;
mod files;
mod image;
pub mod index;
mod layer;
mod layout;
mod output;
mod parallel_gzip;
mod reference;
mod tree;

use std::io;

pub use files::{export_local, export_tar, export_tar_file, non_directories};
pub use image::{
    Annotations, BuiltImage, ImageSpec, PlatformAnnotations, build_image, host_architecture,
    now_rfc3339, rfc3339_nanos, rfc3339_utc,
};
pub use layer::{
    Compression, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, LayerCompression, OCI_LAYER,
    OCI_LAYER_GZIP, OCI_LAYER_ZSTD, layer_blob, layer_blob_with,
};
pub use layout::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
    write_docker_archive, write_docker_tar, write_oci_archive, write_oci_dir, write_oci_tar,
};
pub use output::{
    Destination, OutputError, OutputKind, OutputSpec, output_from_attrs, parse_output,
};
pub use reference::{ImageName, normalize_name};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file system error, with what was being done (naming the path).
    #[error("{what}: {error}")]
    Io {
        /// What was being done, e.g. `writing out.tar`.
        what: String,
        /// The error.
        error: io::Error,
    },
    /// The image config cannot be exported.
    #[error("invalid image config for export: {0}")]
    InvalidConfig(String),
    /// Options that cannot go together, e.g. zstd with Docker media types.
    #[error("{0}")]
    Conflict(String),
    /// An image name that is not a valid reference.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob whose bytes in the content store no longer match its digest.
    #[error("blob {digest} in the content store is corrupt: its content has digest {actual}")]
    CorruptBlob {
        /// The digest it is stored under.
        digest: String,
        /// The digest of what was read.
        actual: String,
    },
}

impl ExportError {
    pub(crate) fn io(what: impl Into<String>, error: io::Error) -> Self {
        ExportError::Io {
            what: what.into(),
            error,
        }
    }
}
