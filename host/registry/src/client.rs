//! The distribution API spoken with reqwest: manifests, blobs, uploads and auth as
//! containerd does it, a request first and credentials only when a 401 asks for them (then
//! held per repository). oci-client's client asks `/v2/` before every request to a registry
//! that wants no credentials (a round trip each: 2 ms of a cached `# syntax=` build on
//! `docker-registry`) and has no setting for a client certificate. Errors are oci-client's
//! type, which the rest of this crate maps to its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

type Result<T> = std::result::Result<T, OciDistributionError>;

/// The credentials a request carries, and the scope the tokens they earn (and the images
/// they resolve) are held under: a digest of the credentials, empty for none.
pub(crate) struct Principal {
    pub(crate) scope: String,
    pub(crate) auth: RegistryAuth,
}

impl Principal {
    pub(crate) fn new(auth: RegistryAuth) -> Self {
        let secret = match &auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic(user, pass) => Some(format!("basic\0{user}\0{pass}")),
            RegistryAuth::Bearer(token) => Some(format!("bearer\0{token}")),
        };
        let scope = secret.map_or_else(String::new, |s| hex::encode(Sha256::digest(s)));
        Principal { scope, auth }
    }
}

/// A registry client for one host's settings.
pub(crate) struct HttpClient {
    http: reqwest::Client,
    scheme: &'static str,
    /// `Authorization` values by (principal's scope, host/repository, push scope).
    tokens: Mutex<HashMap<(String, String, bool), String>>,
}

