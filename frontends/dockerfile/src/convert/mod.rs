//! Dockerfile → LLB + image config, following BuildKit's `dockerfile2llb` step by step:
//! stages become dispatch states, the target's reachable stages are resolved (base images
//! through the gateway) and dispatched in order, and the target's state and image config
//! are the result.

mod context;
pub mod outline;
pub mod util;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use buildwit_sdk::llb::{
    self, CacheSharing, CopyOptions, FileAction, Metadata, MountSpec, NetMode, Platform, SecretOpt,
    SecurityMode, Source, State,
};
use buildwit_sdk::reference::ImageRef;
use buildwit_sdk::{Client, ResolveImageRequest, ResolveMode};

use crate::Error;
use crate::dockerignore::Matcher;
use crate::image::{DEFAULT_PATH, Healthcheck, Image, go_json_strings};
use crate::instructions::{
    self, ArgDef, CacheSharing as MountSharing, Command, CopyCommand, Instruction, MountType,
    NetworkMode, RunCommand, SecurityMode as RunSecurity, ShellOrExec, Stage,
};
use crate::lint::{self, CheckOptions, Linter};
use crate::shell::{Env, Lexer};
use context::{LocalContext, NamedContext};
use outline::{ArgInfo, OutlineCapture};
use util::{Chmod, dest_path, join, normalize_path, parse_chmod, uppercase_cmd};

const SCRATCH: &str = "scratch";

/// What the conversion needs besides the Dockerfile.
#[derive(Clone, Debug)]
pub struct ConvertOpts {
    /// Target stage (`target`; empty = last stage).
    pub target: String,
    /// `build-arg:*` values.
    pub build_args: BTreeMap<String, String>,
    /// `label:*` values added to the image config.
    pub labels: BTreeMap<String, String>,
    /// Platform being built for.
    pub target_platform: Platform,
    /// Platform of the builder.
    pub build_platform: Platform,
    /// No `platform` option was given.
    pub implicit_target: bool,
    /// Fixed `local.unique` of the build context (tests and replay).
    pub local_unique: Option<String>,
    /// `.dockerignore` patterns for the build context.
    pub exclude_patterns: Vec<String>,
    /// Name of the build context local.
    pub context_name: String,
    /// `None`: no `no-cache`; `Some(empty)`: all stages; else these stages.
    pub no_cache: Option<Vec<String>>,
    /// Hostname of RUN containers.
    pub hostname: String,
    /// `add-hosts` entries `(host, ip)`.
    pub extra_hosts: Vec<(String, String)>,
    /// `/dev/shm` size in bytes (0 = default).
    pub shm_size: i64,
    /// `ulimit` entries `(name, soft, hard)`.
    pub ulimits: Vec<(String, i64, i64)>,
    /// `cgroup-parent` of RUN containers.
    pub cgroup_parent: String,
    /// `force-network-mode`.
    pub network: NetMode,
    /// `image-resolve-mode`.
    pub resolve_mode: ResolveMode,
    /// Namespace prefixed to cache mount ids.
    pub cache_id_namespace: String,
    /// Labs channel features (`RUN --device`).
    pub labs: bool,
    /// Run the build checks (BuildKit runs them for the first platform only).
    pub lint: bool,
    /// Dispatch every stage, not only the ones the target needs (`lint` without a target).
    pub all_stages: bool,
    /// Several platforms are built: progress names carry the platform.
    pub multi_platform: bool,
    /// The `context:*`, `input-metadata:*` and `sharedkey:localdir:*` options: named build
    /// contexts that replace stages and images.
    pub context_options: BTreeMap<String, String>,
}

/// The conversion result.
pub struct Converted {
    /// The target stage's final state.
    pub state: State,
    /// The image config.
    pub image: Image,
    /// The config of the target's base image, if resolved.
    pub base_image: Option<Image>,
    /// `SOURCE_DATE_EPOCH` (Unix seconds), when the build has one.
    pub epoch: Option<i64>,
    /// Frontend inputs used as named contexts, spliced into the graph by [`Converted::marshal`].
    inputs: Vec<(String, llb::Definition)>,
}

impl Converted {
    /// The LLB definition of the target, with the frontend inputs it uses spliced in.
    pub fn marshal(&self) -> llb::Definition {
        context::splice_inputs(self.state.marshal(), &self.inputs)
    }
}

#[derive(Clone, Debug)]
struct CmdEntry {
    cmd: Command,
    sources: Vec<Option<usize>>,
    is_onbuild: bool,
}

#[derive(Clone, Debug)]
struct DState {
    stage: Stage,
    stage_name: String,
    platform: Option<Platform>,
    base: Option<usize>,
    deps: BTreeSet<usize>,
    commands: Vec<CmdEntry>,
    state: State,
    image: Image,
    base_img: Option<Image>,
    dispatched: bool,
    resolved: bool,
    unregistered: bool,
    on_build_init: bool,
    cmd_total: usize,
    cmd_index: usize,
    cmd_is_onbuild: bool,
    build_args: Vec<(String, Option<String>)>,
    ctx_paths: BTreeSet<String>,
    cmd_set: bool,
    ignore_cache: bool,
    /// A named context replaces this stage (`context:NAME`).
    named_context: Option<NamedContext>,
    /// A named local context to rebuild once the paths used from it are known.
    local_context: Option<LocalContext>,
    outline: OutlineCapture,
    /// WORKDIR was set in this Dockerfile (WorkdirRelativePath).
    workdir_set: bool,
    /// Lines of the last CMD, ENTRYPOINT and HEALTHCHECK (MultipleInstructionsDisallowed).
    last_cmd: Option<(usize, usize)>,
    last_entrypoint: Option<(usize, usize)>,
    last_healthcheck: Option<(usize, usize)>,
}

impl DState {
    fn new(stage: Stage, unregistered: bool) -> Self {
        DState {
            stage_name: stage.name.clone().unwrap_or_default(),
            stage,
            platform: None,
            base: None,
            deps: BTreeSet::new(),
            commands: Vec::new(),
            state: llb::scratch(),
            image: Image::default(),
            base_img: None,
            dispatched: false,
            resolved: false,
            unregistered,
            on_build_init: false,
            cmd_total: 0,
            cmd_index: 0,
            cmd_is_onbuild: false,
            build_args: Vec::new(),
            ctx_paths: BTreeSet::new(),
            cmd_set: false,
            ignore_cache: false,
            named_context: None,
            local_context: None,
            outline: OutlineCapture::default(),
            workdir_set: false,
            last_cmd: None,
            last_entrypoint: None,
            last_healthcheck: None,
        }
    }

    /// Lines of the FROM instruction.
    fn lines(&self) -> (usize, usize) {
        (self.stage.start_line, self.stage.end_line)
    }
}

/// All dispatch states plus the name index (BuildKit's `dispatchStates`).
#[derive(Clone, Default)]
struct States {
    states: Vec<DState>,
    by_name: HashMap<String, usize>,
}

impl States {
    fn add(&mut self, mut ds: DState) -> usize {
        if let Some(&b) = self.by_name.get(&ds.stage.image) {
            ds.base = Some(b);
            ds.outline = self.states[b].outline.clone();
        }
        let i = self.states.len();
        if let Some(name) = &ds.stage.name {
            self.by_name.insert(name.to_lowercase(), i);
        }
        self.states.push(ds);
        i
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_lowercase()).copied()
    }
}

/// An environment for the shell lexer over a state's env list.
struct StateEnv<'a>(&'a [(String, String)]);

impl Env for StateEnv<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A secret-masking overlay (BuildKit's `withSecretEnvMask`).
struct Overlay<'a> {
    base: &'a dyn Env,
    extra: Vec<(String, String)>,
}

impl Env for Overlay<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| self.base.lookup(name))
    }
}

fn platform_format(p: &Platform) -> String {
    p.id()
}

fn expand_err(e: crate::shell::ShellError) -> Error {
    Error::msg(e.to_string())
}

/// Global ARG values, and the global ARGs as the outline reports them.
type MetaArgs = (Vec<(String, String)>, BTreeMap<String, ArgInfo>);

/// The converter.
pub struct Converter<'a> {
    client: &'a dyn Client,
    opts: ConvertOpts,
    lex: Lexer,
    global_args: Vec<(String, String)>,
    all: States,
    proxy: Option<llb::ProxyEnv>,
    pg_counter: u64,
    /// The build checks, and what fired (also when the conversion fails).
    pub lint: Linter,
    /// Global ARGs as the outline reports them.
    meta_outline: OutlineCapture,
    /// The target stage, once resolved.
    target: Option<usize>,
    /// `.dockerignore` of the build context (CopyIgnoredFile).
    ignore: Option<Matcher>,
    /// Paths used from each FROM chain, keyed by the chain's first state (BuildKit shares
    /// one `paths` set along FROM chains); named local contexts follow only these.
    paths: HashMap<usize, BTreeSet<String>>,
    /// Frontend inputs used as named contexts.
    inputs: Vec<(String, llb::Definition)>,
    /// `SOURCE_DATE_EPOCH` (Unix seconds), once the global ARGs are known.
    epoch: Option<i64>,
}

fn uniq_id(seed: u64) -> String {
    // A stable 25-character id in BuildKit's alphabet (progress group ids).
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..25)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % 36) as usize] as char
        })
        .collect()
}

impl<'a> Converter<'a> {
    /// A converter resolving images through `client`.
    pub fn new(client: &'a dyn Client, opts: ConvertOpts) -> Self {
        Converter {
            client,
            opts,
            lex: Lexer::new('\\'),
            global_args: Vec::new(),
            all: States::default(),
            proxy: None,
            pg_counter: 0,
            lint: Linter::default(),
            meta_outline: OutlineCapture::default(),
            target: None,
            ignore: None,
            paths: HashMap::new(),
            inputs: Vec::new(),
            epoch: None,
        }
    }

    /// The `.dockerignore` patterns of the build context, for CopyIgnoredFile.
    pub fn set_ignore_patterns(&mut self, patterns: &[String]) -> Result<(), Error> {
        if !patterns.is_empty() {
            self.ignore = Some(Matcher::new(patterns).map_err(Error::msg)?);
        }
        Ok(())
    }

