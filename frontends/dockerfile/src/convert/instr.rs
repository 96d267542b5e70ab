//! The instruction model the conversion works on, read from the parser's AST with
//! BuildKit's `instructions.Parse` rules (flags, argument checks, stage names, error
//! messages). Word expansion happens later, at dispatch time, as in BuildKit.

// Plain data mirroring BuildKit's Go structs; the field names say what they hold.
#![allow(missing_docs)]

use crate::parser::{self, Node};

/// An error with the lines it points at; `parse_error` ones carry BuildKit's
/// `dockerfile parse error on line N: ` prefix.
#[derive(Debug, Clone)]
pub struct CErr {
    pub message: String,
    pub lines: Option<(usize, usize)>,
}

impl CErr {
    pub fn new(message: impl Into<String>) -> Self {
        CErr {
            message: message.into(),
            lines: None,
        }
    }

    pub fn at(mut self, start: usize, end: usize) -> Self {
        if self.lines.is_none() && start > 0 {
            self.lines = Some((start, end));
        }
        self
    }

    fn parse(node: &Node, message: impl Into<String>) -> Self {
        CErr {
            message: format!(
                "dockerfile parse error on line {}: {}",
                node.start_line,
                message.into()
            ),
            lines: Some((node.start_line, node.end_line)),
        }
    }
}

/// A `--mount` of a RUN, before expansion (the raw flag value).
pub type RawMount = String;

/// A shell-or-exec command line.
#[derive(Clone, Debug, Default)]
pub struct CmdLine {
    pub args: Vec<String>,
    pub prepend_shell: bool,
    pub files: Vec<InlineFile>,
}

/// A heredoc of a RUN.
#[derive(Clone, Debug)]
pub struct InlineFile {
    pub name: String,
    pub data: String,
    pub chomp: bool,
}

/// An anonymous COPY/ADD source (a heredoc).
#[derive(Clone, Debug)]
pub struct SourceContent {
    pub path: String,
    pub data: String,
    pub expand: bool,
}

