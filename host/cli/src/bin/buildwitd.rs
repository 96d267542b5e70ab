//! `buildwitd`: serves buildwit's build API over gRPC on the addresses of `[grpc]`, every
//! client sharing one engine (one cache, one set of compiled frontends, one GC).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use buildwit_daemon::grpc::MAX_MESSAGE;
use buildwit_daemon::grpc::proto::buildwit_server::BuildwitServer;
use buildwit_daemon::server::{Running, Service};
use buildwit_engine::Engine;
use clap::Parser;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

#[derive(Parser)]
#[command(name = "buildwitd", version, about = "The buildwit build daemon")]
struct Args {
    /// buildkitd.toml (default: /etc/buildkit/buildkitd.toml as root,
    /// ~/.config/buildkit/buildkitd.toml otherwise).
    #[arg(long, env = "BUILDWIT_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (default: `root` from the config).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Listen address, `unix:///PATH` or `tcp://HOST:PORT` (repeatable; replaces
    /// `[grpc] address`).
    #[arg(long = "addr", value_name = "ADDRESS")]
    addrs: Vec<String>,
    /// Debug logging.
    #[arg(long)]
    debug: bool,
    /// Trace logging.
    #[arg(long)]
    trace: bool,
    /// How long shutdown waits for cancelled builds to stop, in seconds.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Wall-time limit of a frontend run, in seconds: the default, and the most a client's
    /// `--frontend-timeout` may ask for.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    frontend_timeout: u64,
}

/// A listen address.
enum Listen {
    Unix(PathBuf),
    Tcp(String),
}

fn parse_address(s: &str) -> Result<Listen> {
    if let Some(path) = s.strip_prefix("unix://") {
        if path.is_empty() {
            bail!("listen address {s:?} names no socket path");
        }
        Ok(Listen::Unix(PathBuf::from(path)))
    } else if let Some(host) = s.strip_prefix("tcp://") {
        if !host.contains(':') {
            bail!("listen address {s:?} needs a port (tcp://HOST:PORT)");
        }
        Ok(Listen::Tcp(host.to_string()))
    } else {
        bail!("listen address {s:?}: use unix:///PATH or tcp://HOST:PORT")
    }
}

fn init_logging(args: &Args, config: &buildwit_config::Config) -> Result<()> {
    let level = if args.trace || config.trace == Some(true) {
        "trace".to_string()
    } else if args.debug || config.debug == Some(true) {
        "debug".to_string()
    } else {
        config.log.level.clone().unwrap_or_else(|| "info".into())
    };
    // Our crates at the level asked; the libraries under them one step quieter, except
    // tonic's TLS accept errors, which it reports only at debug level: a client refused
    // for its certificate must show in the log.
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "warn,buildwit={level},buildwitd={level},buildwit_daemon={level},buildwit_engine={level},buildwit_buildkit={level},buildwit_solver={level},buildwit_worker={level},buildwit_frontend={level},tonic::transport::server::io_stream=debug"
    ))
    .with_context(|| format!("[log] level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format.as_deref() {
        None | Some("text") => builder.init(),
        Some("json") => builder.json().init(),
        Some(other) => bail!("[log] format {other:?}: use \"text\" or \"json\""),
    }
    Ok(())
}

fn read(path: &str, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("[grpc.tls] {what}: reading {path}"))
}

fn tls(config: &buildwit_config::Config) -> Result<Option<ServerTlsConfig>> {
    let Some(tls) = &config.grpc.tls else {
        return Ok(None);
    };
    if tls.cert.is_empty() && tls.key.is_empty() {
        return Ok(None);
    }
    if tls.cert.is_empty() || tls.key.is_empty() {
        bail!("[grpc.tls] needs both cert and key");
    }
    let mut server = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&tls.cert, "cert")?,
        read(&tls.key, "key")?,
    ));
    if !tls.ca.is_empty() {
        // With a CA, clients must present a certificate it signed.
        server = server.client_ca_root(Certificate::from_pem(read(&tls.ca, "ca")?));
    }
    Ok(Some(server))
}