    /// Convert a Dockerfile. The build checks that fired are in [`Converter::lint`]
    /// afterwards, also when the conversion fails.
    pub fn convert(&mut self, src: &str) -> Result<Converted, Error> {
        if src.is_empty() {
            return Err(Error::msg("the Dockerfile cannot be empty"));
        }
        let res = crate::parser::parse(src).map_err(|e| {
            let line = e.line.max(1);
            Error::new(line, e.end_line.max(line), e.message)
        })?;
        // BUILDKIT_DOCKERFILE_CHECK replaces the `# check=` directive.
        let check = match self.opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
            Some(v) => CheckOptions::parse(v).map_err(|e| {
                Error::msg(format!(
                    "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: {e}"
                ))
            })?,
            None => match res.directive("check") {
                Some(d) => CheckOptions::parse(&d.value).map_err(|e| {
                    Error::new(
                        d.line,
                        d.line,
                        format!("failed to parse check options: {e}"),
                    )
                })?,
                None => CheckOptions::default(),
            },
        };
        self.lint = Linter::new(check, self.opts.lint);
        for w in &res.warnings {
            self.lint.run(
                &[],
                &lint::NO_EMPTY_CONTINUATION,
                (w.line, w.line),
                "Empty continuation line".into(),
            );
        }
        for n in &res.ast.children {
            if !self.lint_instruction(n) {
                break;
            }
        }
        let parsed = instructions::parse_stages(&res.ast)?;
        if parsed.stages.is_empty() {
            return Err(Error::msg("dockerfile contains no stages to build"));
        }
        self.validate_stage_names(&parsed.stages);
        self.validate_command_casing(&res.ast);
        self.lex = Lexer::new(res.escape);
        let target_name = if self.opts.target.is_empty() {
            parsed
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default()
        } else {
            self.opts.target.clone()
        };
        self.global_args = self.default_args(&target_name);
        self.validate_base_images_with_default_args(&parsed);
        let (globals, meta) = self.build_meta_args(&parsed.meta_args, true)?;
        self.global_args = globals;
        self.meta_outline.all_args = meta;
        self.epoch = self.source_date_epoch()?;
        self.proxy = proxy_env(&self.opts.build_args);

        self.build_dispatch_states(parsed.stages)?;
        let target = self.resolve_target()?;
        self.target = Some(target);
        self.build_dependency_graph()?;
        let reachable = self.resolve_stages(target)?;

        // Dispatch twice: once to learn which context paths are used, then with the real
        // build context (BuildKit fills its context in after dispatching, through a
        // mutable output). The checks fire in the first pass only.
        let prepared = self.all.clone();
        let placeholder = Source::local(&self.opts.context_name).state();
        let paths = self.dispatch_stages(&reachable, &placeholder)?;
        let context = self.build_context(&paths);
        let root = self.root(target);
        self.paths.entry(root).or_default().insert("/".into());
        let used = std::mem::take(&mut self.paths);
        self.all = prepared;
        self.finish_local_contexts(&used);
        self.lint.muted = true;
        let second = self.dispatch_stages(&reachable, &context);
        self.lint.muted = false;
        second?;