impl HttpClient {
    /// A client over plain `http` or TLS, presenting `identity` when given (a PEM
    /// certificate and its key), trusting the system roots and `ca` (PEM or DER), or
    /// nothing at all with `insecure`.
    pub(crate) fn new(
        http: bool,
        insecure: bool,
        ca: &[oci_client::client::Certificate],
        identity: Option<&[u8]>,
        user_agent: &str,
    ) -> std::result::Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            // HTTP/1.1, as registries are reached by BuildKit's resolver and as the per-registry
            // connection limit assumes; over HTTP/2 a registry's refusal of a missing client
            // certificate reached us as "connection closed", without the alert that says why.
            .http1_only()
            .user_agent(user_agent)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .tls_danger_accept_invalid_certs(insecure);
        if let Some(identity) = identity {
            builder = builder.identity(
                reqwest::Identity::from_pem(identity)
                    .map_err(|e| format!("the client certificate or key is unusable: {e}"))?,
            );
        }
        for cert in ca {
            let cert = match cert.encoding {
                oci_client::client::CertificateEncoding::Pem => {
                    reqwest::Certificate::from_pem(&cert.data)
                }
                oci_client::client::CertificateEncoding::Der => {
                    reqwest::Certificate::from_der(&cert.data)
                }
            }
            .map_err(|e| format!("a CA certificate is unusable: {e}"))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(HttpClient {
            http: builder.build().map_err(|e| e.to_string())?,
            scheme: if http { "http" } else { "https" },
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Get a token for `operation` on the repository before using it.
    pub(crate) async fn auth(
        &self,
        r: &Reference,
        who: &Principal,
        operation: RegistryOperation,
    ) -> Result<()> {
        let push = matches!(operation, RegistryOperation::Push);
        let url = format!("{}://{}/v2/", self.scheme, r.resolve_registry());
        let resp = self.http.get(&url).send().await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let header = self.authorize(&resp, r, who, push).await?;
            lock(&self.tokens).insert(token_key(r, who, push), header);
        }
        Ok(())
    }

    /// The manifest `r` names, accepting `accepted` media types; with its digest.
    pub(crate) async fn pull_manifest_raw(
        &self,
        r: &Reference,
        who: &Principal,
        accepted: &[&str],
    ) -> Result<(bytes::Bytes, String)> {
        let url = self.url(r, &format!("manifests/{}", manifest_name(r)));
        let accept = accepted.join(", ");
        let resp = self
            .send(r, who, false, |c| c.get(&url).header(ACCEPT, &accept))
            .await?;
        let resp = check(resp, &url).await?;
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await?;
        let digest =
            header.unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&body))));
        Ok((body, digest))
    }

    /// Stream blob `digest` into `out`.
    pub(crate) async fn pull_blob<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        r: &Reference,
        who: &Principal,
        digest: &str,
        out: &mut W,
    ) -> Result<()> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, who, false, |c| c.get(&url)).await?;
        let mut resp = check(resp, &url).await?;
        while let Some(chunk) = resp.chunk().await? {
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(())
    }

    /// Whether the repository has blob `digest`.
    pub(crate) async fn blob_exists(
        &self,
        r: &Reference,
        who: &Principal,
        digest: &str,
    ) -> Result<bool> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, who, true, |c| c.head(&url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => check(resp, &url).await.map(|_| false),
        }
    }

    /// Upload a blob, streamed from `path` (`size` bytes), in one request after opening an
    /// upload session.
    pub(crate) async fn push_blob(
        &self,
        r: &Reference,
        who: &Principal,
        path: &std::path::Path,
        size: u64,
        digest: &str,
    ) -> Result<()> {
        let start = self.url(r, "blobs/uploads/");
        let resp = self.send(r, who, true, |c| c.post(&start)).await?;
        let resp = check(resp, &start).await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(OciDistributionError::RegistryNoLocationError)?;
        let location = if location.starts_with('/') {
            format!("{}://{}{location}", self.scheme, r.resolve_registry())
        } else {
            location.to_string()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        // A stream cannot be sent twice: the PUT goes with the token the POST got.
        let file = tokio::fs::File::open(path).await?;
        let mut req = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::with_capacity(file, 1 << 20),
            ));
        if let Some(h) = self.held(r, who, true) {
            req = req.header(AUTHORIZATION, h);
        }
        check(req.send().await?, &url).await.map(|_| ())
    }

    /// Put a manifest under the reference's tag (or digest).
    pub(crate) async fn push_manifest_raw(
        &self,
        r: &Reference,
        who: &Principal,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<()> {
        let url = self.url(r, &format!("manifests/{}", manifest_name(r)));
        let body = bytes::Bytes::from(body);
        let resp = self
            .send(r, who, true, |c| {
                c.put(&url)
                    .header(CONTENT_TYPE, content_type)
                    .body(body.clone())
            })
            .await?;
        check(resp, &url).await.map(|_| ())
    }

    fn url(&self, r: &Reference, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{tail}",
            self.scheme,
            r.resolve_registry(),
            r.repository()
        )
    }

    /// Send a request with the token held for the repository; on 401, answer the
    /// challenge and send it once more.
    async fn send(
        &self,
        r: &Reference,
        who: &Principal,
        push: bool,
        request: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let held = self.held(r, who, push);
        let mut req = request(&self.http);
        if let Some(h) = &held {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req.send().await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let header = self.authorize(&resp, r, who, push).await?;
        lock(&self.tokens).insert(token_key(r, who, push), header.clone());
        Ok(request(&self.http)
            .header(AUTHORIZATION, header)
            .send()
            .await?)
    }

    /// The `Authorization` value held for the repository (a push token also serves reads).
    fn held(&self, r: &Reference, who: &Principal, push: bool) -> Option<String> {
        let tokens = lock(&self.tokens);
        tokens
            .get(&token_key(r, who, push))
            .or_else(|| tokens.get(&token_key(r, who, true)))
            .cloned()
    }

    /// The `Authorization` value that answers a 401's challenge: Basic with the stored
    /// credentials, or a Bearer token from the realm it names.
    async fn authorize(
        &self,
        resp: &Response,
        r: &Reference,
        who: &Principal,
        push: bool,
    ) -> Result<String> {
        let url = resp.url().to_string();
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let auth = &who.auth;
        let basic = match auth {
            RegistryAuth::Basic(user, pass) => Some((user.clone(), pass.clone())),
            _ => None,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((&challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, pass) = basic.ok_or(OciDistributionError::UnauthorizedError { url })?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            return Ok(format!("Basic {encoded}"));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(OciDistributionError::UnauthorizedError { url });
        }
        if let RegistryAuth::Bearer(token) = auth {
            return Ok(format!("Bearer {token}"));
        }
        let params = challenge_params(params);
        let realm = params.get("realm").ok_or_else(|| {
            OciDistributionError::AuthenticationFailure(format!("no realm in {challenge:?}"))
        })?;
        let actions = if push { "pull,push" } else { "pull" };
        let mut query = vec![("scope", format!("repository:{}:{actions}", r.repository()))];
        if let Some(service) = params.get("service") {
            query.push(("service", service.clone()));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some((user, pass)) = basic {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req.send().await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(OciDistributionError::AuthenticationFailure(format!(
                "{realm}: HTTP {status} {body}"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = resp.json().await?;
        let token = token.token.or(token.access_token).ok_or_else(|| {
            OciDistributionError::AuthenticationFailure(format!("{realm} sent no token"))
        })?;
        Ok(format!("Bearer {token}"))
    }
}

/// Where the token for a request is held (one client may serve several hosts).
fn token_key(r: &Reference, who: &Principal, push: bool) -> (String, String, bool) {
    let repository = format!("{}/{}", r.resolve_registry(), r.repository());
    (who.scope.clone(), repository, push)
}

/// The manifest path element of a reference: its digest if pinned, else its tag.
fn manifest_name(r: &Reference) -> String {
    r.digest().or(r.tag()).unwrap_or("latest").to_string()
}

/// `realm="…",service="…",scope="…"` as a map.
fn challenge_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

/// A successful response, or the registry's error as oci-client reports it.
async fn check(resp: Response, url: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = url.to_string();
    let body = resp.text().await.unwrap_or_default();
    if let Ok(envelope) = serde_json::from_str::<OciEnvelope>(&body)
        && !envelope.errors.is_empty()
    {
        return Err(OciDistributionError::RegistryError { envelope, url });
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(OciDistributionError::UnauthorizedError { url });
    }
    Err(OciDistributionError::ServerError {
        code: status.as_u16(),
        url,
        message: body,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let p = challenge_params("realm=plain, service=s");
        assert_eq!(p["realm"], "plain");
        assert_eq!(p["service"], "s");
    }
}
