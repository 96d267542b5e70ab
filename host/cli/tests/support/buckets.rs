//! Object store servers for the `type=s3` and `type=azblob` cache tests and benchmarks,
//! started on 127.0.0.1: moto (an S3 server, from PyPI) and Azurite (Azure Blob Storage's
//! emulator, from npm). `.ci/run` installs both.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::program;

/// Azurite's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A server started by a test, killed when dropped.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it logs each request.
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start(mut command: Command, port: u16, log: PathBuf) -> Server {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// moto's S3 server, with the bucket `bucket`.
    pub fn moto(dir: &Path, bucket: &str) -> Server {
        let server = Server::start_moto(dir, "moto.log", &[]);
        let (status, body) = server.http("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "creating the bucket: {body}");
        server
    }

    /// moto's S3 server checking credentials from the first request on: it knows none, so
    /// it refuses every key.
    pub fn moto_refusing(dir: &Path) -> Server {
        Server::start_moto(
            dir,
            "moto-refusing.log",
            &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")],
        )
    }

    fn start_moto(dir: &Path, log: &str, envs: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut command = Command::new(program("moto_server", "pip3 install 'moto[server]'"));
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(envs.iter().copied());
        Server::start(command, port, dir.join(log))
    }

    /// Azurite's blob service, logging every request.
    pub fn azurite(dir: &Path) -> Server {
        let port = free_port();
        let data = dir.join("azurite");
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join("azurite.log");
        let mut command = Command::new(program("azurite-blob", "npm install -g azurite"));
        command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&data)
            .arg("--debug")
            .arg(&log)
            .args(["--silent", "--skipApiVersionCheck"]);
        Server::start(command, port, dir.join("azurite-out.log")).with_log(log)
    }

    fn with_log(mut self, log: PathBuf) -> Server {
        self.log = log;
        self
    }

    /// A plain HTTP request; moto takes any signature, but wants one on reads.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response).to_string();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// How many blobs were written to the server so far (PUT requests on `blobs/` keys).
    pub fn blob_uploads(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| {
                (l.contains("\"PUT /") || l.contains("RequestMethod=PUT"))
                    && l.contains("/blobs/sha256:")
            })
            .count()
    }
}

/// `to_sign` signed with Azurite's account key, base64 (Shared Key and SAS signatures).
fn azurite_signature(to_sign: &str) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit as _, Mac as _};
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A test implementation of GitHub Actions' cache service, written from its protocol:
/// entries by key and version, created, uploaded, then finalized; a lookup matches the
/// key, else the newest entry whose key starts with a restore key. It takes one runtime
/// token. Version 2 (Twirp JSON calls at `url_v2`) uploads through signed URLs to a
/// container of its own in Azurite; the legacy REST API (`_apis/artifactcache` at `url`)
/// takes the bytes itself, in chunks, and serves them back.
pub struct GhaService {
    /// Its base URL (`url_v2=`).
    pub url: String,
    /// The runtime token it takes (`token=`), for the scope `refs/heads/main`.
    pub token: String,
    state: std::sync::Arc<std::sync::Mutex<GhaState>>,
}

/// An entry of the test cache service.
struct GhaEntry {
    key: String,
    version: String,
    /// Its blob in Azurite (version 2).
    blob: String,
    finalized: bool,
}

#[derive(Default)]
struct GhaState {
    /// Oldest first.
    entries: Vec<GhaEntry>,
    /// The bytes of the legacy API's entries, by index in `entries`.
    data: std::collections::HashMap<usize, Vec<u8>>,
    /// CreateCacheEntry calls for blob entries.
    blob_creates: usize,
}

impl GhaService {
    pub fn start(azurite: &Server) -> GhaService {
        use base64::Engine as _;
        let account_url = format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", azurite.port);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let container = format!("gha-{port}");
        // The container, made with a Shared Key request.
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let head = format!(
            "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: 2021-08-06\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            azurite.port,
            azurite_signature(&to_sign)
        );
        let mut stream = TcpStream::connect(("127.0.0.1", azurite.port)).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");

        let claims = serde_json::json!({
            "ac": r#"[{"Scope":"refs/heads/main","Permission":3}]"#,
            "nbf": 1_700_000_000u64,
            "exp": 4_000_000_000u64,
        });
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"none"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"test")
        );
        let url = format!("http://127.0.0.1:{port}/");
        let container_url = format!("{account_url}/{container}");
        let state = std::sync::Arc::new(std::sync::Mutex::new(GhaState::default()));
        let (shared, expected) = (state.clone(), token.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, expected, container_url) =
                    (shared.clone(), expected.clone(), container_url.clone());
                std::thread::spawn(move || serve_gha(stream, &state, &expected, &container_url));
            }
        });
        GhaService { url, token, state }
    }

    /// How many blob entries were created so far.
    pub fn blob_creates(&self) -> usize {
        self.state.lock().unwrap().blob_creates
    }
}

