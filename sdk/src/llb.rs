//! An LLB builder in the spirit of BuildKit's Go `llb` package.
//!
//! A [`State`] is an immutable value: a filesystem (the output of some op, or scratch) plus
//! the process settings that later execs inherit (env, working directory, user, platform,
//! network, security). Ops are built with [`Source`], [`State::run`], [`State::file`],
//! [`merge`] and [`diff`]; [`State::marshal`] flattens the graph into a [`Definition`] in
//! BuildKit's order (depth-first, post-order, duplicates removed), so the host's protobuf
//! encoding of it has the digests BuildKit's Go client would produce.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use crate::bindings::buildwit::frontend::llb::*;

/// A shared source file for source maps (a Dockerfile, a build spec).
#[derive(Debug)]
pub struct SourceFile {
    /// Name shown in errors.
    pub filename: String,
    /// The file's content.
    pub data: Vec<u8>,
    /// Linguist language name, such as `Dockerfile`.
    pub language: String,
}

/// Metadata of an op: progress name, description, caching, source locations.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    description: BTreeMap<String, String>,
    ignore_cache: bool,
    export_cache: Option<bool>,
    caps: BTreeMap<String, bool>,
    progress_group: Option<ProgressGroup>,
    locations: Vec<(Arc<SourceFile>, Vec<Range>)>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name shown in progress output (`llb.customname`).
    pub fn custom_name(self, name: impl Into<String>) -> Self {
        self.description("llb.customname", name)
    }

    /// Any description entry.
    pub fn description(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.description.insert(key.into(), value.into());
        self
    }

    /// Never take this op from cache.
    pub fn ignore_cache(mut self, ignore: bool) -> Self {
        self.ignore_cache = ignore;
        self
    }

    /// Whether to export this op's result to a remote cache.
    pub fn export_cache(mut self, export: bool) -> Self {
        self.export_cache = Some(export);
        self
    }

    /// Declare an LLB capability the op needs.
    pub fn cap(mut self, cap: &str) -> Self {
        self.caps.insert(cap.to_string(), true);
        self
    }

    /// Show the op in a progress group.
    pub fn progress_group(mut self, id: &str, name: &str, weak: bool) -> Self {
        self.progress_group = Some(ProgressGroup {
            id: id.into(),
            name: name.into(),
            weak,
        });
        self
    }

    /// Where in a source file the op comes from.
    pub fn location(mut self, file: &Arc<SourceFile>, ranges: Vec<Range>) -> Self {
        self.locations.push((file.clone(), ranges));
        self
    }

    fn with_caps(mut self, caps: &[&str]) -> Self {
        for c in caps {
            self.caps.insert((*c).to_string(), true);
        }
        self
    }

    fn to_wit(&self) -> OpMetadata {
        OpMetadata {
            ignore_cache: self.ignore_cache,
            description: self.description.clone().into_iter().collect(),
            export_cache: self.export_cache,
            caps: self.caps.clone().into_iter().collect(),
            progress_group: self.progress_group.clone(),
            linux_resources: None,
        }
    }
}

/// A whole-line range: lines are 1-based, as in BuildKit's Dockerfile frontend.
pub fn line_range(start_line: u32, end_line: u32) -> Range {
    Range {
        start: Position {
            line: start_line as i32,
            character: 0,
        },
        end: Position {
            line: end_line as i32,
            character: 0,
        },
    }
}

/// One vertex of the graph being built. Inputs are indexes into `inputs`.
#[derive(Debug)]
struct Vertex {
    kind: OpKind,
    inputs: Vec<Output>,
    platform: Option<Platform>,
    metadata: Metadata,
    /// The order the marshaller walks `inputs` in (BuildKit's `Vertex.Inputs()` order),
    /// when it differs from the order of the op's inputs.
    visit_order: Option<Vec<usize>>,
}

/// An output of a vertex: what a [`State`]'s filesystem is.
#[derive(Clone, Debug)]
struct Output {
    vertex: Arc<Vertex>,
    index: u32,
}

impl Output {
    fn same(&self, other: &Output) -> bool {
        Arc::ptr_eq(&self.vertex, &other.vertex) && self.index == other.index
    }
}

fn new_output(
    kind: OpKind,
    inputs: Vec<Output>,
    platform: Option<Platform>,
    metadata: Metadata,
) -> Output {
    Output {
        vertex: Arc::new(Vertex {
            kind,
            inputs,
            platform,
            metadata,
            visit_order: None,
        }),
        index: 0,
    }
}

/// A filesystem plus the process settings later steps inherit.
#[derive(Clone, Debug, Default)]
pub struct State {
    output: Option<Output>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<String>,
    platform: Option<Platform>,
    network: Option<NetMode>,
    security: Option<SecurityMode>,
    hostname: Option<String>,
    extra_hosts: Vec<HostIp>,
    ulimits: Vec<Ulimit>,
}

/// An empty filesystem.
pub fn scratch() -> State {
    State::default()
}

impl State {
    /// Whether this is an empty filesystem.
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// Set an environment variable. Setting a variable again moves it to the end, as
    /// BuildKit's env list does.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// The value of an environment variable.
    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All environment variables in order.
    pub fn env_list(&self) -> &[(String, String)] {
        &self.env
    }

    /// Set the working directory; a relative path is joined to the current one.
    pub fn dir(mut self, dir: &str) -> Self {
        let joined = if dir.starts_with('/') {
            dir.to_string()
        } else {
            format!("{}/{}", self.get_dir(), dir)
        };
        self.cwd = Some(clean_path(&joined));
        self
    }

    /// The working directory (`/` when unset).
    pub fn get_dir(&self) -> &str {
        self.cwd.as_deref().unwrap_or("/")
    }

    /// The user later execs run as.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The platform of later execs and image sources.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// The platform, if set.
    pub fn get_platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    /// Network mode of later execs.
    pub fn network(mut self, mode: NetMode) -> Self {
        self.network = Some(mode);
        self
    }

    /// Security mode of later execs.
    pub fn security(mut self, mode: SecurityMode) -> Self {
        self.security = Some(mode);
        self
    }

    /// Hostname of later execs.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Add an `/etc/hosts` entry for later execs.
    pub fn add_extra_host(mut self, host: impl Into<String>, ip: impl Into<String>) -> Self {
        self.extra_hosts.push(HostIp {
            host: host.into(),
            ip: ip.into(),
        });
        self
    }

    /// Add an rlimit for later execs.
    pub fn add_ulimit(mut self, name: impl Into<String>, soft: i64, hard: i64) -> Self {
        self.ulimits.push(Ulimit {
            name: name.into(),
            soft,
            hard,
        });
        self
    }

    /// Same settings, another filesystem.
    fn with_output(&self, output: Option<Output>) -> State {
        State {
            output,
            ..self.clone()
        }
    }

