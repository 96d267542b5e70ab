//! The content store a client serves in its session: blobs of an OCI layout on the
//! client's disk (a `type=local` cache, an `oci` output with `tar=false`). buildwitd
//! writes a layout under its own root and puts its blobs there, or gets the blobs a
//! layout's manifest names into a layout of its own.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use crate::proto::containerd::services::content::v1::content_client::ContentClient;
use crate::proto::containerd::services::content::v1::{
    InfoRequest, ReadContentRequest, WriteAction, WriteContentRequest,
};
use crate::tunnel::ClientSession;

const CONTENT: &str = "/containerd.services.content.v1.Content/Write";
/// Blob data per message: under the client's 4 MiB limit.
const CHUNK: usize = 1 << 20;
/// Blobs up to this size may be manifests, read to find what they name.
const SMALL: usize = 4 << 20;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// One store of the client (`export`, `local:<dir>`).
pub struct ClientStore<'a> {
    session: &'a ClientSession,
    id: String,
}

impl<'a> ClientStore<'a> {
    /// The store `id` of `session`, if the client serves content stores.
    pub fn new(session: &'a ClientSession, id: &str) -> io::Result<Self> {
        if !session.serves(CONTENT) {
            return Err(other(format!(
                "the client serves no content store (wanted {id:?})"
            )));
        }
        Ok(ClientStore {
            session,
            id: id.to_string(),
        })
    }

    fn request<T>(&self, message: T) -> io::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(message);
        let id = MetadataValue::try_from(self.id.as_str()).map_err(other)?;
        r.metadata_mut().insert("buildkit-attachable-store-id", id);
        Ok(r)
    }

    fn client(&self) -> ContentClient<tonic::transport::Channel> {
        ContentClient::new(self.session.channel.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE)
            .max_encoding_message_size(4 << 20)
    }

    /// Whether the store has blob `digest`.
    async fn has(&self, digest: &str) -> io::Result<bool> {
        let request = self.request(InfoRequest {
            digest: digest.to_string(),
        })?;
        match self.client().info(request).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(false),
            Err(e) => Err(other(format!("{}: {}", self.id, e.message()))),
        }
    }

    /// Put every blob of the layout at `layout` the store does not have; how many went.
    pub async fn put_layout(&self, layout: &Path) -> io::Result<usize> {
        let mut sent = 0;
        let dir = layout.join("blobs/sha256");
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !self.has(&digest).await? {
                self.put(&digest, &entry.path()).await?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Write blob `digest` from `path`, one message and one answer at a time.
    async fn put(&self, digest: &str, path: &Path) -> io::Result<()> {
        let total = fs::metadata(path)?.len() as i64;
        let (tx, rx) = mpsc::channel(2);
        let request = self.request(ReceiverStream::new(rx))?;
        let base = WriteContentRequest {
            r#ref: format!("buildwit-{digest}"),
            total,
            expected: digest.to_string(),
            ..Default::default()
        };
        let gone = || other("the client went away");
        tx.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            ..base.clone()
        })
        .await
        .map_err(|_| gone())?;
        let mut responses = match self.client().write(request).await {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(e) => return Err(other(format!("{}: {}", self.id, e.message()))),
        };
        let answer = |r: Result<Option<_>, tonic::Status>| match r {
            Ok(Some(r)) => Ok(Some(r)),
            Ok(None) => Err(other("the client ended the write early")),
            Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(None),
            Err(e) => Err(other(format!("writing {digest}: {}", e.message()))),
        };
        let Some(stat) = answer(responses.message().await)? else {
            return Ok(());
        };
        // Resume where an earlier write of this blob stopped.
        let mut offset = stat.offset.clamp(0, total);
        let mut file = fs::File::open(path)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(offset as u64))?;
        loop {
            let mut data = vec![0; CHUNK];
            let n = file.read(&mut data)?;
            data.truncate(n);
            let last = offset + n as i64 >= total;
            let action = if last {
                WriteAction::Commit
            } else {
                WriteAction::Write
            };
            tx.send(WriteContentRequest {
                action: action as i32,
                offset,
                data,
                ..base.clone()
            })
            .await
            .map_err(|_| gone())?;
            offset += n as i64;
            if answer(responses.message().await)?.is_none() || last {
                return Ok(());
            }
            if n == 0 {
                return Err(other(format!("{}: shorter than it was", path.display())));
            }
        }
    }

    /// Get blob `digest` into the layout at `layout`; its bytes if it is small.
    async fn get(&self, digest: &str, layout: &Path) -> io::Result<Vec<u8>> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| other(format!("not a sha256 digest: {digest:?}")))?;
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })?;
        let mut stream = self
            .client()
            .read(request)
            .await
            .map_err(|e| other(format!("{}: {digest}: {}", self.id, e.message())))?
            .into_inner();
        let dir = layout.join("blobs/sha256");
        fs::create_dir_all(&dir)?;
        let partial = dir.join(format!("{hex}.part"));
        let mut file = fs::File::create(&partial)?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        // Manifests and configs are kept to be read; layers only go to disk.
        let mut small = Vec::new();
        let mut size = 0usize;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| other(format!("{digest}: {}", e.message())))?
        {
            sha2::Digest::update(&mut hasher, &chunk.data);
            file.write_all(&chunk.data)?;
            size += chunk.data.len();
            if size <= SMALL {
                small.extend_from_slice(&chunk.data);
            }
        }
        if hex::encode(sha2::Digest::finalize(hasher)) != hex {
            let _ = fs::remove_file(&partial);
            return Err(other(format!(
                "{}: {digest} does not match its content",
                self.id
            )));
        }
        fs::rename(&partial, dir.join(hex))?;
        Ok(if size <= SMALL { small } else { Vec::new() })
    }

    /// Get the manifest or index `digest` and every blob it names, recursively, into a
    /// layout at `layout` whose index lists it.
    pub async fn get_layout(&self, digest: &str, layout: &Path) -> io::Result<()> {
        let mut todo = vec![digest.to_string()];
        // A blob named twice (an index listing one manifest many times) is fetched once.
        let mut seen = std::collections::HashSet::new();
        let mut top = None;
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let data = self.get(&d, layout).await?;
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&data) else {
                continue;
            };
            if top.is_none() {
                top = Some((
                    json["mediaType"].as_str().unwrap_or_default().to_string(),
                    data.len(),
                ));
            }
            let named = json["manifests"]
                .as_array()
                .into_iter()
                .chain(json["layers"].as_array())
                .flatten()
                .chain(json.get("config"));
            for desc in named {
                if let Some(d) = desc["digest"].as_str() {
                    todo.push(d.to_string());
                }
            }
        }
        let (media_type, size) = top.unwrap_or_default();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": media_type, "digest": digest, "size": size}],
        });
        fs::write(layout.join("index.json"), index.to_string())?;
        fs::write(
            layout.join("oci-layout"),
            "{\"imageLayoutVersion\":\"1.0.0\"}",
        )
    }
}