/// A signed URL of blob `name` in an Azurite container (`container_url`; a service SAS of
/// version 2018-11-09) allowing `permissions`.
fn sas_url(container_url: &str, name: &str, permissions: &str) -> String {
    let expiry = "2050-01-01T00:00:00Z";
    let container = container_url.rsplit('/').next().unwrap();
    let to_sign = format!(
        "{permissions}\n\n{expiry}\n/blob/{AZURITE_ACCOUNT}/{container}/{name}\n\n\n\n2018-11-09\nb\n\n\n\n\n\n"
    );
    let sig = azurite_signature(&to_sign);
    let sig: String = sig
        .chars()
        .map(|c| match c {
            '+' => "%2B".to_string(),
            '/' => "%2F".to_string(),
            '=' => "%3D".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!("{container_url}/{name}?sv=2018-11-09&sr=b&sp={permissions}&se={expiry}&sig={sig}")
}

/// One connection to the test cache service: one request, one answer.
fn serve_gha(
    mut stream: TcpStream,
    state: &std::sync::Mutex<GhaState>,
    token: &str,
    container_url: &str,
) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let mut body = vec![0u8; header("content-length").parse().unwrap_or(0)];
    stream.read_exact(&mut body).unwrap();
    let mut request_line = head.split_whitespace();
    let verb = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    if target.starts_with("/_apis/") || target.starts_with("/archive/") {
        let own = format!("http://{}", stream.local_addr().unwrap());
        let authorized =
            target.starts_with("/archive/") || header("authorization") == format!("Bearer {token}");
        let (status, answer) = if authorized {
            serve_legacy(state, &verb, &target, &header("content-range"), body, &own)
        } else {
            ("401 Unauthorized", br#"{"message":"bad token"}"#.to_vec())
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            answer.len()
        );
        let _ = stream.write_all(&answer);
        return;
    }
    let method = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (status, answer) = if header("authorization") != format!("Bearer {token}") {
        (
            "401 Unauthorized",
            serde_json::json!({"code": "unauthenticated", "msg": "bad token"}),
        )
    } else {
        let key = request["key"].as_str().unwrap_or_default().to_string();
        let version = request["version"].as_str().unwrap_or_default().to_string();
        let mut s = state.lock().unwrap();
        let mut status = "200 OK";
        let answer = match method.as_str() {
            "CreateCacheEntry" => {
                if key.starts_with("buildkit-blob-") {
                    s.blob_creates += 1;
                }
                if s.entries
                    .iter()
                    .any(|e| e.key == key && e.version == version)
                {
                    // As the service answers: a Twirp error.
                    status = "409 Conflict";
                    serde_json::json!({"code": "already_exists", "msg": "cache entry exists"})
                } else {
                    let name = format!("entry-{}", s.entries.len());
                    let url = sas_url(container_url, &name, "rcw");
                    s.entries.push(GhaEntry {
                        key,
                        version,
                        blob: name,
                        finalized: false,
                    });
                    serde_json::json!({"ok": true, "signed_upload_url": url})
                }
            }
            "FinalizeCacheEntryUpload" => {
                match s
                    .entries
                    .iter_mut()
                    .find(|e| e.key == key && e.version == version)
                {
                    Some(e) => {
                        e.finalized = true;
                        serde_json::json!({"ok": true, "entry_id": e.blob})
                    }
                    None => serde_json::json!({"ok": false}),
                }
            }
            "GetCacheEntryDownloadURL" => {
                let restore: Vec<String> = request["restore_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect();
                let committed = s
                    .entries
                    .iter()
                    .filter(|e| e.finalized && e.version == version);
                let found = committed.clone().find(|e| e.key == key).or_else(|| {
                    committed
                        .rev()
                        .find(|e| restore.iter().any(|r| e.key.starts_with(r.as_str())))
                });
                match found {
                    Some(e) => serde_json::json!({
                        "ok": true,
                        "signed_download_url": sas_url(container_url, &e.blob, "r"),
                        "matched_key": e.key,
                    }),
                    None => serde_json::json!({"ok": false}),
                }
            }
            _ => {
                status = "404 Not Found";
                serde_json::json!({"code": "bad_route", "msg": method})
            }
        };
        (status, answer)
    };
    let answer = answer.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// `%XX` and `+` decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// One request of the legacy REST API: its status and body.
fn serve_legacy(
    state: &std::sync::Mutex<GhaState>,
    verb: &str,
    target: &str,
    range: &str,
    body: Vec<u8>,
    own: &str,
) -> (&'static str, Vec<u8>) {
    let mut s = state.lock().unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    };
    // Cache ids start at 1, as the service's: the index in `entries` plus one.
    let id = |p: &str| {
        p.rsplit('/')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
    };
    match (verb, path) {
        ("GET", "/_apis/artifactcache/cache") => {
            let keys = param("keys").unwrap_or_default();
            let version = param("version").unwrap_or_default();
            let keys: Vec<&str> = keys.split(',').collect();
            let committed: Vec<(usize, &GhaEntry)> = s
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.finalized && e.version == version)
                .collect();
            let found = committed
                .iter()
                .find(|(_, e)| e.key == keys[0])
                .or_else(|| {
                    committed
                        .iter()
                        .rev()
                        .find(|(_, e)| keys.iter().any(|k| e.key.starts_with(k)))
                });
            match found {
                Some((i, e)) => (
                    "200 OK",
                    serde_json::json!({
                        "cacheKey": e.key,
                        "scope": "refs/heads/main",
                        "archiveLocation": format!("{own}/archive/{}", i + 1),
                    })
                    .to_string()
                    .into_bytes(),
                ),
                None => ("204 No Content", Vec::new()),
            }
        }
        ("POST", "/_apis/artifactcache/caches") => {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let key = request["key"].as_str().unwrap_or_default().to_string();
            let version = request["version"].as_str().unwrap_or_default().to_string();
            if key.starts_with("buildkit-blob-") {
                s.blob_creates += 1;
            }
            if s.entries
                .iter()
                .any(|e| e.key == key && e.version == version)
            {
                return (
                    "409 Conflict",
                    br#"{"typeKey":"ArtifactCacheItemAlreadyExistsException","message":"exists"}"#
                        .to_vec(),
                );
            }
            let i = s.entries.len();
            s.entries.push(GhaEntry {
                key,
                version,
                blob: format!("legacy-{i}"),
                finalized: false,
            });
            s.data.insert(i, Vec::new());
            (
                "201 Created",
                serde_json::json!({"cacheId": i + 1})
                    .to_string()
                    .into_bytes(),
            )
        }
        ("PATCH", p) if p.starts_with("/_apis/artifactcache/caches/") => {
            let start: usize = range
                .trim_start_matches("bytes ")
                .split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            match id(p).and_then(|i| s.data.get_mut(&i)) {
                Some(data) if start <= data.len() => {
                    data.truncate(start);
                    data.extend_from_slice(&body);
                    ("204 No Content", Vec::new())
                }
                _ => ("400 Bad Request", br#"{"message":"bad chunk"}"#.to_vec()),
            }
        }
        ("POST", p) if p.starts_with("/_apis/artifactcache/caches/") => {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let size = request["size"].as_u64().unwrap_or(u64::MAX);
            let i = id(p).unwrap_or(usize::MAX);
            match s.data.get(&i).map(|d| d.len() as u64) {
                Some(len) if len == size => {
                    s.entries[i].finalized = true;
                    ("204 No Content", Vec::new())
                }
                _ => (
                    "400 Bad Request",
                    br#"{"message":"size mismatch"}"#.to_vec(),
                ),
            }
        }
        ("GET", p) if p.starts_with("/archive/") => match id(p).and_then(|i| s.data.get(&i)) {
            Some(data) => ("200 OK", data.clone()),
            None => ("404 Not Found", Vec::new()),
        },
        _ => ("404 Not Found", br#"{"message":"no such route"}"#.to_vec()),
    }
}