    /// Run a process on this filesystem.
    pub fn run<I, S>(&self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Exec {
            base: self.clone(),
            args: args.into_iter().map(Into::into).collect(),
            mounts: Vec::new(),
            secret_env: Vec::new(),
            // BuildKit's Go client always sets it.
            remove_mount_stubs_recursive: true,
            valid_exit_codes: Vec::new(),
            proxy_env: None,
            cgroup_parent: String::new(),
            cdi_devices: Vec::new(),
            metadata: Metadata::new(),
        }
    }

    /// Run `sh -c CMD` on this filesystem.
    pub fn run_shell(&self, command: &str) -> Exec {
        self.run(["/bin/sh", "-c", command])
    }

    /// Apply file actions to this filesystem.
    pub fn file(&self, action: FileAction) -> State {
        self.file_with(action, Metadata::new())
    }

    /// Apply file actions, with metadata.
    pub fn file_with(&self, action: FileAction, metadata: Metadata) -> State {
        let mut inputs: Vec<Output> = Vec::new();
        let mut add_input = |o: &Output| -> i64 {
            match inputs.iter().position(|i| i.same(o)) {
                Some(i) => i as i64,
                None => {
                    inputs.push(o.clone());
                    (inputs.len() - 1) as i64
                }
            }
        };
        let base = self.output.as_ref().map(&mut add_input).unwrap_or(-1);
        let secondaries: Vec<i64> = action
            .steps
            .iter()
            .map(|s| match s {
                Step::Copy { from, .. } => from.output.as_ref().map(&mut add_input).unwrap_or(-1),
                _ => -1,
            })
            .collect();
        let n_inputs = inputs.len() as i64;
        let mut caps = vec!["file.base"];
        let last = action.steps.len().saturating_sub(1);
        let actions = action
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| {
                let kind = step.into_wit(self.get_dir(), &mut caps);
                // BuildKit's Go client computes the per-action caps before it has
                // collected the actions, so its file ops only ever declare `file.base`.
                caps.truncate(1);
                let input = if i == 0 {
                    base
                } else {
                    n_inputs + i as i64 - 1
                };
                // A user named in an owner is looked up in the action's input, as in BuildKit.
                let kind = with_owner_input(kind, input);
                FileActionSpec {
                    input,
                    secondary_input: secondaries[i],
                    output: if i == last { 0 } else { -1 },
                    action: kind,
                }
            })
            .collect();
        // BuildKit's FileOp walks its inputs from the last action back: the base, then
        // the copy sources in reverse.
        let mut visit_order: Vec<usize> = Vec::new();
        for sec in std::iter::once(base).chain(secondaries.iter().rev().copied()) {
            if sec >= 0 && !visit_order.contains(&(sec as usize)) {
                visit_order.push(sec as usize);
            }
        }
        let kind = OpKind::File(FileOp { actions });
        let mut output = new_output(kind, inputs, None, metadata.with_caps(&caps));
        if let Some(v) = Arc::get_mut(&mut output.vertex) {
            v.visit_order = Some(visit_order);
        }
        self.with_output(Some(output))
    }

    /// Flatten the graph into a definition whose result is this state's filesystem.
    pub fn marshal(&self) -> Definition {
        let mut m = Marshaller::default();
        let result = self.output.as_ref().map(|o| OpOutput {
            op: m.visit(&o.vertex),
            output: o.index,
        });
        m.finish(result)
    }
}

type FileActionSpec = crate::bindings::buildwit::frontend::llb::FileAction;

/// A source op: an image, a local directory, a git repository, an HTTP file.
#[derive(Clone, Debug)]
pub struct Source {
    identifier: String,
    attrs: BTreeMap<String, String>,
    platform: Option<Platform>,
    metadata: Metadata,
}

impl Source {
    /// `docker-image://<normalised ref>`. Fails on an invalid reference.
    pub fn image(reference: &str) -> Result<Self, String> {
        let r = crate::reference::ImageRef::parse(reference)?;
        Ok(Self::raw(format!("docker-image://{}", r.normalized())))
    }

    /// `local://<name>`: a directory the client sends (`context`, `dockerfile`).
    pub fn local(name: &str) -> Self {
        Self::raw(format!("local://{name}"))
    }

    /// `git://<host>/<path>[#ref[:subdir]]` from a remote URL; the full URL goes in
    /// `git.fullurl` and the default auth secret names are set, as BuildKit's `llb.Git`
    /// does. An ssh remote (`git@host:path`, `ssh://…`) also mounts the default ssh agent.
    pub fn git(remote: &str, reference: &str) -> Self {
        let is_ssh =
            remote.starts_with("ssh://") || (!remote.contains("://") && remote.contains('@'));
        let stripped = remote.split_once("://").map(|(_, r)| r).unwrap_or(remote);
        let stripped = match stripped.split_once('@') {
            Some((user, rest)) if !user.contains('/') => rest,
            _ => stripped,
        }
        .replacen(':', "/", usize::from(!remote.contains("://")));
        let mut id = format!("git://{stripped}");
        if !reference.is_empty() {
            id.push('#');
            id.push_str(reference);
        }
        let mut source = Self::raw(id)
            .attr("git.fullurl", remote)
            .attr("git.authheadersecret", "GIT_AUTH_HEADER")
            .attr("git.authtokensecret", "GIT_AUTH_TOKEN");
        if is_ssh {
            source = source
                .attr("git.mountsshsock", "default")
                .cap("source.git.knownsshhosts");
        }
        source
    }

    /// An `http://` or `https://` URL.
    pub fn http(url: &str) -> Self {
        Self::raw(url.to_string())
    }

    /// Any identifier.
    pub fn raw(identifier: String) -> Self {
        Source {
            identifier,
            attrs: BTreeMap::new(),
            platform: None,
            metadata: Metadata::new(),
        }
    }

    /// A source attribute (`local.includepattern`, `http.checksum`, ...).
    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Self {
        self.attrs.insert(key.to_string(), value.into());
        self
    }

    /// Declare an extra LLB capability the source needs.
    pub fn cap(mut self, cap: &str) -> Self {
        self.metadata = self.metadata.cap(cap);
        self
    }