/// Health and metrics on `debugAddress` (plain HTTP, for probes and scrapers).
async fn serve_debug(
    listener: tokio::net::TcpListener,
    running: Arc<Running>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut conn, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("debug address: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let running = running.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/healthz" | "/health" => ("200 OK", "ok\n".to_string()),
                "/metrics" => (
                    "200 OK",
                    format!(
                        "# TYPE buildwit_builds_running gauge\nbuildwit_builds_running {}\n",
                        running.count()
                    ),
                ),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// glibc's allocator, set for a daemon that runs for months under concurrent builds. Its
/// defaults let each of up to 8 arenas per core keep what was freed in it, and let the
/// threshold for returning large blocks to the system rise with every large block freed:
/// under load the daemon's resident memory grew by tens of MiB of free space it held
/// (see the README's Reliability section). Two arenas, fixed thresholds, and a trim of
/// the free space every few seconds keep it near what is in use. An allocator set through
/// the environment (`GLIBC_TUNABLES`, `MALLOC_ARENA_MAX`) is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var_os("GLIBC_TUNABLES").is_some()
        || std::env::var_os("MALLOC_ARENA_MAX").is_some()
    {
        return;
    }
    // SAFETY: mallopt only sets parameters of the allocator, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
    let trim = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(10));
                // SAFETY: malloc_trim takes the allocator's own locks; it is safe from any thread.
                unsafe { libc::malloc_trim(0) };
            }
        });
    if let Err(e) = trim {
        eprintln!("buildwitd: cannot start the allocator's trim thread: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> std::process::ExitCode {
    tune_allocator();
    // Files the daemon makes are never writable by others, whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("buildwitd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let loaded = match &args.config {
        Some(p) => buildwit_config::load_explicit(p)?,
        None => buildwit_config::load(&buildwit_config::default_path())?,
    };
    let config = loaded.config;
    init_logging(&args, &config)?;
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    let root = args
        .root
        .clone()
        .or_else(|| config.root.clone().map(PathBuf::from))
        .unwrap_or_else(buildwit_config::default_root);
    let addresses = if args.addrs.is_empty() {
        config.effective().grpc.address
    } else {
        args.addrs.clone()
    };
    let listen = addresses
        .iter()
        .map(|a| parse_address(a))
        .collect::<Result<Vec<_>>>()?;
    let tls = tls(&config)?;
    let grpc = config.grpc.clone();
    let limits = buildwit_frontend::Limits {
        deadline: Duration::from_secs(args.frontend_timeout),
        ..Default::default()
    };
    let engine = Arc::new(Engine::open(config, root.clone(), limits)?);
    // The worker now, not at the first build, as buildkitd: its root is locked (or in use
    // by another daemon, which ends this one), what a killed daemon left is reclaimed, and
    // the network namespaces of the pool are made ahead.
    engine.solver()?;
    // Outputs a killed daemon was still sending are of no use to anyone.
    let _ = std::fs::remove_dir_all(root.join("exports"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("buildwitd")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(serve(
        engine.clone(),
        listen,
        tls,
        grpc,
        args.shutdown_timeout,
    ));
    // Builds still running after the shutdown timeout are left behind, not waited for
    // (dropping the runtime would wait for them). The engine owns a runtime of its own,
    // which may not be dropped inside another.
    runtime.shutdown_timeout(Duration::from_millis(100));
    drop(engine);
    served
}

async fn serve(
    engine: Arc<Engine>,
    listen: Vec<Listen>,
    tls: Option<ServerTlsConfig>,
    grpc: buildwit_config::GrpcConfig,
    shutdown_timeout: u64,
) -> Result<()> {
    let running = Arc::new(Running::default());
    let buildkit = buildwit_buildkit::Buildkit::new(engine.clone());
    let service = Service::new(engine, running.clone());
    let running_at_stop = running.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for l in listen {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        match l {
            Listen::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                // A socket left by a daemon that did not stop cleanly.
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing the stale {}", path.display()))?;
                }
                let listener = tokio::net::UnixListener::bind(&path)
                    .with_context(|| format!("listening on unix://{}", path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
                let uid = grpc.uid.map(u32::try_from).transpose();
                let gid = grpc.gid.map(u32::try_from).transpose();
                let (Ok(uid), Ok(gid)) = (uid, gid) else {
                    bail!("[grpc] uid and gid must be non-negative");
                };
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::chown(&path, uid, gid)
                        .with_context(|| format!("[grpc] uid/gid: chown {}", path.display()))?;
                }
                tracing::info!("listening on unix://{}", path.display());
                sockets.push(path);
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let svc = BuildwitServer::new(service.clone().secure(true))
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                let buildkit = buildkit.clone().secure(true);
                let server = Server::builder()
                    .add_service(svc)
                    .add_service(buildkit.control())
                    .add_service(buildkit.bridge());
                servers.spawn(async move {
                    server
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                });
            }
            Listen::Tcp(host) => {
                let listener = tokio::net::TcpListener::bind(&host)
                    .await
                    .with_context(|| format!("listening on tcp://{host}"))?;
                let mut builder = Server::builder();
                let secure = tls.is_some();
                if let Some(tls) = tls.clone() {
                    builder = builder.tls_config(tls).context("[grpc.tls]")?;
                    tracing::info!("listening on tcp://{host} (TLS)");
                } else {
                    tracing::warn!(
                        "listening on tcp://{host} without TLS: anyone who can reach it can build; secrets are refused"
                    );
                }
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let svc = BuildwitServer::new(service.clone().secure(secure))
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                let buildkit = buildkit.clone().secure(secure);
                let server = builder
                    .add_service(svc)
                    .add_service(buildkit.control())
                    .add_service(buildkit.bridge());
                servers.spawn(async move {
                    server
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                });
            }
        }
    }
    if let Some(addr) = &grpc.debug_address {
        let host = addr.strip_prefix("tcp://").unwrap_or(addr);
        let listener = tokio::net::TcpListener::bind(host)
            .await
            .with_context(|| format!("[grpc] debugAddress {addr}"))?;
        tracing::info!("health and metrics on http://{host}/healthz, /metrics");
        servers.spawn(async move {
            serve_debug(listener, running.clone(), stop_rx).await;
            Ok(())
        });
    }
    tokio::select! {
        signal = shutdown_signal() => {
            let cancelled = running_at_stop.cancel_all();
            tracing::info!("{signal}: shutting down, {cancelled} running builds cancelled");
        }
        Some(done) = servers.join_next() => {
            running_at_stop.cancel_all();
            let _ = stop_tx.send(true);
            for path in &sockets {
                let _ = std::fs::remove_file(path);
            }
            return match done {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e).context("serving"),
                Err(e) => Err(e).context("serving"),
            };
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(shutdown_timeout), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("builds still running after {shutdown_timeout}s; exiting anyway");
    }
    for path in &sockets {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}
