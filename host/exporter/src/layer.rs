//! Layer blobs: a layer directory as an OCI layer tarball, compressed and stored in the
//! content store in one pass, with the blob remembered in the layer's metadata so the next
//! export of the same layer costs nothing.

use std::fmt;
use std::io::{self, BufWriter, Write};

use buildwit_worker::content::BlobWriter;
use buildwit_worker::snapshot::RewrittenBlob;
use buildwit_worker::{ContentStore, Descriptor, Layer, LayerMeta};
use sha2::{Digest as _, Sha256};

use crate::parallel_gzip::ParallelGzip;
use crate::tree::{Times, TreeKind, path_error, write_tree};

/// An OCI layer, uncompressed.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// An OCI layer compressed with gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// An OCI layer compressed with zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// A Docker schema 2 layer, uncompressed.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// A Docker layer compressed with gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// A Docker layer compressed with zstd (recognised when reused, never written: zstd
/// needs OCI media types).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// gzip level when none is asked for (what BuildKit uses: Go's default, 6).
const DEFAULT_GZIP_LEVEL: u32 = 6;
/// zstd level when none is asked for (BuildKit's default speed maps to level 3).
const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How layer tarballs are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar (`compression=uncompressed`).
    Uncompressed,
    /// gzip, the default.
    #[default]
    Gzip,
    /// zstd; needs OCI media types.
    Zstd,
}

