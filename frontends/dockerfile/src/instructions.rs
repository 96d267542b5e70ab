//! Typed Dockerfile instructions and build stages, built from the parser AST with
//! BuildKit's per-instruction flag sets, argument checks and error messages.

use crate::Error;
use crate::gostr::go_quote;
use crate::parser::{self, Node};

/// Command line of RUN/CMD/ENTRYPOINT: shell form or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    /// Shell form: the text is passed to the shell unexpanded.
    Shell(String),
    /// Exec (JSON) form.
    Exec(Vec<String>),
}

/// A heredoc as an instruction sees it. COPY/ADD sources have `content` chomped
/// for `<<-`; RUN keeps the body as written (the dispatcher chomps, as BuildKit does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Delimiter word, quotes removed; the file name for COPY/ADD sources.
    pub name: String,
    /// Body.
    pub content: String,
    /// Whether variables in the body are to be expanded.
    pub expand: bool,
    /// Whether `<<-` was used.
    pub chomp: bool,
    /// File descriptor prefix (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
}

impl Heredoc {
    fn from_parser(h: &parser::Heredoc) -> Self {
        Heredoc {
            name: h.name.clone(),
            content: h.content.clone(),
            expand: h.expand,
            chomp: h.chomp,
            file_descriptor: h.file_descriptor,
        }
    }
}

/// A `key=value` pair of ENV/LABEL (value unexpanded, quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key as written.
    pub key: String,
    /// Raw value (expand with [`crate::shell::Lexer::process_word`]).
    pub value: String,
    /// True for the legacy `KEY value` form (no `=`).
    pub no_delim: bool,
}

/// One ARG definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// Name.
    pub key: String,
    /// Raw default value, if any.
    pub value: Option<String>,
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCommand {
    /// Base image or stage reference, unexpanded.
    pub image: String,
    /// Stage name, lowercased.
    pub name: Option<String>,
    /// `--platform` value, unexpanded.
    pub platform: Option<String>,
}

/// `RUN` network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// `default`
    Default,
    /// `none`
    None,
    /// `host`
    Host,
}

/// `RUN` security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// `sandbox`
    Sandbox,
    /// `insecure`
    Insecure,
}

/// `RUN [flags] cmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    /// The command.
    pub cmd: ShellOrExec,
    /// Raw `--mount` values; parse with [`RunCommand::parse_mounts`] after expansion.
    pub mounts: Vec<String>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// `--device` values (labs-only in BuildKit; the frontend decides whether to accept).
    pub devices: Vec<String>,
    /// Heredocs of the command.
    pub heredocs: Vec<Heredoc>,
    /// Names of the flags that were given.
    pub flags_used: Vec<String>,
}