    /// The platform (image and oci-layout sources).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Metadata of the op (caps declared with [`Source::cap`] are kept).
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        let caps = std::mem::take(&mut self.metadata.caps);
        self.metadata = metadata;
        self.metadata.caps.extend(caps);
        self
    }

    /// The state whose filesystem is this source.
    pub fn state(self) -> State {
        let scheme = self.identifier.split("://").next().unwrap_or_default();
        let mut caps: Vec<String> = Vec::new();
        let base = match scheme {
            "docker-image" => "source.image",
            "local" => "source.local",
            "git" => "source.git",
            "http" | "https" => "source.http",
            "oci-layout" => "source.ocilayout",
            _ => "",
        };
        if !base.is_empty() {
            caps.push(base.into());
        }
        for (key, value) in &self.attrs {
            if let Some(cap) = attr_cap(key, value) {
                caps.push(cap.to_string());
            }
        }
        let mut metadata = self.metadata;
        for c in &caps {
            metadata = metadata.cap(c);
        }
        let platform = self.platform.clone();
        let state = State {
            platform: self.platform.clone(),
            ..State::default()
        };
        let kind = OpKind::Source(SourceOp {
            identifier: self.identifier,
            attrs: self.attrs.into_iter().collect(),
        });
        state.with_output(Some(new_output(kind, Vec::new(), platform, metadata)))
    }
}

/// The LLB capability a source attribute needs (BuildKit's `solver/pb/caps.go` names), as
/// BuildKit's Go client adds it.
fn attr_cap(key: &str, value: &str) -> Option<&'static str> {
    Some(match key {
        // Only the force-pull mode needs the cap, not `local` or `default`.
        "image.resolvemode" if value == "pull" => "source.image.resolvemode",
        "image.layerlimit" => "source.image.layerlimit",
        "image.checksum" => "source.image.checksum",
        "local.unique" => "source.local.unique",
        "local.session" => "source.local.sessionid",
        "local.includepattern" => "source.local.includepatterns",
        "local.followpaths" => "source.local.followpaths",
        "local.excludepatterns" => "source.local.excludepatterns",
        "local.sharedkeyhint" => "source.local.sharedkeyhint",
        // `local.differ` needs `source.local.differ` only when the caller requires the
        // differ (`llb.Differ(t, true)`); declare it then with [`Source::cap`].
        "local.metadatatransfer" => "source.local.metadatatransfer",
        "git.keepgitdir" => "source.git.keepgitdir",
        "git.fullurl" => "source.git.fullurl",
        // BuildKit adds `source.git.httpauth` only for explicitly chosen secret names.
        "git.knownsshhosts" => "source.git.knownsshhosts",
        "git.mountsshsock" => "source.git.mountsshsock",
        "git.checksum" => "source.git.checksum",
        "git.skipsubmodules" => "source.git.skipsubmodules",
        "git.mtime" => "source.git.mtime",
        "git.fetchbycommit" => "source.git.fetchbycommit",
        "git.bundle" => "source.git.bundle",
        "git.checkoutbundle" => "source.git.checkoutbundle",
        "http.checksum" => "source.http.checksum",
        "http.perm" => "source.http.perm",
        // BuildKit's cap name carries this typo on purpose.
        "http.uid" | "http.gid" => "soruce.http.uidgid",
        "http.authheadersecret" => "source.http.auth",
        k if k.starts_with("http.header.") => "source.http.header",
        "http.sig.pubkey" | "http.sig.signature" => "source.http.signatureverify",
        _ => return None,
    })
}

/// A bind, cache, tmpfs, secret or ssh mount of an [`Exec`].
#[derive(Clone, Debug)]
pub struct MountSpec {
    dest: String,
    source: Option<Output>,
    selector: String,
    readonly: bool,
    no_output: bool,
    kind: MountKind,
}

#[derive(Clone, Debug)]
enum MountKind {
    Bind,
    Cache { id: String, sharing: CacheSharing },
    Tmpfs { size: i64 },
    Secret(SecretOpt),
    Ssh(SecretOpt),
}

impl MountSpec {
    /// Bind `source` at `dest` (writable; its changes are an output of the exec).
    pub fn bind(dest: &str, source: &State) -> Self {
        MountSpec {
            dest: dest.into(),
            source: source.output.clone(),
            selector: String::new(),
            readonly: false,
            no_output: false,
            kind: MountKind::Bind,
        }
    }

    /// A persistent cache directory shared between builds.
    pub fn cache(dest: &str, id: &str, sharing: CacheSharing) -> Self {
        MountSpec {
            dest: dest.into(),
            source: None,
            selector: String::new(),
            readonly: false,
            no_output: false,
            kind: MountKind::Cache {
                id: id.into(),
                sharing,
            },
        }
    }

    /// A tmpfs; `size` in bytes, 0 for the default.
    pub fn tmpfs(dest: &str, size: i64) -> Self {
        MountSpec {
            dest: dest.into(),
            source: None,
            selector: String::new(),
            readonly: false,
            no_output: false,
            kind: MountKind::Tmpfs { size },
        }
    }

    /// A secret file.
    pub fn secret(dest: &str, opt: SecretOpt) -> Self {
        MountSpec {
            dest: dest.into(),
            source: None,
            selector: String::new(),
            readonly: true,
            no_output: false,
            kind: MountKind::Secret(opt),
        }
    }

    /// An ssh agent socket. An empty `dest` means BuildKit's default,
    /// `/run/buildkit/ssh_agent.<n>`.
    pub fn ssh(dest: &str, opt: SecretOpt) -> Self {
        MountSpec {
            dest: dest.into(),
            source: None,
            selector: String::new(),
            readonly: true,
            no_output: false,
            kind: MountKind::Ssh(opt),
        }
    }

    /// Read-only (binds produce no output then).
    pub fn readonly(mut self) -> Self {
        self.readonly = true;
        self
    }

    /// A writable bind whose changes are discarded (no output).
    pub fn no_output(mut self) -> Self {
        self.no_output = true;
        self
    }

    /// Mount only this sub-path of the source.
    pub fn selector(mut self, path: &str) -> Self {
        self.selector = path.into();
        self
    }

    /// Seed a cache mount from a state.
    pub fn from(mut self, source: &State) -> Self {
        self.source = source.output.clone();
        self
    }
}

/// An exec op being built. Finish with [`Exec::build`].
#[derive(Clone, Debug)]
pub struct Exec {
    base: State,
    args: Vec<String>,
    mounts: Vec<MountSpec>,
    secret_env: Vec<SecretEnv>,
    remove_mount_stubs_recursive: bool,
    valid_exit_codes: Vec<i32>,
    proxy_env: Option<ProxyEnv>,
    cgroup_parent: String,
    cdi_devices: Vec<CdiDevice>,
    metadata: Metadata,
}

impl Exec {
    /// Add a mount.
    pub fn mount(mut self, mount: MountSpec) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Expose a secret as an environment variable.
    pub fn secret_env(mut self, id: &str, name: &str, optional: bool) -> Self {
        self.secret_env.push(SecretEnv {
            id: id.into(),
            name: name.into(),
            optional,
        });
        self
    }

    /// Remove empty mount-point stubs recursively after the run.
    pub fn remove_mount_stubs_recursive(mut self, yes: bool) -> Self {
        self.remove_mount_stubs_recursive = yes;
        self
    }

