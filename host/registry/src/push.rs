//! Pushing an image: the blobs the registry lacks, then the manifest.

use std::path::PathBuf;

use oci_client::{Reference, RegistryOperation};

use futures_util::StreamExt;

use crate::client::Principal;
use crate::pull::blob_pool;
use crate::{
    Endpoint, MAX_CONNECTIONS_PER_REGISTRY, Registries, RegistryError, RegistryErrorKind, map_error,
};

impl Registries {
    /// Push an image to `reference` (normalised like Docker): each blob `(digest, file)` the
    /// registry does not have yet, then the manifest with its media type, tagged as the
    /// reference says. Pushes go to the registry itself, never to a mirror. Returns what was
    /// uploaded.
    pub async fn push_image(
        &self,
        reference: &str,
        blobs: &[(String, PathBuf)],
        manifest: &[u8],
        media_type: &str,
    ) -> Result<Pushed, RegistryError> {
        let parsed = crate::parse_reference(reference)?;
        let normalized = parsed.whole();
        let endpoints = self.endpoints(&parsed);
        let ep = endpoints.last().expect("the origin is always an endpoint");
        let r = ep.reference(&parsed);
        // A push refused half way is done again in full: blobs already up are not sent twice.
        let (pushed, _) = self
            .as_needed(ep, |who| {
                let (r, normalized) = (&r, &normalized);
                async move {
                    self.push_as(ep, r, normalized, &who, blobs, manifest, media_type)
                        .await
                }
            })
            .await?;
        Ok(pushed)
    }

    /// [`Registries::push_image`] as `who`.
    #[allow(clippy::too_many_arguments)]
    async fn push_as(
        &self,
        ep: &Endpoint<'_>,
        r: &Reference,
        normalized: &str,
        who: &Principal,
        blobs: &[(String, PathBuf)],
        manifest: &[u8],
        media_type: &str,
    ) -> Result<Pushed, RegistryError> {
        let client = &ep.client;
        client
            .auth(r, who, RegistryOperation::Push)
            .await
            .map_err(|e| map_error(e, ep, normalized, "push"))?;
        // Blobs go up side by side, as many as the host's blob pool allows.
        let pool = blob_pool(&ep.host);
        let uploads = futures_util::stream::iter(blobs.iter().map(|(digest, path)| {
            let pool = &pool;
            async move {
                let _permit = self.permit(pool).await;
                if client
                    .blob_exists(r, who, digest)
                    .await
                    .map_err(|e| map_error(e, ep, normalized, "blob"))?
                {
                    return Ok(None);
                }
                let len = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| {
                        RegistryError::new(
                            RegistryErrorKind::Invalid,
                            normalized,
                            &ep.host,
                            format!(
                                "cannot read blob {digest} to push ({}): {e}",
                                path.display()
                            ),
                        )
                    })?
                    .len();
                client
                    .push_blob(r, who, path, len, digest)
                    .await
                    .map_err(|e| map_error(e, ep, normalized, "blob"))?;
                Ok::<_, RegistryError>(Some(len))
            }
        }))
        .buffer_unordered(MAX_CONNECTIONS_PER_REGISTRY)
        .collect::<Vec<_>>()
        .await;
        let mut pushed = Pushed::default();
        for upload in uploads {
            match upload? {
                Some(len) => {
                    pushed.blobs += 1;
                    pushed.bytes += len;
                }
                None => pushed.present += 1,
            }
        }
        http::HeaderValue::from_str(media_type).map_err(|e| {
            RegistryError::new(
                RegistryErrorKind::Invalid,
                normalized,
                &ep.host,
                e.to_string(),
            )
        })?;
        client
            .push_manifest_raw(r, who, manifest.to_vec(), media_type)
            .await
            .map_err(|e| map_error(e, ep, normalized, "manifest"))?;
        pushed.bytes += manifest.len() as u64;
        Ok(pushed)
    }
}

/// What [`Registries::push_image`] uploaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Blobs uploaded.
    pub blobs: usize,
    /// Blobs the registry had already.
    pub present: usize,
    /// Bytes uploaded, the manifest included.
    pub bytes: u64,
}
