//! The OCI worker: where the steps of a build actually happen.
//!
//! A content store for blobs, overlayfs snapshots made of immutable layers, the sources
//! (images, local directories, ...), exec through the OCI runtime, and file operations.

#![warn(missing_docs)]

pub mod agent;
pub mod beneath;
pub mod content;
pub mod disk;
pub mod exec;
pub mod fileops;
pub mod git;
pub mod http;
pub mod image;
pub mod local;
pub mod network;
pub mod pattern;
pub mod platforms;
pub mod rootpath;
pub mod seccomp;
pub mod snapshot;
pub mod tar_guard;
pub mod unpack;
pub mod users;
mod worker;

pub use content::{ContentStore, Descriptor};
pub use snapshot::{Layer, LayerBuilder, LayerMeta, Mounted, Snapshot, Snapshotter};
pub use worker::{
    CacheMountUsage, LocalSync, OpError, Output, Session, Worker, WorkerOptions, cache_mount_name,
    command_line,
};
