//! `buildwit`: the command line client.

mod backend;
mod buildx;
mod cache;
mod history;
mod progress;
mod remote;
mod scaffold;
mod signals;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use backend::Backend;
use buildwit_engine::{BuildRequest, Engine, FrontendRef};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "buildwit",
    version,
    about = "Build with BuildKit-compatible frontends that run as sandboxed Wasm components"
)]
struct Cli {
    /// buildkitd.toml to use (default: /etc/buildkit/buildkitd.toml as root,
    /// ~/.config/buildkit/buildkitd.toml otherwise).
    #[arg(long, global = true, env = "BUILDWIT_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (default: `root` from the config).
    #[arg(long, global = true, env = "BUILDWIT_ROOT")]
    root: Option<PathBuf>,
    /// buildwitd to use, `unix:///PATH` or `tcp://HOST:PORT` (default: run the engine in
    /// this process).
    #[arg(long, global = true, env = "BUILDWIT_HOST")]
    addr: Option<String>,
    /// CA certificate of a TLS daemon.
    #[arg(long, global = true, env = "BUILDWIT_TLS_CACERT")]
    tlscacert: Option<PathBuf>,
    /// Client certificate for a TLS daemon.
    #[arg(long, global = true, env = "BUILDWIT_TLS_CERT")]
    tlscert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, global = true, env = "BUILDWIT_TLS_KEY")]
    tlskey: Option<PathBuf>,
    /// Server name to verify in the daemon's certificate (default: the address's host).
    #[arg(long, global = true)]
    tlsservername: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a frontend on a build context.
    Build(Box<BuildArgs>),
    /// Frontend components.
    #[command(subcommand)]
    Frontend(FrontendCommand),
    /// Debugging tools.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Disk usage of the build cache.
    Du(cache::DuArgs),
    /// Remove build cache.
    Prune(cache::PruneArgs),
    /// Past builds.
    #[command(subcommand)]
    History(HistoryCommand),
    /// The daemon: version, worker (platforms, labels, GC policy, parallelism), frontends.
    Info,
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// List past builds, newest first.
    Ls,
    /// Show one build: frontend and its digest, target, status, duration, cached steps, outputs.
    Inspect {
        /// The build id (a unique prefix will do).
        id: String,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The build context directory.
    #[arg(default_value = ".")]
    context: PathBuf,
    /// Run this frontend component file (the frontend author's inner loop: no registry).
    #[arg(long, value_name = "FILE.wasm")]
    frontend_file: Option<PathBuf>,
    /// Run a frontend by name (`dockerfile.v0`, `gateway.v0`).
    #[arg(long, value_name = "NAME", conflicts_with = "frontend_file")]
    frontend: Option<String>,
    /// The build definition file (sets the frontend option `filename`; its directory is
    /// sent as the `dockerfile` local).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A frontend option, KEY=VALUE (repeatable).
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    /// A build argument, KEY=VALUE (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    target: Option<String>,
    /// Target platform(s), such as linux/amd64.
    #[arg(long)]
    platform: Option<String>,
    /// Ask the frontend instead of building: `targets`, `outline` or `check` (BuildKit's
    /// `--call`); prints the answer.
    #[arg(long, value_name = "REQUEST")]
    call: Option<String>,
    /// Print the LLB the frontend produced, one JSON object per op (as `buildctl debug dump-llb`).
    #[arg(long)]
    dump_llb: bool,
    /// With --dump-llb: print Graphviz instead of JSON.
    #[arg(long, requires = "dump_llb")]
    dot: bool,
    /// With --dump-llb: write the definition as protobuf, as `buildctl build` reads LLB from
    /// standard input (one platform).
    #[arg(long, requires = "dump_llb", conflicts_with = "dot")]
    binary: bool,
    /// Wall-time limit of the frontend, in seconds [default: the engine's, 60].
    #[arg(long, value_name = "SECONDS")]
    frontend_timeout: Option<u64>,
    /// Progress output: auto, tty, plain, rawjson or quiet.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR` (repeatable).
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secrets: Vec<String>,
    /// An SSH agent socket for `RUN --mount=type=ssh`: `default` (from $SSH_AUTH_SOCK) or
    /// `ID=SOCKET` (repeatable).
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    ssh: Vec<String>,
    /// An OCI image layout directory for `oci-layout://NAME@sha256:…` sources and
    /// `context:X=oci-layout://NAME@sha256:…` contexts: `NAME=DIR` (repeatable).
    #[arg(long = "oci-layout", value_name = "NAME=DIR")]
    oci_layouts: Vec<String>,
    /// Grant an entitlement the daemon permits: `network.host`, `security.insecure`.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// Where the result goes: `type=oci,dest=out.tar`, `type=docker,dest=…`,
    /// `type=image,name=REF,push=true`, `type=local,dest=DIR`, `type=tar,dest=…`, a
    /// directory, or `-` (a tar to stdout). Repeatable.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Image name for the image outputs (as buildx); alone, an image output with this name.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Push the image (shorthand for `--output type=image,push=true` with the -t names).
    #[arg(long)]
    push: bool,
    /// Export the build cache: `type=local,dest=DIR` or `type=registry,ref=REF`, with
    /// `mode=min|max`, `compression=gzip|zstd`, `ignore-error=true`. Only buildwit can
    /// import it (the cache keys are buildwit's own, not BuildKit's).
    #[arg(long = "export-cache", alias = "cache-to", value_name = "SPEC")]
    cache_to: Option<String>,
    /// Import a build cache before building: `type=local,src=DIR[,digest=sha256:…]`,
    /// `type=registry,ref=REF`, or a reference (repeatable). One that cannot be read is a
    /// warning.
    #[arg(long = "import-cache", alias = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    #[command(flatten)]
    buildx: buildx::BuildxFlags,
}