impl Compression {
    /// The value of the `compression=` option.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "uncompressed" => Some(Compression::Uncompressed),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Its name in the `compression=` option.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The layer media type for this compression, OCI or Docker.
    pub fn layer_media_type(self, oci: bool) -> &'static str {
        match (self, oci) {
            (Compression::Uncompressed, true) => OCI_LAYER,
            (Compression::Gzip, true) => OCI_LAYER_GZIP,
            (Compression::Zstd, true) => OCI_LAYER_ZSTD,
            (Compression::Uncompressed, false) => DOCKER_LAYER,
            (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
            (Compression::Zstd, false) => DOCKER_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type says its blob has (`None`: not a layer type we
    /// know).
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            OCI_LAYER | DOCKER_LAYER => Some(Compression::Uncompressed),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The valid range of `compression-level` for this compression.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Uncompressed => 0..=0,
            Compression::Gzip => 0..=9,
            Compression::Zstd => 0..=22,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to compress, and whether a blob made earlier with the same compression may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerCompression {
    /// The compression.
    pub compression: Compression,
    /// The level (gzip 0-9, zstd 0-22); `None` for the default.
    pub level: Option<u32>,
    /// Compress again even when a blob with this compression exists (`force-compression`).
    pub force: bool,
    /// `rewrite-timestamp`: no time in the blob later than this `SOURCE_DATE_EPOCH` (Unix
    /// seconds), as BuildKit rewrites the layers of an image it exports.
    pub not_after: Option<i64>,
}

/// The blob of a layer with `compression` and its diff id (the sha256 of the uncompressed
/// tar). The descriptor has the OCI media type; see [`layer_blob_with`].
pub fn layer_blob(
    content: &ContentStore,
    layer: &Layer,
    compression: Compression,
) -> io::Result<(Descriptor, String)> {
    layer_blob_with(
        content,
        layer,
        &LayerCompression {
            compression,
            ..Default::default()
        },
    )
}

/// The blob of a layer, made if needed.
///
/// The blob recorded in the layer's metadata (the one it was pulled as, or the last one an
/// export made) is used as it is when its media type has the wanted compression, it is still
/// in the store, and `force` is off. Otherwise the layer is archived, compressed and stored
/// in one pass, hashing the tar and the compressed stream as they go, and recorded in the
/// metadata for next time.
pub fn layer_blob_with(
    content: &ContentStore,
    layer: &Layer,
    opts: &LayerCompression,
) -> io::Result<(Descriptor, String)> {
    let meta = layer.meta()?;
    if let Some(epoch) = opts.not_after {
        return rewritten_blob(content, layer, meta, opts, epoch);
    }
    if !opts.force
        && let (Some(blob), Some(diff_id)) = (&meta.blob, &meta.diff_id)
        && Compression::of_media_type(&blob.media_type) == Some(opts.compression)
        && content.has(&blob.digest)
    {
        let desc = Descriptor {
            media_type: opts.compression.layer_media_type(true).to_string(),
            digest: blob.digest.clone(),
            size: blob.size,
        };
        return Ok((desc, diff_id.clone()));
    }

    let (desc, diff_id) = compress_layer(content, layer, opts, Times::Own)?;
    remember(
        layer,
        LayerMeta {
            diff_id: Some(diff_id.clone()),
            blob: Some(desc.clone()),
            ..meta
        },
    );
    Ok((desc, diff_id))
}

/// The blob of a layer with no time later than `epoch`: the one made last for the same
/// epoch and compression when it is still there, else a new one, remembered beside the
/// layer's own (which stays what the cache and other exports use).
fn rewritten_blob(
    content: &ContentStore,
    layer: &Layer,
    meta: LayerMeta,
    opts: &LayerCompression,
    epoch: i64,
) -> io::Result<(Descriptor, String)> {
    if !opts.force
        && let Some(r) = &meta.rewritten
        && r.epoch == epoch
        && Compression::of_media_type(&r.blob.media_type) == Some(opts.compression)
        && content.has(&r.blob.digest)
    {
        return Ok((r.blob.clone(), r.diff_id.clone()));
    }
    let (desc, diff_id) = compress_layer(content, layer, opts, Times::NotAfter(epoch))?;
    let rewritten = RewrittenBlob {
        epoch,
        blob: desc.clone(),
        diff_id: diff_id.clone(),
    };
    remember(
        layer,
        LayerMeta {
            rewritten: Some(rewritten),
            ..meta
        },
    );
    Ok((desc, diff_id))
}

/// Record a layer's new blob. It is made and stored already: failing to remember it only
/// costs a later export time.
fn remember(layer: &Layer, meta: LayerMeta) {
    if let Err(e) = layer.set_meta(&meta) {
        tracing::warn!("recording the blob of layer {}: {e}", layer.id);
    }
}

/// Archive and compress a layer into the content store.
fn compress_layer(
    content: &ContentStore,
    layer: &Layer,
    opts: &LayerCompression,
    times: Times,
) -> io::Result<(Descriptor, String)> {
    let blob = content.writer()?;
    let encoder = Encoder::new(BufWriter::with_capacity(1 << 20, blob), opts)?;
    let mut tar = tar::Builder::new(HashingWriter {
        inner: encoder,
        hasher: Sha256::new(),
    });
    write_tree(&layer.dir, TreeKind::Layer, times, b"", &mut tar)?;
    let hashing = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    let blob = hashing
        .inner
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    let size = blob.size();
    let digest = blob.commit(None).map_err(|e| path_error(&layer.dir, e))?;
    let desc = Descriptor {
        media_type: opts.compression.layer_media_type(true).to_string(),
        digest,
        size,
    };
    Ok((desc, diff_id))
}

/// Hashes what passes through: the uncompressed tar, for the diff id.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type BlobSink = BufWriter<BlobWriter>;

/// The threads a layer is compressed on: every core the process may use.
fn threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The compressor in front of the blob.
enum Encoder {
    Plain(BlobSink),
    Gzip(ParallelGzip<BlobSink>),
    Zstd(zstd::Encoder<'static, BlobSink>),
}

impl Encoder {
    fn new(sink: BlobSink, opts: &LayerCompression) -> io::Result<Self> {
        Ok(match opts.compression {
            Compression::Uncompressed => Encoder::Plain(sink),
            Compression::Gzip => {
                let level = opts.level.unwrap_or(DEFAULT_GZIP_LEVEL).min(9);
                Encoder::Gzip(ParallelGzip::new(
                    sink,
                    flate2::Compression::new(level),
                    threads() as usize,
                )?)
            }
            Compression::Zstd => {
                let level = opts.level.map_or(DEFAULT_ZSTD_LEVEL, |l| l.min(22) as i32);
                let mut enc = zstd::Encoder::new(sink, level)?;
                enc.include_checksum(true)?;
                enc.multithread(threads())?;
                Encoder::Zstd(enc)
            }
        })
    }

    fn finish(self) -> io::Result<BlobSink> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn zstd_bytes_do_not_depend_on_the_number_of_threads() {
        // Enough input for zstd to cut it into several jobs.
        let data: Vec<u8> = (0..24u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8 + b'a')
            .collect();
        let zstd = |threads: u32| {
            let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
            enc.include_checksum(true).unwrap();
            enc.multithread(threads).unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        };
        let one = zstd(1);
        assert_eq!(zstd(2), one);
        assert_eq!(zstd(4), one);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }
}
