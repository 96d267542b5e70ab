//! Build caches in GitHub Actions' cache service (`type=gha`): version 2 of its protocol
//! (Twirp JSON calls to the results service, the bytes through signed Azure Blob URLs), the
//! one github.com runs, and the legacy REST protocol (`_apis/artifactcache`), which GitHub
//! retired in 2025 but other runners' cache servers still speak.
//!
//! The layout is BuildKit's, so that the entries live as its do within the repository's
//! 10 GB: each layer blob is an entry `buildkit-blob-1-<digest>`, and the cache config (as
//! an object store cache keeps it, see [`crate::cache_bucket`]) is an entry
//! `index-<scope>-1-<hash of the token's scope>#<n>`, a new `n` on every export, since
//! entries cannot be overwritten; an import asks for the index key as a prefix and gets the
//! newest. Blobs go first and the index last.

use buildwit_exporter::cache::{BuiltCache, GhaCache, Written};
use buildwit_worker::{ContentStore, Descriptor};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Blobs uploaded or downloaded at once.
const PARALLEL: usize = 4;

/// A client of the cache service.
pub(crate) struct Gha {
    client: reqwest::Client,
    protocol: Protocol,
    token: String,
    /// `scope=`.
    scope: String,
    /// The token's scopes (branches): an import reads each one's index, an export writes
    /// the one it may write.
    token_scopes: Vec<TokenScope>,
}

/// How the service is spoken to.
enum Protocol {
    /// Version 2: the Twirp endpoint, up to the method name.
    V2 { twirp: String },
    /// The legacy REST API: its base, `…/_apis/artifactcache/`.
    V1 { base: String },
}

/// What a saved entry holds.
enum Blob<'a> {
    File(&'a std::path::Path),
    Bytes(&'a [u8]),
}

/// The legacy service's upload chunk (BuildKit's client's).
const CHUNK: usize = 32 << 20;

/// One access control of a runtime token.
#[derive(Clone, Debug, Deserialize)]
struct TokenScope {
    #[serde(rename = "Scope")]
    scope: String,
    #[serde(rename = "Permission")]
    permission: u32,
}

/// The version every entry is saved with, as BuildKit's client computes it: entries of
/// other tools (actions/cache) have other versions and are never mistaken for these.
fn entry_version() -> String {
    hex::encode(Sha256::digest(b"|go-actionscache-1.0"))
}

fn blob_key(digest: &str) -> String {
    format!("buildkit-blob-1-{digest}")
}

/// The scopes in a runtime token (a JWT: its claim `ac` is a JSON list of scopes).
fn token_scopes(token: &str) -> Result<Vec<TokenScope>, String> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("the token is not a JWT (ACTIONS_RUNTIME_TOKEN)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the token's claims are not base64: {e}"))?;
    #[derive(Deserialize)]
    struct Claims {
        ac: Option<String>,
    }
    let claims: Claims = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the token's claims are not JSON: {e}"))?;
    let ac = claims
        .ac
        .ok_or("the token has no access controls (claim ac)")?;
    serde_json::from_str(&ac).map_err(|e| format!("the token's access controls: {e}"))
}

/// A call the service answered with an error, or that did not reach it (status 0).
#[derive(Debug)]
struct CallError {
    status: u16,
    /// Twirp's error code.
    code: String,
    message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.message
    }
}

/// An entry found by a lookup.
struct Entry {
    /// The key that matched.
    key: String,
    url: String,
}

impl Protocol {
    fn v1(url: &str) -> Protocol {
        Protocol::V1 {
            base: format!("{}/_apis/artifactcache/", url.trim_end_matches('/')),
        }
    }
}

impl Gha {
    /// The client of `spec`: version 2 with `url_v2` or `version=2`, else the legacy
    /// protocol at `url` (unless it is the v2 service's host, as BuildKit guesses).
    pub(crate) fn open(spec: &GhaCache) -> Result<Self, String> {
        // BuildKit's guess for clients that name no version: the v2 service's host.
        let v2_host = |url: &str| url.contains("results-receiver.actions.githubusercontent.com");
        let protocol = match (spec.version, &spec.url_v2, &spec.url) {
            (Some(1), _, Some(url)) => Protocol::v1(url),
            (None, None, Some(url)) if !v2_host(url) => Protocol::v1(url),
            (Some(1), _, None) => return Err("version=1 needs url ($ACTIONS_CACHE_URL)".into()),
            (_, Some(url), _) | (_, None, Some(url)) => Protocol::V2 {
                twirp: format!(
                    "{}/twirp/github.actions.results.api.v1.CacheService/",
                    url.trim_end_matches('/')
                ),
            },
            (_, None, None) => {
                return Err(
                    "url_v2 ($ACTIONS_RESULTS_URL) or url ($ACTIONS_CACHE_URL) not set".into(),
                );
            }
        };
        let token = spec
            .token
            .as_ref()
            .ok_or("token ($ACTIONS_RUNTIME_TOKEN) not set")?
            .0
            .clone();
        let token_scopes = token_scopes(&token)?;
        let client = reqwest::Client::builder()
            .timeout(spec.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Gha {
            client,
            protocol,
            token,
            scope: spec.scope.clone(),
            token_scopes,
        })
    }