    /// Exit codes that count as success.
    pub fn valid_exit_codes(mut self, codes: Vec<i32>) -> Self {
        self.valid_exit_codes = codes;
        self
    }

    /// Proxy variables (not part of the cache key).
    pub fn proxy_env(mut self, proxy: ProxyEnv) -> Self {
        self.proxy_env = Some(proxy);
        self
    }

    /// Cgroup parent of the process.
    pub fn cgroup_parent(mut self, parent: &str) -> Self {
        self.cgroup_parent = parent.into();
        self
    }

    /// Request a CDI device.
    pub fn cdi_device(mut self, name: &str, optional: bool) -> Self {
        self.cdi_devices.push(CdiDevice {
            name: name.into(),
            optional,
        });
        self
    }

    /// Metadata of the op.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Finish the op. Mounts are ordered by destination and outputs numbered as BuildKit's
    /// Go client does: the root first, read-only, cache and tmpfs mounts produce none,
    /// secret and ssh mounts come last.
    pub fn build(self) -> ExecState {
        let Exec {
            base,
            args,
            mut mounts,
            ..
        } = self;
        // Default ssh socket paths, numbered in the order the ssh mounts were added.
        let mut ssh_index = 0;
        let mut first_ssh: Option<String> = None;
        for m in mounts.iter_mut() {
            if matches!(m.kind, MountKind::Ssh(_)) {
                if m.dest.is_empty() {
                    m.dest = format!("/run/buildkit/ssh_agent.{ssh_index}");
                }
                first_ssh.get_or_insert_with(|| m.dest.clone());
                ssh_index += 1;
            }
        }
        mounts.push(MountSpec {
            dest: "/".into(),
            source: base.output.clone(),
            selector: String::new(),
            readonly: false,
            no_output: false,
            kind: MountKind::Bind,
        });
        // Secrets and ssh sockets keep the order they were added in; the rest is sorted.
        let (mut ordinary, special): (Vec<MountSpec>, Vec<MountSpec>) = mounts
            .into_iter()
            .partition(|m| !matches!(m.kind, MountKind::Secret(_) | MountKind::Ssh(_)));
        ordinary.sort_by(|a, b| a.dest.cmp(&b.dest));
        let (secrets, sshs): (Vec<MountSpec>, Vec<MountSpec>) = special
            .into_iter()
            .partition(|m| matches!(m.kind, MountKind::Secret(_)));

        let mut inputs: Vec<Output> = Vec::new();
        let mut wit_mounts = Vec::new();
        let mut outputs = Vec::new();
        let mut caps = vec!["exec.meta.base", "exec.meta.setsdefaultpath"];
        for m in ordinary.iter().chain(&secrets).chain(&sshs) {
            let input = match &m.source {
                Some(o) => match inputs.iter().position(|i| i.same(o)) {
                    Some(i) => i as i64,
                    None => {
                        inputs.push(o.clone());
                        inputs.len() as i64 - 1
                    }
                },
                None => -1,
            };
            let (mount_type, output, cache_opt, tmpfs_size, secret_opt, ssh_opt) = match &m.kind {
                MountKind::Bind => {
                    if m.source.is_some() {
                        caps.push("exec.mount.bind");
                    }
                    let out = if m.readonly || m.no_output {
                        -1
                    } else {
                        outputs.push(m.dest.clone());
                        outputs.len() as i64 - 1
                    };
                    (MountType::Bind, out, None, None, None, None)
                }
                MountKind::Cache { id, sharing } => {
                    caps.extend(["exec.mount.cache", "exec.mount.cache.sharing"]);
                    let opt = CacheOpt {
                        id: id.clone(),
                        sharing: *sharing,
                    };
                    (MountType::Cache, -1, Some(opt), None, None, None)
                }
                MountKind::Tmpfs { size } => {
                    caps.push("exec.mount.tmpfs");
                    if *size > 0 {
                        caps.push("exec.mount.tmpfs.size");
                    }
                    (MountType::Tmpfs, -1, None, Some(*size), None, None)
                }
                MountKind::Secret(opt) => {
                    (MountType::Secret, 0, None, None, Some(opt.clone()), None)
                }
                MountKind::Ssh(opt) => {
                    caps.push("exec.mount.ssh");
                    (MountType::Ssh, 0, None, None, None, Some(opt.clone()))
                }
            };
            if !m.selector.is_empty() {
                caps.push("exec.mount.selector");
            }
            wit_mounts.push(Mount {
                input,
                selector: m.selector.clone(),
                dest: m.dest.clone(),
                output,
                readonly: m.readonly && matches!(m.kind, MountKind::Bind | MountKind::Cache { .. }),
                mount_type,
                tmpfs_size,
                cache_opt,
                secret_opt,
                ssh_opt,
                result_id: String::new(),
                content_cache: MountContentCache::Default,
            });
        }
        let network = base.network.unwrap_or(NetMode::Unset);
        if network != NetMode::Unset {
            caps.push("exec.meta.network");
        }
        let security = base.security.unwrap_or(SecurityMode::Sandbox);
        if security != SecurityMode::Sandbox {
            caps.push("exec.meta.security");
        }
        if !base.ulimits.is_empty() {
            caps.push("exec.meta.ulimit");
        }
        if self.proxy_env.is_some() {
            caps.push("exec.meta.proxyenv");
        }
        // BuildKit's client needs no cap for a cgroup parent, a hostname or extra hosts.
        // Any secret, a file or only an environment variable, needs `exec.mount.secret`.
        if !secrets.is_empty() || !self.secret_env.is_empty() {
            caps.push("exec.mount.secret");
        }
        if !self.secret_env.is_empty() {
            caps.push("exec.secretenv");
        }
        if !self.valid_exit_codes.is_empty() {
            caps.push("exec.validexitcode");
        }
        if !self.cdi_devices.is_empty() {
            caps.push("exec.meta.cdi");
        }
        let mut env: Vec<String> = base.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(sock) = first_ssh
            && base.get_env("SSH_AUTH_SOCK").is_none()
        {
            env.push(format!("SSH_AUTH_SOCK={sock}"));
        }
        let meta = Meta {
            args,
            env,
            cwd: base.get_dir().to_string(),
            user: base.user.clone().unwrap_or_default(),
            proxy_env: self.proxy_env,
            extra_hosts: base.extra_hosts.clone(),
            hostname: base.hostname.clone().unwrap_or_default(),
            ulimits: base.ulimits.clone(),
            cgroup_parent: self.cgroup_parent,
            remove_mount_stubs_recursive: self.remove_mount_stubs_recursive,
            valid_exit_codes: self.valid_exit_codes,
        };
        let kind = OpKind::Exec(ExecOp {
            meta,
            mounts: wit_mounts,
            network,
            security,
            secret_env: self.secret_env,
            cdi_devices: self.cdi_devices,
        });
        let platform = Some(base.platform.clone().unwrap_or_else(Platform::linux_amd64));
        let vertex = new_output(kind, inputs, platform, self.metadata.with_caps(&caps)).vertex;
        ExecState {
            base,
            vertex,
            outputs,
        }
    }
}