impl RunCommand {
    /// Parses every `--mount`, expanding each option value with `expand`
    /// (pass [`no_expand`] to parse the values as written).
    pub fn parse_mounts(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Vec<Mount>, String> {
        let mut out = Vec::with_capacity(self.mounts.len());
        for m in &self.mounts {
            out.push(parse_mount(m, &mut *expand)?);
        }
        Ok(out)
    }

    /// The `from=` of every `--mount` before expansion (empty when not given).
    pub fn mount_froms(&self) -> Vec<String> {
        self.mounts
            .iter()
            .map(|m| {
                parse_mount_unexpanded(m)
                    .ok()
                    .and_then(|m| m.from)
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// `COPY [flags] src... dest` or `ADD [flags] src... dest` (ADD-only flags are
/// `None` for COPY and COPY-only ones unset for ADD).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyCommand {
    /// Source paths/URLs (heredoc sources are in `heredocs`).
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub heredocs: Vec<Heredoc>,
    /// Destination.
    pub dest: String,
    /// `--from` (COPY).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--checksum` (ADD).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD; None when not given).
    pub keep_git_dir: Option<bool>,
    /// `--unpack` (ADD; None when not given).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK`; durations in nanoseconds (0 = not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthcheckCommand {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: i64,
    /// `--timeout`.
    pub timeout: i64,
    /// `--start-period`.
    pub start_period: i64,
    /// `--start-interval`.
    pub start_interval: i64,
    /// `--retries`.
    pub retries: i64,
}

/// A typed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM`
    From(FromCommand),
    /// `RUN`
    Run(RunCommand),
    /// `COPY`
    Copy(CopyCommand),
    /// `ADD`
    Add(CopyCommand),
    /// `ENV`
    Env(Vec<KeyValue>),
    /// `ARG`
    Arg(Vec<ArgDef>),
    /// `LABEL`
    Label(Vec<KeyValue>),
    /// `EXPOSE` ports, unexpanded, sorted as BuildKit does.
    Expose(Vec<String>),
    /// `VOLUME` paths, unexpanded.
    Volume(Vec<String>),
    /// `USER`
    User(String),
    /// `WORKDIR`
    Workdir(String),
    /// `ENTRYPOINT` (`Exec(vec![])` for `ENTRYPOINT []`).
    Entrypoint(ShellOrExec),
    /// `CMD`
    Cmd(ShellOrExec),
    /// `SHELL` (always JSON form).
    Shell(Vec<String>),
    /// `HEALTHCHECK`
    Healthcheck(HealthcheckCommand),
    /// `STOPSIGNAL`
    StopSignal(String),
    /// `ONBUILD`: the trigger expression (heredocs appended as BuildKit does).
    Onbuild(String),
    /// `MAINTAINER`
    Maintainer(String),
}

impl Instruction {
    /// The upper-case keyword of the instruction.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Cmd(_) => "CMD",
            Instruction::Shell(_) => "SHELL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// An instruction with its source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The instruction.
    pub instruction: Instruction,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line.
    pub end_line: usize,
    /// The logical source line (continuations joined).
    pub original: String,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
}

/// A build stage: a FROM and the commands after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Lowercased stage name (`AS name`).
    pub name: Option<String>,
    /// Base image or stage reference, unexpanded.
    pub image: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// Commands in order.
    pub commands: Vec<Command>,
    /// 1-based line of the FROM.
    pub start_line: usize,
    /// 1-based last line of the FROM instruction.
    pub end_line: usize,
    /// The FROM line as written.
    pub original: String,
    /// Comment lines directly above the FROM.
    pub comments: Vec<String>,
}

/// Result of [`parse_stages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// ARGs before the first FROM (each an `Instruction::Arg` command).
    pub meta_args: Vec<Command>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

/// Converts a parsed AST into global ARGs and build stages.
pub fn parse_stages(ast: &Node) -> Result<Stages, Error> {
    let mut out = Stages {
        meta_args: Vec::new(),
        stages: Vec::new(),
    };
    for n in &ast.children {
        let cmd = parse_command(n)?;
        match cmd.instruction {
            Instruction::From(f) => out.stages.push(Stage {
                name: f.name,
                image: f.image,
                platform: f.platform,
                commands: Vec::new(),
                start_line: cmd.start_line,
                end_line: cmd.end_line,
                original: cmd.original,
                comments: cmd.comments,
            }),
            Instruction::Arg(_) if out.stages.is_empty() => out.meta_args.push(cmd),
            _ => match out.stages.last_mut() {
                Some(s) => s.commands.push(cmd),
                None => {
                    return Err(Error::new(
                        n.start_line,
                        n.end_line,
                        "no build stage in current context",
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// Parses one instruction node; errors read `dockerfile parse error on line N: ...`.
pub fn parse_command(node: &Node) -> Result<Command, Error> {
    match parse_instruction(node) {
        Ok(instruction) => Ok(Command {
            instruction,
            start_line: node.start_line,
            end_line: node.end_line,
            original: node.original.clone(),
            comments: node.prev_comments.clone(),
        }),
        Err(e) => Err(Error {
            line: node.start_line,
            end_line: node.end_line,
            column: e.column.map_or(0, |c| c + node.indent),
            message: format!(
                "dockerfile parse error on line {}: {}",
                node.start_line, e.message
            ),
        }),
    }
}

/// Parses an ONBUILD trigger expression inherited from a base image or stage, placed
/// at the lines `start..=end` of the FROM that triggers it.
pub fn parse_onbuild_trigger(expr: &str, start: usize, end: usize) -> Result<Command, Error> {
    let parsed = parser::parse(expr).map_err(|e| Error::new(start, end, e.message))?;
    if parsed.ast.children.len() != 1 {
        return Err(Error::new(
            start,
            end,
            "onbuild trigger should be a single expression",
        ));
    }
    let mut node = parsed.ast.children[0].clone();
    node.start_line = start;
    node.end_line = end;
    parse_command(&node)
}

/// An instruction-level error before it is given a location.
#[derive(Debug)]
struct PErr {
    message: String,
    column: Option<usize>,
}

impl From<String> for PErr {
    fn from(message: String) -> Self {
        PErr {
            message,
            column: None,
        }
    }
}

impl From<&str> for PErr {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

type PResult<T> = Result<T, PErr>;

/// 1-based column (in characters) of `needle` in `hay`.
fn column_of(hay: &str, needle: &str) -> Option<usize> {
    hay.find(needle).map(|i| hay[..i].chars().count() + 1)
}

const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

fn parse_instruction(node: &Node) -> PResult<Instruction> {
    let args = node.args();
    let cmd = node.value.as_str();
    let ex = |a: &[String]| -> ShellOrExec {
        if node.json {
            ShellOrExec::Exec(a.to_vec())
        } else {
            ShellOrExec::Shell(a.join(" "))
        }
    };
    Ok(match cmd {
        "from" => {
            let name = match args.len() {
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let n = args[2].to_lowercase();
                    if !valid_stage_name(&n) {
                        return Err(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            go_quote(&args[2])
                        )
                        .into());
                    }
                    Some(n)
                }
                1 => None,
                _ => return Err("FROM requires either one or three arguments".into()),
            };
            let f = parse_flags(node, &[("platform", Kind::Str)])?;
            Instruction::From(FromCommand {
                image: args[0].clone(),
                name,
                platform: f.str("platform"),
            })
        }
        "run" => {
            let f = parse_flags(
                node,
                &[
                    ("mount", Kind::Strings),
                    ("network", Kind::Str),
                    ("security", Kind::Str),
                    ("device", Kind::Strings),
                ],
            )?;
            let network = match f.str("network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(v) => return Err(format!("invalid network mode {}", go_quote(v)).into()),
            };
            let security = match f.str("security").as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(v) => return Err(format!("security {} is not valid", go_quote(v)).into()),
            };
            let mounts = f.strings("mount");
            for m in &mounts {
                parse_mount_unexpanded(m)?;
            }
            Instruction::Run(RunCommand {
                cmd: ex(&args),
                mounts,
                network,
                security,
                devices: f.strings("device"),
                heredocs: node.heredocs.iter().map(Heredoc::from_parser).collect(),
                flags_used: f.used(),
            })
        }
        "cmd" => {
            parse_flags(node, &[])?;
            Instruction::Cmd(ex(&args))
        }
        "entrypoint" => {
            parse_flags(node, &[])?;
            Instruction::Entrypoint(ex(&args))
        }
        "copy" => {
            if args.len() < 2 {
                return Err(no_dest("COPY").into());
            }
            let f = parse_flags(
                node,
                &[
                    ("chown", Kind::Str),
                    ("from", Kind::Str),
                    ("chmod", Kind::Str),
                    ("link", Kind::Bool),
                    ("parents", Kind::Bool),
                    ("exclude", Kind::Strings),
                ],
            )?;
            let (sources, heredocs, dest) = sources_and_dest(node, &args, "COPY")?;
            Instruction::Copy(CopyCommand {
                sources,
                heredocs,
                dest,
                from: f.str("from"),
                chown: f.str("chown"),
                chmod: f.str("chmod"),
                link: f.bool("link").unwrap_or(false),
                parents: f.bool("parents").unwrap_or(false),
                exclude: f.strings("exclude"),
                ..CopyCommand::default()
            })
        }
        "add" => {
            if args.len() < 2 {
                return Err(no_dest("ADD").into());
            }
            let f = parse_flags(
                node,
                &[
                    ("chown", Kind::Str),
                    ("chmod", Kind::Str),
                    ("link", Kind::Bool),
                    ("keep-git-dir", Kind::Bool),
                    ("checksum", Kind::Str),
                    ("exclude", Kind::Strings),
                    ("unpack", Kind::Bool),
                ],
            )?;
            let (sources, heredocs, dest) = sources_and_dest(node, &args, "ADD")?;
            Instruction::Add(CopyCommand {
                sources,
                heredocs,
                dest,
                chown: f.str("chown"),
                chmod: f.str("chmod"),
                link: f.bool("link").unwrap_or(false),
                exclude: f.strings("exclude"),
                checksum: f.str("checksum"),
                keep_git_dir: f.bool("keep-git-dir"),
                unpack: f.bool("unpack"),
                ..CopyCommand::default()
            })
        }
        "env" => {
            parse_flags(node, &[])?;
            Instruction::Env(parse_kvps(&args, "ENV")?)
        }
        "label" => {
            parse_flags(node, &[])?;
            Instruction::Label(parse_kvps(&args, "LABEL")?)
        }
        "arg" => {
            if args.is_empty() {
                return Err(at_least_one("ARG").into());
            }
            parse_flags(node, &[])?;
            let mut defs = Vec::with_capacity(args.len());
            for a in &args {
                let (key, value) = match a.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (a.as_str(), None),
                };
                if key.is_empty() {
                    return Err("ARG names can not be blank".into());
                }
                defs.push(ArgDef {
                    key: key.to_string(),
                    value,
                });
            }
            Instruction::Arg(defs)
        }
        "expose" => {
            if args.is_empty() {
                return Err(at_least_one("EXPOSE").into());
            }
            parse_flags(node, &[])?;
            let mut ports = args;
            ports.sort();
            Instruction::Expose(ports)
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_least_one("VOLUME").into());
            }
            parse_flags(node, &[])?;
            let mut vols = Vec::with_capacity(args.len());
            for v in &args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                vols.push(v.to_string());
            }
            Instruction::Volume(vols)
        }
        "user" => Instruction::User(exactly_one(node, &args, "USER")?),
        "workdir" => Instruction::Workdir(exactly_one(node, &args, "WORKDIR")?),
        "stopsignal" => Instruction::StopSignal(exactly_one(node, &args, "STOPSIGNAL")?),
        "maintainer" => Instruction::Maintainer(exactly_one(node, &args, "MAINTAINER")?),
        "shell" => {
            parse_flags(node, &[])?;
            if args.is_empty() {
                return Err(at_least_one("SHELL").into());
            }
            if !node.json {
                return Err(not_json("SHELL", &node.original).into());
            }
            Instruction::Shell(args)
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(node, &args)?),
        "onbuild" => {
            if args.is_empty() {
                return Err(at_least_one("ONBUILD").into());
            }
            parse_flags(node, &[])?;
            let trigger = args[0].trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into());
                }
                "MAINTAINER" | "FROM" => {
                    return Err(format!("{trigger} isn't allowed as an ONBUILD trigger").into());
                }
                _ => {}
            }
            let mut expr = strip_onbuild_prefix(&node.original).to_string();
            for h in &node.heredocs {
                expr.push('\n');
                expr.push_str(&h.content);
                expr.push_str(&h.name);
            }
            Instruction::Onbuild(expr)
        }
        _ => {
            let shown = node.keyword.to_uppercase();
            let mut message = format!("unknown instruction: {shown}");
            if let Some(s) = suggest(cmd, INSTRUCTIONS, false) {
                message.push_str(&format!(" (did you mean {}?)", s.to_uppercase()));
            }
            return Err(PErr {
                message,
                column: column_of(&node.original, &node.keyword),
            });
        }
    })
}