    /// The index key of the token's scope `token_scope`.
    fn index_key(&self, token_scope: &str) -> String {
        let hash = hex::encode(Sha256::digest(token_scope.as_bytes()));
        format!("index-{}-1-{}", self.scope, &hash[..8])
    }

    /// A Twirp call: `method` with `request`, its JSON answer. Told to slow down (429),
    /// it waits and tries again, a few times.
    async fn call<Q: Serialize, A: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        request: &Q,
    ) -> Result<A, CallError> {
        let failed = |e: &dyn std::fmt::Display| CallError {
            status: 0,
            code: String::new(),
            message: format!("{method}: {e}"),
        };
        let mut wait = std::time::Duration::from_millis(500);
        loop {
            let Protocol::V2 { twirp } = &self.protocol else {
                unreachable!("Twirp calls are version 2's")
            };
            let response = self
                .client
                .post(format!("{twirp}{method}"))
                .bearer_auth(&self.token)
                .json(request)
                .send()
                .await
                .map_err(|e| failed(&e))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| failed(&e))?;
            if status.as_u16() == 429 && wait < std::time::Duration::from_secs(16) {
                tokio::time::sleep(wait).await;
                wait *= 2;
                continue;
            }
            if !status.is_success() {
                // Twirp's error document: {"code": "already_exists", "msg": "..."}.
                #[derive(Deserialize, Default)]
                struct Twirp {
                    #[serde(default)]
                    code: String,
                }
                let text = String::from_utf8_lossy(&body);
                return Err(CallError {
                    status: status.as_u16(),
                    code: serde_json::from_slice::<Twirp>(&body)
                        .unwrap_or_default()
                        .code,
                    message: format!("{method}: {status}: {}", text.trim()),
                });
            }
            return serde_json::from_slice(&body)
                .map_err(|e| failed(&format!("the answer is not JSON: {e}")));
        }
    }

    /// A request of the legacy API: `path` under its base, with a JSON body or bytes.
    fn rest(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let Protocol::V1 { base } = &self.protocol else {
            unreachable!("REST calls are version 1's")
        };
        self.client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token)
            .header(
                reqwest::header::ACCEPT,
                "application/json;api-version=6.0-preview.1",
            )
    }

    /// Send a legacy request; its status and body, an error unless 2xx or `allowed`.
    async fn send_rest(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        allowed: Option<u16>,
    ) -> Result<(u16, Vec<u8>), String> {
        let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{what}: {e}"))?
            .to_vec();
        if !status.is_success() && Some(status.as_u16()) != allowed {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("{what}: {status}: {}", text.trim()));
        }
        Ok((status.as_u16(), body))
    }

    /// The newest committed entry whose key is `key`, or starts with it.
    async fn lookup(&self, key: &str) -> Result<Option<Entry>, String> {
        if let Protocol::V1 { .. } = self.protocol {
            let request = self
                .rest(reqwest::Method::GET, "cache")
                .query(&[("keys", key), ("version", &entry_version())]);
            let (_, body) = self
                .send_rest(request, "looking up a cache entry", None)
                .await?;
            if body.is_empty() {
                return Ok(None);
            }
            #[derive(Deserialize)]
            struct Found {
                #[serde(rename = "cacheKey", default)]
                key: String,
                #[serde(rename = "archiveLocation", default)]
                url: String,
            }
            let found: Found = serde_json::from_slice(&body)
                .map_err(|e| format!("looking up a cache entry: {e}"))?;
            return Ok((!found.key.is_empty()).then_some(Entry {
                key: found.key,
                url: found.url,
            }));
        }
        #[derive(Serialize)]
        struct Request<'a> {
            key: &'a str,
            restore_keys: [&'a str; 1],
            version: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            ok: bool,
            #[serde(default)]
            signed_download_url: String,
            #[serde(default)]
            matched_key: String,
        }
        let answer: Answer = self
            .call(
                "GetCacheEntryDownloadURL",
                &Request {
                    key,
                    restore_keys: [key],
                    version: entry_version(),
                },
            )
            .await?;
        Ok(answer.ok.then_some(Entry {
            key: answer.matched_key,
            url: answer.signed_download_url,
        }))
    }

    /// Save `key` with `blob`'s `size` bytes: reserve, upload, commit. Returns false when
    /// the entry exists already.
    async fn save(&self, key: &str, blob: Blob<'_>, size: u64) -> Result<bool, String> {
        if let Protocol::V1 { .. } = self.protocol {
            return self.save_v1(key, blob, size).await;
        }
        let body = match blob {
            Blob::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
            }
            Blob::Bytes(bytes) => reqwest::Body::from(bytes.to_vec()),
        };
        #[derive(Serialize)]
        struct Create<'a> {
            key: &'a str,
            version: String,
        }
        #[derive(Deserialize)]
        struct Created {
            #[serde(default)]
            ok: bool,
            #[serde(default)]
            signed_upload_url: String,
        }
        let create = Create {
            key,
            version: entry_version(),
        };
        let created: Created = match self.call("CreateCacheEntry", &create).await {
            Ok(created) => created,
            // Another build saved (or is saving) it.
            Err(e) if e.status == 409 || e.code == "already_exists" => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if !created.ok {
            return Err(format!("the service did not create {key}"));
        }
        // Azure's Put Blob: one request up to 5000 MiB.
        let response = self
            .client
            .put(&created.signed_upload_url)
            .header("x-ms-blob-type", "BlockBlob")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("uploading {key}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("uploading {key}: {status}: {}", text.trim()));
        }
        #[derive(Serialize)]
        struct Finalize<'a> {
            key: &'a str,
            size_bytes: u64,
            version: String,
        }
        #[derive(Deserialize)]
        struct Finalized {
            #[serde(default)]
            ok: bool,
        }
        let done: Finalized = self
            .call(
                "FinalizeCacheEntryUpload",
                &Finalize {
                    key,
                    size_bytes: size,
                    version: entry_version(),
                },
            )
            .await?;
        if !done.ok {
            return Err(format!("the service did not commit {key}"));
        }
        Ok(true)
    }

    /// [`Gha::save`] on the legacy service: reserve, upload in chunks, commit.
    async fn save_v1(&self, key: &str, blob: Blob<'_>, size: u64) -> Result<bool, String> {
        use tokio::io::AsyncReadExt as _;
        let reserve = serde_json::json!({"key": key, "version": entry_version()});
        let request = self.rest(reqwest::Method::POST, "caches").json(&reserve);
        let (status, body) = self
            .send_rest(request, "reserving a cache entry", Some(409))
            .await?;
        if status == 409 {
            return Ok(false);
        }
        #[derive(Deserialize)]
        struct Reserved {
            #[serde(rename = "cacheId")]
            id: u64,
        }
        let id = serde_json::from_slice::<Reserved>(&body)
            .map_err(|e| format!("reserving {key}: {e}"))?
            .id;
        let mut file = match blob {
            Blob::File(path) => Some(
                tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            Blob::Bytes(_) => None,
        };
        let mut offset = 0usize;
        while (offset as u64) < size {
            let len = CHUNK.min(size as usize - offset);
            let chunk = match (&mut file, &blob) {
                (Some(file), _) => {
                    let mut buf = vec![0; len];
                    file.read_exact(&mut buf)
                        .await
                        .map_err(|e| format!("reading {key}: {e}"))?;
                    buf
                }
                (None, Blob::Bytes(bytes)) => bytes[offset..offset + len].to_vec(),
                (None, Blob::File(_)) => unreachable!("a file is open"),
            };
            let request = self
                .rest(reqwest::Method::PATCH, &format!("caches/{id}"))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(
                    reqwest::header::CONTENT_RANGE,
                    format!("bytes {offset}-{}/*", offset + len - 1),
                )
                .body(chunk);
            self.send_rest(request, &format!("uploading {key}"), None)
                .await?;
            offset += len;
        }
        let request = self
            .rest(reqwest::Method::POST, &format!("caches/{id}"))
            .json(&serde_json::json!({"size": size}));
        self.send_rest(request, &format!("committing {key}"), None)
            .await?;
        Ok(true)
    }

    /// Upload the blobs of `built` the service lacks, then a new index entry. Returns what
    /// was written and the config's digest.
    pub(crate) async fn export(
        &self,
        content: &ContentStore,
        built: &BuiltCache,
    ) -> Result<(Written, String), String> {
        let config = built.annotated_config().map_err(|e| e.to_string())?;
        let uploads = futures_util::stream::iter(built.layers.iter().map(|desc| async move {
            let key = blob_key(&desc.digest);
            if self.lookup(&key).await?.is_some() {
                return Ok::<_, String>(None);
            }
            let path = content.path(&desc.digest).map_err(|e| e.to_string())?;
            // Another build may have saved it meanwhile: then it is there.
            Ok(self
                .save(&key, Blob::File(&path), desc.size)
                .await?
                .then_some(desc.size))
        }))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<Option<u64>>>()
        .await?;
        let scope = self
            .token_scopes
            .iter()
            .rev()
            .find(|s| s.permission & 2 != 0)
            .ok_or("the token may not write to any scope")?;
        self.save_index(&self.index_key(&scope.scope), &config)
            .await?;
        Ok((
            crate::cache_io::written(&uploads),
            buildwit_worker::content::sha256_digest(&config),
        ))
    }

    /// Save the index as `<key>#<n>`, `n` one more than the newest's.
    async fn save_index(&self, key: &str, config: &[u8]) -> Result<(), String> {
        let prefix = format!("{key}#");
        let newest = match self.lookup(&prefix).await? {
            Some(entry) => entry
                .key
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("{key}: the newest entry is {:?}", entry.key))?,
            None => 0,
        };
        // Two exports at once both take the next number; the later one takes the one after.
        for n in newest + 1..newest + 10 {
            if self
                .save(
                    &format!("{prefix}{n}"),
                    Blob::Bytes(config),
                    config.len() as u64,
                )
                .await?
            {
                return Ok(());
            }
        }
        Err(format!("could not save a new entry of {key}"))
    }

    /// The newest index of each of the token's scopes that has one.
    pub(crate) async fn manifests(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut found = Vec::new();
        for scope in &self.token_scopes {
            let key = self.index_key(&scope.scope);
            let Some(entry) = self.lookup(&key).await? else {
                continue;
            };
            let bytes = self.download(&entry.url, &key).await?;
            if bytes.len() as u64 > crate::cache_io::MAX_CONFIG_SIZE {
                return Err(format!(
                    "{key} is larger than {} bytes",
                    crate::cache_io::MAX_CONFIG_SIZE
                ));
            }
            found.push(bytes);
        }
        if found.is_empty() {
            return Err(format!(
                "no cache for scope {} in the token's scopes",
                self.scope
            ));
        }
        Ok(found)
    }

    async fn download(&self, url: &str, key: &str) -> Result<Vec<u8>, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("downloading {key}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("downloading {key}: {}", response.status()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("downloading {key}: {e}"))?;
        Ok(bytes.to_vec())
    }

    /// Stream blobs into the content store; a blob whose bytes do not match its digest is
    /// not kept.
    pub(crate) async fn fetch_blobs(
        &self,
        content: &ContentStore,
        blobs: &[&Descriptor],
    ) -> Result<(), String> {
        futures_util::stream::iter(blobs.iter().map(|desc| async move {
            let key = blob_key(&desc.digest);
            let failed = |e: &dyn std::fmt::Display| format!("blob {}: {e}", desc.digest);
            let entry = self
                .lookup(&key)
                .await?
                .ok_or_else(|| failed(&"not in the cache service"))?;
            let response = self
                .client
                .get(&entry.url)
                .send()
                .await
                .map_err(|e| failed(&e))?;
            if !response.status().is_success() {
                return Err(failed(&response.status()));
            }
            crate::cache_io::ingest_stream(content, desc, response.bytes_stream()).await
        }))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_versions_are_buildkits() {
        // sha256("|go-actionscache-1.0"), as BuildKit's client saves every entry.
        assert_eq!(entry_version().len(), 64);
        assert_eq!(blob_key("sha256:ab"), "buildkit-blob-1-sha256:ab");
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"ac":"[{\"Scope\":\"refs/heads/main\",\"Permission\":3}]"}"#);
        let scopes = token_scopes(&format!("e30.{claims}.sig")).unwrap();
        assert_eq!(scopes[0].scope, "refs/heads/main");
        assert_eq!(scopes[0].permission, 3);
        assert!(token_scopes("opaque").is_err());
    }
}
