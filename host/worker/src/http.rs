//! `https://` and `http://` sources: one downloaded file, as BuildKit's HTTP source makes
//! it (`http.checksum`, `http.filename`, `http.perm`, `http.uid`, `http.gid`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use crate::content::ContentStore;
use crate::snapshot::{LayerMeta, Snapshot, Snapshotter};

/// Largest download accepted.
const MAX_SIZE: u64 = 8 << 30;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct HttpError {
    url: String,
    message: String,
}

fn fail(url: &str, message: impl Into<String>) -> HttpError {
    HttpError {
        url: url.to_string(),
        message: message.into(),
    }
}

/// Download `url` into the content store; returns the content digest. With `checksum`, a
/// body with other content is refused and nothing is kept.
pub async fn download(
    content: &ContentStore,
    url: &str,
    checksum: Option<&str>,
) -> Result<String, HttpError> {
    if let Some(c) = checksum
        && content.has(c)
    {
        return Ok(c.to_string());
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("buildwit/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(url, e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(url, format!("cannot download: {e}")))?;
    if !response.status().is_success() {
        return Err(fail(
            url,
            format!("invalid response status {}", response.status()),
        ));
    }
    let mut writer = content.writer().map_err(|e| fail(url, e.to_string()))?;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(url, e.to_string()))?
    {
        writer
            .write_all(&chunk)
            .map_err(|e| fail(url, e.to_string()))?;
        if writer.size() > MAX_SIZE {
            return Err(fail(url, "the download is larger than 8 GiB"));
        }
    }
    writer
        .commit(checksum)
        .map_err(|e| fail(url, format!("digest mismatch: {e}")))
}

/// The layer of a downloaded file: `filename` (default: the URL's last path segment, or
/// `index`) with its mode and owner, named after its content and attributes.
pub fn snapshot(
    content: &ContentStore,
    snapshots: &Snapshotter,
    url: &str,
    digest: &str,
    attrs: &BTreeMap<String, String>,
) -> Result<Snapshot, HttpError> {
    let name = attrs.get("http.filename").cloned().unwrap_or_else(|| {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let last = path.rsplit('/').next().unwrap_or_default();
        if last.is_empty() || path.matches('/').count() < 3 {
            "index".into()
        } else {
            last.to_string()
        }
    });
    if name.contains('/') || name == ".." || name == "." {
        return Err(fail(url, format!("invalid http.filename {name:?}")));
    }
    let number = |key: &str, default: u32, radix: u32| -> Result<u32, HttpError> {
        match attrs.get(key) {
            Some(v) => {
                u32::from_str_radix(v, radix).map_err(|_| fail(url, format!("invalid {key} {v:?}")))
            }
            None => Ok(default),
        }
    };
    let mode = number("http.perm", 0o600, 8)?;
    let uid = number("http.uid", 0, 10)?;
    let gid = number("http.gid", 0, 10)?;
    let id = {
        use sha2::Digest as _;
        let key = format!("{digest}\0{name}\0{mode:o}\0{uid}\0{gid}");
        format!(
            "http-{}",
            hex::encode(&sha2::Sha256::digest(key.as_bytes())[..24])
        )
    };
    if let Some(layer) = snapshots.layer(&id) {
        return Ok(Snapshot {
            layers: vec![layer],
        });
    }
    let io = |e: std::io::Error| fail(url, e.to_string());
    let builder = snapshots.new_layer().map_err(io)?;
    let dest = builder.dir().join(&name);
    std::fs::copy(content.path(digest).map_err(io)?, &dest).map_err(io)?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    rustix::fs::chown(
        &dest,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )
    .map_err(|e| io(e.into()))?;
    let layer = builder.commit(&id, &LayerMeta::now()).map_err(io)?;
    Ok(Snapshot {
        layers: vec![layer],
    })
}