#[derive(Subcommand)]
enum FrontendCommand {
    /// Make a new frontend project: a working frontend (a steps file: `FROM`, `RUN`) and its
    /// tests; in Rust a crate ready for `cargo test` and `cargo build --target
    /// wasm32-wasip2`, in Python a module with a `build.sh` that tests it and runs
    /// componentize-py.
    New {
        /// The project's directory; its last component is the frontend's name.
        name: PathBuf,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// The buildwit SDK to build against (default: the one this buildwit was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Show a frontend's name, version, channel, WIT version, imports, exports, size and
    /// digest: a component file, or an image reference (pulled if needed).
    Inspect {
        /// A `.wasm` file or an image reference.
        frontend: String,
    },
    /// Publish a component as a Wasm frontend image (checked against the contract first).
    Push {
        /// The component file.
        file: PathBuf,
        /// Where to push it, such as `registry:5000/me/frontend:1`.
        reference: String,
        /// Publish a container image that a stock BuildKit runs as a `# syntax=` frontend
        /// (the component with buildwit's runner), instead of a Wasm artifact.
        #[arg(long)]
        container: bool,
    },
    /// Pull a frontend image into the local store (and compile it).
    Pull {
        /// The image reference.
        reference: String,
    },
    /// List the frontend images in the local store.
    Ls,
    /// Remove a frontend image from the local store (a reference or manifest digest).
    Rm {
        /// The reference or digest.
        reference: String,
    },
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Read a binary LLB Definition on stdin and print it.
    DumpLlb {
        /// Print Graphviz instead of JSON lines.
        #[arg(long)]
        dot: bool,
    },
    /// Print the effective configuration.
    Config,
    /// The worker: platforms, labels, GC policy, parallelism (as `buildwit info`).
    Workers,
}

fn main() -> ExitCode {
    // Files this process makes are never writable by others, whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if signals::received().is_some() => {
            let signal = signals::received().unwrap_or(0);
            eprintln!("error: {e:#}");
            ExitCode::from(128 + signal as u8)
        }
        Err(e) => {
            // A failed step: its last lines of output first, as BuildKit shows them.
            if let Some(buildwit_engine::DaemonError::Solve(buildwit_solver::SolveError::Step {
                name,
                tail,
                ..
            })) = e.downcast_ref()
                && !tail.is_empty()
            {
                eprintln!("------\n > {name}:");
                for line in tail {
                    eprintln!("{line}");
                }
                eprintln!("------");
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let engine = || open_backend(&cli);
    match &cli.command {
        Command::Debug(DebugCommand::DumpLlb { dot }) => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("read stdin")?;
            let def = buildwit_llb::decode_definition(&bytes)
                .context("stdin is not an LLB Definition")?;
            print_llb(&def, *dot)
        }
        // Through buildwitd: the daemon's configuration, not this machine's.
        Command::Debug(DebugCommand::Config) if cli.addr.is_some() => {
            print!("{}", engine()?.info()?.config);
            Ok(())
        }
        Command::Debug(DebugCommand::Config) => {
            let config = load_config(cli.config.as_deref())?;
            print!("{}", config.effective().to_toml());
            Ok(())
        }
        Command::Frontend(FrontendCommand::Push {
            file,
            reference,
            container,
        }) => {
            let engine = engine()?;
            let (digest, uploaded) = match container {
                false => engine.push_frontend(file, reference)?,
                true => {
                    // Built and installed beside this binary.
                    let runner = std::env::current_exe()?.with_file_name("buildwit-frontend");
                    anyhow::ensure!(
                        runner.exists(),
                        "{} is missing: the runner of Wasm frontends in BuildKit is built with buildwit (cargo build -p buildwit)",
                        runner.display()
                    );
                    engine.push_frontend_container(file, reference, &runner)?
                }
            };
            println!("pushed {reference}@{digest} ({uploaded} blobs uploaded)");
            Ok(())
        }
        Command::Frontend(FrontendCommand::New { name, lang, sdk }) => {
            let component = scaffold::new_frontend(name, *lang, sdk.as_deref())?;
            let dir = name.display();
            println!("made {dir}: a frontend with its tests; next:");
            println!("  cd {dir}");
            match lang {
                scaffold::Lang::Rust => {
                    println!("  cargo test");
                    println!("  cargo build --target wasm32-wasip2 --release");
                }
                scaffold::Lang::Python => println!("  ./build.sh   # tests, then componentize-py"),
            }
            println!("  buildwit build --frontend-file {component} DIR  # DIR holds a Stepfile");
            Ok(())
        }
        Command::Frontend(FrontendCommand::Pull { reference }) => {
            let engine = engine()?;
            let record = engine.pull_frontend(reference)?;
            println!(
                "{} {} {} ({})",
                record.source, record.name, record.version, record.channel
            );
            Ok(())
        }
        Command::Frontend(FrontendCommand::Ls) => {
            let engine = engine()?;
            println!(
                "{:<50} {:<20} {:<10} {:<8} {:>10}  DIGEST",
                "REFERENCE", "NAME", "VERSION", "CHANNEL", "SIZE"
            );
            for (reference, digest, name, version, channel, size) in engine.list_frontends()? {
                let reference = if reference.is_empty() {
                    "<none>"
                } else {
                    reference.as_str()
                };
                println!(
                    "{reference:<50} {name:<20} {version:<10} {channel:<8} {size:>10}  {digest}"
                );
            }
            Ok(())
        }
        Command::Frontend(FrontendCommand::Rm { reference }) => {
            let engine = engine()?;
            for component in engine.remove_frontend(reference)? {
                println!("deleted {component}");
            }
            Ok(())
        }
        Command::Frontend(FrontendCommand::Inspect { frontend }) => {
            let engine = engine()?;
            let frontend = if Path::new(&frontend).is_file() {
                FrontendRef::File(PathBuf::from(frontend))
            } else {
                FrontendRef::Image(frontend.clone())
            };
            let (record, imports, exports, size) = engine.inspect_frontend(&frontend)?;
            println!("name:     {}", record.name);
            println!("version:  {}", record.version);
            println!("channel:  {}", record.channel);
            println!("wit:      {}", record.wit_version);
            println!("source:   {}", record.source);
            println!("digest:   {}", record.digest);
            println!("size:     {size} bytes");
            println!("imports:  {}", imports.join(", "));
            println!("exports:  {}", exports.join(", "));
            Ok(())
        }
        Command::Info | Command::Debug(DebugCommand::Workers) => {
            backend::print_info(&engine()?.info()?);
            Ok(())
        }
        Command::Build(args) => build(|| open_backend(&cli), args),
        Command::History(command) => {
            let engine = engine()?;
            match command {
                HistoryCommand::Ls => history::ls(&engine),
                HistoryCommand::Inspect { id } => history::inspect(&engine, id),
            }
        }
        Command::Du(args) => {
            let engine = engine()?;
            cache::du(&engine, args)
        }
        Command::Prune(args) => {
            let engine = engine()?;
            cache::prune(&engine, args)
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<buildwit_config::Config> {
    let loaded = match path {
        Some(p) => buildwit_config::load_explicit(p)?,
        None => buildwit_config::load(&buildwit_config::default_path())?,
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded.config)
}

/// buildwitd when an address is given, else the engine in-process.
fn open_backend(cli: &Cli) -> Result<Backend> {
    match &cli.addr {
        Some(addr) => Ok(Backend::Remote(Box::new(remote::Remote::connect(
            addr,
            &remote::TlsFiles {
                ca: cli.tlscacert.clone(),
                cert: cli.tlscert.clone(),
                key: cli.tlskey.clone(),
                server_name: cli.tlsservername.clone(),
            },
        )?))),
        None => Ok(Backend::Local(Box::new(open_engine(
            cli.config.as_deref(),
            cli.root.clone(),
        )?))),
    }
}

fn open_engine(config: Option<&Path>, root: Option<PathBuf>) -> Result<Engine> {
    let config = load_config(config)?;
    let root = root
        .or_else(|| config.root.clone().map(PathBuf::from))
        .unwrap_or_else(buildwit_config::default_root);
    Ok(Engine::open(
        config,
        root,
        buildwit_frontend::Limits::default(),
    )?)
}

fn key_value(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}

fn build(backend: impl FnOnce() -> Result<Backend>, args: &BuildArgs) -> Result<()> {
    let frontend = match (&args.frontend_file, &args.frontend) {
        (Some(f), _) => FrontendRef::File(f.clone()),
        (None, Some(name)) => FrontendRef::Named(name.clone()),
        (None, None) => FrontendRef::Named("dockerfile.v0".into()),
    };
    let mut options = Vec::new();
    let mut locals = BTreeMap::new();
    if !args.context.is_dir() {
        bail!(
            "build context {} is not a directory",
            args.context.display()
        );
    }
    locals.insert("context".to_string(), args.context.clone());
    match &args.file {
        Some(file) => {
            let name = file
                .file_name()
                .with_context(|| format!("{} is not a file name", file.display()))?;
            options.push(("filename".to_string(), name.to_string_lossy().into_owned()));
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            locals.insert("dockerfile".to_string(), dir.to_path_buf());
        }
        None => {
            // As `docker buildx build` does: the Dockerfile frontend, and any `# syntax=`
            // frontend it forwards to, is told which file it reads.
            if matches!(&frontend, FrontendRef::Named(n) if n == "dockerfile.v0") {
                options.push(("filename".to_string(), "Dockerfile".to_string()));
            }
            locals.insert("dockerfile".to_string(), args.context.clone());
        }
    }
    for kv in &args.build_args {
        let (k, v) = key_value(kv)?;
        options.push((format!("build-arg:{k}"), v));
    }
    // As buildx and buildctl do: `SOURCE_DATE_EPOCH` in the environment is the build's,
    // unless a build argument gives another.
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        && !options
            .iter()
            .any(|(k, _)| k == "build-arg:SOURCE_DATE_EPOCH")
    {
        options.push(("build-arg:SOURCE_DATE_EPOCH".into(), epoch));
    }
    if let Some(t) = &args.target {
        options.push(("target".into(), t.clone()));
    }
    if let Some(p) = &args.platform {
        options.push(("platform".into(), p.clone()));
    }
    let buildx = args.buildx.request()?;
    args.buildx.clear_results()?;
    options.extend(buildx.options);
    for (name, dir) in buildx.locals {
        locals.insert(name, dir);
    }
    for kv in &args.opts {
        options.push(key_value(kv)?);
    }
    let call = match (&args.call, args.buildx.check) {
        (Some(call), false) => Some(call.as_str()),
        (None, true) => Some("check"),
        (None, false) => None,
        (Some(_), true) => bail!("--check is --call check: give one of them"),
    };
    if let Some(call) = call {
        let request = match call {
            "targets" => "frontend.targets",
            "outline" => "frontend.outline",
            "check" | "lint" => "frontend.lint",
            "describe" => "frontend.subrequests.describe",
            other => bail!("unknown --call {other:?}: use targets, outline, check or describe"),
        };
        options.push(("requestid".into(), request.into()));
    }

    let outputs = parse_outputs(args)?;
    let mode = match args.buildx.quiet {
        true => progress::Mode::Quiet,
        false => progress::Mode::parse(&args.progress)?,
    };
    let quiet = mode == progress::Mode::Quiet;
    let secrets = parse_secrets(&args.secrets)?;
    let ssh = parse_ssh(&args.ssh)?;
    let engine = backend()?;
    let events = Arc::new(progress::Printer::new(mode));
    let runner_env = |k: &str| std::env::var(k).ok();
    let cache_to: Vec<String> = args
        .cache_to
        .iter()
        .map(|s| buildx::github_cache_env(s, runner_env))
        .collect::<Result<_>>()?;
    let cache_from: Vec<String> = args
        .cache_from
        .iter()
        .map(|s| buildx::github_cache_env(s, runner_env))
        .collect::<Result<_>>()?;
    let raw = remote::RawSpecs {
        outputs: args.outputs.clone(),
        tags: args.tags.clone(),
        push: args.push,
        annotations: args.buildx.annotations.clone(),
        cache_to: cache_to.clone(),
        cache_from: cache_from.clone(),
    };
    let (outcome, layers) = engine.build(
        BuildRequest {
            frontend,
            options,
            locals,
            secrets,
            ssh,
            oci_layouts: args
                .oci_layouts
                .iter()
                .map(|kv| key_value(kv).map(|(k, v)| (k, PathBuf::from(v))))
                .collect::<Result<_>>()?,
            allow: args.allow.iter().cloned().chain(buildx.allow).collect(),
            solve: !args.dump_llb && call.is_none(),
            outputs,
            cache_to: cache_to
                .iter()
                .map(|s| buildwit_exporter::cache::parse_cache_spec(s, true))
                .collect::<Result<_, _>>()?,
            cache_from: cache_from
                .iter()
                .map(|s| buildwit_exporter::cache::parse_cache_spec(s, false))
                .collect::<Result<_, _>>()?,
            client: Default::default(),
            frontend_timeout: args.frontend_timeout.map(Duration::from_secs),
            prepared: None,
        },
        &raw,
        events,
    )?;
    let f = &outcome.frontend;
    if !quiet {
        eprintln!(
            "#0 frontend {} {} ({}) from {} {} speaking {}, {} in {:.1} ms",
            f.name,
            f.version,
            f.channel,
            f.source,
            f.digest,
            f.wit_version,
            if f.compiled {
                "compiled"
            } else {
                "precompiled"
            },
            outcome.frontend_time.as_secs_f64() * 1000.0
        );
    }
    if call.is_some() {
        let answer = outcome
            .metadata
            .iter()
            .find(|(k, _)| k == "result.txt")
            .map(|(_, v)| v.as_slice());
        std::io::stdout().write_all(answer.unwrap_or_default())?;
        let status = outcome
            .metadata
            .iter()
            .find(|(k, _)| k == "result.statuscode");
        if let Some(code) =
            status.and_then(|(_, v)| String::from_utf8_lossy(v).trim().parse::<u8>().ok())
            && code != 0
        {
            bail!("the frontend's answer has status {code}");
        }
        return Ok(());
    }
    if args.dump_llb && args.binary {
        let Some(def) = &outcome.definition else {
            bail!("--binary writes one definition: build one platform (--platform)");
        };
        std::io::stdout().write_all(&buildwit_llb::encode_definition(def))?;
        return Ok(());
    }
    if args.dump_llb {
        match &outcome.definition {
            Some(def) => print_llb(def, args.dot)?,
            None if outcome.platforms.is_empty() => {}
            None => {
                for (platform, def) in &outcome.platforms {
                    eprintln!("# {platform}");
                    print_llb(def, args.dot)?;
                }
            }
        }
        return Ok(());
    }
    if !quiet {
        eprintln!(
            "#0 built in {:.2}s: {layers} layers",
            outcome.solve_time.as_secs_f64()
        );
        for e in &outcome.exported {
            match &e.digest {
                Some(d) => eprintln!("#0 exported {} to {} ({d})", e.kind, e.dest),
                None => eprintln!("#0 exported {} to {}", e.kind, e.dest),
            }
        }
    }
    args.buildx.write_results(&outcome)
}

/// `--output`, `-t` and `--push` as buildx combines them.
fn parse_outputs(args: &BuildArgs) -> Result<Vec<buildwit_engine::OutputSpec>> {
    Ok(buildwit_engine::outputs::combine(
        &args.outputs,
        &args.tags,
        args.push,
        &args.buildx.annotations,
    )?)
}

/// `--secret id=ID,src=FILE` / `id=ID,env=VAR` (BuildKit's and buildx's forms; `type=` is
/// accepted; without src or env, the env variable named like the id, then a file).
fn parse_secrets(specs: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for field in spec.split(',') {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" if v == "file" || v == "env" => {}
                _ => bail!("--secret {spec:?}: unknown field {k:?} (use id=, src= or env=)"),
            }
        }
        let id = id.with_context(|| format!("--secret {spec:?}: id= is required"))?;
        let value = match (src, env) {
            (Some(path), _) => {
                std::fs::read(&path).with_context(|| format!("--secret {id}: read {path}"))?
            }
            (None, Some(var)) => std::env::var(&var)
                .with_context(|| format!("--secret {id}: environment variable {var} is not set"))?
                .into_bytes(),
            (None, None) => match std::env::var(&id) {
                Ok(v) => v.into_bytes(),
                Err(_) => std::fs::read(&id).with_context(|| {
                    format!("--secret {id}: no src= or env= and no variable or file named {id}")
                })?,
            },
        };
        out.insert(id, value);
    }
    Ok(out)
}

/// `--ssh default` / `--ssh ID=SOCKET`.
fn parse_ssh(specs: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (id, path) = match spec.split_once('=') {
            Some((id, path)) => (id.to_string(), PathBuf::from(path)),
            None => {
                let sock = std::env::var("SSH_AUTH_SOCK").with_context(|| {
                    format!("--ssh {spec}: SSH_AUTH_SOCK is not set; give a socket as {spec}=PATH")
                })?;
                (spec.clone(), PathBuf::from(sock))
            }
        };
        out.insert(id, path);
    }
    Ok(out)
}

fn print_llb(def: &buildwit_llb::pb::Definition, dot: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if dot {
        write!(out, "{}", buildwit_llb::to_dot(def)?)?;
    } else {
        for line in buildwit_llb::dump_json_lines(def)? {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