#[derive(Clone, Debug, Default)]
pub struct CopyCmd {
    pub is_add: bool,
    pub sources: Vec<String>,
    pub contents: Vec<SourceContent>,
    pub dest: String,
    pub from: String,
    pub chown: String,
    pub chmod: String,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub keep_git_dir: Option<bool>,
    pub checksum: String,
    pub unpack: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct RunCmd {
    pub cmd: CmdLine,
    pub mounts: Vec<RawMount>,
    pub network: String,
    pub security: String,
    pub devices: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Health {
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Maintainer(String),
    Workdir(String),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    Expose(Vec<String>),
    Arg(Vec<(String, Option<String>)>),
    Shell(Vec<String>),
    Onbuild(String),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Healthcheck(Health),
    Run(RunCmd),
    Copy(CopyCmd),
}

/// One instruction.
#[derive(Clone, Debug)]
pub struct Command {
    pub kind: Kind,
    /// The source text (`withNameAndCode.String()`).
    pub code: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// A build stage.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub base_name: String,
    pub platform: String,
    pub source_code: String,
    pub start_line: usize,
    pub end_line: usize,
    pub commands: Vec<Command>,
}

/// A global `ARG` line: its `(name, default)` pairs and its lines.
pub type MetaArg = (Vec<(String, Option<String>)>, usize, usize);

/// The parsed Dockerfile: stages and the global ARGs before the first FROM.
pub struct Parsed {
    pub stages: Vec<Stage>,
    pub meta_args: Vec<MetaArg>,
    pub escape: char,
}

const COMMANDS: &[&str] = &[
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

/// Parse a Dockerfile into stages.
pub fn parse_dockerfile(src: &str) -> Result<Parsed, CErr> {
    let res = parser::parse(src).map_err(|e| {
        let line = e.line.max(1);
        CErr::new(e.message.clone()).at(line, e.end_line.max(line))
    })?;
    if let Some(check) = res.directive("check") {
        validate_check(&check.value)?;
    }
    let mut stages: Vec<Stage> = Vec::new();
    let mut meta_args = Vec::new();
    for node in &res.ast.children {
        if node.value == "from" {
            stages.push(parse_from(node)?);
            continue;
        }
        let cmd = parse_command(node)?;
        match stages.last_mut() {
            Some(st) => st.commands.push(cmd),
            None => match cmd.kind {
                Kind::Arg(args) => meta_args.push((args, cmd.start_line, cmd.end_line)),
                _ => {
                    return Err(CErr::parse(
                        node,
                        format!(
                            "{} instruction not allowed before FROM",
                            node.keyword.to_uppercase()
                        ),
                    ));
                }
            },
        }
    }
    if res.ast.children.is_empty() {
        return Err(CErr::new("file with no instructions"));
    }
    Ok(Parsed {
        stages,
        meta_args,
        escape: res.escape,
    })
}

/// BuildKit's `linter.ParseLintOptions` checks (the rules themselves do not run here).
fn validate_check(value: &str) -> Result<(), CErr> {
    let wrap = |m: String| CErr::new(format!("failed to parse check options: {m}"));
    let value = value.trim();
    if value.is_empty() {
        return Ok(());
    }
    for part in value.splitn(3, ';') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(wrap(format!("invalid check option {part:?}")));
        };
        match k.trim() {
            "skip" | "experimental" => {}
            "error" => {
                let v = v.trim();
                if !matches!(
                    v,
                    "1" | "t"
                        | "T"
                        | "TRUE"
                        | "true"
                        | "True"
                        | "0"
                        | "f"
                        | "F"
                        | "FALSE"
                        | "false"
                        | "False"
                ) {
                    return Err(wrap(format!(
                        "failed to parse check option {part:?}: strconv.ParseBool: parsing {v:?}: invalid syntax"
                    )));
                }
            }
            k => return Err(wrap(format!("invalid check option {k:?}"))),
        }
    }
    Ok(())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// BuildKit's `suggest.Search` (case-insensitive).
pub fn suggest(val: &str, options: &[&str]) -> Option<String> {
    let lower = val.to_lowercase();
    let mut best = None;
    let mut min = 3;
    for opt in options {
        let o = opt.to_lowercase();
        if o == lower {
            return None;
        }
        let d = levenshtein(&lower, &o);
        if d < min {
            min = d;
            best = Some(o);
        }
    }
    best.map(|m| {
        if val.chars().all(|c| !c.is_lowercase()) {
            m.to_uppercase()
        } else if val.chars().next().is_some_and(char::is_uppercase) {
            let mut c = m.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        } else {
            m
        }
    })
}

/// Flags of one instruction, BuildKit's `BFlags`.
struct Flags {
    values: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(node: &Node, allowed: &[&str]) -> Result<Flags, CErr> {
        let mut values = Vec::new();
        for f in &node.flags {
            let body = f.strip_prefix("--").unwrap_or(f);
            let (k, v) = match body.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !allowed.contains(&k.as_str()) {
                return Err(CErr::parse(node, format!("unknown flag: --{k}")));
            }
            values.push((k, v));
        }
        Ok(Flags { values })
    }

    fn string(&self, name: &str) -> String {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone().unwrap_or_default())
            .unwrap_or_default()
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, _)| k == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn is_set(&self, name: &str) -> bool {
        self.values.iter().any(|(k, _)| k == name)
    }

    fn bool(&self, node: &Node, name: &str) -> Result<Option<bool>, CErr> {
        match self.values.iter().rev().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, None)) => Ok(Some(true)),
            Some((_, Some(v))) => match v.to_lowercase().as_str() {
                "true" | "1" | "t" => Ok(Some(true)),
                "false" | "0" | "f" | "" => Ok(Some(false)),
                _ => Err(CErr::parse(
                    node,
                    format!("expecting boolean value for flag {name}, not: {v}"),
                )),
            },
        }
    }
}

fn parse_from(node: &Node) -> Result<Stage, CErr> {
    let flags = Flags::parse(node, &["platform"])?;
    let args = node.args();
    let name = match args.len() {
        1 => String::new(),
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_lowercase();
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(CErr::parse(
                    node,
                    format!(
                        "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                        args[2]
                    ),
                ));
            }
            name
        }
        _ => {
            return Err(CErr::parse(
                node,
                "FROM requires either one or three arguments",
            ));
        }
    };
    Ok(Stage {
        name,
        base_name: args[0].clone(),
        platform: flags.string("platform"),
        source_code: node.original.trim().to_string(),
        start_line: node.start_line,
        end_line: node.end_line,
        commands: Vec::new(),
    })
}

fn kvps(node: &Node, name: &str) -> Result<Vec<(String, String)>, CErr> {
    let args = node.args();
    if args.is_empty() {
        return Err(CErr::parse(
            node,
            format!("{name} requires at least one argument"),
        ));
    }
    if !args.len().is_multiple_of(3) {
        return Err(CErr::parse(
            node,
            format!("Bad input to {name}, too many arguments"),
        ));
    }
    Ok(args
        .chunks(3)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect())
}

fn cmd_line(node: &Node, heredocs: bool) -> CmdLine {
    let args = node.args();
    let files = if heredocs && !node.json {
        node.heredocs
            .iter()
            .map(|h| InlineFile {
                name: h.name.clone(),
                data: h.content.clone(),
                chomp: h.chomp,
            })
            .collect()
    } else {
        Vec::new()
    };
    CmdLine {
        args,
        prepend_shell: !node.json,
        files,
    }
}