/// A finished exec: its root filesystem and its writable mounts are states.
#[derive(Clone, Debug)]
pub struct ExecState {
    base: State,
    vertex: Arc<Vertex>,
    outputs: Vec<String>,
}

impl ExecState {
    /// The root filesystem after the run, with the base's settings.
    pub fn root(&self) -> State {
        self.get_mount("/")
            .expect("an exec always has a root output")
    }

    /// The writable mount at `dest` after the run.
    pub fn get_mount(&self, dest: &str) -> Option<State> {
        let index = self.outputs.iter().position(|d| d == dest)?;
        Some(self.base.with_output(Some(Output {
            vertex: self.vertex.clone(),
            index: index as u32,
        })))
    }
}

/// A chain of file actions; each applies to the result of the previous one.
#[derive(Clone, Debug, Default)]
pub struct FileAction {
    steps: Vec<Step>,
}

#[derive(Clone, Debug)]
enum Step {
    Copy {
        from: Box<State>,
        src: String,
        dest: String,
        opts: Box<CopyOptions>,
    },
    Mkdir(MkdirAction),
    Mkfile(MkfileAction),
    Rm(RmAction),
    Symlink(SymlinkAction),
}

/// Options of a copy, BuildKit's `CopyInfo`.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Owner of the copied files.
    pub owner: Option<ChownOpt>,
    /// Octal mode, or None.
    pub mode: Option<i32>,
    /// Symbolic mode such as `u+x`.
    pub mode_str: String,
    /// Follow a symlink given as source.
    pub follow_symlink: bool,
    /// Copy the contents of a source directory, not the directory.
    pub dir_copy_contents: bool,
    /// Unpack archives the way Docker's ADD does.
    pub attempt_unpack_docker_compatibility: bool,
    /// Create missing parents of the destination.
    pub create_dest_path: bool,
    /// Expand wildcards in the source.
    pub allow_wildcard: bool,
    /// A wildcard that matches nothing is not an error.
    pub allow_empty_wildcard: bool,
    /// Timestamp of created files (Unix ns).
    pub timestamp: Option<i64>,
    /// Only copy these patterns.
    pub include_patterns: Vec<String>,
    /// Skip these patterns.
    pub exclude_patterns: Vec<String>,
    /// Replace existing destination paths of another type.
    pub always_replace_existing_dest_paths: bool,
    /// Paths that must exist among the included ones.
    pub required_paths: Vec<String>,
}

impl Default for CopyOptions {
    /// The options of a Dockerfile `COPY`.
    fn default() -> Self {
        CopyOptions {
            owner: None,
            mode: None,
            mode_str: String::new(),
            follow_symlink: true,
            dir_copy_contents: true,
            attempt_unpack_docker_compatibility: false,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: true,
            timestamp: None,
            include_patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            always_replace_existing_dest_paths: false,
            required_paths: Vec::new(),
        }
    }
}

/// The owner `user[:group]` names, as BuildKit's `llb.WithUser` reads it.
///
/// Each part is an id when it is `root` (id 0) or a decimal 32-bit signed integer (a
/// negative one wraps, as Go's `uint32(int)` does); any other non-empty part is a name,
/// looked up at solve time in the `/etc/passwd` or `/etc/group` of the action's input. An
/// empty part is id 0, as BuildKit marshals a `UserOpt` without a name.
pub fn with_user(name: &str) -> ChownOpt {
    fn part(s: &str) -> UserOpt {
        if s == "root" {
            return UserOpt::ById(0);
        }
        match s.parse::<i32>() {
            Ok(id) => UserOpt::ById(id as u32),
            Err(_) if s.is_empty() => UserOpt::ById(0),
            Err(_) => UserOpt::ByName(NamedUser {
                name: s.to_string(),
                input: 0,
            }),
        }
    }
    match name.split_once(':') {
        Some((user, group)) => ChownOpt {
            user: Some(part(user)),
            group: Some(part(group)),
        },
        None => ChownOpt {
            user: Some(part(name)),
            group: None,
        },
    }
}

impl FileAction {
    /// Copy `src` of `from` to `dest`.
    pub fn copy(from: &State, src: &str, dest: &str, opts: CopyOptions) -> Self {
        FileAction::default().then_copy(from, src, dest, opts)
    }

    /// Create a directory.
    pub fn mkdir(path: &str, mode: i32, make_parents: bool, owner: Option<ChownOpt>) -> Self {
        FileAction::default().then_mkdir(path, mode, make_parents, owner)
    }

    /// Create a file.
    pub fn mkfile(path: &str, mode: i32, data: impl Into<Vec<u8>>) -> Self {
        FileAction::default().then_mkfile(path, mode, data)
    }

    /// Remove a path.
    pub fn rm(path: &str, allow_not_found: bool, allow_wildcard: bool) -> Self {
        FileAction::default().then_rm(path, allow_not_found, allow_wildcard)
    }

    /// Create a symlink at `newpath` pointing to `oldpath`.
    pub fn symlink(oldpath: &str, newpath: &str) -> Self {
        FileAction::default().then_symlink(oldpath, newpath)
    }

    /// Then copy.
    pub fn then_copy(mut self, from: &State, src: &str, dest: &str, opts: CopyOptions) -> Self {
        self.steps.push(Step::Copy {
            from: Box::new(from.clone()),
            src: src.into(),
            dest: dest.into(),
            opts: Box::new(opts),
        });
        self
    }

    /// Then create a directory.
    pub fn then_mkdir(
        mut self,
        path: &str,
        mode: i32,
        make_parents: bool,
        owner: Option<ChownOpt>,
    ) -> Self {
        self.steps.push(Step::Mkdir(MkdirAction {
            path: path.into(),
            mode,
            make_parents,
            owner,
            timestamp: -1,
        }));
        self
    }

