//! WIT LLB ↔ BuildKit protobuf LLB. Going to protobuf, the host encodes every op the way
//! BuildKit's Go client does (deterministic protobuf, digests of the exact bytes, a
//! terminal op last) and validates the result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use buildwit_llb::pb;

use crate::bridge::SolvedRef;
use crate::host::v0_1::buildwit::frontend::llb as wit;

/// A definition from a frontend that is not a valid graph.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An op names an input that does not come before it.
    #[error("op {op}: input {input} refers to op {target}, which does not come before it")]
    ForwardInput {
        /// Position of the op.
        op: usize,
        /// Position of the input.
        input: usize,
        /// The op it names.
        target: u32,
    },
    /// Metadata, a location or the result names an op that does not exist.
    #[error("{what} refers to op {target}, but the definition has {len} ops")]
    NoSuchOp {
        /// What refers to it.
        what: &'static str,
        /// The op it names.
        target: u32,
        /// Number of ops.
        len: usize,
    },
    /// A protobuf definition the host cannot read.
    #[error("invalid definition: {0}")]
    Invalid(String),
    /// The graph fails BuildKit's validation.
    #[error(transparent)]
    Llb(#[from] buildwit_llb::LlbError),
}

/// Encode a frontend's definition as BuildKit protobuf and validate it.
pub fn from_wit(def: &wit::Definition) -> Result<pb::Definition, ConvertError> {
    let mut out = pb::Definition::default();
    let mut digests: Vec<String> = Vec::with_capacity(def.ops.len() + 1);
    for (i, op) in def.ops.iter().enumerate() {
        let mut inputs = Vec::with_capacity(op.inputs.len());
        for (j, input) in op.inputs.iter().enumerate() {
            let digest = digests
                .get(input.op as usize)
                .ok_or(ConvertError::ForwardInput {
                    op: i,
                    input: j,
                    target: input.op,
                })?;
            inputs.push(pb::Input {
                digest: digest.clone(),
                index: input.output as i64,
            });
        }
        let op = pb::Op {
            inputs,
            op: Some(op_kind(&op.kind)),
            platform: op.platform.as_ref().map(platform_from_wit),
            constraints: op.constraints.as_ref().map(|c| pb::WorkerConstraints {
                filter: c.filter.clone(),
            }),
        };
        let bytes = buildwit_llb::encode_op(&op);
        digests.push(buildwit_llb::digest_of(&bytes).to_string());
        out.def.push(bytes);
    }
    let no_such = |what, target: u32| ConvertError::NoSuchOp {
        what,
        target,
        len: def.ops.len(),
    };
    let mut uses = (false, false, false);
    for (i, m) in &def.metadata {
        let digest = digests
            .get(*i as usize)
            .ok_or_else(|| no_such("metadata", *i))?;
        uses.0 |= m.ignore_cache;
        uses.1 |= !m.description.is_empty();
        uses.2 |= m.export_cache.is_some();
        out.metadata.insert(digest.clone(), metadata_from_wit(m));
    }
    if let Some(src) = &def.source {
        let mut locations = BTreeMap::new();
        for (i, locs) in &src.locations {
            let digest = digests
                .get(*i as usize)
                .ok_or_else(|| no_such("a source location", *i))?;
            locations.insert(
                digest.clone(),
                pb::Locations {
                    locations: locs.iter().map(location_from_wit).collect(),
                },
            );
        }
        out.source = Some(pb::Source {
            locations,
            infos: src
                .files
                .iter()
                .map(|f| pb::SourceInfo {
                    filename: f.filename.clone(),
                    data: f.data.clone(),
                    definition: None,
                    language: f.language.clone(),
                })
                .collect(),
        });
    }
    if let Some(result) = def.result {
        let digest = digests
            .get(result.op as usize)
            .ok_or_else(|| no_such("the result", result.op))?;
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: digest.clone(),
                index: result.output as i64,
            }],
            ..Default::default()
        };
        let bytes = buildwit_llb::encode_op(&terminal);
        let mut caps = BTreeMap::from([
            ("constraints".to_string(), true),
            ("platform".to_string(), true),
        ]);
        for (used, cap) in [
            (uses.0, "meta.ignorecache"),
            (uses.1, "meta.description"),
            (uses.2, "meta.exportcache"),
        ] {
            if used {
                caps.insert(cap.to_string(), true);
            }
        }
        out.metadata.insert(
            buildwit_llb::digest_of(&bytes).to_string(),
            pb::OpMetadata {
                caps,
                ..Default::default()
            },
        );
        out.def.push(bytes);
        buildwit_llb::validate(&out)?;
    } else if !def.ops.is_empty() {
        // Ops without a result are dead: scratch needs none of them.
        return Ok(pb::Definition::default());
    }
    Ok(out)
}

