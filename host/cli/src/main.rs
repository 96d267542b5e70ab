//! `buildwit`: the command line client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use buildwit_daemon::{BuildApi, BuildRequest, Engine, FrontendRef};
use buildwit_frontend::bridge::{Event, LogLevel};
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
    /// Wall-time limit of the frontend, in seconds.
    #[arg(long, default_value_t = 60)]
    frontend_timeout: u64,
    /// Progress output: auto, plain or quiet.
    #[arg(long, default_value = "auto")]
    progress: String,
}

#[derive(Subcommand)]
enum FrontendCommand {
    /// Show a frontend component's name, version, channel, WIT version, imports and exports.
    Inspect {
        /// The component file.
        file: PathBuf,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Debug(DebugCommand::DumpLlb { dot }) => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("read stdin")?;
            let def = buildwit_llb::decode_definition(&bytes)
                .context("stdin is not an LLB Definition")?;
            print_llb(&def, dot)
        }
        Command::Debug(DebugCommand::Config) => {
            let config = load_config(cli.config.as_deref())?;
            print!("{}", config.effective().to_toml());
            Ok(())
        }
        Command::Frontend(FrontendCommand::Inspect { file }) => {
            let engine = open_engine(cli.config.as_deref(), cli.root, Duration::from_secs(60))?;
            let frontend = FrontendRef::File(file);
            let record = engine.inspect_frontend(&frontend)?;
            let (imports, exports, size) =
                buildwit_daemon::frontend_interfaces(&engine, &frontend)?;
            println!("name:     {}", record.name);
            println!("version:  {}", record.version);
            println!("channel:  {}", record.channel);
            println!("wit:      {}", record.wit_version);
            println!("digest:   {}", record.digest);
            println!("size:     {size} bytes");
            println!("imports:  {}", imports.join(", "));
            println!("exports:  {}", exports.join(", "));
            Ok(())
        }
        Command::Build(args) => build(cli.config.as_deref(), cli.root, *args),
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

fn open_engine(config: Option<&Path>, root: Option<PathBuf>, timeout: Duration) -> Result<Engine> {
    let config = load_config(config)?;
    let root = root
        .or_else(|| config.root.clone().map(PathBuf::from))
        .unwrap_or_else(buildwit_config::default_root);
    let limits = buildwit_frontend::Limits {
        deadline: timeout,
        ..Default::default()
    };
    Ok(Engine::open(config, root, limits)?)
}

fn key_value(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}

fn build(config: Option<&Path>, root: Option<PathBuf>, args: BuildArgs) -> Result<()> {
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
            locals.insert("dockerfile".to_string(), args.context.clone());
        }
    }
    for kv in &args.build_args {
        let (k, v) = key_value(kv)?;
        options.push((format!("build-arg:{k}"), v));
    }
    if let Some(t) = &args.target {
        options.push(("target".into(), t.clone()));
    }
    if let Some(p) = &args.platform {
        options.push(("platform".into(), p.clone()));
    }
    for kv in &args.opts {
        options.push(key_value(kv)?);
    }
    if let Some(call) = &args.call {
        let request = match call.as_str() {
            "targets" => "frontend.targets",
            "outline" => "frontend.outline",
            "check" | "lint" => "frontend.lint",
            "describe" => "frontend.subrequests.describe",
            other => bail!("unknown --call {other:?}: use targets, outline, check or describe"),
        };
        options.push(("requestid".into(), request.into()));
    }

    let quiet = args.progress == "quiet";
    let engine = open_engine(config, root, Duration::from_secs(args.frontend_timeout))?;
    let events = Arc::new(move |event: Event| {
        if quiet {
            return;
        }
        match event {
            Event::Log {
                frontend,
                level,
                message,
            } => {
                let tag = match level {
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warn",
                    LogLevel::Error => "error",
                };
                eprintln!("#0 [{frontend}] {tag}: {message}");
            }
            Event::Warning { warning, .. } => {
                let at = warning
                    .location
                    .as_ref()
                    .map(|l| {
                        format!(
                            " ({}:{})",
                            l.filename,
                            l.ranges.first().map_or(0, |r| r.start_line)
                        )
                    })
                    .unwrap_or_default();
                eprintln!("WARNING: {}{at}", warning.short);
            }
            Event::Progress {
                name,
                current,
                total,
                completed,
                ..
            } => {
                if completed {
                    eprintln!("#0 {name} DONE");
                } else if total > 0 {
                    eprintln!("#0 {name} {current}/{total}");
                }
            }
        }
    });
    let outcome = engine.build(
        BuildRequest {
            frontend,
            options,
            locals,
        },
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
    if args.call.is_some() {
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
    let ops = outcome.definition.as_ref().map_or(0, |d| d.def.len());
    println!("result: {ops} LLB ops (scratch if 0); metadata: {}", {
        let keys: Vec<&str> = outcome.metadata.iter().map(|(k, _)| k.as_str()).collect();
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    });
    eprintln!(
        "note: executing the graph needs the solver, which is not in this build yet; use --dump-llb to see it"
    );
    Ok(())
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