    /// Then create a file.
    pub fn then_mkfile(mut self, path: &str, mode: i32, data: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Mkfile(MkfileAction {
            path: path.into(),
            mode,
            data: data.into(),
            owner: None,
            timestamp: -1,
        }));
        self
    }

    /// Then remove a path.
    pub fn then_rm(mut self, path: &str, allow_not_found: bool, allow_wildcard: bool) -> Self {
        self.steps.push(Step::Rm(RmAction {
            path: path.into(),
            allow_not_found,
            allow_wildcard,
        }));
        self
    }

    /// Then create a symlink.
    pub fn then_symlink(mut self, oldpath: &str, newpath: &str) -> Self {
        self.steps.push(Step::Symlink(SymlinkAction {
            oldpath: oldpath.into(),
            newpath: newpath.into(),
            owner: None,
            timestamp: -1,
        }));
        self
    }

    /// Give what the last step creates this modification time, in nanoseconds since 1970
    /// (BuildKit's `WithCreatedTime`; its Dockerfile frontend dates `WORKDIR` directories
    /// with `SOURCE_DATE_EPOCH` this way). A removal has no time and is left as it is.
    pub fn created_at(mut self, unix_nanos: i64) -> Self {
        match self.steps.last_mut() {
            Some(Step::Mkdir(a)) => a.timestamp = unix_nanos,
            Some(Step::Mkfile(a)) => a.timestamp = unix_nanos,
            Some(Step::Symlink(a)) => a.timestamp = unix_nanos,
            Some(Step::Copy { opts, .. }) => opts.timestamp = Some(unix_nanos),
            Some(Step::Rm(_)) | None => {}
        }
        self
    }
}

impl Step {
    /// The WIT action, with relative paths resolved against the working directories of the
    /// states involved, as BuildKit's Go client does.
    fn into_wit(self, cwd: &str, caps: &mut Vec<&'static str>) -> FileActionKind {
        match self {
            Step::Copy {
                from,
                src,
                dest,
                opts,
            } => {
                let opts = *opts;
                if !opts.include_patterns.is_empty() || !opts.exclude_patterns.is_empty() {
                    caps.push("file.copy.includeexcludepatterns");
                }
                if !opts.mode_str.is_empty() {
                    caps.push("file.copy.modestring");
                }
                if opts.always_replace_existing_dest_paths {
                    caps.push("file.copy.alwaysreplaceexistingdestpaths");
                }
                if !opts.required_paths.is_empty() {
                    caps.push("file.copy.requiredpaths");
                }
                let src = if src.starts_with('/') {
                    clean_path(&src)
                } else {
                    clean_path(&format!("{}/{}", from.get_dir(), src))
                };
                FileActionKind::Copy(CopyAction {
                    src,
                    dest: resolve_keep_slash(cwd, &dest),
                    owner: opts.owner,
                    // BuildKit leaves the numeric mode at 0 when a symbolic mode is given.
                    mode: opts
                        .mode
                        .unwrap_or(if opts.mode_str.is_empty() { -1 } else { 0 }),
                    follow_symlink: opts.follow_symlink,
                    dir_copy_contents: opts.dir_copy_contents,
                    attempt_unpack_docker_compatibility: opts.attempt_unpack_docker_compatibility,
                    create_dest_path: opts.create_dest_path,
                    allow_wildcard: opts.allow_wildcard,
                    allow_empty_wildcard: opts.allow_empty_wildcard,
                    timestamp: opts.timestamp.unwrap_or(-1),
                    include_patterns: opts.include_patterns,
                    exclude_patterns: opts.exclude_patterns,
                    always_replace_existing_dest_paths: opts.always_replace_existing_dest_paths,
                    mode_str: opts.mode_str,
                    required_paths: opts.required_paths,
                })
            }
            Step::Mkdir(mut a) => {
                a.path = resolve_keep_slash(cwd, &a.path);
                FileActionKind::Mkdir(a)
            }
            Step::Mkfile(mut a) => {
                a.path = resolve_keep_slash(cwd, &a.path);
                FileActionKind::Mkfile(a)
            }
            Step::Rm(mut a) => {
                if a.allow_wildcard {
                    caps.push("file.rm.wildcard");
                }
                a.path = resolve_keep_slash(cwd, &a.path);
                FileActionKind::Rm(a)
            }
            Step::Symlink(mut a) => {
                caps.push("file.symlink.create");
                a.newpath = resolve_keep_slash(cwd, &a.newpath);
                FileActionKind::Symlink(a)
            }
        }
    }
}

/// Layer several states on top of each other (later ones win).
pub fn merge(states: &[State], metadata: Metadata) -> State {
    let mut inputs: Vec<Output> = Vec::new();
    let mut indexes = Vec::new();
    for s in states {
        if let Some(o) = &s.output {
            inputs.push(o.clone());
            indexes.push(inputs.len() as i64 - 1);
        }
    }
    let base = states.first().cloned().unwrap_or_default();
    match inputs.len() {
        0 => base.with_output(None),
        1 => base.with_output(Some(inputs.remove(0))),
        _ => {
            let kind = OpKind::Merge(MergeOp { inputs: indexes });
            base.with_output(Some(new_output(
                kind,
                inputs,
                None,
                metadata.with_caps(&["mergeop"]),
            )))
        }
    }
}

/// The changes that turn `lower` into `upper`.
pub fn diff(lower: &State, upper: &State, metadata: Metadata) -> State {
    let mut inputs = Vec::new();
    let mut index = |s: &State| match &s.output {
        Some(o) => {
            inputs.push(o.clone());
            inputs.len() as i64 - 1
        }
        None => -1,
    };
    let kind = OpKind::Diff(DiffOp {
        lower: index(lower),
        upper: index(upper),
    });
    upper.with_output(Some(new_output(
        kind,
        inputs,
        None,
        metadata.with_caps(&["diffop"]),
    )))
}

/// Lexically clean an absolute path (`/a/./b/../c` → `/a/c`).
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Resolve `p` against `cwd`, keeping a trailing slash (it means "into this directory").
fn resolve_keep_slash(cwd: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        clean_path(p)
    } else {
        clean_path(&format!("{cwd}/{p}"))
    };
    if (p.ends_with('/') || p.ends_with("/.") || p == ".") && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

fn with_owner_input(kind: FileActionKind, input: i64) -> FileActionKind {
    fn fix(owner: &mut Option<ChownOpt>, input: i64) {
        if let Some(o) = owner {
            for u in [&mut o.user, &mut o.group].into_iter().flatten() {
                if let UserOpt::ByName(n) = u {
                    n.input = input;
                }
            }
        }
    }
    match kind {
        FileActionKind::Copy(mut a) => {
            fix(&mut a.owner, input);
            FileActionKind::Copy(a)
        }
        FileActionKind::Mkdir(mut a) => {
            fix(&mut a.owner, input);
            FileActionKind::Mkdir(a)
        }
        FileActionKind::Mkfile(mut a) => {
            fix(&mut a.owner, input);
            FileActionKind::Mkfile(a)
        }
        FileActionKind::Symlink(mut a) => {
            fix(&mut a.owner, input);
            FileActionKind::Symlink(a)
        }
        other => other,
    }
}