/// A reference for a solved definition; `None` for scratch (an empty definition).
pub fn solved(def: pb::Definition) -> Option<SolvedRef> {
    (!def.def.is_empty()).then(|| SolvedRef {
        definition: Arc::new(def),
    })
}

/// Roughly how many bytes a definition occupies, for the output budget.
pub fn wit_size(def: Option<&wit::Definition>) -> usize {
    def.map(|d| {
        64 * d.ops.len()
            + d.ops.iter().map(op_size).sum::<usize>()
            + d.metadata
                .iter()
                .map(|(_, m)| {
                    m.description
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
                })
                .sum::<usize>()
            + d.source
                .as_ref()
                .map_or(0, |s| s.files.iter().map(|f| f.data.len()).sum())
    })
    .unwrap_or(0)
}

fn op_size(op: &wit::Op) -> usize {
    match &op.kind {
        wit::OpKind::Exec(e) => {
            e.meta
                .args
                .iter()
                .chain(&e.meta.env)
                .map(String::len)
                .sum::<usize>()
                + 64 * e.mounts.len()
        }
        wit::OpKind::Source(s) => {
            s.identifier.len()
                + s.attrs
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        }
        wit::OpKind::File(f) => f
            .actions
            .iter()
            .map(|a| match &a.action {
                wit::FileActionKind::Mkfile(m) => m.data.len() + m.path.len(),
                _ => 64,
            })
            .sum(),
        _ => 64,
    }
}

/// WIT platform → protobuf platform.
pub fn platform_from_wit(p: &wit::Platform) -> pb::Platform {
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone(),
        os_version: p.os_version.clone(),
        os_features: p.os_features.clone(),
    }
}

/// Protobuf platform → WIT platform.
pub(crate) fn platform_to_wit(p: &pb::Platform) -> wit::Platform {
    wit::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone(),
        os_version: p.os_version.clone(),
        os_features: p.os_features.clone(),
    }
}

fn op_kind(kind: &wit::OpKind) -> pb::op::Op {
    match kind {
        wit::OpKind::Exec(e) => pb::op::Op::Exec(exec_from_wit(e)),
        wit::OpKind::Source(s) => pb::op::Op::Source(pb::SourceOp {
            identifier: s.identifier.clone(),
            attrs: s.attrs.iter().cloned().collect(),
        }),
        wit::OpKind::File(f) => pb::op::Op::File(pb::FileOp {
            actions: f.actions.iter().map(file_action_from_wit).collect(),
        }),
        wit::OpKind::Build(b) => pb::op::Op::Build(pb::BuildOp {
            builder: b.builder,
            inputs: b
                .inputs
                .iter()
                .map(|(k, i)| (k.clone(), pb::BuildInput { input: *i }))
                .collect(),
            def: None,
            attrs: b.attrs.iter().cloned().collect(),
        }),
        wit::OpKind::Merge(m) => pb::op::Op::Merge(pb::MergeOp {
            inputs: m
                .inputs
                .iter()
                .map(|i| pb::MergeInput { input: *i })
                .collect(),
        }),
        wit::OpKind::Diff(d) => pb::op::Op::Diff(pb::DiffOp {
            lower: Some(pb::LowerDiffInput { input: d.lower }),
            upper: Some(pb::UpperDiffInput { input: d.upper }),
        }),
        wit::OpKind::Passthrough(p) => pb::op::Op::Passthrough(pb::PassthroughOp {
            id: p.id.clone(),
            outputs: p.outputs.clone(),
        }),
    }
}

