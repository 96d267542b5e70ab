//! Object store servers for the `type=s3` and `type=azblob` cache tests and benchmarks,
//! started on 127.0.0.1: moto (an S3 server, from PyPI) and Azurite (Azure Blob Storage's
//! emulator, from npm). `.ci/run` installs both.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// `program`, found on PATH, or a failure that says how to install it.
fn program(name: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is missing: {install} (as .ci/run does)"))
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
        let port = free_port();
        let mut command = Command::new(program("moto_server", "pip3 install 'moto[server]'"));
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let server = Server::start(command, port, dir.join("moto.log"));
        let (status, body) = server.http("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "creating the bucket: {body}");
        server
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