/// BuildKit's `mergeMetadata`: `extra` (a later visit of an equal op) wins.
fn merge_metadata(into: &mut OpMetadata, extra: OpMetadata) {
    into.ignore_cache |= extra.ignore_cache;
    for (k, v) in extra.description {
        match into.description.iter_mut().find(|(key, _)| *key == k) {
            Some(entry) => entry.1 = v,
            None => into.description.push((k, v)),
        }
    }
    into.description.sort();
    if extra.export_cache.is_some() {
        into.export_cache = extra.export_cache;
    }
    for (k, v) in extra.caps {
        if !into.caps.iter().any(|(key, _)| *key == k) {
            into.caps.push((k, v));
        }
    }
    into.caps.sort();
    if extra.progress_group.is_some() {
        into.progress_group = extra.progress_group;
    }
    if extra.linux_resources.is_some() {
        into.linux_resources = extra.linux_resources;
    }
}

/// Flattens vertices into the definition's op list.
#[derive(Default)]
struct Marshaller {
    ops: Vec<Op>,
    metadata: Vec<(u32, OpMetadata)>,
    files: Vec<Arc<SourceFile>>,
    locations: Vec<(u32, Vec<Location>)>,
    by_vertex: HashMap<*const Vertex, u32>,
    by_content: HashMap<String, u32>,
}

impl Marshaller {
    /// Post-order: inputs first, then the vertex. Returns the vertex's position.
    fn visit(&mut self, vertex: &Arc<Vertex>) -> u32 {
        if let Some(&i) = self.by_vertex.get(&Arc::as_ptr(vertex)) {
            return i;
        }
        let mut positions = vec![0u32; vertex.inputs.len()];
        let order: Vec<usize> = match &vertex.visit_order {
            Some(order) => order.clone(),
            None => (0..vertex.inputs.len()).collect(),
        };
        for i in order {
            positions[i] = self.visit(&vertex.inputs[i].vertex);
        }
        let inputs: Vec<OpOutput> = vertex
            .inputs
            .iter()
            .zip(positions)
            .map(|(o, op)| OpOutput {
                op,
                output: o.index,
            })
            .collect();
        let op = Op {
            inputs,
            kind: vertex.kind.clone(),
            platform: vertex.platform.clone(),
            constraints: Some(WorkerConstraints { filter: Vec::new() }),
        };
        // Two vertices built separately but equal are one op, as they have one digest.
        let key = format!("{op:?}");
        let position = match self.by_content.get(&key) {
            Some(&i) => {
                // BuildKit merges the metadata of equal ops: later descriptions win,
                // caps add up.
                if let Some((_, md)) = self.metadata.iter_mut().find(|(p, _)| *p == i) {
                    merge_metadata(md, vertex.metadata.to_wit());
                }
                i
            }
            None => {
                let i = self.ops.len() as u32;
                self.ops.push(op);
                self.metadata.push((i, vertex.metadata.to_wit()));
                if !vertex.metadata.locations.is_empty() {
                    let locs = vertex
                        .metadata
                        .locations
                        .iter()
                        .map(|(file, ranges)| Location {
                            source_index: self.file_index(file),
                            ranges: ranges.clone(),
                        })
                        .collect();
                    self.locations.push((i, locs));
                }
                self.by_content.insert(key, i);
                i
            }
        };
        self.by_vertex.insert(Arc::as_ptr(vertex), position);
        position
    }

    fn file_index(&mut self, file: &Arc<SourceFile>) -> i32 {
        match self.files.iter().position(|f| Arc::ptr_eq(f, file)) {
            Some(i) => i as i32,
            None => {
                self.files.push(file.clone());
                self.files.len() as i32 - 1
            }
        }
    }