        let t = &mut self.all.states[target];
        if !self.opts.labels.is_empty() {
            let labels = t.image.config.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(self.opts.labels.clone());
        }
        if let Some(e) = self.lint.error() {
            return Err(Error::msg(e));
        }
        if !self.opts.implicit_target {
            let tp = &self.opts.target_platform;
            let same = tp.os == t.image.os && tp.architecture == t.image.architecture;
            t.image.os = tp.os.clone();
            t.image.architecture = tp.architecture.clone();
            if !tp.variant.is_empty() || !same {
                t.image.variant = tp.variant.clone();
            }
            if !tp.os_version.is_empty() || !same {
                t.image.os_version = tp.os_version.clone();
            }
        }
        let t = self.all.states[target].clone();
        Ok(Converted {
            state: t.state,
            image: t.image,
            base_image: t.base_img,
            epoch: self.epoch,
            inputs: self.inputs.clone(),
        })
    }

    /// `SOURCE_DATE_EPOCH`, from the build arguments or a global ARG's default, as
    /// BuildKit resolves it: a number of seconds dates the history and the `WORKDIR`
    /// directories of this build (and, through the result, the exporters' times); the
    /// value the Dockerfile reads is that number in canonical form. `context` takes the
    /// time of the build context, which a local context does not have: then it is unset.
    fn source_date_epoch(&mut self) -> Result<Option<i64>, Error> {
        const KEY: &str = "SOURCE_DATE_EPOCH";
        let value = match self.opts.build_args.get(KEY) {
            Some(v) => v.clone(),
            None => match self.global_args.iter().rev().find(|(k, _)| k == KEY) {
                Some((_, v)) => v.clone(),
                None => return Ok(None),
            },
        };
        if value.is_empty() {
            return Ok(None);
        }
        let (epoch, canonical) = match value.parse::<i64>() {
            Ok(secs) => (Some(secs), secs.to_string()),
            Err(_) if value == "context" => (None, String::new()),
            Err(_) => {
                return Err(Error::msg(format!(
                    "invalid SOURCE_DATE_EPOCH {value:?}: expected seconds since 1970-01-01 \
                     (as `git log -1 --pretty=%ct` prints them) or \"context\""
                )));
            }
        };
        if self.opts.build_args.contains_key(KEY) {
            if canonical.is_empty() {
                self.opts.build_args.remove(KEY);
            } else {
                self.opts.build_args.insert(KEY.into(), canonical.clone());
            }
        }
        if canonical.is_empty() {
            self.global_args.retain(|(k, _)| k != KEY);
        } else {
            for (_, v) in self.global_args.iter_mut().filter(|(k, _)| k == KEY) {
                *v = canonical.clone();
            }
        }
        Ok(epoch)
    }

    /// BuildKit's `buildMetaArgs`: the global ARGs with build-arg values (or, without
    /// `with_build_args`, only their defaults), and what the outline reports about them.
    fn build_meta_args(
        &self,
        meta_args: &[Command],
        with_build_args: bool,
    ) -> Result<MetaArgs, Error> {
        let mut globals = self.global_args.clone();
        let mut infos: BTreeMap<String, ArgInfo> = BTreeMap::new();
        for cmd in meta_args {
            let Instruction::Arg(args) = &cmd.instruction else {
                continue;
            };
            let lines = (cmd.start_line, cmd.end_line);
            for ArgDef { key: k, value: v } in args {
                let mut info = ArgInfo::new(k, &cmd.comments, lines);
                let given = if with_build_args {
                    self.opts.build_args.get(k)
                } else {
                    None
                };
                let value = match (given, v) {
                    (Some(given), _) => Some(given.clone()),
                    (None, Some(v)) => {
                        let r = self
                            .lex
                            .process(v, &globals)
                            .map_err(|e| expand_err(e).at(lines.0, lines.1))?;
                        info.deps = r.matched;
                        // `ARG A=${A}x` depends on what the earlier A depended on.
                        if info.deps.remove(k)
                            && let Some(old) = infos.get(k)
                        {
                            info.deps.extend(old.deps.iter().cloned());
                        }
                        Some(r.result)
                    }
                    (None, None) => None,
                };
                if let Some(v) = &value {
                    globals.retain(|(key, _)| key != k);
                    globals.push((k.clone(), v.clone()));
                }
                info.value = value;
                infos.insert(k.clone(), info);
            }
        }
        Ok((globals, infos))
    }

    /// The first state of the FROM chain `i` belongs to.
    fn root(&self, mut i: usize) -> usize {
        while let Some(b) = self.all.states[i].base {
            i = b;
        }
        i
    }

    /// The outline of the target (BuildKit's `frontend.outline`), after [`Self::convert`].
    pub fn outline(&self) -> Option<outline::Outline> {
        let target = self.target?;
        Some(outline::build(&self.all.states, target))
    }

    /// The checks BuildKit runs while parsing one instruction; false when the instruction
    /// does not parse (BuildKit stops there).
    fn lint_instruction(&mut self, n: &crate::parser::Node) -> bool {
        let lines = (n.start_line, n.end_line);
        let comments = &n.prev_comments;
        match n.value.as_str() {
            "maintainer" => self.lint.run(
                comments,
                &lint::MAINTAINER_DEPRECATED,
                lines,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            "from" => {
                let args = n.args();
                if args.len() == 3 {
                    if args[2] != args[2].to_lowercase() {
                        let msg = format!("Stage name '{}' should be lowercase", args[2]);
                        self.lint
                            .run(comments, &lint::STAGE_NAME_CASING, lines, msg);
                    }
                    let from = &n.keyword;
                    let lower = *from == from.to_lowercase();
                    let upper = *from == from.to_uppercase();
                    if (lower && args[1] != args[1].to_lowercase())
                        || (!lower && upper && args[1] != args[1].to_uppercase())
                    {
                        let msg =
                            format!("'{}' and '{from}' keywords' casing do not match", args[1]);
                        self.lint.run(comments, &lint::FROM_AS_CASING, lines, msg);
                    }
                }
            }
            _ => {}
        }
        let Ok(cmd) = instructions::parse_command(n) else {
            return false;
        };
        let (instruction, keys) = match &cmd.instruction {
            Instruction::From(f) => match &f.name {
                Some(name) => ("FROM", vec![name.clone()]),
                None => return true,
            },
            Instruction::Arg(args) => ("ARG", args.iter().map(|a| a.key.clone()).collect()),
            _ => return true,
        };
        // InvalidDefinitionDescription: the last comment above must start with the name.
        if let Some(last) = comments.last() {
            let first = last.split(' ').next().unwrap_or_default();
            if !keys.iter().any(|k| k == first) {
                let example = if keys.len() > 1 {
                    "<arg_key>"
                } else {
                    &keys[0]
                };
                let msg = format!(
                    "Comment for {instruction} should follow the format: `# {example} <description>`"
                );
                self.lint
                    .run(comments, &lint::INVALID_DEFINITION_DESCRIPTION, lines, msg);
            }
        }
        true
    }

    /// ReservedStageName and DuplicateStageName.
    fn validate_stage_names(&mut self, stages: &[Stage]) {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for st in stages {
            let Some(name) = &st.name else { continue };
            let lines = (st.start_line, st.end_line);
            if name == "context" || name == SCRATCH {
                let msg = format!(
                    "Stage name should not use the same name as reserved stage {}",
                    crate::gostr::go_quote(name)
                );
                self.lint.run(&[], &lint::RESERVED_STAGE_NAME, lines, msg);
            }
            if !seen.insert(name) {
                let msg = format!(
                    "Duplicate stage name {}, stage names should be unique",
                    crate::gostr::go_quote(name)
                );
                self.lint.run(&[], &lint::DUPLICATE_STAGE_NAME, lines, msg);
            }
        }
    }

    /// ConsistentInstructionCasing over the stages (global ARGs are not counted).
    fn validate_command_casing(&mut self, ast: &crate::parser::Node) {
        let Some(first) = ast.children.iter().position(|n| n.value == "from") else {
            return;
        };
        let nodes = &ast.children[first..];
        let (mut lower, mut upper) = (0, 0);
        for n in nodes {
            if n.keyword == n.keyword.to_lowercase() {
                lower += 1;
            } else if n.keyword == n.keyword.to_uppercase() {
                upper += 1;
            }
        }
        let majority_lower = lower > upper;
        for n in nodes {
            let casing = if majority_lower && n.keyword != n.keyword.to_lowercase() {
                "lowercase"
            } else if !majority_lower && n.keyword != n.keyword.to_uppercase() {
                "uppercase"
            } else {
                continue;
            };
            let msg = format!(
                "Command '{}' should match the case of the command majority ({casing})",
                n.keyword
            );
            self.lint.run(
                &[],
                &lint::CONSISTENT_INSTRUCTION_CASING,
                (n.start_line, n.end_line),
                msg,
            );
        }
    }

    /// InvalidDefaultArgInFrom: base names must stay valid with only the ARG defaults.
    fn validate_base_images_with_default_args(&mut self, parsed: &instructions::Stages) {
        let Ok((args, _)) = self.build_meta_args(&parsed.meta_args, false) else {
            return;
        };
        for st in &parsed.stages {
            let Ok(r) = self.lex.process(&st.image, &args) else {
                return;
            };
            if ImageRef::parse(&r.result).is_err() {
                let msg = format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    st.image
                );
                self.lint.run(
                    &[],
                    &lint::INVALID_DEFAULT_ARG_IN_FROM,
                    (st.start_line, st.end_line),
                    msg,
                );
            }
        }
    }

    /// UndefinedArgInFrom for the variables of a FROM that no global ARG declares.
    fn report_unused_from_args(&mut self, unmatched: &BTreeSet<String>, st: &Stage) {
        let mut keys: Vec<&str> = self
            .meta_outline
            .all_args
            .keys()
            .map(String::as_str)
            .collect();
        for (k, _) in &self.global_args {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys.sort_unstable();
        let mut warnings = Vec::new();
        for arg in unmatched {
            if keys.contains(&arg.as_str()) {
                continue;
            }
            let mut msg = format!("FROM argument '{arg}' is not declared");
            if let Some(s) = instructions::suggest(arg, &keys, true) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            warnings.push(msg);
        }
        for msg in warnings {
            self.lint.run(
                &st.comments,
                &lint::UNDEFINED_ARG_IN_FROM,
                (st.start_line, st.end_line),
                msg,
            );
        }
    }

    /// UndefinedVar: variables an instruction uses that are neither in the environment nor
    /// declared with ARG in the stage.
    fn report_unmatched(&mut self, i: usize, cmd: &Command, unmatched: &[String]) {
        let d = &self.all.states[i];
        let keys: Vec<&str> = d.state.env_list().iter().map(|(k, _)| k.as_str()).collect();
        let mut msgs = Vec::new();
        for var in unmatched {
            if d.build_args.iter().any(|(k, _)| k == var)
                || var == "BUILDKIT_SBOM_SCAN_CONTEXT"
                || var == "BUILDKIT_SBOM_SCAN_STAGE"
            {
                continue;
            }
            let mut msg = format!("Usage of undefined variable '${var}'");
            if let Some(s) = instructions::suggest(var, &keys, true) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            msgs.push(msg);
        }
        for msg in msgs {
            self.lint.run(
                &cmd.comments,
                &lint::UNDEFINED_VAR,
                (cmd.start_line, cmd.end_line),
                msg,
            );
        }
    }

    fn default_args(&self, target: &str) -> Vec<(String, String)> {
        let bp = &self.opts.build_platform;
        let tp = &self.opts.target_platform;
        let target = if target.is_empty() { "default" } else { target };
        let list = [
            ("BUILDPLATFORM", platform_format(bp)),
            ("BUILDOS", bp.os.clone()),
            ("BUILDOSVERSION", bp.os_version.clone()),
            ("BUILDARCH", bp.architecture.clone()),
            ("BUILDVARIANT", bp.variant.clone()),
            ("TARGETPLATFORM", platform_format(tp)),
            ("TARGETOS", tp.os.clone()),
            ("TARGETOSVERSION", tp.os_version.clone()),
            ("TARGETARCH", tp.architecture.clone()),
            ("TARGETVARIANT", tp.variant.clone()),
            ("TARGETSTAGE", target.to_string()),
        ];
        list.into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    self.opts.build_args.get(k).cloned().unwrap_or(v),
                )
            })
            .collect()
    }

    fn build_dispatch_states(&mut self, stages: Vec<Stage>) -> Result<(), Error> {
        for (i, mut st) in stages.into_iter().enumerate() {
            let (sl, el) = (st.start_line, st.end_line);
            let res = self
                .lex
                .process(&st.image, &self.global_args)
                .map_err(|e| expand_err(e).at(sl, el))?;
            self.report_unused_from_args(&res.unmatched, &st);
            if res.result.is_empty() {
                return Err(
                    Error::msg(format!("base name ({}) should not be blank", st.image)).at(sl, el),
                );
            }
            let mut used = res.matched;
            st.image = res.result;
            let mut platform = None;
            if let Some(expr) = st.platform.clone() {
                let r = self.lex.process(&expr, &self.global_args).map_err(|e| {
                    Error::msg(format!(
                        "failed to process arguments for platform {expr}: {e}"
                    ))
                    .at(sl, el)
                })?;
                self.report_unused_from_args(&r.unmatched, &st);
                self.lint_from_platform(&st, &expr, &r);
                if r.result.is_empty() {
                    return Err(
                        Error::msg(format!("empty platform value from expression {expr}"))
                            .at(sl, el),
                    );
                }
                platform = Some(Platform::parse(&r.result).map_err(|e| {
                    Error::msg(format!("failed to parse platform {expr}: {e}")).at(sl, el)
                })?);
                used.extend(r.matched);
            }
            let mut ds = DState::new(st, false);
            ds.platform = platform;
            ds.outline = self.meta_outline.clone();
            if let Some(name) = ds.stage.name.clone()
                && let Some(nc) = self
                    .named_context(&name, ds.platform.as_ref())
                    .map_err(|e| e.at(sl, el))?
            {
                // The stage is replaced: its own base and commands do not matter.
                ds.named_context = Some(nc);
                let idx = self.all.add(ds);
                self.all.states[idx].base = None;
                continue;
            }
            if ds.stage.name.is_none() {
                ds.stage_name = format!("stage-{i}");
            }
            let name = ds.stage.name.as_deref().unwrap_or_default();
            ds.ignore_cache = match &self.opts.no_cache {
                None => false,
                Some(list) if list.is_empty() => true,
                Some(list) => list.iter().any(|s| s.eq_ignore_ascii_case(name)),
            };
            let idx = self.all.add(ds);
            let ds = &mut self.all.states[idx];
            ds.outline.used_args.extend(used);
            let mut total = usize::from(ds.stage.image != SCRATCH && ds.base.is_none());
            for c in &ds.stage.commands {
                if matches!(
                    c.instruction,
                    Instruction::Copy(_)
                        | Instruction::Add(_)
                        | Instruction::Run(_)
                        | Instruction::Workdir(_)
                ) {
                    total += 1;
                }
            }
            ds.cmd_total = total;
        }
        Ok(())
    }

    /// RedundantTargetPlatform and FromPlatformFlagConstDisallowed for `FROM --platform`.
    fn lint_from_platform(&mut self, st: &Stage, expr: &str, r: &crate::shell::ProcessResult) {
        let lines = (st.start_line, st.end_line);
        if r.matched.len() == 1 && r.unmatched.is_empty() && r.matched.contains("TARGETPLATFORM") {
            let current = self
                .global_args
                .iter()
                .rev()
                .find(|(k, _)| k == "TARGETPLATFORM")
                .map(|(_, v)| v.as_str());
            if current == Some(r.result.as_str()) {
                let msg = format!(
                    "Setting platform to predefined {expr} in FROM is redundant as this is the default behavior"
                );
                self.lint
                    .run(&st.comments, &lint::REDUNDANT_TARGET_PLATFORM, lines, msg);
            }
        }
        if !r.matched.is_empty() || !r.unmatched.is_empty() {
            return;
        }
        let Ok(p) = Platform::parse(&r.result) else {
            return;
        };
        // A stage named after its platform (`FROM --platform=linux/arm64 AS build-arm64`)
        // is allowed a constant.
        let name = st.name.as_deref().unwrap_or_default();
        if name.contains(&p.os) || name.contains(&p.architecture) {
            return;
        }
        let msg = format!(
            "FROM --platform flag should not use constant value {}",
            crate::gostr::go_quote(&r.result)
        );
        self.lint.run(
            &st.comments,
            &lint::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
            lines,
            msg,
        );
    }

    fn resolve_target(&self) -> Result<usize, Error> {
        if self.opts.target.is_empty() {
            return Ok(self.all.states.len() - 1);
        }
        self.all.find(&self.opts.target).ok_or_else(|| {
            let names: Vec<&str> = self
                .all
                .states
                .iter()
                .map(|s| s.stage_name.as_str())
                .filter(|s| !s.is_empty())
                .collect();
            let mut msg = format!("target stage {:?} could not be found", self.opts.target);
            if let Some(s) = instructions::suggest(&self.opts.target, &names, false) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            Error::msg(msg)
        })
    }

    /// BuildKit's `toCommand`: find the stages a command reads from.
    fn command_sources(&mut self, cmd: &Command) -> Result<Vec<Option<usize>>, Error> {
        let mut sources = Vec::new();
        match &cmd.instruction {
            Instruction::Copy(CopyCommand {
                from: Some(from), ..
            }) if !from.is_empty() => {
                let res = self
                    .lex
                    .process_word(from, &crate::shell::EmptyEnv)
                    .map_err(expand_err)?;
                if res != *from {
                    return Err(Error::msg(
                        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    ));
                }
                let idx = match from.parse::<i64>() {
                    Ok(i) => {
                        if i < 0 || i as usize >= self.all.states.len() {
                            return Err(Error::msg(format!("invalid stage index {i}")));
                        }
                        i as usize
                    }
                    Err(_) => match self.all.find(from) {
                        Some(i) => i,
                        None => self.unregistered(from, cmd),
                    },
                };
                sources.push(Some(idx));
            }
            Instruction::Run(r) => {
                for from in r.mount_froms() {
                    let from = if from.is_empty() {
                        SCRATCH.to_string()
                    } else {
                        from
                    };
                    let idx = match self.all.find(&from) {
                        Some(i) => i,
                        None => self.unregistered(&from, cmd),
                    };
                    sources.push(Some(idx));
                }
            }
            _ => {}
        }
        Ok(sources)
    }

    fn unregistered(&mut self, base: &str, cmd: &Command) -> usize {
        let st = Stage {
            name: None,
            image: base.to_string(),
            platform: None,
            commands: Vec::new(),
            start_line: cmd.start_line,
            end_line: cmd.end_line,
            original: String::new(),
            comments: Vec::new(),
        };
        let mut ds = DState::new(st, true);
        ds.stage_name = String::new();
        self.all.add(ds)
    }

    fn build_dependency_graph(&mut self) -> Result<(), Error> {
        let n = self.all.states.len();
        for i in 0..n {
            let cmds = self.all.states[i].stage.commands.clone();
            let mut entries = Vec::new();
            for c in cmds {
                let sources = self
                    .command_sources(&c)
                    .map_err(|e| e.at(c.start_line, c.end_line))?;
                for s in sources.iter().flatten() {
                    self.all.states[i].deps.insert(*s);
                }
                entries.push(CmdEntry {
                    cmd: c,
                    sources,
                    is_onbuild: false,
                });
            }
            self.all.states[i].commands = entries;
        }
        // Circular dependencies.
        for i in 0..self.all.states.len() {
            let mut visiting = BTreeSet::new();
            self.check_cycle(i, &mut visiting)?;
        }
        if self.all.states.len() == 1 {
            self.all.states[0].stage_name.clear();
        }
        Ok(())
    }

    fn check_cycle(&self, i: usize, path: &mut BTreeSet<usize>) -> Result<(), Error> {
        if !path.insert(i) {
            let d = &self.all.states[i];
            return Err(Error::msg(format!(
                "circular dependency detected on stage: {}",
                d.stage_name
            )));
        }
        let d = &self.all.states[i];
        for dep in d.deps.iter().copied().chain(d.base) {
            self.check_cycle(dep, path)?;
        }
        path.remove(&i);
        Ok(())
    }

    fn reachable(&self, target: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let d = &self.all.states[i];
            stack.extend(d.base);
            stack.extend(d.deps.iter().copied());
        }
        seen
    }

    /// BuildKit's `init`: inherit from the base stage.
    fn init(&mut self, i: usize) {
        let Some(b) = self.all.states[i].base else {
            return;
        };
        let base = self.all.states[b].clone();
        let d = &mut self.all.states[i];
        d.state = base.state;
        d.platform = base.platform;
        d.image = base.image;
        d.image.config.on_build.clear();
        d.base_img = base.base_img;
        d.workdir_set = base.workdir_set;
        let mut args = d.build_args.clone();
        args.extend(base.build_args);
        d.build_args = args;
    }

    fn resolve_stages(&mut self, target: usize) -> Result<BTreeSet<usize>, Error> {
        loop {
            let reachable = self.reachable(target);
            for i in 0..self.all.states.len() {
                let d = &self.all.states[i];
                if d.base.is_none() && !d.dispatched && !d.resolved {
                    let r = reachable.contains(&i) || self.opts.all_stages;
                    let is_scratch = d.stage.image == SCRATCH && d.named_context.is_none();
                    self.all.states[i].resolved = r;
                    if is_scratch {
                        let tp = self.opts.target_platform.clone();
                        let d = &mut self.all.states[i];
                        d.state = llb::scratch().platform(tp.clone());
                        d.image = Image::empty(&tp.os, &tp.architecture, &tp.variant);
                        d.platform = Some(tp);
                        if d.unregistered {
                            d.dispatched = true;
                        }
                        continue;
                    }
                    self.resolve_base_image(i, r)?;
                }
            }
            let mut new_deps = false;
            for &i in &reachable {
                self.init(i);
                let d = &self.all.states[i];
                let mut onbuilds = d.image.config.on_build.clone();
                if let Some(b) = d.base
                    && !d.on_build_init
                {
                    for c in &self.all.states[b].commands {
                        if let Instruction::Onbuild(e) = &c.cmd.instruction {
                            onbuilds.push(e.clone());
                        }
                    }
                    self.all.states[i].on_build_init = true;
                }
                if !onbuilds.is_empty() {
                    let (sl, el) = (
                        self.all.states[i].stage.start_line,
                        self.all.states[i].stage.end_line,
                    );
                    let mut cmds = Vec::new();
                    for t in &onbuilds {
                        let c = instructions::parse_onbuild_trigger(t, sl, el)?;
                        let sources = self.command_sources(&c).map_err(|e| e.at(sl, el))?;
                        if !sources.is_empty() {
                            new_deps = true;
                        }
                        for s in sources.iter().flatten() {
                            self.all.states[i].deps.insert(*s);
                        }
                        cmds.push(CmdEntry {
                            cmd: c,
                            sources,
                            is_onbuild: true,
                        });
                    }
                    let d = &mut self.all.states[i];
                    d.cmd_total += cmds.len();
                    cmds.append(&mut d.commands);
                    d.commands = cmds;
                    d.image.config.on_build.clear();
                }
            }
            if !new_deps {
                return Ok(reachable);
            }
        }
    }

    fn resolve_base_image(&mut self, i: usize, reachable: bool) -> Result<(), Error> {
        let (sl, el) = self.all.states[i].lines();
        let r = self.resolve_base_image_inner(i, reachable);
        let d = &mut self.all.states[i];
        if d.unregistered {
            d.dispatched = true;
        }
        r.map_err(|e| e.at(sl, el))
    }

    fn resolve_base_image_inner(&mut self, i: usize, reachable: bool) -> Result<(), Error> {
        let d = &self.all.states[i];
        let orig = d.stage.image.clone();
        let r = ImageRef::parse(&orig)
            .map_err(|e| Error::msg(format!("failed to parse stage name {orig:?}: {e}")))?;
        let platform = d
            .platform
            .clone()
            .unwrap_or_else(|| self.opts.target_platform.clone());
        let mut name = r.normalized();
        self.all.states[i].stage.image = name.clone();
        let mut is_scratch = false;
        if reachable {
            if let Some(nc) = self.all.states[i].named_context.clone() {
                let (state, img, local) = self.load_named_context(&nc)?;
                let d = &mut self.all.states[i];
                d.dispatched = true;
                d.state = state;
                d.local_context = local;
                if let Some(mut img) = img {
                    img.created = None;
                    if !img.architecture.is_empty() && !img.os.is_empty() {
                        d.platform = Some(image_platform(&img));
                    }
                    d.image = img;
                }
                return Ok(());
            }
            if let Some(nc) = self.named_context(&name, Some(&platform))? {
                let (state, img, local) = self.load_named_context(&nc)?;
                let mut img = img.unwrap_or_else(|| {
                    Image::empty(&platform.os, &platform.architecture, &platform.variant)
                });
                let d = &mut self.all.states[i];
                d.base_img = Some(img.clone());
                img.created = None;
                d.image = img;
                d.state = state.platform(platform.clone());
                d.local_context = local.map(|l| l.with_platform(platform.clone()));
                d.platform = Some(platform);
                return Ok(());
            }
            let prefix = if self.opts.multi_platform {
                format!("[{} internal]", platform.id())
            } else {
                "[internal]".to_string()
            };
            let resolved = self
                .client
                .resolve_image_config(ResolveImageRequest {
                    ref_: name.clone(),
                    platform: Some(platform.clone()),
                    resolve_mode: self.opts.resolve_mode,
                    log_name: format!("{prefix} load metadata for {name}"),
                })
                .map_err(|e| Error::msg(format!("{orig}: {}", e.message)))?;
            let mut img = Image::parse(&resolved.config).map_err(Error::msg)?;
            let mut r2 = if resolved.ref_ != name {
                ImageRef::parse(&resolved.ref_).unwrap_or(r.clone())
            } else {
                r
            };
            if r2.tag.is_none() && r2.digest.is_none() {
                r2.tag = Some("latest".into());
            }
            if !resolved.digest.is_empty() {
                r2.digest = Some(resolved.digest.clone());
            }
            name = r2.normalized();
            let d = &mut self.all.states[i];
            d.base_img = Some(img.clone());
            img.created = None;
            d.stage.image = name.clone();
            is_scratch = img.is_scratch();
            d.image = img;
        }
        let multi = self.opts.multi_platform;
        let d = &mut self.all.states[i];
        if is_scratch {
            d.state = llb::scratch().platform(platform.clone());
        } else {
            let custom = prefix_command(d, &format!("FROM {name}"), multi, &platform, &[]);
            let md = Metadata::new()
                .description(
                    "com.docker.dockerfile.v1.command",
                    d.stage.original.trim().to_string(),
                )
                .custom_name(custom);
            let mut src = Source::image(&name)
                .map_err(Error::msg)?
                .platform(platform.clone());
            if self.opts.resolve_mode != ResolveMode::Default {
                src = src.attr(
                    "image.resolvemode",
                    match self.opts.resolve_mode {
                        ResolveMode::Pull => "pull",
                        ResolveMode::Local => "local",
                        ResolveMode::Default => "default",
                    },
                );
            }
            d.state = src.metadata(md).state().platform(platform.clone());
            if reachable {
                let actual = image_platform(&d.image);
                if actual.os != platform.os || actual.architecture != platform.architecture {
                    let msg = format!(
                        "Base image {orig} was pulled with platform {}, expected {} for current build",
                        crate::gostr::go_quote(&actual.id()),
                        crate::gostr::go_quote(&platform.id())
                    );
                    let lines = d.lines();
                    self.lint
                        .run(&[], &lint::INVALID_BASE_IMAGE_PLATFORM, lines, msg);
                }
            }
        }
        self.all.states[i].platform = Some(platform);
        Ok(())
    }

    fn build_context(&self, paths: &BTreeSet<String>) -> State {
        let mut src = Source::local(&self.opts.context_name);
        let follow: Option<Vec<String>> = if paths.is_empty() || paths.contains("/") {
            None
        } else {
            let mut v: Vec<String> = paths
                .iter()
                .map(|p| util::clean(&format!("./{p}")))
                .collect();
            v.sort();
            v.dedup();
            Some(v)
        };
        if let Some(f) = follow {
            src = src.attr("local.followpaths", go_json_strings(&f));
        }
        if !self.opts.exclude_patterns.is_empty() {
            src = src.attr(
                "local.excludepatterns",
                go_json_strings(&self.opts.exclude_patterns),
            );
        }
        src = src.attr("local.sharedkeyhint", self.opts.context_name.clone());
        if let Some(u) = &self.opts.local_unique {
            src = src.attr("local.unique", u.clone());
        }
        src.metadata(Metadata::new().custom_name("[internal] load build context"))
            .state()
    }

    fn dispatch_stages(
        &mut self,
        reachable: &BTreeSet<usize>,
        context: &State,
    ) -> Result<BTreeSet<String>, Error> {
        let mut ctx_paths = BTreeSet::new();
        for i in 0..self.all.states.len() {
            // `lint` without a target checks every stage, as BuildKit's `AllStages` does.
            if !self.opts.all_stages && (!reachable.contains(&i) || self.all.states[i].dispatched) {
                continue;
            }
            self.init(i);
            let tp = self.opts.target_platform.clone();
            let d = &mut self.all.states[i];
            d.dispatched = true;
            if d.platform.is_none() {
                d.platform = Some(tp);
            }
            let platform = d.platform.clone().unwrap_or_else(Platform::linux_amd64);
            d.state = d.state.clone().platform(platform.clone());
            if !d
                .image
                .config
                .env
                .iter()
                .any(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == "PATH")
                && platform.os != "windows"
            {
                d.image.config.env.push(format!("PATH={DEFAULT_PATH}"));
            }
            for e in d.image.config.env.clone() {
                let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                d.state = d.state.clone().env(k, v);
            }
            if !self.opts.hostname.is_empty() {
                d.state = d.state.clone().hostname(self.opts.hostname.clone());
            }
            if !d.image.config.working_dir.is_empty() {
                let wd = d.image.config.working_dir.clone();
                dispatch_workdir(d, &wd, false, None, &self.lex, false, None)?;
            }
            if !d.image.config.user.is_empty() {
                let u = d.image.config.user.clone();
                d.state = d.state.clone().user(u.clone());
            }
            d.state = d.state.clone().network(self.opts.network);
            let cmds = d.commands.clone();
            for c in &cmds {
                self.dispatch(i, c, context)
                    .map_err(|e| e.at(c.cmd.start_line, c.cmd.end_line))?;
            }
            ctx_paths.extend(self.all.states[i].ctx_paths.iter().cloned());
        }
        Ok(ctx_paths)
    }

    fn dispatch(&mut self, i: usize, entry: &CmdEntry, context: &State) -> Result<(), Error> {
        self.all.states[i].cmd_is_onbuild = entry.is_onbuild;
        let lex = self.lex;
        let env_list = self.all.states[i].state.env_list().to_vec();
        let env = StateEnv(&env_list);
        // Variables that expansion found unset, for UndefinedVar.
        let unmatched = RefCell::new(Vec::new());
        let expand = |w: &str| -> Result<String, Error> {
            let r = lex.process(w, &env).map_err(expand_err)?;
            unmatched.borrow_mut().extend(r.unmatched);
            Ok(r.result)
        };
        let cmd = &entry.cmd;
        let code = cmd.original.trim().to_string();
        let lines = (cmd.start_line, cmd.end_line);
        match &cmd.instruction {
            Instruction::From(_) => {}
            Instruction::Env(pairs) => {
                let expanded: Result<Vec<_>, Error> = pairs
                    .iter()
                    .map(|kv| Ok((expand(&kv.key)?, expand(&kv.value)?)))
                    .collect();
                self.report_unmatched(i, cmd, &unmatched.take());
                let expanded = expanded?;
                let mut msg = String::from("ENV");
                for (kv, (k, v)) in pairs.iter().zip(expanded) {
                    if kv.no_delim {
                        self.legacy_key_value(cmd);
                    }
                    self.secret_key(cmd, "ENV", &k);
                    let d = &mut self.all.states[i];
                    msg.push_str(&format!(" {k}={v}"));
                    d.state = d.state.clone().env(k.clone(), v.clone());
                    d.image.add_env(&k, &v);
                }
                self.all.states[i]
                    .image
                    .commit(&msg, false, false, self.epoch);
            }
            Instruction::Label(pairs) => {
                let expanded: Result<Vec<_>, Error> = pairs
                    .iter()
                    .map(|kv| Ok((expand(&kv.key)?, expand(&kv.value)?)))
                    .collect();
                self.report_unmatched(i, cmd, &unmatched.take());
                let expanded = expanded?;
                let mut msg = String::from("LABEL");
                for (kv, (k, v)) in pairs.iter().zip(expanded) {
                    if kv.no_delim {
                        self.legacy_key_value(cmd);
                    }
                    let d = &mut self.all.states[i];
                    let labels = d.image.config.labels.get_or_insert_with(BTreeMap::new);
                    msg.push_str(&format!(" {k}={v}"));
                    labels.insert(k, v);
                }
                self.all.states[i]
                    .image
                    .commit(&msg, false, false, self.epoch);
            }
            Instruction::Maintainer(m) => {
                let d = &mut self.all.states[i];
                d.image.author = m.clone();
                d.image
                    .commit(&format!("MAINTAINER {m}"), false, false, self.epoch);
            }
            Instruction::Workdir(p) => {
                let p = expand(p);
                self.report_unmatched(i, cmd, &unmatched.take());
                let p = p?;
                let d = &self.all.states[i];
                let os = d.platform.as_ref().map_or("linux", |p| p.os.as_str());
                // Only the first WORKDIR of a FROM chain is checked: fixing it fixes the rest.
                if !d.workdir_set && !is_abs(&p, os) {
                    let msg = format!(
                        "Relative workdir {} can have unexpected results if the base image changes",
                        crate::gostr::go_quote(&p)
                    );
                    self.lint
                        .run(&cmd.comments, &lint::WORKDIR_RELATIVE_PATH, lines, msg);
                }
                let multi = self.opts.multi_platform;
                let d = &mut self.all.states[i];
                d.workdir_set = true;
                dispatch_workdir(d, &p, true, Some(&code), &lex, multi, self.epoch)?;
            }
            Instruction::User(u) => {
                let u = expand(u);
                self.report_unmatched(i, cmd, &unmatched.take());
                let u = u?;
                let d = &mut self.all.states[i];
                d.state = d.state.clone().user(u.clone());
                d.image.config.user = u.clone();
                d.image
                    .commit(&format!("USER {u}"), false, false, self.epoch);
            }
            Instruction::Volume(vols) => {
                let v2: Result<Vec<String>, Error> = vols.iter().map(|v| expand(v)).collect();
                self.report_unmatched(i, cmd, &unmatched.take());
                let v2 = v2?;
                if v2.iter().any(String::is_empty) {
                    return Err(Error::msg("VOLUME specified can not be an empty string"));
                }
                let d = &mut self.all.states[i];
                let vs = d.image.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &v2 {
                    vs.insert(v.clone(), ());
                }
                d.image.commit(
                    &format!("VOLUME [{}]", v2.join(" ")),
                    false,
                    false,
                    self.epoch,
                );
            }
            Instruction::StopSignal(s) => {
                let s = expand(s);
                self.report_unmatched(i, cmd, &unmatched.take());
                let s = s?;
                if !util::valid_signal(&s) {
                    return Err(Error::msg(format!("Invalid signal: {s}")));
                }
                let d = &mut self.all.states[i];
                d.image.config.stop_signal = s.clone();
                d.image
                    .commit(&format!("STOPSIGNAL {s}"), false, false, self.epoch);
            }
            Instruction::Expose(ports) => {
                let mut all = Vec::new();
                for p in ports {
                    all.extend(lex.process_words(p, &env).map_err(expand_err)?);
                }
                self.lint_expose(cmd, &all);
                let ps = util::parse_ports(&all).map_err(Error::msg)?;
                let d = &mut self.all.states[i];
                let ep = d
                    .image
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for p in &ps {
                    ep.insert(p.clone(), ());
                }
                d.image.commit(
                    &format!("EXPOSE [{}]", ps.join(" ")),
                    false,
                    false,
                    self.epoch,
                );
            }
            Instruction::Arg(args) => {
                self.dispatch_arg(i, cmd, args)?;
            }
            Instruction::Shell(sh) => {
                let d = &mut self.all.states[i];
                d.image.config.shell = sh.clone();
                d.image.commit(
                    &format!("SHELL [{}]", sh.join(" ")),
                    false,
                    false,
                    self.epoch,
                );
            }
            Instruction::Onbuild(e) => {
                self.all.states[i].image.config.on_build.push(e.clone());
            }
            Instruction::Cmd(c) => {
                let prev = self.all.states[i].last_cmd.replace(lines);
                self.used_once(cmd, prev);
                self.json_args_recommended(i, cmd, c);
                let d = &mut self.all.states[i];
                d.cmd_set = true;
                let args = command_args(&d.image, c);
                d.image.config.cmd = Some(args.clone());
                d.image.config.args_escaped = true;
                d.image.commit(
                    &format!("CMD {}", crate::gostr::go_quote_list(&args)),
                    false,
                    false,
                    self.epoch,
                );
            }
            Instruction::Entrypoint(c) => {
                let prev = self.all.states[i].last_entrypoint.replace(lines);
                self.used_once(cmd, prev);
                self.json_args_recommended(i, cmd, c);
                let d = &mut self.all.states[i];
                let args = command_args(&d.image, c);
                d.image.config.entrypoint = Some(args.clone());
                if !d.cmd_set {
                    d.image.config.cmd = None;
                }
                d.image.commit(
                    &format!("ENTRYPOINT {}", crate::gostr::go_quote_list(&args)),
                    false,
                    false,
                    self.epoch,
                );
            }
            Instruction::Healthcheck(h) => {
                let prev = self.all.states[i].last_healthcheck.replace(lines);
                self.used_once(cmd, prev);
                let d = &mut self.all.states[i];
                d.image.config.healthcheck = Some(Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                });
                let msg = format!(
                    "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    h.test.join(" "),
                    util::go_duration(h.interval),
                    util::go_duration(h.timeout),
                    util::go_duration(h.start_period),
                    util::go_duration(h.start_interval),
                    h.retries
                );
                d.image.commit(&msg, false, false, self.epoch);
            }
            Instruction::Run(r) => {
                let root = self.root(i);
                self.paths.entry(root).or_default().insert("/".into());
                self.dispatch_run(i, cmd, r, &entry.sources, &code, context, &env_list)?;
            }
            Instruction::Copy(c) | Instruction::Add(c) => {
                let is_add = matches!(cmd.instruction, Instruction::Add(_));
                let mut c = c.clone();
                let expanded = (|| -> Result<(), Error> {
                    c.chown = c.chown.as_deref().map(expand).transpose()?;
                    c.chmod = c.chmod.as_deref().map(expand).transpose()?;
                    c.checksum = c.checksum.as_deref().map(expand).transpose()?;
                    let mut srcs = Vec::new();
                    for s in &c.sources {
                        srcs.push(expand(s)?);
                    }
                    c.sources = srcs;
                    c.dest = expand(&c.dest)?;
                    // Heredoc bodies expand with a raw lexer: quotes stay as written.
                    let mut raw = Lexer::new('\\');
                    raw.skip_process_quotes = true;
                    for h in c.heredocs.iter_mut() {
                        if h.expand {
                            let r = raw.process(&h.content, &env).map_err(expand_err)?;
                            unmatched.borrow_mut().extend(r.unmatched);
                            h.content = r.result;
                        }
                    }
                    Ok(())
                })();
                self.report_unmatched(i, cmd, &unmatched.take());
                expanded?;
                let source = match entry.sources.first().copied().flatten() {
                    Some(s) => {
                        let src = &self.all.states[s];
                        if !src.dispatched {
                            return Err(Error::msg(format!(
                                "cannot copy from stage {:?}, it needs to be defined before current stage {:?}",
                                c.from.as_deref().unwrap_or_default(),
                                self.all.states[i].stage_name
                            )));
                        }
                        src.state.clone()
                    }
                    None => context.clone(),
                };
                let from_ctx = entry.sources.is_empty();
                // The .dockerignore only filters the build context.
                let ignore = if from_ctx || is_add {
                    self.ignore.clone()
                } else {
                    None
                };
                self.dispatch_copy(i, cmd, &c, is_add, &source, &code, &env_list, ignore)?;
                if from_ctx || is_add {
                    for s in &c.sources {
                        if !is_add || !(s.starts_with("http://") || s.starts_with("https://")) {
                            self.all.states[i].ctx_paths.insert(join(&["/", s]));
                        }
                    }
                } else if let Some(s) = entry.sources.first().copied().flatten() {
                    let root = self.root(s);
                    let paths = self.paths.entry(root).or_default();
                    for src in &c.sources {
                        paths.insert(join(&["/", src]));
                    }
                }
            }
        }
        Ok(())
    }

    /// CopyIgnoredFile: a local source the `.dockerignore` excludes (not checked when the
    /// file has `!` exceptions, which cannot be decided statically).
    fn copy_ignored_file(&mut self, cmd: &Command, m: &Matcher, src: &str, is_add: bool) {
        let src = util::clean(src);
        if (src == "." || src == "/") && !m.ignores_root() {
            return;
        }
        if m.matches_or_parent_matches(&src) {
            let verb = if is_add { "Add" } else { "Copy" };
            let msg = format!(
                "Attempting to {verb} file {} that is excluded by .dockerignore",
                crate::gostr::go_quote(&src)
            );
            self.lint.run(
                &cmd.comments,
                &lint::COPY_IGNORED_FILE,
                (cmd.start_line, cmd.end_line),
                msg,
            );
        }
    }

    /// LegacyKeyValueFormat for one `KEY value` pair of ENV or LABEL.
    fn legacy_key_value(&mut self, cmd: &Command) {
        let k = keyword_of(cmd);
        let msg =
            format!("\"{k} key=value\" should be used instead of legacy \"{k} key value\" format");
        self.lint.run(
            &cmd.comments,
            &lint::LEGACY_KEY_VALUE_FORMAT,
            (cmd.start_line, cmd.end_line),
            msg,
        );
    }

    /// SecretsUsedInArgOrEnv.
    fn secret_key(&mut self, cmd: &Command, instruction: &str, key: &str) {
        if lint::is_secret_key(key) {
            let msg = format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                crate::gostr::go_quote(key)
            );
            self.lint.run(
                &cmd.comments,
                &lint::SECRETS_USED_IN_ARG_OR_ENV,
                (cmd.start_line, cmd.end_line),
                msg,
            );
        }
    }

    /// MultipleInstructionsDisallowed, reported at the earlier instruction (the ignored one).
    fn used_once(&mut self, cmd: &Command, previous: Option<(usize, usize)>) {
        if let Some(prev) = previous {
            let msg = format!(
                "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                keyword_of(cmd)
            );
            self.lint.run(
                &cmd.comments,
                &lint::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                prev,
                msg,
            );
        }
    }

    /// JSONArgsRecommended: shell-form CMD/ENTRYPOINT without a SHELL.
    fn json_args_recommended(&mut self, i: usize, cmd: &Command, c: &ShellOrExec) {
        if matches!(c, ShellOrExec::Shell(_)) && self.all.states[i].image.config.shell.is_empty() {
            let msg = format!(
                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                keyword_of(cmd)
            );
            self.lint.run(
                &cmd.comments,
                &lint::JSON_ARGS_RECOMMENDED,
                (cmd.start_line, cmd.end_line),
                msg,
            );
        }
    }

    /// ExposeProtoCasing and ExposeInvalidFormat, checked port by port until one whose
    /// protocol is invalid (parsing fails there).
    fn lint_expose(&mut self, cmd: &Command, ports: &[String]) {
        let lines = (cmd.start_line, cmd.end_line);
        for raw in ports {
            let parts: Vec<&str> = raw.split(':').collect();
            let container = parts[parts.len() - 1];
            let (port, proto) = container.split_once('/').unwrap_or((container, ""));
            let lower = proto.to_ascii_lowercase();
            if port.is_empty() || !matches!(lower.as_str(), "" | "tcp" | "udp" | "sctp") {
                return;
            }
            if proto != proto.to_lowercase() {
                let msg =
                    format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase");
                self.lint
                    .run(&cmd.comments, &lint::EXPOSE_PROTO_CASING, lines, msg);
            }
            let (ip, host) = match parts.len() {
                1 => (String::new(), ""),
                2 => (String::new(), parts[0]),
                n => (parts[..n - 2].join(":"), parts[n - 2]),
            };
            if !ip.is_empty() || !host.is_empty() {
                let msg = format!(
                    "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
                );
                self.lint
                    .run(&cmd.comments, &lint::EXPOSE_INVALID_FORMAT, lines, msg);
            }
        }
    }

    fn dispatch_arg(&mut self, i: usize, cmd: &Command, args: &[ArgDef]) -> Result<(), Error> {
        let mut commit = Vec::new();
        for ArgDef { key, value } in args {
            self.secret_key(cmd, "ARG", key);
            let has_value = self.opts.build_args.contains_key(key);
            let mut value = value.clone();
            let has_default = value.is_some();
            // An ARG that only redeclares a global one keeps the global's outline entry.
            let mut inherited = false;
            if !has_default
                && !has_value
                && let Some((_, v)) = self.global_args.iter().rev().find(|(k, _)| k == key)
            {
                value = Some(v.clone());
                inherited = true;
            }
            if has_value {
                value = self.opts.build_args.get(key).cloned();
            } else if has_default {
                let env_list = self.all.states[i].state.env_list().to_vec();
                let r = self
                    .lex
                    .process(value.as_deref().unwrap_or_default(), &StateEnv(&env_list))
                    .map_err(expand_err)?;
                let unmatched: Vec<String> = r.unmatched.into_iter().collect();
                self.report_unmatched(i, cmd, &unmatched);
                value = Some(r.result);
            }
            let d = &mut self.all.states[i];
            if let Some(v) = &value
                && key != "BUILDKIT_SBOM_SCAN_CONTEXT"
                && key != "BUILDKIT_SBOM_SCAN_STAGE"
            {
                d.state = d.state.clone().env(key.clone(), v.clone());
            }
            if !inherited {
                let mut info = ArgInfo::new(key, &cmd.comments, (cmd.start_line, cmd.end_line));
                info.value = value.clone();
                d.outline.all_args.insert(key.clone(), info);
            }
            d.outline.used_args.insert(key.clone());
            d.build_args.push((key.clone(), value.clone()));
            commit.push(match &value {
                Some(v) => format!("{key}={v}"),
                None => key.clone(),
            });
        }
        self.all.states[i].image.commit(
            &format!("ARG {}", commit.join(" ")),
            false,
            false,
            self.epoch,
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch_run(
        &mut self,
        i: usize,
        cmd: &Command,
        r: &RunCommand,
        sources: &[Option<usize>],
        code: &str,
        context: &State,
        env_list: &[(String, String)],
    ) -> Result<(), Error> {
        let env = StateEnv(env_list);
        let mut customname = code.to_string();
        let (mut args, prepend_shell) = match &r.cmd {
            ShellOrExec::Shell(s) => (vec![s.clone()], true),
            ShellOrExec::Exec(a) => (a.clone(), false),
        };
        // BuildKit ignores heredocs of an exec-form RUN.
        let files = if prepend_shell { &r.heredocs[..] } else { &[] };
        let mut extra_mounts: Vec<MountSpec> = Vec::new();
        let d_platform = self.all.states[i]
            .platform
            .clone()
            .unwrap_or_else(Platform::linux_amd64);
        if let Some(f0) = files.first() {
            let single = args.len() == 1
                && matches!(crate::parser::parse_heredoc(&args[0]), Ok(Some(h)) if h.name == f0.name);
            if single {
                let data = if f0.chomp {
                    crate::parser::chomp_heredoc_content(&f0.content)
                } else {
                    f0.content.clone()
                };
                if self.all.states[i].image.os != "windows" && data.starts_with("#!") {
                    let st = llb::scratch().file_with(
                        FileAction::mkfile(&format!("/{}", f0.name), 0o755, data.as_bytes()),
                        Metadata::new().custom_name("[internal] preparing inline document"),
                    );
                    extra_mounts.push(MountSpec::bind("/dev/pipes/", &st).selector("/").readonly());
                    args = vec![format!("/dev/pipes/{}", f0.name)];
                } else {
                    args = vec![data];
                }
                customname.push_str(&format!(" ({})", util::summarize_heredoc(&f0.content)));
            } else {
                let mut b = args.first().cloned().unwrap_or_default();
                for f in files {
                    b.push('\n');
                    b.push_str(&f.content);
                    b.push_str(&f.name);
                }
                args = vec![b];
            }
        }
        if prepend_shell {
            args = with_shell(&self.all.states[i].image, &args);
        }

        // Mounts.
        let mut mounts: Vec<MountSpec> = Vec::new();
        let mut secret_envs: Vec<(String, String, bool)> = Vec::new();
        let mut masked: Vec<(String, String)> = Vec::new();
        let cwd = self.all.states[i].state.get_dir().to_string();
        let lex = self.lex;
        let mut unmatched = Vec::new();
        let parsed = r.parse_mounts(&mut |v| {
            let r = lex.process(v, &env).map_err(|e| e.to_string())?;
            unmatched.extend(r.unmatched);
            Ok(r.result)
        });
        self.report_unmatched(i, cmd, &unmatched);
        let parsed = parsed.map_err(Error::msg)?;
        let lines = (cmd.start_line, cmd.end_line);
        for (mi, m) in parsed.into_iter().enumerate() {
            let m_from = m.from.clone().unwrap_or_default();
            let m_source = m.source.clone().unwrap_or_default();
            let m_target = m.target.clone().unwrap_or_default();
            let m_id = m.cache_id.clone().unwrap_or_default();
            let mut from = m_from.clone();
            if from.is_empty() && m.kind == MountType::Cache {
                from = SCRATCH.into();
            }
            let mut st = context.clone();
            if !from.is_empty() {
                let src = sources
                    .get(mi)
                    .copied()
                    .flatten()
                    .map(|s| &self.all.states[s]);
                match src {
                    Some(s) if s.dispatched => st = s.state.clone(),
                    _ => {
                        return Err(Error::msg(format!(
                            "cannot mount from stage {m_from:?} to {m_target:?}, stage needs to be defined before current command",
                        )));
                    }
                }
            }
            match m.kind {
                MountType::Secret => {
                    let id = if !m_source.is_empty() {
                        m_source.clone()
                    } else {
                        m_id.clone()
                    };
                    let id = if id.is_empty() {
                        if m_target.is_empty() {
                            return Err(Error::msg("one of source, target required"));
                        }
                        util::clean(&m_target)
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    } else {
                        id
                    };
                    self.all.states[i]
                        .outline
                        .secrets
                        .entry(id.clone())
                        .or_insert((m.required, lines));
                    let mut target = m_target.clone();
                    if m.env.is_none() && target.is_empty() {
                        target =
                            format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or_default());
                    }
                    if let Some(e) = &m.env {
                        secret_envs.push((id.clone(), e.clone(), !m.required));
                        masked.push((e.clone(), "****".into()));
                    }
                    if !target.is_empty() {
                        let opt = SecretOpt {
                            id,
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                            mode: m.mode.unwrap_or(0o400),
                            optional: !m.required,
                        };
                        mounts.push(MountSpec::secret(&target, opt));
                    }
                    continue;
                }
                MountType::Ssh => {
                    if !m_source.is_empty() {
                        return Err(Error::msg("ssh does not support source"));
                    }
                    let outline_id = if m_id.is_empty() { "default" } else { &m_id };
                    self.all.states[i]
                        .outline
                        .ssh
                        .entry(outline_id.to_string())
                        .or_insert((m.required, lines));
                    let opt = SecretOpt {
                        id: m_id.clone(),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o600),
                        optional: !m.required,
                    };
                    mounts.push(MountSpec::ssh(&m_target, opt));
                    continue;
                }
                _ => {}
            }
            let mut target = m_target.clone();
            if !util::clean(&target).starts_with('/') {
                target = join(&["/", &cwd, &m_target]);
            }
            if target == "/" {
                return Err(Error::msg(format!("invalid mount target {target:?}")));
            }
            let src_path = join(&["/", &m_source]);
            let mut selector = String::new();
            if src_path != "/" {
                selector = src_path.clone();
            } else if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                let owner = llb::ChownOpt {
                    user: Some(llb::UserOpt::ById(m.uid.unwrap_or(0))),
                    group: Some(llb::UserOpt::ById(m.gid.unwrap_or(0))),
                };
                st = st.file_with(
                    FileAction::mkdir("/cache", m.mode.unwrap_or(0o755) as i32, false, Some(owner)),
                    Metadata::new().custom_name("[internal] setting cache mount permissions"),
                );
                selector = "/cache".into();
            }
            let mut spec = match m.kind {
                MountType::Tmpfs => MountSpec::tmpfs(&target, m.size_limit.unwrap_or(0)),
                MountType::Cache => {
                    let id = if m_id.is_empty() {
                        util::clean(&m_target)
                    } else {
                        m_id.clone()
                    };
                    let id = format!("{}/{}", self.opts.cache_id_namespace, id);
                    let sharing = match m.cache_sharing {
                        Some(MountSharing::Private) => CacheSharing::Private,
                        Some(MountSharing::Locked) => CacheSharing::Locked,
                        _ => CacheSharing::Shared,
                    };
                    MountSpec::cache(&target, &id, sharing).from(&st)
                }
                _ => MountSpec::bind(&target, &st),
            };
            if m.read_only {
                spec = spec.readonly();
            } else if m.kind == MountType::Bind {
                spec = spec.no_output();
            }
            if !selector.is_empty() && m.kind != MountType::Tmpfs {
                spec = spec.selector(&selector);
            }
            mounts.push(spec);
            if m_from.is_empty() {
                self.all.states[i].ctx_paths.insert(join(&["/", &m_source]));
            }
        }

        if !r.devices.is_empty() && !self.opts.labs {
            return Err(Error::msg(
                "device feature is only supported in Dockerfile frontend 1.14.0-labs or later",
            ));
        }

        // Progress name: the command with variables expanded (quotes kept, unset ones kept).
        let mut shlex = self.lex;
        shlex.raw_quotes = true;
        shlex.skip_unset_env = true;
        let overlay = Overlay {
            base: &env,
            extra: masked,
        };
        let processed = shlex
            .process_word(&customname, &overlay)
            .unwrap_or(customname.clone());
        let multi = self.opts.multi_platform;
        let d = &mut self.all.states[i];
        let name = prefix_command(d, &uppercase_cmd(&processed), multi, &d_platform, env_list);
        let mut md = Metadata::new()
            .description("com.docker.dockerfile.v1.command", code.to_string())
            .custom_name(name);
        if d.ignore_cache {
            md = md.ignore_cache(true);
        }
        let prev_net = self.opts.network;
        let mut base = d.state.clone().platform(d_platform.clone());
        match r.network {
            Some(NetworkMode::None) => base = base.network(NetMode::None),
            Some(NetworkMode::Host) => base = base.network(NetMode::Host),
            _ => {}
        }
        if r.security == Some(RunSecurity::Insecure) {
            base = base.security(SecurityMode::Insecure);
        }
        for (h, ip) in &self.opts.extra_hosts {
            base = base.add_extra_host(h.clone(), ip.clone());
        }
        for (n, s, h) in &self.opts.ulimits {
            base = base.add_ulimit(n.clone(), *s, *h);
        }
        let mut exec = base.run(args.clone()).metadata(md);
        if let Some(p) = &self.proxy {
            exec = exec.proxy_env(p.clone());
        }
        for m in extra_mounts.into_iter().chain(mounts) {
            exec = exec.mount(m);
        }
        for (id, name, optional) in secret_envs {
            exec = exec.secret_env(&id, &name, optional);
        }
        if self.opts.shm_size > 0 {
            exec = exec.mount(MountSpec::tmpfs("/dev/shm", self.opts.shm_size));
        }
        if !self.opts.cgroup_parent.is_empty() {
            exec = exec.cgroup_parent(&self.opts.cgroup_parent);
        }
        for dev in &r.devices {
            let (name, required) = match dev.split_once(',') {
                Some((n, rest)) => (n.to_string(), rest.contains("required")),
                None => (dev.clone(), false),
            };
            exec = exec.cdi_device(&name, !required);
        }
        let root = exec.build().root();
        let env_for_history = StateEnv(env_list);
        let hist = format!(
            "RUN {}",
            run_command_string(&args, &d.build_args, &env_for_history)
        );
        d.state = root.network(prev_net).security(SecurityMode::Sandbox);
        d.image.commit(&hist, true, true, self.epoch);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch_copy(
        &mut self,
        i: usize,
        cmd: &Command,
        c: &CopyCommand,
        is_add: bool,
        source: &State,
        code: &str,
        env_list: &[(String, String)],
        ignore: Option<Matcher>,
    ) -> Result<(), Error> {
        let env = StateEnv(env_list);
        let d_platform = self.all.states[i]
            .platform
            .clone()
            .unwrap_or_else(Platform::linux_amd64);
        let cwd = self.all.states[i].state.get_dir().to_string();
        let dest = dest_path(&cwd, &c.dest);
        let chown = c.chown.as_deref().unwrap_or_default();
        let chmod = c.chmod.as_deref().unwrap_or_default();
        let checksum = c.checksum.as_deref().unwrap_or_default();
        let owner = (!chown.is_empty()).then(|| llb::with_user(chown));
        let (mode, mode_str) = if chmod.is_empty() {
            (None, String::new())
        } else {
            match parse_chmod(chmod).map_err(Error::msg)? {
                Chmod::Octal(m) => (Some(m), String::new()),
                Chmod::Symbolic(s) => (None, s),
            }
        };
        if !checksum.is_empty() {
            if !is_add {
                return Err(Error::msg("checksum can't be specified for COPY"));
            }
            if c.sources.len() != 1 {
                return Err(Error::msg(
                    "checksum can't be specified for multiple sources",
                ));
            }
            let s = &c.sources[0];
            if !util::is_http_source(s) && util::parse_git_ref(s).is_none() {
                return Err(Error::msg("checksum requires HTTP(S) or Git sources"));
            }
        }
        let mut commit = String::from(if is_add { "ADD" } else { "COPY" });
        if c.parents {
            commit.push_str(" --parents");
        }
        if !chown.is_empty() {
            commit.push_str(&format!(" --chown={}", chown));
        }
        if !chmod.is_empty() {
            commit.push_str(&format!(" --chmod={}", chmod));
        }
        let processed = self
            .lex
            .process_word(code, &env)
            .unwrap_or_else(|_| code.to_string());
        let name = uppercase_cmd(&processed);
        let multi = self.opts.multi_platform;
        let pg_name = prefix_command(&mut self.all.states[i], &name, multi, &d_platform, env_list);

        let base_opts = |follow: bool| CopyOptions {
            owner: owner.clone(),
            mode,
            mode_str: mode_str.clone(),
            exclude_patterns: c.exclude.clone(),
            follow_symlink: follow,
            dir_copy_contents: follow,
            allow_wildcard: follow,
            allow_empty_wildcard: follow,
            ..CopyOptions::default()
        };
        let mut action: Option<FileAction> = None;
        let push = |action: &mut Option<FileAction>, from: &State, src: &str, opts: CopyOptions| {
            *action = Some(match action.take() {
                None => FileAction::copy(from, src, &dest, opts),
                Some(a) => a.then_copy(from, src, &dest, opts),
            });
        };
        for src in &c.sources {
            commit.push_str(&format!(" {src}"));
            if let Some(git) = util::parse_git_ref(src) {
                if !is_add {
                    return Err(Error::msg("source can't be a git ref for COPY"));
                }
                let mut reference = git.reference.clone();
                if !git.subdir.is_empty() {
                    reference = format!("{reference}:{}", git.subdir);
                }
                let mut s = Source::git(&git.remote, &reference);
                let keep = c.keep_git_dir.or(git.keep_git_dir);
                if keep == Some(true) {
                    s = s.attr("git.keepgitdir", "true");
                }
                let checksum = if checksum.is_empty() {
                    git.checksum.clone()
                } else {
                    checksum.to_string()
                };
                if !checksum.is_empty() {
                    s = s.attr("git.checksum", checksum);
                }
                let st = s
                    .metadata(Metadata::new().custom_name(pg_name.clone()))
                    .state();
                let opts = CopyOptions {
                    mode,
                    mode_str: mode_str.clone(),
                    ..copy_plain(&owner, &c.exclude)
                };
                push(&mut action, &st, "/", opts);
            } else if util::is_http_source(src) {
                if !is_add {
                    return Err(Error::msg("source can't be a URL for COPY"));
                }
                let path = src.split_once("://").map(|(_, r)| r).unwrap_or(src);
                let path = path.split(['?', '#']).next().unwrap_or_default();
                let url_path = path.find('/').map(|i| &path[i..]).unwrap_or("");
                let base = util::clean(if url_path.is_empty() { "." } else { url_path });
                let base = base.rsplit('/').next().unwrap_or_default();
                let f = if base.is_empty() || base == "." || base == "/" {
                    "__unnamed__"
                } else {
                    base
                };
                let mut s = Source::http(src).attr("http.filename", f);
                if !checksum.is_empty() {
                    s = s.attr("http.checksum", checksum);
                }
                let st = s
                    .metadata(
                        Metadata::new()
                            .custom_name(pg_name.clone())
                            .description("com.docker.dockerfile.v1.command", ""),
                    )
                    .state();
                let opts = CopyOptions {
                    mode,
                    mode_str: mode_str.clone(),
                    attempt_unpack_docker_compatibility: c.unpack.unwrap_or(false),
                    ..copy_plain(&owner, &c.exclude)
                };
                push(&mut action, &st, f, opts);
            } else {
                if let Some(m) = ignore.as_ref().filter(|m| !m.has_exclusions()) {
                    self.copy_ignored_file(cmd, m, src, is_add);
                }
                let mut src_path = src.clone();
                let mut include = Vec::new();
                let mut required = Vec::new();
                if c.parents {
                    let (parent, pattern) = match src.split_once("/./") {
                        Some((p, pat)) => (p.to_string(), pat.to_string()),
                        None => ("/".to_string(), src.clone()),
                    };
                    src_path = parent;
                    let pattern = normalize_path("/", &pattern, false);
                    include = vec![pattern.trim_start_matches('/').to_string()];
                    if !has_wildcards(&src_path) && !has_wildcards(&pattern) {
                        required = vec![normalize_path("/", &join(&[&src_path, &pattern]), false)];
                    }
                }
                let src_path = normalize_path("/", &src_path, false);
                let mut opts = base_opts(true);
                opts.include_patterns = include;
                opts.required_paths = required;
                opts.attempt_unpack_docker_compatibility = c.unpack.unwrap_or(is_add);
                push(&mut action, source, &src_path, opts);
            }
        }
        for h in &c.heredocs {
            commit.push_str(&format!(" <<{}", h.name));
            let st = llb::scratch().file_with(
                FileAction::mkfile(&h.name, 0o644, h.content.as_bytes()),
                Metadata::new().custom_name("[internal] preparing inline document"),
            );
            let opts = CopyOptions {
                mode,
                mode_str: mode_str.clone(),
                ..copy_plain(&owner, &c.exclude)
            };
            push(&mut action, &st, &h.name, opts);
        }
        commit.push_str(&format!(" {}", c.dest));
        let Some(action) = action else {
            return Err(Error::msg("COPY requires at least one source"));
        };
        let d = &mut self.all.states[i];
        let mut md = Metadata::new().custom_name(pg_name.clone());
        if d.ignore_cache {
            md = md.ignore_cache(true);
        }
        if c.link && chmod.is_empty() {
            self.pg_counter += 1;
            let pg_id = uniq_id(self.pg_counter ^ ((i as u64) << 32));
            d.cmd_index -= 1;
            let pg_name = prefix_command(d, &name, multi, &d_platform, env_list);
            let copy_md = md.clone().progress_group(&pg_id, &pg_name, true);
            d.cmd_index -= 1;
            let link_name =
                prefix_command(d, &format!("LINK {name}"), multi, &d_platform, env_list);
            let merge_md = md
                .progress_group(&pg_id, &pg_name, false)
                .custom_name(link_name);
            let layer = llb::scratch()
                .platform(d_platform.clone())
                .dir(&cwd)
                .file_with(action, copy_md);
            let merged = llb::merge(&[d.state.clone(), layer], merge_md);
            d.state = merged;
        } else {
            d.state = d.state.file_with(action, md);
        }
        d.image.commit(&commit, true, true, self.epoch);
        Ok(())
    }
}