fn parse_duration(node: &Node, name: &str, v: &str) -> Result<i64, CErr> {
    if v.is_empty() {
        return Ok(0);
    }
    let d = parse_go_duration(v)
        .ok_or_else(|| CErr::parse(node, format!("time: invalid duration {v:?}")))?;
    if d < 0 {
        return Err(CErr::parse(
            node,
            format!("Interval {name:?} cannot be less than 0s"),
        ));
    }
    Ok(d)
}

/// Go's `time.ParseDuration`.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mult;
    }
    let v = total.round() as i64;
    Some(if neg { -v } else { v })
}

/// Parse one instruction node (not FROM).
pub fn parse_command(node: &Node) -> Result<Command, CErr> {
    let code = node.original.trim().to_string();
    let no_flags = |node: &Node| Flags::parse(node, &[]);
    let kind = match node.value.as_str() {
        "env" => {
            no_flags(node)?;
            Kind::Env(kvps(node, "ENV")?)
        }
        "label" => {
            no_flags(node)?;
            Kind::Label(kvps(node, "LABEL")?)
        }
        "maintainer" => {
            no_flags(node)?;
            let args = node.args();
            if args.len() != 1 {
                return Err(CErr::parse(
                    node,
                    "MAINTAINER requires exactly one argument",
                ));
            }
            Kind::Maintainer(args[0].clone())
        }
        "workdir" => {
            no_flags(node)?;
            let args = node.args();
            if args.len() != 1 {
                return Err(CErr::parse(node, "WORKDIR requires exactly one argument"));
            }
            Kind::Workdir(args[0].clone())
        }
        "user" => {
            no_flags(node)?;
            let args = node.args();
            if args.len() != 1 {
                return Err(CErr::parse(node, "USER requires exactly one argument"));
            }
            Kind::User(args[0].clone())
        }
        "volume" => {
            no_flags(node)?;
            let args = node.args();
            if args.is_empty() {
                return Err(CErr::parse(node, "VOLUME requires at least one argument"));
            }
            Kind::Volume(args)
        }
        "stopsignal" => {
            no_flags(node)?;
            let args = node.args();
            if args.len() != 1 {
                return Err(CErr::parse(
                    node,
                    "STOPSIGNAL requires exactly one argument",
                ));
            }
            Kind::StopSignal(args[0].clone())
        }
        "expose" => {
            no_flags(node)?;
            let mut args = node.args();
            if args.is_empty() {
                return Err(CErr::parse(node, "EXPOSE requires at least one argument"));
            }
            args.sort();
            Kind::Expose(args)
        }
        "arg" => {
            no_flags(node)?;
            let args = node.args();
            if args.is_empty() {
                return Err(CErr::parse(node, "ARG requires at least one argument"));
            }
            let mut out = Vec::new();
            for a in args {
                match a.split_once('=') {
                    Some(("", _)) => return Err(CErr::parse(node, "ARG names can not be blank")),
                    Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                    None => out.push((a.clone(), None)),
                }
            }
            Kind::Arg(out)
        }
        "shell" => {
            no_flags(node)?;
            if !node.json {
                return Err(CErr::parse(
                    node,
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            let args = node.args();
            if args.is_empty() {
                return Err(CErr::parse(node, "SHELL requires at least one argument"));
            }
            Kind::Shell(args)
        }
        "onbuild" => {
            no_flags(node)?;
            let args = node.args();
            let trigger = args.first().map(|s| s.to_uppercase()).unwrap_or_default();
            match trigger.as_str() {
                "" => return Err(CErr::parse(node, "ONBUILD requires at least one argument")),
                "ONBUILD" => {
                    return Err(CErr::parse(
                        node,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(CErr::parse(
                        node,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                _ => {}
            }
            let original = node.original.trim_start();
            let expr = original
                .get(7..)
                .filter(|_| original.len() >= 7 && original[..7].eq_ignore_ascii_case("onbuild"))
                .unwrap_or(original)
                .trim_start();
            Kind::Onbuild(expr.to_string())
        }
        "cmd" => {
            no_flags(node)?;
            Kind::Cmd(cmd_line(node, false))
        }
        "entrypoint" => {
            no_flags(node)?;
            Kind::Entrypoint(cmd_line(node, false))
        }
        "healthcheck" => {
            let flags = Flags::parse(
                node,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
            )?;
            let args = node.args();
            let first = args.first().map(|s| s.to_uppercase()).unwrap_or_default();
            let mut h = Health::default();
            match first.as_str() {
                "NONE" => {
                    if args.len() != 1 {
                        return Err(CErr::parse(node, "HEALTHCHECK NONE takes no arguments"));
                    }
                    if !flags.values.is_empty() {
                        return Err(CErr::parse(
                            node,
                            "HEALTHCHECK NONE does not support options",
                        ));
                    }
                    h.test = vec!["NONE".into()];
                }
                "CMD" => {
                    let rest = &args[1..];
                    if rest.is_empty() {
                        return Err(CErr::parse(node, "Missing command after HEALTHCHECK CMD"));
                    }
                    h.test = if node.json {
                        std::iter::once("CMD".to_string())
                            .chain(rest.iter().cloned())
                            .collect()
                    } else {
                        vec!["CMD-SHELL".into(), rest.join(" ")]
                    };
                    h.interval = parse_duration(node, "interval", &flags.string("interval"))?;
                    h.timeout = parse_duration(node, "timeout", &flags.string("timeout"))?;
                    h.start_period =
                        parse_duration(node, "start-period", &flags.string("start-period"))?;
                    h.start_interval =
                        parse_duration(node, "start-interval", &flags.string("start-interval"))?;
                    let r = flags.string("retries");
                    if !r.is_empty() {
                        h.retries = r.parse().map_err(|_| {
                            CErr::parse(
                                node,
                                format!("strconv.ParseInt: parsing {r:?}: invalid syntax"),
                            )
                        })?;
                        if h.retries < 0 {
                            return Err(CErr::parse(node, "--retries cannot be negative"));
                        }
                    }
                }
                _ => {
                    return Err(CErr::parse(
                        node,
                        format!("Unknown type {first:?} in HEALTHCHECK (try CMD)"),
                    ));
                }
            }
            Kind::Healthcheck(h)
        }
        "run" => {
            let flags = Flags::parse(node, &["mount", "network", "security", "device"])?;
            let network = flags.string("network");
            if flags.is_set("network") && !matches!(network.as_str(), "default" | "none" | "host") {
                return Err(CErr::parse(
                    node,
                    format!("invalid network mode {network:?}"),
                ));
            }
            let security = flags.string("security");
            if flags.is_set("security") && !matches!(security.as_str(), "sandbox" | "insecure") {
                return Err(CErr::parse(
                    node,
                    format!("security {security:?} is not valid"),
                ));
            }
            Kind::Run(RunCmd {
                cmd: cmd_line(node, true),
                mounts: flags.strings("mount"),
                network,
                security,
                devices: flags.strings("device"),
            })
        }
        "copy" | "add" => {
            let is_add = node.value == "add";
            let allowed: &[&str] = if is_add {
                &[
                    "chown",
                    "chmod",
                    "link",
                    "exclude",
                    "keep-git-dir",
                    "checksum",
                    "unpack",
                ]
            } else {
                &["from", "chown", "chmod", "link", "exclude", "parents"]
            };
            let flags = Flags::parse(node, allowed)?;
            let name = node.value.to_uppercase();
            let args = node.args();
            if args.len() < 2 {
                return Err(CErr::parse(
                    node,
                    format!(
                        "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
                    ),
                ));
            }
            let dest = args[args.len() - 1].clone();
            if matches!(parser::parse_heredoc(&dest), Ok(Some(_))) && !node.json {
                return Err(CErr::parse(
                    node,
                    format!("{name} cannot accept a heredoc as a destination"),
                ));
            }
            let mut sources = Vec::new();
            let mut contents = Vec::new();
            for src in &args[..args.len() - 1] {
                let hd = if node.json {
                    None
                } else {
                    parser::parse_heredoc(src).ok().flatten()
                };
                match hd.and_then(|h| node.heredocs.iter().find(|x| x.name == h.name).cloned()) {
                    Some(h) => {
                        let data = if h.chomp {
                            parser::chomp_heredoc_content(&h.content)
                        } else {
                            h.content.clone()
                        };
                        contents.push(SourceContent {
                            path: h.name.clone(),
                            data,
                            expand: h.expand,
                        });
                    }
                    None => sources.push(src.clone()),
                }
            }
            Kind::Copy(CopyCmd {
                is_add,
                sources,
                contents,
                dest,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool(node, "link")?.unwrap_or(false),
                parents: flags.bool(node, "parents")?.unwrap_or(false),
                exclude: flags.strings("exclude"),
                keep_git_dir: flags.bool(node, "keep-git-dir")?,
                checksum: flags.string("checksum"),
                unpack: flags.bool(node, "unpack")?,
            })
        }
        other => {
            let shown = node.keyword.clone();
            let mut msg = format!("unknown instruction: {shown}");
            if let Some(s) = suggest(other, COMMANDS) {
                let s = if shown.chars().all(|c| !c.is_lowercase()) {
                    s.to_uppercase()
                } else {
                    s
                };
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(CErr::parse(node, msg));
        }
    };
    Ok(Command {
        kind,
        code,
        start_line: node.start_line,
        end_line: node.end_line,
    })
}