fn strip_onbuild_prefix(original: &str) -> &str {
    let s = original.trim_start();
    match s.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => s[7..].trim_start(),
        _ => original,
    }
}

fn valid_stage_name(n: &str) -> bool {
    let mut it = n.chars();
    matches!(it.next(), Some('a'..='z'))
        && it.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

fn no_dest(cmd: &str) -> String {
    format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    )
}

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}

fn exactly_one(node: &Node, args: &[String], cmd: &str) -> PResult<String> {
    if args.len() != 1 {
        return Err(format!("{cmd} requires exactly one argument").into());
    }
    parse_flags(node, &[])?;
    Ok(args[0].clone())
}

fn not_json(cmd: &str, original: &str) -> String {
    let mut extra = String::new();
    let b = original.as_bytes();
    let has_drive = b
        .windows(4)
        .any(|w| w[0] == b'"' && w[1].is_ascii_alphabetic() && w[2] == b':' && w[3] == b'\\');
    if has_drive && !original.contains("\\\\") && original.contains('[') && original.contains(']') {
        extra = format!(
            ". It looks like '{original}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
        );
    }
    format!("{cmd} requires the arguments to be in JSON form{extra}")
}

fn parse_kvps(args: &[String], cmd: &str) -> PResult<Vec<KeyValue>> {
    if args.is_empty() {
        return Err(at_least_one(cmd).into());
    }
    if !args.len().is_multiple_of(3) {
        return Err(format!("Bad input to {cmd}, too many arguments").into());
    }
    let mut out = Vec::with_capacity(args.len() / 3);
    for t in args.chunks(3) {
        if t[0].is_empty() {
            return Err(format!("{cmd} names can not be blank").into());
        }
        out.push(KeyValue {
            key: t[0].clone(),
            value: t[1].clone(),
            no_delim: t[2].is_empty(),
        });
    }
    Ok(out)
}