    fn finish(self, result: Option<OpOutput>) -> Definition {
        let source = (!self.files.is_empty()).then(|| SourceMap {
            files: self
                .files
                .iter()
                .map(|f| SourceInfo {
                    filename: f.filename.clone(),
                    data: f.data.clone(),
                    language: f.language.clone(),
                })
                .collect(),
            locations: self.locations,
        });
        Definition {
            ops: self.ops,
            metadata: self.metadata,
            source,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> State {
        Source::image("busybox")
            .unwrap()
            .platform(Platform::linux_amd64())
            .state()
    }

    #[test]
    fn scratch_marshals_to_an_empty_definition() {
        let def = scratch().marshal();
        assert!(def.ops.is_empty());
        assert!(def.result.is_none());
    }

    #[test]
    fn post_order_with_dedup() {
        let base = image();
        let ctx = Source::local("context").state();
        let copied = base.clone().dir("/src").file(
            FileAction::copy(&ctx, "go.mod", "./", CopyOptions::default()).then_copy(
                &ctx,
                "go.sum",
                "./",
                CopyOptions::default(),
            ),
        );
        let run = copied.run_shell("echo hi").build().root();
        // A second, separately built but equal image source is the same op.
        let other = image().run_shell("true").build().root();
        let merged = merge(&[run, other], Metadata::new());
        let def = merged.marshal();
        let kinds: Vec<&str> = def
            .ops
            .iter()
            .map(|o| match &o.kind {
                OpKind::Source(s) if s.identifier.starts_with("docker") => "image",
                OpKind::Source(_) => "local",
                OpKind::File(_) => "file",
                OpKind::Exec(_) => "exec",
                OpKind::Merge(_) => "merge",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["image", "local", "file", "exec", "exec", "merge"]);
        let OpKind::File(f) = &def.ops[2].kind else {
            unreachable!()
        };
        assert_eq!(
            (
                f.actions[0].input,
                f.actions[0].secondary_input,
                f.actions[0].output
            ),
            (0, 1, -1)
        );
        assert_eq!(
            (
                f.actions[1].input,
                f.actions[1].secondary_input,
                f.actions[1].output
            ),
            (2, 1, 0)
        );
        let FileActionKind::Copy(c) = &f.actions[0].action else {
            unreachable!()
        };
        assert_eq!((c.src.as_str(), c.dest.as_str()), ("/go.mod", "/src/"));
        let OpKind::Exec(e) = &def.ops[3].kind else {
            unreachable!()
        };
        assert_eq!(e.meta.cwd, "/src");
        assert_eq!(def.result.unwrap().op, 5);
    }

    #[test]
    fn exec_mount_order_and_outputs() {
        let base = image();
        let out = scratch();
        let exec = base
            .run(["/bin/true"])
            .mount(MountSpec::secret(
                "/run/secrets/a",
                SecretOpt {
                    id: "a".into(),
                    uid: 0,
                    gid: 0,
                    mode: 0o400,
                    optional: false,
                },
            ))
            .mount(MountSpec::bind("/out", &out))
            .mount(MountSpec::cache("/cache", "c", CacheSharing::Locked))
            .build();
        let def = exec.get_mount("/out").unwrap().marshal();
        let OpKind::Exec(e) = &def.ops[1].kind else {
            unreachable!()
        };
        let dests: Vec<(&str, i64, i64)> = e
            .mounts
            .iter()
            .map(|m| (m.dest.as_str(), m.input, m.output))
            .collect();
        assert_eq!(
            dests,
            [
                ("/", 0, 0),
                ("/cache", -1, -1),
                ("/out", -1, 1),
                ("/run/secrets/a", -1, 0)
            ]
        );
        assert_eq!(def.result.unwrap().output, 1);
    }

    /// The caps of the op at `op`.
    fn caps_of(def: &Definition, op: usize) -> Vec<String> {
        def.metadata
            .iter()
            .find(|(p, _)| *p as usize == op)
            .map(|(_, m)| m.caps.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    fn secret(id: &str) -> SecretOpt {
        SecretOpt {
            id: id.into(),
            uid: 0,
            gid: 0,
            mode: 0o400,
            optional: false,
        }
    }

    /// `id:N`, `name:NAME@INPUT` or `-`.
    fn show(u: &Option<UserOpt>) -> String {
        match u {
            Some(UserOpt::ById(id)) => format!("id:{id}"),
            Some(UserOpt::ByName(n)) => format!("name:{}@{}", n.name, n.input),
            None => "-".into(),
        }
    }

    #[test]
    fn with_user_reads_root_as_id_zero() {
        let cases = [
            ("root", "id:0", "-"),
            ("root:root", "id:0", "id:0"),
            ("root:1", "id:0", "id:1"),
            ("1:root", "id:1", "id:0"),
            ("nobody:root", "name:nobody@0", "id:0"),
            ("Root:ROOT", "name:Root@0", "name:ROOT@0"),
            ("1000:2000", "id:1000", "id:2000"),
            ("app:staff", "name:app@0", "name:staff@0"),
            // Go's ParseInt(s, 10, 32): signs are accepted, a negative id wraps, and
            // anything beyond int32 is a name.
            ("+7", "id:7", "-"),
            ("-1", "id:4294967295", "-"),
            ("2147483648", "name:2147483648@0", "-"),
            // An empty part has no name, so BuildKit marshals it as id 0.
            (":5", "id:0", "id:5"),
            ("5:", "id:5", "id:0"),
            ("a:b:c", "name:a@0", "name:b:c@0"),
        ];
        for (input, user, group) in cases {
            let got = with_user(input);
            assert_eq!(
                (show(&got.user), show(&got.group)),
                (user.into(), group.into()),
                "{input}"
            );
        }
    }

    #[test]
    fn named_owner_is_looked_up_in_the_action_input() {
        let ctx = Source::local("context").state();
        let opts = CopyOptions {
            owner: Some(with_user("app:root")),
            ..CopyOptions::default()
        };
        let def = image()
            .file(
                FileAction::mkdir("/d", 0o755, true, Some(with_user("root")))
                    .then_copy(&ctx, "a", "/d/", opts),
            )
            .marshal();
        let OpKind::File(f) = &def.ops[2].kind else {
            unreachable!()
        };
        let FileActionKind::Mkdir(m) = &f.actions[0].action else {
            unreachable!()
        };
        assert_eq!(show(&m.owner.as_ref().unwrap().user), "id:0");
        let FileActionKind::Copy(c) = &f.actions[1].action else {
            unreachable!()
        };
        let owner = c.owner.as_ref().unwrap();
        assert_eq!(show(&owner.user), "name:app@2");
        assert_eq!(show(&owner.group), "id:0");
    }

    #[test]
    fn exec_caps_follow_buildkit() {
        let base = image();
        let caps = |exec: Exec| caps_of(&exec.build().root().marshal(), 1);
        let plain = [
            "exec.meta.base",
            "exec.meta.setsdefaultpath",
            "exec.mount.bind",
        ];

        // A secret only exposed as an environment variable is still a secret.
        let env_only = base.run(["env"]).secret_env("x", "FOO", false);
        let mut want = plain.to_vec();
        want.extend(["exec.mount.secret", "exec.secretenv"]);
        want.sort();
        assert_eq!(caps(env_only), want);
        let both = base
            .run(["env"])
            .mount(MountSpec::secret("/s", secret("x")))
            .secret_env("x", "FOO", true);
        assert_eq!(caps(both), want);
        let file_only = base
            .run(["env"])
            .mount(MountSpec::secret("/s", secret("x")));
        let mut want = plain.to_vec();
        want.push("exec.mount.secret");
        want.sort();
        assert_eq!(caps(file_only), want);

        // A cgroup parent, a hostname and extra hosts need no cap.
        let quiet = base
            .clone()
            .hostname("h")
            .add_extra_host("a", "10.0.0.1")
            .run(["true"])
            .cgroup_parent("buildkit");
        assert_eq!(caps(quiet), plain);

        let mut want = plain.to_vec();
        want.extend([
            "exec.mount.cache",
            "exec.mount.cache.sharing",
            "exec.mount.selector",
            "exec.mount.ssh",
            "exec.mount.tmpfs",
            "exec.mount.tmpfs.size",
            "exec.meta.network",
            "exec.meta.security",
            "exec.meta.ulimit",
            "exec.validexitcode",
        ]);
        want.sort();
        let all = base
            .clone()
            .network(NetMode::Host)
            .security(SecurityMode::Insecure)
            .add_ulimit("nofile", 1, 2)
            .run(["true"])
            .mount(MountSpec::cache("/c", "c", CacheSharing::Shared))
            .mount(MountSpec::bind("/b", &scratch().dir("/")).selector("/x"))
            .mount(MountSpec::tmpfs("/t", 1024))
            .mount(MountSpec::ssh("", secret("default")))
            .valid_exit_codes(vec![0, 1]);
        assert_eq!(caps(all), want);
    }

    #[test]
    fn source_caps_follow_buildkit() {
        let caps = |s: Source| caps_of(&s.state().marshal(), 0);
        let img = || Source::image("busybox").unwrap();
        assert_eq!(
            caps(img().attr("image.resolvemode", "local")),
            ["source.image"]
        );
        assert_eq!(
            caps(img().attr("image.resolvemode", "pull")),
            ["source.image", "source.image.resolvemode"]
        );
        // `llb.Differ(llb.DiffNone, false)`: the differ is not required.
        let local = Source::local("dockerfile").attr("local.differ", "none");
        assert!(!caps(local).iter().any(|c| c == "source.local.differ"));
    }

    #[test]
    fn paths_resolve_like_buildkit() {
        assert_eq!(clean_path("/a/./b/../c"), "/a/c");
        assert_eq!(resolve_keep_slash("/src", "./"), "/src/");
        assert_eq!(resolve_keep_slash("/src", "a/b"), "/src/a/b");
        assert_eq!(resolve_keep_slash("/", "/x/"), "/x/");
        assert_eq!(scratch().dir("/a").dir("b/../c").get_dir(), "/a/c");
    }
}
