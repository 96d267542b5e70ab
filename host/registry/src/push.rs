//! Pushing an image: the blobs the registry lacks, then the manifest.

use std::path::PathBuf;

use oci_client::{Reference, RegistryOperation};

use crate::{Registries, RegistryError, RegistryErrorKind, map_error};

impl Registries {
    /// Push an image to `reference` (normalised like Docker): each blob `(digest, file)` the
    /// registry does not have yet, then the manifest with its media type, tagged as the
    /// reference says. Pushes go to the registry itself, never to a mirror. Returns how many
    /// blobs were uploaded.
    pub async fn push_image(
        &self,
        reference: &str,
        blobs: &[(String, PathBuf)],
        manifest: &[u8],
        media_type: &str,
    ) -> Result<usize, RegistryError> {
        let parsed: Reference = reference.trim().parse().map_err(|e| {
            RegistryError::new(
                RegistryErrorKind::Invalid,
                reference,
                "",
                format!("invalid image name {reference:?}: {e}"),
            )
        })?;
        let normalized = parsed.whole();
        let endpoints = self.endpoints(&parsed);
        let ep = endpoints.last().expect("the origin is always an endpoint");
        let r = ep.reference(&parsed);
        let auth = self.auth_for(ep).await;
        let client = &ep.client.client;
        client
            .auth(&r, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| map_error(e, ep, &normalized, "push"))?;
        let mut uploaded = 0;
        for (digest, path) in blobs {
            let _permit = self.permit(&ep.host).await;
            if client
                .blob_exists(&r, digest)
                .await
                .map_err(|e| map_error(e, ep, &normalized, "blob"))?
            {
                continue;
            }
            let data = tokio::fs::read(path).await.map_err(|e| {
                RegistryError::new(
                    RegistryErrorKind::Invalid,
                    &normalized,
                    &ep.host,
                    format!(
                        "cannot read blob {digest} to push ({}): {e}",
                        path.display()
                    ),
                )
            })?;
            client
                .push_blob(&r, data, digest)
                .await
                .map_err(|e| map_error(e, ep, &normalized, "blob"))?;
            uploaded += 1;
        }
        let content_type = http::HeaderValue::from_str(media_type).map_err(|e| {
            RegistryError::new(
                RegistryErrorKind::Invalid,
                &normalized,
                &ep.host,
                e.to_string(),
            )
        })?;
        client
            .push_manifest_raw(&r, manifest.to_vec(), content_type)
            .await
            .map_err(|e| map_error(e, ep, &normalized, "manifest"))?;
        Ok(uploaded)
    }
}