type SourcesDest = (Vec<String>, Vec<Heredoc>, String);

fn sources_and_dest(node: &Node, args: &[String], cmd: &str) -> PResult<SourcesDest> {
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    if parser::parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(format!("{cmd} cannot accept a heredoc as a destination").into());
    }
    if node.heredocs.is_empty() {
        return Ok((srcs.to_vec(), Vec::new(), dest));
    }
    let mut sources = Vec::new();
    let mut docs = Vec::new();
    for s in srcs {
        match parser::parse_heredoc(s).ok().flatten() {
            Some(h) => {
                let body = node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|d| d.name == h.name)
                    .map(|d| d.content.as_str())
                    .unwrap_or("");
                docs.push(Heredoc {
                    content: if h.chomp {
                        parser::chomp_heredoc_content(body)
                    } else {
                        body.to_string()
                    },
                    name: h.name,
                    expand: h.expand,
                    chomp: h.chomp,
                    file_descriptor: h.file_descriptor,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    Ok((sources, docs, dest))
}

fn parse_healthcheck(node: &Node, args: &[String]) -> PResult<HealthcheckCommand> {
    if args.is_empty() {
        return Err(at_least_one("HEALTHCHECK").into());
    }
    let typ = args[0].to_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(HealthcheckCommand {
            test: vec![typ],
            ..HealthcheckCommand::default()
        });
    }
    let f = parse_flags(
        node,
        &[
            ("interval", Kind::Str),
            ("timeout", Kind::Str),
            ("start-period", Kind::Str),
            ("start-interval", Kind::Str),
            ("retries", Kind::Str),
        ],
    )?;
    let test = match typ.as_str() {
        "CMD" => {
            let cmd: Vec<String> = if node.json {
                rest.to_vec()
            } else {
                vec![rest.join(" ")]
            };
            if cmd.is_empty() {
                return Err("Missing command after HEALTHCHECK CMD".into());
            }
            let kind = if node.json { "CMD" } else { "CMD-SHELL" };
            std::iter::once(kind.to_string()).chain(cmd).collect()
        }
        _ => {
            return Err(format!("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(&typ)).into());
        }
    };
    let interval = |name: &str| -> PResult<i64> {
        let Some(v) = f.str(name) else { return Ok(0) };
        if v.is_empty() {
            return Ok(0);
        }
        let d = parse_go_duration(&v)?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(format!("Interval {} cannot be less than 1ms", go_quote(name)).into());
        }
        Ok(d)
    };
    let retries = match f.str("retries") {
        Some(v) if !v.is_empty() => {
            let r: i64 = match v.parse::<i64>() {
                Ok(r) if (i32::MIN as i64..=i32::MAX as i64).contains(&r) => r,
                Ok(_) => {
                    return Err(format!(
                        "strconv.ParseInt: parsing {}: value out of range",
                        go_quote(&v)
                    )
                    .into());
                }
                Err(_) => {
                    return Err(format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        go_quote(&v)
                    )
                    .into());
                }
            };
            if r < 0 {
                return Err(format!("--retries cannot be negative ({r})").into());
            }
            r
        }
        _ => 0,
    };
    Ok(HealthcheckCommand {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

// ---------------------------------------------------------------- flags

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Strings,
}

#[derive(Default)]
struct Flags {
    // (name, value) in the order given; Strings flags may repeat.
    values: Vec<(String, Option<String>)>,
}

impl Flags {
    fn str(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v == "true")
    }
    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }
    fn used(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (n, _) in &self.values {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }
}

/// BuildKit's `BFlags.Parse` for the node's flags against the allowed set.
fn parse_flags(node: &Node, specs: &[(&str, Kind)]) -> PResult<Flags> {
    let mut out = Flags::default();
    for a in &node.flags {
        if a == "--" {
            break;
        }
        let Some(body) = a.strip_prefix("--") else {
            return Err(format!("arg should start with -- : {a}").into());
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(_, kind)) = specs.iter().find(|(n, _)| *n == name) else {
            let mut message = format!("unknown flag: --{name}");
            let names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
            if let Some(s) = suggest(name, &names, true) {
                message.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(PErr {
                message,
                column: column_of(&node.original, a),
            });
        };
        if kind != Kind::Strings && out.values.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate flag specified: {name}").into());
        }
        let v = match kind {
            Kind::Bool => {
                if value == Some("") {
                    return Err(format!("missing a value on flag: {name}").into());
                }
                match value.map(str::to_lowercase).as_deref() {
                    None | Some("true") => "true",
                    Some("false") => "false",
                    Some(_) => {
                        return Err(format!(
                            "expecting boolean value for flag {name}, not: {}",
                            value.unwrap_or_default()
                        )
                        .into());
                    }
                }
                .to_string()
            }
            Kind::Str | Kind::Strings => match value {
                Some(v) => v.to_string(),
                None => return Err(format!("missing a value on flag: {name}").into()),
            },
        };
        out.values.push((name.to_string(), Some(v)));
    }
    Ok(out)
}

/// Closest option within edit distance 2, like BuildKit's `suggest.Search`.
pub fn suggest(val: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    if val.is_empty() {
        return None;
    }
    let val = if case_sensitive {
        val.to_string()
    } else {
        val.to_lowercase()
    };
    let mut best: Option<(usize, String)> = None;
    for opt in options {
        let opt = if case_sensitive {
            opt.to_string()
        } else {
            opt.to_lowercase()
        };
        if opt == val {
            return None;
        }
        let d = levenshtein(&val, &opt);
        if d < best.as_ref().map_or(3, |b| b.0) {
            best = Some((d, opt));
        }
    }
    best.map(|b| b.1)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------- durations

/// Parses a Go duration string (`time.ParseDuration`) into nanoseconds.
pub fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = orig;
    let mut neg = false;
    if let Some(r) = s.strip_prefix('-') {
        neg = true;
        s = r;
    } else if let Some(r) = s.strip_prefix('+') {
        s = r;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s.starts_with('.') || s.as_bytes()[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for b in s[..int_len].bytes() {
            v = v
                .checked_mul(10)
                .and_then(|x| x.checked_add(u64::from(b - b'0')))
                .filter(|x| *x <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        s = &s[int_len..];
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(r) = s.strip_prefix('.') {
            s = r;
            frac_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for b in s[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                match frac
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u64::from(b - b'0')))
                {
                    Some(x) if x <= 1 << 63 => {
                        frac = x;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let mult: u64 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(orig)
                ));
            }
        };
        let mut part = v
            .checked_mul(mult)
            .filter(|x| *x <= 1 << 63)
            .ok_or_else(invalid)?;
        if frac > 0 {
            part = part
                .checked_add((frac as f64 * (mult as f64 / scale)) as u64)
                .filter(|x| *x <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        total = total
            .checked_add(part)
            .filter(|x| *x <= 1 << 63)
            .ok_or_else(invalid)?;
    }
    if neg {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    if total > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(total as i64)
}

// ---------------------------------------------------------------- mounts

/// `--mount` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// `bind` (default)
    Bind,
    /// `cache`
    Cache,
    /// `tmpfs`
    Tmpfs,
    /// `secret`
    Secret,
    /// `ssh`
    Ssh,
}

impl MountType {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// `shared` (the default for cache mounts)
    Shared,
    /// `private`
    Private,
    /// `locked`
    Locked,
}

/// A parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount type.
    pub kind: MountType,
    /// `from=` (stage, image or context).
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// Read-only (defaults: true for bind/secret/ssh, false for cache/tmpfs).
    pub read_only: bool,
    /// `id=`.
    pub cache_id: Option<String>,
    /// `sharing=` (cache only; `Shared` when unset for cache mounts).
    pub cache_sharing: Option<CacheSharing>,
    /// `required` (secret/ssh).
    pub required: bool,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `size=` for tmpfs, in bytes.
    pub size_limit: Option<i64>,
    /// `env=` (secret as environment variable).
    pub env: Option<String>,
}

/// Go's `strconv.ParseBool`.
pub(crate) fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Splits a CSV record (Go `encoding/csv`, one line, `,` separator).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    let mut col = 0usize;
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            col += 1;
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                            col + 1
                        ));
                    }
                    Some('"') => {
                        col += 1;
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            col += 1;
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => {
                        col += 1;
                        field.push(c);
                    }
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => col += 1,
                Some(_) => {
                    return Err(format!(
                        "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                        col + 1
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => {
                        col += 1;
                        break;
                    }
                    Some('"') => {
                        return Err(format!(
                            "parse error on line 1, column {}: bare \" in non-quoted-field",
                            col + 1
                        ));
                    }
                    Some(c) => {
                        col += 1;
                        field.push(c);
                    }
                }
            }
        }
        out.push(field);
    }
}

/// Parses a RAM size like docker's `units.RAMInBytes` (`64m`, `1g`, `1024`).
fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let err = || format!("invalid size: '{s}'");
    let num_len = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let num: f64 = s[..num_len].parse().map_err(|_| err())?;
    let unit = s[num_len..].trim_start().to_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(err()),
    };
    Ok((num * mult) as i64)
}