fn exec_from_wit(e: &wit::ExecOp) -> pb::ExecOp {
    let m = &e.meta;
    pb::ExecOp {
        meta: Some(pb::Meta {
            args: m.args.clone(),
            env: m.env.clone(),
            cwd: m.cwd.clone(),
            user: m.user.clone(),
            proxy_env: m.proxy_env.as_ref().map(|p| pb::ProxyEnv {
                http_proxy: p.http_proxy.clone(),
                https_proxy: p.https_proxy.clone(),
                ftp_proxy: p.ftp_proxy.clone(),
                no_proxy: p.no_proxy.clone(),
                all_proxy: p.all_proxy.clone(),
            }),
            extra_hosts: m
                .extra_hosts
                .iter()
                .map(|h| pb::HostIp {
                    host: h.host.clone(),
                    ip: h.ip.clone(),
                })
                .collect(),
            hostname: m.hostname.clone(),
            ulimit: m
                .ulimits
                .iter()
                .map(|u| pb::Ulimit {
                    name: u.name.clone(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            cgroup_parent: m.cgroup_parent.clone(),
            remove_mount_stubs_recursive: m.remove_mount_stubs_recursive,
            valid_exit_codes: m.valid_exit_codes.clone(),
        }),
        mounts: e.mounts.iter().map(mount_from_wit).collect(),
        network: match e.network {
            wit::NetMode::Unset => pb::NetMode::Unset,
            wit::NetMode::Host => pb::NetMode::Host,
            wit::NetMode::None => pb::NetMode::None,
        } as i32,
        security: match e.security {
            wit::SecurityMode::Sandbox => pb::SecurityMode::Sandbox,
            wit::SecurityMode::Insecure => pb::SecurityMode::Insecure,
        } as i32,
        secretenv: e
            .secret_env
            .iter()
            .map(|s| pb::SecretEnv {
                id: s.id.clone(),
                name: s.name.clone(),
                optional: s.optional,
            })
            .collect(),
        cdi_devices: e
            .cdi_devices
            .iter()
            .map(|d| pb::CdiDevice {
                name: d.name.clone(),
                optional: d.optional,
            })
            .collect(),
    }
}

fn mount_from_wit(m: &wit::Mount) -> pb::Mount {
    let secret = |s: &wit::SecretOpt| (s.id.clone(), s.uid, s.gid, s.mode, s.optional);
    pb::Mount {
        input: m.input,
        selector: m.selector.clone(),
        dest: m.dest.clone(),
        output: m.output,
        readonly: m.readonly,
        mount_type: match m.mount_type {
            wit::MountType::Bind => pb::MountType::Bind,
            wit::MountType::Secret => pb::MountType::Secret,
            wit::MountType::Ssh => pb::MountType::Ssh,
            wit::MountType::Cache => pb::MountType::Cache,
            wit::MountType::Tmpfs => pb::MountType::Tmpfs,
        } as i32,
        tmpfs_opt: m.tmpfs_size.map(|size| pb::TmpfsOpt { size }),
        cache_opt: m.cache_opt.as_ref().map(|c| pb::CacheOpt {
            id: c.id.clone(),
            sharing: match c.sharing {
                wit::CacheSharing::Shared => pb::CacheSharingOpt::Shared,
                wit::CacheSharing::Private => pb::CacheSharingOpt::Private,
                wit::CacheSharing::Locked => pb::CacheSharingOpt::Locked,
            } as i32,
        }),
        secret_opt: m
            .secret_opt
            .as_ref()
            .map(secret)
            .map(|(id, uid, gid, mode, optional)| pb::SecretOpt {
                id,
                uid,
                gid,
                mode,
                optional,
            }),
        ssh_opt: m
            .ssh_opt
            .as_ref()
            .map(secret)
            .map(|(id, uid, gid, mode, optional)| pb::SshOpt {
                id,
                uid,
                gid,
                mode,
                optional,
            }),
        result_id: m.result_id.clone(),
        content_cache: match m.content_cache {
            wit::MountContentCache::Default => pb::MountContentCache::Default,
            wit::MountContentCache::On => pb::MountContentCache::On,
            wit::MountContentCache::Off => pb::MountContentCache::Off,
        } as i32,
    }
}

fn user_from_wit(u: &wit::UserOpt) -> pb::UserOpt {
    pb::UserOpt {
        user: Some(match u {
            wit::UserOpt::ByName(n) => pb::user_opt::User::ByName(pb::NamedUserOpt {
                name: n.name.clone(),
                input: n.input,
            }),
            wit::UserOpt::ById(id) => pb::user_opt::User::ById(*id),
        }),
    }
}

fn chown_from_wit(c: &wit::ChownOpt) -> pb::ChownOpt {
    pb::ChownOpt {
        user: c.user.as_ref().map(user_from_wit),
        group: c.group.as_ref().map(user_from_wit),
    }
}

fn file_action_from_wit(a: &wit::FileAction) -> pb::FileAction {
    use pb::file_action::Action;
    let action = match &a.action {
        wit::FileActionKind::Copy(c) => Action::Copy(pb::FileActionCopy {
            src: c.src.clone(),
            dest: c.dest.clone(),
            owner: c.owner.as_ref().map(chown_from_wit),
            mode: c.mode,
            follow_symlink: c.follow_symlink,
            dir_copy_contents: c.dir_copy_contents,
            attempt_unpack_docker_compatibility: c.attempt_unpack_docker_compatibility,
            create_dest_path: c.create_dest_path,
            allow_wildcard: c.allow_wildcard,
            allow_empty_wildcard: c.allow_empty_wildcard,
            timestamp: c.timestamp,
            include_patterns: c.include_patterns.clone(),
            exclude_patterns: c.exclude_patterns.clone(),
            always_replace_existing_dest_paths: c.always_replace_existing_dest_paths,
            mode_str: c.mode_str.clone(),
            required_paths: c.required_paths.clone(),
        }),
        wit::FileActionKind::Mkfile(m) => Action::Mkfile(pb::FileActionMkFile {
            path: m.path.clone(),
            mode: m.mode,
            data: m.data.clone(),
            owner: m.owner.as_ref().map(chown_from_wit),
            timestamp: m.timestamp,
        }),
        wit::FileActionKind::Mkdir(m) => Action::Mkdir(pb::FileActionMkDir {
            path: m.path.clone(),
            mode: m.mode,
            make_parents: m.make_parents,
            owner: m.owner.as_ref().map(chown_from_wit),
            timestamp: m.timestamp,
        }),
        wit::FileActionKind::Rm(r) => Action::Rm(pb::FileActionRm {
            path: r.path.clone(),
            allow_not_found: r.allow_not_found,
            allow_wildcard: r.allow_wildcard,
        }),
        wit::FileActionKind::Symlink(s) => Action::Symlink(pb::FileActionSymlink {
            oldpath: s.oldpath.clone(),
            newpath: s.newpath.clone(),
            owner: s.owner.as_ref().map(chown_from_wit),
            timestamp: s.timestamp,
        }),
    };
    pb::FileAction {
        input: a.input,
        secondary_input: a.secondary_input,
        output: a.output,
        action: Some(action),
    }
}

fn metadata_from_wit(m: &wit::OpMetadata) -> pb::OpMetadata {
    pb::OpMetadata {
        ignore_cache: m.ignore_cache,
        description: m.description.iter().cloned().collect(),
        export_cache: m.export_cache.map(|value| pb::ExportCache { value }),
        caps: m.caps.iter().cloned().collect(),
        progress_group: m.progress_group.as_ref().map(|g| pb::ProgressGroup {
            id: g.id.clone(),
            name: g.name.clone(),
            weak: g.weak,
        }),
        linux_resources: m.linux_resources.as_ref().map(|r| pb::LinuxResources {
            memory: r.memory,
            memory_swap: r.memory_swap,
            cpu_shares: r.cpu_shares,
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
        }),
    }
}

fn location_from_wit(l: &wit::Location) -> pb::Location {
    pb::Location {
        source_index: l.source_index,
        ranges: l
            .ranges
            .iter()
            .map(|r| pb::Range {
                start: Some(pb::Position {
                    line: r.start.line,
                    character: r.start.character,
                }),
                end: Some(pb::Position {
                    line: r.end.line,
                    character: r.end.character,
                }),
            })
            .collect(),
    }
}

/// A protobuf definition as WIT, for a frontend's named inputs. Ops BuildKit has that WIT
/// cannot carry (a nested build's inline definition) are dropped. As in validation, the
/// last op is the terminal one, and the others may come in any order (BuildKit does not
/// order them): WIT names inputs by position, so they are written inputs first.
pub fn to_wit(def: &pb::Definition) -> wit::Definition {
    use prost::Message;
    let decoded: Vec<(String, pb::Op)> = def
        .def
        .iter()
        .filter_map(|bytes| {
            let op = pb::Op::decode(bytes.as_slice()).ok()?;
            Some((buildwit_llb::digest_of(bytes).to_string(), op))
        })
        .collect();
    let Some(((_, terminal), body)) = decoded.split_last() else {
        return wit::Definition {
            ops: Vec::new(),
            metadata: Vec::new(),
            source: None,
            result: None,
        };
    };
    let mut positions: HashMap<&str, u32> = HashMap::new();
    let mut ops = Vec::new();
    let mut metadata = Vec::new();
    for i in inputs_first(body) {
        let (digest, op) = &body[i];
        let Some(kind) = op.op.as_ref().and_then(kind_to_wit) else {
            continue;
        };
        let inputs: Vec<wit::OpOutput> = op
            .inputs
            .iter()
            .filter_map(|i| {
                positions.get(i.digest.as_str()).map(|&p| wit::OpOutput {
                    op: p,
                    output: i.index.max(0) as u32,
                })
            })
            .collect();
        let position = ops.len() as u32;
        if let Some(m) = def.metadata.get(digest) {
            metadata.push((position, metadata_to_wit(m)));
        }
        positions.insert(digest, position);
        ops.push(wit::Op {
            inputs,
            kind,
            platform: op.platform.as_ref().map(platform_to_wit),
            constraints: op.constraints.as_ref().map(|c| wit::WorkerConstraints {
                filter: c.filter.clone(),
            }),
        });
    }
    // The terminal op only names the result: its first input, as BuildKit reads it.
    let result = terminal.inputs.first().and_then(|i| {
        positions.get(i.digest.as_str()).map(|&p| wit::OpOutput {
            op: p,
            output: i.index.max(0) as u32,
        })
    });
    wit::Definition {
        ops,
        metadata,
        source: None,
        result,
    }
}

/// Positions of `ops` ordered so that each comes after the ops it reads (depth first, in
/// list order otherwise). An input that would close a cycle is left to the caller to drop.
fn inputs_first(ops: &[(String, pb::Op)]) -> Vec<usize> {
    let by_digest: HashMap<&str, usize> = ops
        .iter()
        .enumerate()
        .map(|(i, (digest, _))| (digest.as_str(), i))
        .collect();
    // 0: not seen, 1: its inputs are being visited, 2: placed.
    let mut state = vec![0u8; ops.len()];
    let mut order = Vec::with_capacity(ops.len());
    for start in 0..ops.len() {
        let mut stack = vec![(start, 0usize)];
        while let Some((i, next)) = stack.pop() {
            if next == 0 {
                if state[i] != 0 {
                    continue;
                }
                state[i] = 1;
            }
            let input = ops[i].1.inputs.get(next);
            match input.and_then(|input| by_digest.get(input.digest.as_str())) {
                Some(&j) => {
                    stack.push((i, next + 1));
                    if state[j] == 0 {
                        stack.push((j, 0));
                    }
                }
                None if input.is_some() => stack.push((i, next + 1)),
                None => {
                    state[i] = 2;
                    order.push(i);
                }
            }
        }
    }
    order
}

fn kind_to_wit(op: &pb::op::Op) -> Option<wit::OpKind> {
    Some(match op {
        pb::op::Op::Exec(e) => wit::OpKind::Exec(exec_to_wit(e)),
        pb::op::Op::Source(s) => wit::OpKind::Source(wit::SourceOp {
            identifier: s.identifier.clone(),
            attrs: s.attrs.clone().into_iter().collect(),
        }),
        pb::op::Op::File(f) => wit::OpKind::File(wit::FileOp {
            actions: f.actions.iter().filter_map(file_action_to_wit).collect(),
        }),
        pb::op::Op::Build(b) => wit::OpKind::Build(wit::BuildOp {
            builder: b.builder,
            inputs: b.inputs.iter().map(|(k, v)| (k.clone(), v.input)).collect(),
            attrs: b.attrs.clone().into_iter().collect(),
        }),
        pb::op::Op::Merge(m) => wit::OpKind::Merge(wit::MergeOp {
            inputs: m.inputs.iter().map(|i| i.input).collect(),
        }),
        pb::op::Op::Diff(d) => wit::OpKind::Diff(wit::DiffOp {
            lower: d.lower.as_ref().map_or(-1, |l| l.input),
            upper: d.upper.as_ref().map_or(-1, |u| u.input),
        }),
        pb::op::Op::Passthrough(p) => wit::OpKind::Passthrough(wit::PassthroughOp {
            id: p.id.clone(),
            outputs: p.outputs.clone(),
        }),
    })
}

fn exec_to_wit(e: &pb::ExecOp) -> wit::ExecOp {
    let m = e.meta.clone().unwrap_or_default();
    wit::ExecOp {
        meta: wit::Meta {
            args: m.args,
            env: m.env,
            cwd: m.cwd,
            user: m.user,
            proxy_env: m.proxy_env.map(|p| wit::ProxyEnv {
                http_proxy: p.http_proxy,
                https_proxy: p.https_proxy,
                ftp_proxy: p.ftp_proxy,
                no_proxy: p.no_proxy,
                all_proxy: p.all_proxy,
            }),
            extra_hosts: m
                .extra_hosts
                .into_iter()
                .map(|h| wit::HostIp {
                    host: h.host,
                    ip: h.ip,
                })
                .collect(),
            hostname: m.hostname,
            ulimits: m
                .ulimit
                .into_iter()
                .map(|u| wit::Ulimit {
                    name: u.name,
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            cgroup_parent: m.cgroup_parent,
            remove_mount_stubs_recursive: m.remove_mount_stubs_recursive,
            valid_exit_codes: m.valid_exit_codes,
        },
        mounts: e.mounts.iter().map(mount_to_wit).collect(),
        network: match pb::NetMode::try_from(e.network) {
            Ok(pb::NetMode::Host) => wit::NetMode::Host,
            Ok(pb::NetMode::None) => wit::NetMode::None,
            _ => wit::NetMode::Unset,
        },
        security: match pb::SecurityMode::try_from(e.security) {
            Ok(pb::SecurityMode::Insecure) => wit::SecurityMode::Insecure,
            _ => wit::SecurityMode::Sandbox,
        },
        secret_env: e
            .secretenv
            .iter()
            .map(|s| wit::SecretEnv {
                id: s.id.clone(),
                name: s.name.clone(),
                optional: s.optional,
            })
            .collect(),
        cdi_devices: e
            .cdi_devices
            .iter()
            .map(|d| wit::CdiDevice {
                name: d.name.clone(),
                optional: d.optional,
            })
            .collect(),
    }
}

fn mount_to_wit(m: &pb::Mount) -> wit::Mount {
    wit::Mount {
        input: m.input,
        selector: m.selector.clone(),
        dest: m.dest.clone(),
        output: m.output,
        readonly: m.readonly,
        mount_type: match pb::MountType::try_from(m.mount_type) {
            Ok(pb::MountType::Secret) => wit::MountType::Secret,
            Ok(pb::MountType::Ssh) => wit::MountType::Ssh,
            Ok(pb::MountType::Cache) => wit::MountType::Cache,
            Ok(pb::MountType::Tmpfs) => wit::MountType::Tmpfs,
            _ => wit::MountType::Bind,
        },
        tmpfs_size: m.tmpfs_opt.as_ref().map(|t| t.size),
        cache_opt: m.cache_opt.as_ref().map(|c| wit::CacheOpt {
            id: c.id.clone(),
            sharing: match pb::CacheSharingOpt::try_from(c.sharing) {
                Ok(pb::CacheSharingOpt::Private) => wit::CacheSharing::Private,
                Ok(pb::CacheSharingOpt::Locked) => wit::CacheSharing::Locked,
                _ => wit::CacheSharing::Shared,
            },
        }),
        secret_opt: m.secret_opt.as_ref().map(|s| wit::SecretOpt {
            id: s.id.clone(),
            uid: s.uid,
            gid: s.gid,
            mode: s.mode,
            optional: s.optional,
        }),
        ssh_opt: m.ssh_opt.as_ref().map(|s| wit::SecretOpt {
            id: s.id.clone(),
            uid: s.uid,
            gid: s.gid,
            mode: s.mode,
            optional: s.optional,
        }),
        result_id: m.result_id.clone(),
        content_cache: match pb::MountContentCache::try_from(m.content_cache) {
            Ok(pb::MountContentCache::On) => wit::MountContentCache::On,
            Ok(pb::MountContentCache::Off) => wit::MountContentCache::Off,
            _ => wit::MountContentCache::Default,
        },
    }
}

fn user_to_wit(u: &pb::UserOpt) -> Option<wit::UserOpt> {
    Some(match u.user.as_ref()? {
        pb::user_opt::User::ByName(n) => wit::UserOpt::ByName(wit::NamedUser {
            name: n.name.clone(),
            input: n.input,
        }),
        pb::user_opt::User::ById(id) => wit::UserOpt::ById(*id),
    })
}

fn chown_to_wit(c: &pb::ChownOpt) -> wit::ChownOpt {
    wit::ChownOpt {
        user: c.user.as_ref().and_then(user_to_wit),
        group: c.group.as_ref().and_then(user_to_wit),
    }
}

fn file_action_to_wit(a: &pb::FileAction) -> Option<wit::FileAction> {
    use pb::file_action::Action;
    let action = match a.action.as_ref()? {
        Action::Copy(c) => wit::FileActionKind::Copy(wit::CopyAction {
            src: c.src.clone(),
            dest: c.dest.clone(),
            owner: c.owner.as_ref().map(chown_to_wit),
            mode: c.mode,
            follow_symlink: c.follow_symlink,
            dir_copy_contents: c.dir_copy_contents,
            attempt_unpack_docker_compatibility: c.attempt_unpack_docker_compatibility,
            create_dest_path: c.create_dest_path,
            allow_wildcard: c.allow_wildcard,
            allow_empty_wildcard: c.allow_empty_wildcard,
            timestamp: c.timestamp,
            include_patterns: c.include_patterns.clone(),
            exclude_patterns: c.exclude_patterns.clone(),
            always_replace_existing_dest_paths: c.always_replace_existing_dest_paths,
            mode_str: c.mode_str.clone(),
            required_paths: c.required_paths.clone(),
        }),
        Action::Mkfile(m) => wit::FileActionKind::Mkfile(wit::MkfileAction {
            path: m.path.clone(),
            mode: m.mode,
            data: m.data.clone(),
            owner: m.owner.as_ref().map(chown_to_wit),
            timestamp: m.timestamp,
        }),
        Action::Mkdir(m) => wit::FileActionKind::Mkdir(wit::MkdirAction {
            path: m.path.clone(),
            mode: m.mode,
            make_parents: m.make_parents,
            owner: m.owner.as_ref().map(chown_to_wit),
            timestamp: m.timestamp,
        }),
        Action::Rm(r) => wit::FileActionKind::Rm(wit::RmAction {
            path: r.path.clone(),
            allow_not_found: r.allow_not_found,
            allow_wildcard: r.allow_wildcard,
        }),
        Action::Symlink(s) => wit::FileActionKind::Symlink(wit::SymlinkAction {
            oldpath: s.oldpath.clone(),
            newpath: s.newpath.clone(),
            owner: s.owner.as_ref().map(chown_to_wit),
            timestamp: s.timestamp,
        }),
    };
    Some(wit::FileAction {
        input: a.input,
        secondary_input: a.secondary_input,
        output: a.output,
        action,
    })
}

fn metadata_to_wit(m: &pb::OpMetadata) -> wit::OpMetadata {
    wit::OpMetadata {
        ignore_cache: m.ignore_cache,
        description: m.description.clone().into_iter().collect(),
        export_cache: m.export_cache.as_ref().map(|e| e.value),
        caps: m.caps.clone().into_iter().collect(),
        progress_group: m.progress_group.as_ref().map(|g| wit::ProgressGroup {
            id: g.id.clone(),
            name: g.name.clone(),
            weak: g.weak,
        }),
        linux_resources: m.linux_resources.as_ref().map(|r| wit::LinuxResources {
            memory: r.memory,
            memory_swap: r.memory_swap,
            cpu_shares: r.cpu_shares,
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Option<pb::op::Op>, inputs: &[&[u8]]) -> Vec<u8> {
        buildwit_llb::encode_op(&pb::Op {
            inputs: inputs
                .iter()
                .map(|bytes| pb::Input {
                    digest: buildwit_llb::digest_of(bytes).to_string(),
                    index: 0,
                })
                .collect(),
            op: kind,
            ..Default::default()
        })
    }

    #[test]
    fn ops_listed_before_their_inputs_keep_their_inputs_and_result() {
        // Found by fuzz/ (wit_llb): a valid definition whose ops are not in input order
        // lost the inputs that came later in the list, and so its result.
        let source = op(
            Some(pb::op::Op::Source(pb::SourceOp {
                identifier: "local://context".into(),
                ..Default::default()
            })),
            &[],
        );
        let merge = op(
            Some(pb::op::Op::Merge(pb::MergeOp {
                inputs: vec![pb::MergeInput { input: 0 }],
            })),
            &[&source],
        );
        let terminal = op(None, &[&merge]);
        let def = pb::Definition {
            def: vec![merge, source, terminal],
            ..Default::default()
        };
        buildwit_llb::validate(&def).expect("BuildKit accepts any order");
        let wit = to_wit(&def);
        assert_eq!(wit.ops.len(), 2);
        assert!(matches!(wit.ops[0].kind, wit::OpKind::Source(_)));
        assert_eq!(wit.ops[1].inputs.len(), 1);
        assert_eq!(wit.ops[1].inputs[0].op, 0);
        assert_eq!(wit.result.map(|r| r.op), Some(1));
        let back = from_wit(&wit).unwrap();
        assert_eq!(buildwit_llb::validate(&back).unwrap().ops().len(), 2);
    }
}
