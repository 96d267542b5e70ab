//! Pulling an image: the platform's manifest and the blobs it names, through the same
//! endpoints (mirrors in order, then the origin), credentials and TLS settings as
//! [`Registries::resolve_image_config`].
//!
//! Connection limits: blob downloads take permits from a per-host pool of
//! [`MAX_CONNECTIONS_PER_REGISTRY`](crate::MAX_CONNECTIONS_PER_REGISTRY) of their own, so a pull never has more than that many
//! blob requests open to one host, and the (short) metadata requests, which use the host's
//! pool shared with resolving, are never stuck behind long layer downloads.

use std::pin::Pin;
use std::task::{Context, Poll};

use oci_client::Reference;
use tokio::io::AsyncWrite;

use crate::client::Principal;
use crate::platform::Platform;
use crate::reference::parse_reference;
use crate::{
    Endpoint, Parsed, RawDescriptor, Registries, RegistryError, RegistryErrorKind, choose_platform,
    classify, map_error,
};

/// The image manifest of one platform, as the registry sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformManifest {
    /// The normalised reference (`alpine` → `docker.io/library/alpine:latest`).
    pub reference: String,
    /// The digest to pin: the index digest for a multi-platform image, else the manifest digest.
    pub digest: String,
    /// The digest of [`PlatformManifest::manifest`].
    pub manifest_digest: String,
    /// The raw manifest JSON, verified against `manifest_digest`.
    pub manifest: Vec<u8>,
    /// The registry that served it (`host[:port]`, with "mirror of" for a mirror).
    pub registry: String,
}

/// What [`Registries::pull_blob`] fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledBlob {
    /// Bytes written.
    pub size: u64,
    /// The registry that served it (`host[:port]`, with "mirror of" for a mirror).
    pub registry: String,
}