fn copy_plain(owner: &Option<llb::ChownOpt>, exclude: &[String]) -> CopyOptions {
    CopyOptions {
        owner: owner.clone(),
        mode: None,
        mode_str: String::new(),
        follow_symlink: false,
        dir_copy_contents: false,
        attempt_unpack_docker_compatibility: false,
        create_dest_path: true,
        allow_wildcard: false,
        allow_empty_wildcard: false,
        timestamp: None,
        include_patterns: Vec::new(),
        exclude_patterns: exclude.to_vec(),
        always_replace_existing_dest_paths: false,
        required_paths: Vec::new(),
    }
}

fn has_wildcards(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// The config form of CMD/ENTRYPOINT: exec form as is, shell form through the shell.
fn command_args(img: &Image, c: &ShellOrExec) -> Vec<String> {
    match c {
        ShellOrExec::Shell(s) => with_shell(img, std::slice::from_ref(s)),
        ShellOrExec::Exec(a) => a.clone(),
    }
}

fn with_shell(img: &Image, args: &[String]) -> Vec<String> {
    let mut shell = if img.config.shell.is_empty() {
        if img.os == "windows" {
            vec!["cmd".into(), "/S".into(), "/C".into()]
        } else {
            vec!["/bin/sh".into(), "-c".into()]
        }
    } else {
        img.config.shell.clone()
    };
    shell.push(args.join(" "));
    shell
}

fn run_command_string(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &dyn Env,
) -> String {
    let mut tmp: Vec<String> = Vec::new();
    let mut idx: HashMap<String, usize> = HashMap::new();
    for (k, v) in build_args {
        let v = env
            .lookup(k)
            .map(str::to_string)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        match idx.get(k) {
            Some(&i) => tmp[i] = format!("{k}={v}"),
            None => {
                idx.insert(k.clone(), tmp.len());
                tmp.push(format!("{k}={v}"));
            }
        }
    }
    let mut parts = Vec::new();
    if !tmp.is_empty() {
        parts.push(format!("|{}", tmp.len()));
        parts.extend(tmp);
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

/// BuildKit's `prefixCommand`: `[stage i/n] ` with the index padded to the width of n;
/// with several platforms, the platform (and a `->arch` cross-compilation hint) first.
fn prefix_command(
    d: &mut DState,
    s: &str,
    multi_platform: bool,
    platform: &Platform,
    env: &[(String, String)],
) -> String {
    if d.cmd_total == 0 {
        return s.to_string();
    }
    let mut out = String::from("[");
    if multi_platform {
        out.push_str(&platform.id());
        out.push_str(&format_target_platform(platform, env));
        out.push(' ');
    }
    if !d.stage_name.is_empty() {
        out.push_str(&d.stage_name);
        out.push(' ');
    }
    d.cmd_index += 1;
    let width = d.cmd_total.to_string().len();
    out.push_str(&format!("{:>width$}/{}] ", d.cmd_index, d.cmd_total));
    if d.cmd_is_onbuild {
        out.push_str("ONBUILD ");
    }
    out + s
}

/// BuildKit's `formatTargetPlatform`: `->arch` (or `->os/arch`) when the stage's
/// `TARGET*` variables name another platform than the one it runs on.
fn format_target_platform(base: &Platform, env: &[(String, String)]) -> String {
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let target = match get("TARGETPLATFORM").and_then(|v| Platform::parse(v).ok()) {
        Some(p) => p,
        None => {
            let (os, arch, variant) = (get("TARGETOS"), get("TARGETARCH"), get("TARGETVARIANT"));
            if os.is_none() && arch.is_none() && variant.is_none() {
                return String::new();
            }
            let os = os.filter(|s| !s.is_empty()).unwrap_or(&base.os);
            let arch = arch.filter(|s| !s.is_empty()).unwrap_or(&base.architecture);
            let id = match variant.filter(|v| !v.is_empty()) {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            };
            match Platform::parse(&id) {
                Ok(p) => p,
                Err(_) => return String::new(),
            }
        }
    };
    if target.os == base.os && target.architecture != base.architecture {
        let mut s = format!("->{}", target.architecture);
        if !target.variant.is_empty() {
            s.push('/');
            s.push_str(&target.variant);
        }
        s
    } else if target.os != base.os {
        format!("->{}", target.id())
    } else {
        String::new()
    }
}

fn dispatch_workdir(
    d: &mut DState,
    path: &str,
    commit: bool,
    code: Option<&str>,
    lex: &Lexer,
    multi_platform: bool,
    epoch: Option<i64>,
) -> Result<(), Error> {
    let wd = util::normalize_workdir(&d.image.config.working_dir, path);
    d.image.config.working_dir = wd.clone();
    d.state = d.state.clone().dir(&wd);
    if commit {
        let mut with_layer = false;
        if wd != "/" {
            let user = d.image.config.user.clone();
            let owner = (!user.is_empty()).then(|| llb::with_user(&user));
            let env_list = d.state.env_list().to_vec();
            let code = code.unwrap_or_default();
            let processed = lex
                .process_word(code, &StateEnv(&env_list))
                .unwrap_or_else(|_| code.to_string());
            let platform = d.platform.clone().unwrap_or_else(Platform::linux_amd64);
            let name = prefix_command(
                d,
                &uppercase_cmd(&processed),
                multi_platform,
                &platform,
                &env_list,
            );
            let mut md = Metadata::new().custom_name(name);
            if d.ignore_cache {
                md = md.ignore_cache(true);
            }
            let mut mkdir = FileAction::mkdir(&wd, 0o755, true, owner);
            if let Some(secs) = epoch {
                mkdir = mkdir.created_at(secs.saturating_mul(1_000_000_000));
            }
            d.state = d.state.file_with(mkdir, md);
            with_layer = true;
        }
        d.image
            .commit(&format!("WORKDIR {wd}"), with_layer, false, epoch);
    }
    Ok(())
}

fn proxy_env(args: &BTreeMap<String, String>) -> Option<llb::ProxyEnv> {
    let mut pe = llb::ProxyEnv {
        http_proxy: String::new(),
        https_proxy: String::new(),
        ftp_proxy: String::new(),
        no_proxy: String::new(),
        all_proxy: String::new(),
    };
    let mut set = false;
    for (k, v) in args {
        let slot = match k.to_lowercase().as_str() {
            "http_proxy" => &mut pe.http_proxy,
            "https_proxy" => &mut pe.https_proxy,
            "ftp_proxy" => &mut pe.ftp_proxy,
            "no_proxy" => &mut pe.no_proxy,
            "all_proxy" => &mut pe.all_proxy,
            _ => continue,
        };
        *slot = v.clone();
        set = true;
    }
    set.then_some(pe)
}

/// The instruction keyword as written (`cmd`, `CMD`): BuildKit's `Command.Name()`.
fn keyword_of(cmd: &Command) -> &str {
    cmd.original.split_whitespace().next().unwrap_or_default()
}

/// BuildKit's `system.IsAbs` for the stage's OS.
fn is_abs(p: &str, os: &str) -> bool {
    if os == "windows" {
        let b = p.as_bytes();
        p.starts_with(['/', '\\']) || (b.len() >= 3 && b[1] == b':' && matches!(b[2], b'/' | b'\\'))
    } else {
        p.starts_with('/')
    }
}

/// The platform an image config says it is for, normalised.
fn image_platform(img: &Image) -> Platform {
    let mut id = format!("{}/{}", img.os, img.architecture);
    if !img.variant.is_empty() {
        id = format!("{id}/{}", img.variant);
    }
    let mut p = Platform::parse(&id).unwrap_or_else(|_| Platform {
        architecture: img.architecture.clone(),
        os: img.os.clone(),
        variant: img.variant.clone(),
        os_version: String::new(),
        os_features: Vec::new(),
    });
    p.os_version = img.os_version.clone();
    p.os_features = img.os_features.clone();
    p
}