const MOUNT_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// An expander that returns values unchanged.
pub fn no_expand(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

/// Parses one `--mount` value; `expand` is applied to each option value except `type`.
pub fn parse_mount(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    parse_mount_with(spec, Some(expand))
}

/// Parses a `--mount` value before expansion, as BuildKit does at parse time: only
/// `type`, `from` and the value-less fields are read and checked; the rest waits
/// for [`parse_mount`].
pub fn parse_mount_unexpanded(spec: &str) -> Result<Mount, String> {
    parse_mount_with(spec, None)
}

/// Expands one word of a `--mount` value.
pub type MountExpander<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

fn parse_mount_with(spec: &str, mut expand: Option<MountExpander<'_>>) -> Result<Mount, String> {
    let fields = csv_fields(spec)?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        cache_id: None,
        cache_sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size_limit: None,
        env: None,
    };
    for f in &fields {
        if let Some((k, v)) = f.split_once('=')
            && k.eq_ignore_ascii_case("type")
        {
            m.kind = match v.to_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                _ => {
                    let mut msg = format!("unsupported mount type {}", go_quote(v));
                    let types = ["bind", "cache", "tmpfs", "secret", "ssh"];
                    if let Some(s) = suggest(v, &types, true) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err(msg);
                }
            };
        }
    }
    let secret_or_ssh = matches!(m.kind, MountType::Secret | MountType::Ssh);
    let mut ro_auto = true;
    for f in &fields {
        let (key, value) = match f.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (f.to_lowercase(), None),
        };
        let Some(raw) = value else {
            if f.is_empty() {
                continue;
            }
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if secret_or_ssh => m.required = true,
                "required" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                _ => return Err(format!("invalid field '{f}' must be a key=value pair")),
            }
            continue;
        };
        let value = match expand.as_mut() {
            _ if key == "type" => raw.to_string(),
            Some(expand) => expand(raw)?,
            None if key == "from" => {
                if raw.contains(['$', '{']) {
                    return Err(format!(
                        "'{key}' doesn't support variable expansion, define alias stage instead"
                    ));
                }
                raw.to_string()
            }
            None => continue,
        };
        let uint = |base: u32, what: &str| -> Result<u32, String> {
            u32::from_str_radix(&value, base)
                .map_err(|_| format!("invalid value {value} for {what}"))
        };
        match key.as_str() {
            "type" => {}
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.read_only = go_parse_bool(&value)
                    .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                let rw = go_parse_bool(&value)
                    .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
                m.read_only = !rw;
                ro_auto = false;
            }
            "required" => {
                if !secret_or_ssh {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                m.required = go_parse_bool(&value)
                    .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
            }
            "id" => m.cache_id = Some(value),
            "sharing" => {
                if !value.is_empty() && m.kind != MountType::Cache {
                    return Err(format!(
                        "invalid cache sharing set for {} mount",
                        m.kind.as_str()
                    ));
                }
                m.cache_sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(format!("unsupported sharing value {}", go_quote(&value))),
                });
            }
            "mode" => m.mode = Some(uint(8, "mode")?),
            "uid" => m.uid = Some(uint(10, "uid")?),
            "gid" => m.gid = Some(uint(10, "gid")?),
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                m.size_limit = Some(ram_in_bytes(&value)?);
            }
            "env" => m.env = Some(value),
            _ => {
                let mut msg = format!("unexpected key '{key}' in '{f}'");
                if let Some(s) = suggest(&key, MOUNT_KEYS, true) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(msg);
            }
        }
    }
    if expand.is_none() {
        return Ok(m);
    }
    let file_info_allowed = secret_or_ssh || m.kind == MountType::Cache;
    if !file_info_allowed {
        let t = go_quote(m.kind.as_str());
        if m.mode.is_some() {
            return Err(format!("mode not allowed for {t} type mounts"));
        }
        if m.uid.is_some() {
            return Err(format!("uid not allowed for {t} type mounts"));
        }
        if m.gid.is_some() {
            return Err(format!("gid not allowed for {t} type mounts"));
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        let empty = |o: &Option<String>| o.as_deref().is_none_or(str::is_empty);
        if empty(&m.source) && empty(&m.target) && empty(&m.cache_id) && m.env.is_none() {
            return Err("one of source, target required".into());
        }
        if !empty(&m.source) && !empty(&m.cache_id) {
            return Err("both source and id can't be set".into());
        }
    }
    if m.kind == MountType::Cache && m.cache_sharing.is_none() {
        m.cache_sharing = Some(CacheSharing::Shared);
    }
    Ok(m)
}

#[cfg(test)]
mod tests;