impl Registries {
    /// The manifest of `reference`'s image for a platform (`os`, `architecture`, `variant`):
    /// an index is resolved to the platform's entry as in `resolve_image_config`. Mirrors are
    /// tried in order, then the origin. Not cached: every call asks the registry.
    pub async fn pull_manifest(
        &self,
        reference: &str,
        os: &str,
        architecture: &str,
        variant: &str,
    ) -> Result<PlatformManifest, RegistryError> {
        let parsed = parse_reference(reference)?;
        let normalized = parsed.whole();
        let platform = Platform::normalize(os, architecture, variant);
        let endpoints = self.endpoints(&parsed);
        let count = endpoints.len();
        let mut tried: Vec<String> = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let pulled = self.as_needed(ep, |who| {
                let (parsed, normalized, platform) = (&parsed, &normalized, &platform);
                async move {
                    self.manifest_at(ep, parsed, normalized, platform, &who)
                        .await
                }
            });
            match pulled.await {
                Ok((m, _)) => return Ok(m),
                Err(e) if e.falls_back() && i + 1 < count => {
                    tracing::debug!("{e}; trying the next endpoint");
                    tried.push(format!("{}: {}", ep.label(), e.kind()));
                }
                Err(e) => return Err(noted(e, &tried)),
            }
        }
        unreachable!("the origin is always an endpoint")
    }

    /// The manifest `reference` names, as it is: no platform choice and any media types
    /// (for artifacts such as Wasm frontends). Mirrors are tried in order, then the origin.
    /// `manifest_digest` and `digest` are both the digest of this manifest.
    pub async fn pull_raw_manifest(
        &self,
        reference: &str,
    ) -> Result<PlatformManifest, RegistryError> {
        let parsed = parse_reference(reference)?;
        let normalized = parsed.whole();
        let endpoints = self.endpoints(&parsed);
        let count = endpoints.len();
        let mut tried: Vec<String> = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let fetched = self.as_needed(ep, |who| {
                let (r, normalized) = (ep.reference(&parsed), &normalized);
                async move { self.fetch_manifest(ep, &r, &who, normalized).await }
            });
            match fetched.await {
                Ok(((manifest, digest), _)) => {
                    return Ok(PlatformManifest {
                        reference: normalized,
                        digest: digest.clone(),
                        manifest_digest: digest,
                        manifest,
                        registry: ep.label(),
                    });
                }
                Err(e) if e.falls_back() && i + 1 < count => {
                    tried.push(format!("{}: {}", ep.label(), e.kind()));
                }
                Err(e) => return Err(noted(e, &tried)),
            }
        }
        unreachable!("the origin is always an endpoint")
    }

    /// Streams the blob `digest` of `reference`'s repository into `out` and checks it against
    /// the digest (and `size` when given: a longer stream is cut off). Mirrors are tried in
    /// order, then the origin, as long as nothing was written yet. On error, whatever was
    /// written to `out` must be thrown away.
    pub async fn pull_blob<W>(
        &self,
        reference: &str,
        digest: &str,
        size: Option<u64>,
        out: &mut W,
    ) -> Result<PulledBlob, RegistryError>
    where
        W: AsyncWrite + Unpin + Send + ?Sized,
    {
        let parsed = parse_reference(reference)?;
        let normalized = parsed.whole();
        if !valid_digest(digest) {
            return Err(RegistryError::new(
                RegistryErrorKind::Invalid,
                &normalized,
                parsed.registry(),
                format!("cannot pull blob {digest:?} of {normalized}: not a valid digest"),
            ));
        }
        let what = format!("blob {digest}");
        let endpoints = self.endpoints(&parsed);
        let count = endpoints.len();
        let mut tried: Vec<String> = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let r = ep.reference(&parsed);
            let mut who = self.first_principal(ep).await;
            let (result, written) = loop {
                let mut counted = Counted {
                    inner: &mut *out,
                    written: 0,
                    limit: size,
                    hash: BlobHash::of(digest),
                };
                let result = async {
                    let _permit = self.permit(&blob_pool(&ep.host)).await;
                    ep.client.pull_blob(&r, &who, digest, &mut counted).await
                }
                .await;
                let written = counted.written;
                let result =
                    Self::checked_blob(result, counted, ep, &normalized, (digest, &what), size);
                // Refused before any byte came: once more as whoever comes next.
                if let Err(e) = &result
                    && e.kind() == RegistryErrorKind::Unauthorized
                    && written == 0
                    && let Some(next) = self.next_principal(ep, &who.scope).await
                {
                    who = next;
                    continue;
                }
                break (result, written);
            };
            match result {
                Ok(b) => return Ok(b),
                // Once bytes reached `out` another endpoint cannot start over.
                Err(e) if e.falls_back() && written == 0 && i + 1 < count => {
                    tracing::debug!("{e}; trying the next endpoint");
                    tried.push(format!("{}: {}", ep.label(), e.kind()));
                }
                Err(e) => return Err(noted(e, &tried)),
            }
        }
        unreachable!("the origin is always an endpoint")
    }

    /// What a blob download came to: its size and digest checked.
    fn checked_blob<W: ?Sized>(
        result: Result<(), oci_client::errors::OciDistributionError>,
        mut counted: Counted<'_, W>,
        ep: &Endpoint<'_>,
        normalized: &str,
        (digest, what): (&str, &str),
        size: Option<u64>,
    ) -> Result<PulledBlob, RegistryError> {
        let written = counted.written;
        match result {
            Err(_) if size.is_some_and(|s| written > s) => {
                Err(too_long(ep, normalized, what, size.unwrap_or_default()))
            }
            Err(e) => Err(map_error(e, ep, normalized, what)),
            Ok(()) if size.is_some_and(|s| written != s) => Err(RegistryError::new(
                RegistryErrorKind::Invalid,
                normalized,
                &ep.host,
                format!(
                    "registry {} sent {what} for {normalized} with {written} bytes, but the manifest says {}",
                    ep.label(),
                    size.unwrap_or_default()
                ),
            )),
            Ok(()) => match counted.hash.finish() {
                Some(actual) if actual != digest => {
                    Err(crate::mismatch(ep, normalized, what, digest, &actual))
                }
                _ => Ok(PulledBlob {
                    size: written,
                    registry: ep.label(),
                }),
            },
        }
    }

    /// The platform's manifest at one endpoint.
    pub(crate) async fn manifest_at(
        &self,
        ep: &Endpoint<'_>,
        parsed: &Reference,
        normalized: &str,
        platform: &Platform,
        who: &Principal,
    ) -> Result<PlatformManifest, RegistryError> {
        let r = ep.reference(parsed);
        let (body, digest) = self.fetch_manifest(ep, &r, who, normalized).await?;
        let (manifest, manifest_digest) = match classify(&body, ep, normalized)? {
            Parsed::Manifest(_) => (body, digest.clone()),
            Parsed::Index(entries) => {
                let entry = choose_platform(&entries, platform)
                    .ok_or_else(|| no_platform(&entries, &digest, platform, ep, normalized))?;
                let child = r.clone_with_digest(entry.digest.clone());
                let (child_body, child_digest) =
                    self.fetch_manifest(ep, &child, who, normalized).await?;
                match classify(&child_body, ep, normalized)? {
                    Parsed::Manifest(_) => (child_body, child_digest),
                    Parsed::Index(_) => {
                        return Err(RegistryError::new(
                            RegistryErrorKind::Invalid,
                            normalized,
                            &ep.host,
                            format!(
                                "{normalized} on registry {}: the {platform} entry {} is itself an index, which is not supported",
                                ep.label(),
                                entry.digest
                            ),
                        ));
                    }
                }
            }
        };
        Ok(PlatformManifest {
            reference: normalized.to_string(),
            digest,
            manifest_digest,
            manifest,
            registry: ep.label(),
        })
    }
}

/// The key of a host's blob download pool (see the module docs).
pub(crate) fn blob_pool(host: &str) -> String {
    format!("{host} blobs")
}

/// Adds the endpoints tried before to an error.
fn noted(e: RegistryError, tried: &[String]) -> RegistryError {
    if tried.is_empty() {
        e
    } else {
        e.with_note(&format!(" (mirrors tried first: {})", tried.join(", ")))
    }
}

/// `algorithm:encoded` as the OCI image spec defines digests; it goes into a URL path.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && !encoded.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
}

/// The error for an index without the platform.
fn no_platform(
    entries: &[RawDescriptor],
    index: &str,
    platform: &Platform,
    ep: &Endpoint<'_>,
    normalized: &str,
) -> RegistryError {
    let have: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| Platform::normalize(&p.os, &p.architecture, p.variant_str()).to_string())
        .collect();
    RegistryError::new(
        RegistryErrorKind::NoPlatform,
        normalized,
        &ep.host,
        format!(
            "{normalized} on registry {}: no match for platform in manifest {index}: not found: no image for {platform} (it has {}); build for one of those with --platform",
            ep.label(),
            if have.is_empty() {
                "no platforms".to_string()
            } else {
                have.join(", ")
            }
        ),
    )
}

/// The error for a blob longer than its descriptor says.
fn too_long(ep: &Endpoint<'_>, normalized: &str, what: &str, size: u64) -> RegistryError {
    RegistryError::new(
        RegistryErrorKind::Invalid,
        normalized,
        &ep.host,
        format!(
            "registry {} sent {what} for {normalized} with more than the {size} bytes the manifest says",
            ep.label()
        ),
    )
}

/// Counts what goes through to `inner` and refuses to go past `limit`.
struct Counted<'a, W: ?Sized> {
    inner: &'a mut W,
    written: u64,
    limit: Option<u64>,
    hash: BlobHash,
}

/// The digest of what a blob download wrote, in the algorithm its digest names.
enum BlobHash {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    /// An algorithm we cannot check (the registry's own checks stand).
    Unknown,
}

impl BlobHash {
    fn of(digest: &str) -> Self {
        use sha2::Digest as _;
        match digest.split_once(':').map_or("", |(a, _)| a) {
            "sha256" => BlobHash::Sha256(sha2::Sha256::new()),
            "sha384" => BlobHash::Sha384(sha2::Sha384::new()),
            "sha512" => BlobHash::Sha512(sha2::Sha512::new()),
            _ => BlobHash::Unknown,
        }
    }

    fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match self {
            BlobHash::Sha256(h) => h.update(data),
            BlobHash::Sha384(h) => h.update(data),
            BlobHash::Sha512(h) => h.update(data),
            BlobHash::Unknown => {}
        }
    }

    /// `algorithm:hex` of everything written; `None` for an unknown algorithm.
    fn finish(&mut self) -> Option<String> {
        use sha2::Digest as _;
        let (algorithm, hex) = match std::mem::replace(self, BlobHash::Unknown) {
            BlobHash::Sha256(h) => ("sha256", hex::encode(h.finalize())),
            BlobHash::Sha384(h) => ("sha384", hex::encode(h.finalize())),
            BlobHash::Sha512(h) => ("sha512", hex::encode(h.finalize())),
            BlobHash::Unknown => return None,
        };
        Some(format!("{algorithm}:{hex}"))
    }
}

impl<W: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(limit) = self.limit
            && self.written + buf.len() as u64 > limit
        {
            // Recorded so the caller can tell this from other write errors.
            self.written += buf.len() as u64;
            return Poll::Ready(Err(std::io::Error::other(
                "blob longer than its descriptor",
            )));
        }
        let this = &mut *self;
        let poll = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.written += n as u64;
            this.hash.update(&buf[..n]);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_go_into_urls() {
        assert!(valid_digest(
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        ));
        assert!(valid_digest("sha512+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g"));
        assert!(!valid_digest("sha256:../../x"));
        assert!(!valid_digest("sha256:abc/def"));
        assert!(!valid_digest("sha256:"));
        assert!(!valid_digest("abc"));
        assert!(!valid_digest("SHA256:abc"));
    }

    #[tokio::test]
    async fn blob_permits_are_separate_from_metadata() {
        let regs = Registries::new(&Default::default()).unwrap();
        let pool = blob_pool("r.example");
        let mut held = Vec::new();
        for _ in 0..crate::MAX_CONNECTIONS_PER_REGISTRY {
            held.push(regs.permit(&pool).await.unwrap());
        }
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), regs.permit(&pool));
        assert!(more.await.is_err(), "a fifth blob request must wait");
        // Manifests still get through while all blob slots are taken.
        assert!(regs.permit("r.example").await.is_some());
    }

    #[tokio::test]
    async fn counted_writer_stops_at_the_limit() {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        let mut c = Counted {
            inner: &mut out,
            written: 0,
            limit: Some(4),
            hash: BlobHash::Unknown,
        };
        c.write_all(b"abc").await.unwrap();
        assert!(c.write_all(b"de").await.is_err());
        assert!(c.written > 4);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn blob_hash_follows_the_digest_algorithm() {
        for (digest, expected) in [
            (
                "sha256:00",
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                "sha512:00",
                "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ] {
            let mut h = BlobHash::of(digest);
            h.update(b"ab");
            h.update(b"c");
            assert_eq!(h.finish().as_deref(), Some(expected));
        }
        assert_eq!(BlobHash::of("blake3:00").finish(), None);
    }
}
