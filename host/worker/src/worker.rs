//! The worker: runs one LLB op on its input snapshots and returns its output snapshots.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use buildwit_llb::pb;

use crate::content::ContentStore;
use crate::exec::{DEFAULT_PATH, ExecMount, ExitStatus, MountKind, Process, Runner};
use crate::local::{LocalSource, LocalTree, Locals};
use crate::snapshot::{LayerBuilder, LayerMeta, Mounted, Snapshot, Snapshotter};
use crate::{fileops, rootpath, users};

/// What the client of one build provides: its directories, secrets, ssh agents and
/// registry credentials.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// Local directories by name (`context`, `dockerfile`).
    pub locals: BTreeMap<String, PathBuf>,
    /// Secrets by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// OCI image layout directories by store name (`--oci-layout NAME=DIR`).
    pub oci_layouts: BTreeMap<String, PathBuf>,
    /// Brings a local directory up to date before it is read (buildwitd's copy of a
    /// remote client's files); none when the directories are the client's own.
    pub sync: Option<Arc<dyn LocalSync>>,
    /// Set when the client went away: the solver starts no further step.
    pub cancelled: Arc<AtomicBool>,
    /// Whose registry credentials the build's pulls use (a BuildKit client's, or the
    /// daemon's).
    pub registry: buildwit_registry::Access,
}

impl Session {
    /// The local name under which buildwitd syncs a remote client's OCI layout `store`.
    pub fn layout_local(store: &str) -> String {
        format!("oci-layout:{store}")
    }

    /// The store whose layout a local name of [`Session::layout_local`] is.
    pub fn layout_store(local: &str) -> Option<&str> {
        local.strip_prefix("oci-layout:")
    }
}

/// Fetches the files of a client's local directory that a build reads.
pub trait LocalSync: Send + Sync {
    /// Make the files of local `name` that these filters select current in its directory.
    fn sync(
        &self,
        name: &str,
        follow: &[String],
        include: &[String],
        exclude: &[String],
    ) -> std::io::Result<()>;

    /// The directory of a local the client did not name before the build (BuildKit's
    /// clients offer their directories by name only when asked); `None`: no such local.
    fn dir(&self, _name: &str) -> Option<PathBuf> {
        None
    }

    /// A version of what local `name`'s directory holds after a sync, if the sync keeps
    /// one: the same version again means the same files, so a scan can skip its walk.
    fn version(&self, _name: &str) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for dyn LocalSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalSync")
    }
}

impl Session {
    /// Sync local `name` for a source that reads it (nothing to do in-process).
    pub fn sync_local(&self, name: &str, source: &LocalSource) -> std::io::Result<()> {
        match &self.sync {
            Some(sync) => sync.sync(name, &source.follow, &source.include, &source.exclude),
            None => Ok(()),
        }
    }

    /// The version of local `name` after its sync (see [`LocalSync::version`]).
    pub fn local_version(&self, name: &str) -> Option<String> {
        self.sync.as_ref().and_then(|s| s.version(name))
    }

    /// The directory of local `name`: one the request named, or one its sync serves.
    pub fn local_dir(&self, name: &str) -> Option<PathBuf> {
        self.locals
            .get(name)
            .cloned()
            .or_else(|| self.sync.as_ref().and_then(|s| s.dir(name)))
    }

    /// Whether the build was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Free bytes below which a disk counts as full when a step fails (a filesystem keeps a
/// little space no write of a step can use).
const FULL_DISK: u64 = 1 << 20;

/// Why an op failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A step exited with an error.
    #[error(
        "process \"{command}\" did not complete successfully: exit code: {code}{}",
        if *disk_full { " (no space left on the disk holding the build's snapshots)" } else { "" }
    )]
    Exit {
        /// The command as BuildKit shows it.
        command: String,
        /// Its exit code.
        code: i32,
        /// Its last lines of output.
        tail: Vec<String>,
        /// The disk holding its root filesystem was full when it ended: the likely cause,
        /// which the process itself often reports vaguely ("I/O error").
        disk_full: bool,
    },
    /// The op is wrong or asks for something this worker does not do.
    #[error("{0}")]
    Invalid(String),
    /// The filesystem or the runtime failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn invalid(msg: impl Into<String>) -> OpError {
    OpError::Invalid(msg.into())
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The OCI runtime binary.
    pub runtime: String,
    /// Hostname of build containers.
    pub hostname: String,
    /// The snapshotter.
    pub snapshotter: crate::snapshot::Kind,
    /// `apparmor-profile`: the AppArmor profile of steps that are not `security.insecure`.
    pub apparmor_profile: Option<String>,
    /// How steps reach the network.
    pub network: crate::network::NetworkConfig,
    /// `[worker.oci] platforms`: what steps may run for; empty: what this host runs,
    /// natively or emulated ([`crate::platforms::runnable`]).
    pub platforms: Vec<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            runtime: "runc".into(),
            hostname: "buildkitsandbox".into(),
            snapshotter: crate::snapshot::Kind::Auto,
            apparmor_profile: None,
            network: Default::default(),
            platforms: Vec::new(),
        }
    }
}

/// The OCI worker with its state under one root.
#[derive(Debug)]
pub struct Worker {
    /// Image blobs.
    pub content: ContentStore,
    /// Layers.
    pub snapshots: Arc<Snapshotter>,
    /// Local source scans.
    pub locals: Locals,
    /// The platforms its steps can run on, natively or emulated.
    pub platforms: Vec<String>,
    runner: Runner,
    cache_mounts: PathBuf,
    /// Private scratch space (`<root>/tmp`), emptied at every start.
    scratch: PathBuf,
    /// The networks of steps.
    networks: crate::network::Networks,
    options: WorkerOptions,
    /// Held while the worker lives: one process per state directory.
    _lock: fs::File,
}

/// What keeps a cache mount reserved for a step until it ends (when dropped).
enum CacheHold {
    /// A lock on the shared directory.
    Lock { _file: fs::File },
    /// A private directory, removed afterwards.
    Private { _dir: crate::exec::RemoveOnDrop },
}

/// A line of output of a running op: stream (1 stdout, 2 stderr) and text.
pub type Output<'a> = &'a (dyn Fn(u8, &str) + Sync);

impl Worker {
    /// Open (or create) the worker's state under `root`. Whatever a killed process left
    /// (running containers, mounts, scratch files) is reclaimed first.
    pub fn open(root: &Path, options: WorkerOptions) -> io::Result<Self> {
        // Before anything else: a second process must not clean up the first one's work.
        let lock = lock_root(root)?;
        let runner = Runner {
            binary: options.runtime.clone(),
            state: root.join("runc"),
            bundles: root.join("bundles"),
        };
        runner.reclaim();
        let mut options = options;
        if let Some(profile) = &options.apparmor_profile
            && !apparmor_enabled()
        {
            // As BuildKit: said once, and steps run without it.
            tracing::warn!(
                "AppArmor is not supported on this host, but the profile '{profile}' was specified"
            );
            options.apparmor_profile = None;
        }
        let _ = fs::remove_dir_all(&runner.bundles);
        fs::create_dir_all(&runner.bundles)?;
        let scratch = root.join("tmp");
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch)?;
        let networks = crate::network::Networks::open(root, &options.network);
        Ok(Worker {
            scratch,
            networks,
            _lock: lock,
            content: ContentStore::open(root.join("content"))?,
            snapshots: Snapshotter::open(root.join("snapshots"), options.snapshotter)?,
            locals: Locals::open(root.join("locals"))?,
            platforms: match options.platforms.is_empty() {
                true => crate::platforms::runnable(Path::new(crate::platforms::BINFMT_MISC)),
                false => options.platforms.clone(),
            },
            runner,
            cache_mounts: root.join("cache-mounts"),
            options,
        })
    }

    /// The local source an op names, with the session's directory.
    pub fn local_source(
        &self,
        source: &pb::SourceOp,
        session: &Session,
    ) -> Result<LocalSource, OpError> {
        let name = source
            .identifier
            .strip_prefix("local://")
            .ok_or_else(|| invalid(format!("{} is not a local source", source.identifier)))?;
        let dir = session
            .local_dir(name)
            .ok_or_else(|| invalid(format!("the client sent no local directory named {name:?}")))?;
        let list = |key: &str| -> Vec<String> {
            source
                .attrs
                .get(key)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default()
        };
        Ok(LocalSource {
            dir,
            follow: list("local.followpaths"),
            include: list("local.includepattern"),
            exclude: list("local.excludepatterns"),
        })
    }

    /// Make a local source's layer from its scan.
    pub fn local_snapshot(
        &self,
        source: &LocalSource,
        tree: &LocalTree,
    ) -> Result<Snapshot, OpError> {
        let layer = self.locals.materialize(source, tree, &self.snapshots)?;
        Ok(Snapshot {
            layers: vec![layer],
        })
    }

    /// Run an exec op. `ids[i]` names the layer of output `i`.
    pub fn exec(
        &self,
        op: &pb::ExecOp,
        inputs: &[Snapshot],
        session: &Session,
        ids: &dyn Fn(usize) -> String,
        output: Output,
    ) -> Result<Vec<Snapshot>, OpError> {
        let meta = op.meta.clone().unwrap_or_default();
        let input = |i: i64| -> Result<Snapshot, OpError> {
            if i < 0 {
                return Ok(Snapshot::default());
            }
            inputs
                .get(i as usize)
                .cloned()
                .ok_or_else(|| invalid(format!("mount input {i} does not exist")))
        };
        let mut mounts = op.mounts.clone();
        // Shallow mounts first, so deeper ones land on top of them.
        mounts.sort_by_key(|m| m.dest.matches('/').count() - usize::from(m.dest == "/"));
        let root_mount = mounts
            .iter()
            .position(|m| m.dest == "/")
            .ok_or_else(|| invalid("exec has no root mount"))?;

        // Writable mounts: (output index, base snapshot, layer) to commit afterwards.
        let mut writable: Vec<(i64, Snapshot, LayerBuilder)> = Vec::new();
        let mut mounted: Vec<Mounted> = Vec::new();
        let mut exec_mounts = Vec::new();
        let scratch_guard = crate::exec::RemoveOnDrop(tempfile_dir(&self.runner.bundles)?);
        let scratch = scratch_guard.0.clone();
        let mut rootfs = PathBuf::new();
        let mut readonly_root = false;
        let mut locks = Vec::new();
        let mut relays = Vec::new();
        // Cache mounts first, in one order (by name) and once per name: two steps locking
        // the same caches cannot wait on each other, and a step that mounts one cache twice
        // does not wait on itself.
        let mut caches: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut cache_mounts: Vec<&pb::Mount> = mounts
            .iter()
            .filter(|m| m.mount_type == pb::MountType::Cache as i32)
            .collect();
        cache_mounts.sort_by_cached_key(|m| cache_mount_name(m));
        for m in cache_mounts {
            if let std::collections::btree_map::Entry::Vacant(e) = caches.entry(cache_mount_name(m))
            {
                let (dir, lock) = self.cache_mount(m, &input(m.input)?)?;
                locks.extend(lock);
                e.insert(dir);
            }
        }
        for (n, m) in mounts.iter().enumerate() {
            let kind = pb::MountType::try_from(m.mount_type).unwrap_or(pb::MountType::Bind);
            let source = match kind {
                pb::MountType::Bind => {
                    let base = input(m.input)?;
                    // The root always gets an upper layer (thrown away unless it is an output):
                    // a read-only root is read-only in the container, but runc still creates
                    // mount points in it, and a single-layer base must never be written.
                    let mnt = if m.output >= 0 || !m.readonly || n == root_mount {
                        let layer = self.snapshots.new_layer()?;
                        let mnt = self.snapshots.mount(&base, Some(&layer))?;
                        writable.push((m.output, base, layer));
                        mnt
                    } else {
                        self.snapshots.mount(&base, None)?
                    };
                    let path = rootpath::resolve(mnt.path(), &m.selector, true)?;
                    mounted.push(mnt);
                    if n == root_mount {
                        rootfs = path;
                        readonly_root = m.readonly;
                        continue;
                    }
                    MountKind::Bind {
                        source: path,
                        readonly: m.readonly,
                    }
                }
                pb::MountType::Tmpfs => MountKind::Tmpfs {
                    size: m.tmpfs_opt.as_ref().map_or(0, |t| t.size),
                },
                pb::MountType::Cache => MountKind::Bind {
                    source: caches[&cache_mount_name(m)].clone(),
                    readonly: m.readonly,
                },
                pb::MountType::Secret => {
                    let opt = m.secret_opt.clone().unwrap_or_default();
                    let Some(data) = session.secrets.get(&opt.id) else {
                        if opt.optional {
                            continue;
                        }
                        return Err(invalid(format!("secret {} not found", opt.id)));
                    };
                    let file = scratch.join(format!("secret-{n}"));
                    fs::write(&file, data)?;
                    chown_mode(&file, opt.uid, opt.gid, opt.mode)?;
                    MountKind::Bind {
                        source: file,
                        readonly: true,
                    }
                }
                pb::MountType::Ssh => {
                    let opt = m.ssh_opt.clone().unwrap_or_default();
                    let id = if opt.id.is_empty() {
                        "default"
                    } else {
                        &opt.id
                    };
                    let Some(sock) = session.ssh.get(id) else {
                        if opt.optional {
                            continue;
                        }
                        return Err(invalid(format!(
                            "no SSH key {id:?} forwarded from the client (use --ssh {id})"
                        )));
                    };
                    // A relay of the step's own, so the mount's owner and mode hold.
                    let relay = scratch.join(format!("ssh-{n}.sock"));
                    relays.push(crate::agent::AgentRelay::start(
                        &relay, sock, opt.uid, opt.gid, opt.mode,
                    )?);
                    MountKind::Bind {
                        source: relay,
                        readonly: true,
                    }
                }
            };
            exec_mounts.push(ExecMount {
                dest: m.dest.clone(),
                kind: source,
            });
        }

        // Files the runtime mounts over, and mount points it must create, are stubs:
        // remember which did not exist so they are removed from the result afterwards.
        let hostname = if meta.hostname.is_empty() {
            self.options.hostname.clone()
        } else {
            meta.hostname.clone()
        };
        let insecure = op.security == pb::SecurityMode::Insecure as i32;
        let network = self
            .networks
            .for_step(op.network, &meta.hostname, insecure)
            .map_err(|e| invalid(e.to_string()))?;
        let hosts = scratch.join("hosts");
        let extra: Vec<(String, String)> = meta
            .extra_hosts
            .iter()
            .map(|h| (h.host.clone(), h.ip.clone()))
            .collect();
        fs::write(&hosts, crate::network::resolv::hosts(&hostname, &extra))?;
        let resolv = scratch.join("resolv.conf");
        let resolv_text = self
            .networks
            .resolv_conf(op.network == pb::NetMode::Host as i32)
            .map_err(|e| invalid(e.to_string()))?;
        fs::write(&resolv, resolv_text)?;
        exec_mounts.push(ExecMount {
            dest: "/etc/hosts".into(),
            kind: MountKind::Bind {
                source: hosts,
                readonly: true,
            },
        });
        exec_mounts.push(ExecMount {
            dest: "/etc/resolv.conf".into(),
            kind: MountKind::Bind {
                source: resolv,
                readonly: true,
            },
        });
        // As BuildKit's stub cleaner: only the mount points of the step's own mounts.
        // `/proc`, `/dev` and `/sys`, made in a base that lacks them, stay in the layer.
        let stubs: Vec<String> = exec_mounts
            .iter()
            .filter_map(|m| first_missing(&rootfs, &m.dest))
            .collect();

        let user = users::resolve(&rootfs, &meta.user).map_err(|e| invalid(e.to_string()))?;
        let cwd = if meta.cwd.is_empty() {
            "/".to_string()
        } else {
            meta.cwd.clone()
        };
        // Nothing under /proc, however it is named (a symlink in the image or in a mount,
        // `/dev/fd`): `/proc/self/fd/N` would start the step in a directory of the
        // runtime's (CVE-2024-21626), whatever the installed runc.
        if container_path(&rootfs, &exec_mounts, &cwd).is_none_or(|p| p.starts_with("/proc")) {
            return Err(invalid(format!(
                "the working directory {cwd} is under /proc, which a step may not start in"
            )));
        }
        let cwd_host = rootpath::resolve(&rootfs, &cwd, true)?;
        // A missing working directory is created and stays, as BuildKit's executor does.
        if !cwd_host.exists() {
            fs::create_dir_all(&cwd_host)?;
        }
        let mut env = meta.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_string());
        }
        if let Some(p) = &meta.proxy_env {
            for (name, value) in [
                ("HTTP_PROXY", &p.http_proxy),
                ("HTTPS_PROXY", &p.https_proxy),
                ("FTP_PROXY", &p.ftp_proxy),
                ("NO_PROXY", &p.no_proxy),
                ("ALL_PROXY", &p.all_proxy),
            ] {
                if !value.is_empty() {
                    env.push(format!("{name}={value}"));
                    env.push(format!("{}={value}", name.to_lowercase()));
                }
            }
        }
        for s in &op.secretenv {
            match session.secrets.get(&s.id) {
                Some(v) => env.push(format!("{}={}", s.name, String::from_utf8_lossy(v))),
                None if s.optional => {}
                None => return Err(invalid(format!("secret {} not found", s.id))),
            }
        }
        let process = Process {
            args: meta.args.clone(),
            env,
            cwd,
            user: (user.uid, user.gid, user.additional_gids),
            hostname,
            rlimits: meta
                .ulimit
                .iter()
                .map(|u| (u.name.clone(), u.soft, u.hard))
                .collect(),
            network: network.namespace(),
            insecure,
            readonly_root,
            apparmor_profile: self.options.apparmor_profile.clone(),
            cgroup_parent: meta.cgroup_parent.clone(),
            memory_limit: None,
        };
        let status = self.runner.run(
            &rootfs,
            &process,
            &exec_mounts,
            None,
            output,
            &session.cancelled,
        )?;
        drop(locks);
        drop(relays);
        drop(network);
        if session.is_cancelled() {
            return Err(OpError::Invalid("the build was cancelled".into()));
        }
        for stub in stubs.iter().rev() {
            if let Ok(p) = rootpath::resolve(&rootfs, stub, false) {
                remove_stub(&p);
            }
        }
        let ok_codes: &[i32] = if meta.valid_exit_codes.is_empty() {
            &[0]
        } else {
            &meta.valid_exit_codes
        };
        if !ok_codes.contains(&status.code) {
            return Err(OpError::Exit {
                command: command_line(&meta.args),
                code: status.code,
                tail: status.tail,
                disk_full: crate::disk::free_space(&rootfs).is_ok_and(|free| free < FULL_DISK),
            });
        }
        for m in mounted {
            m.finish()?;
        }
        let count = op
            .mounts
            .iter()
            .filter(|m| m.mount_type == pb::MountType::Bind as i32)
            .map(|m| m.output + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        let mut outputs = vec![Snapshot::default(); count];
        for (out, base, layer) in writable {
            if out < 0 {
                continue;
            }
            self.trim(&layer, &base)?;
            let layer = layer.commit(&ids(out as usize), &LayerMeta::now())?;
            let mut snap = base;
            snap.layers.push(layer);
            outputs[out as usize] = snap;
        }
        Ok(outputs)
    }

    /// The directory of a cache mount, filled from its `from` input when new (with the
    /// owner and mode of the `from` directory, which is how `uid`, `gid` and `mode` reach
    /// it). `shared`: used by every step at once; `locked`: one step at a time, the others
    /// wait; `private`: a step that finds it in use gets a fresh directory of its own.
    /// The returned guard holds the lock or removes the private directory.
    fn cache_mount(
        &self,
        m: &pb::Mount,
        from: &Snapshot,
    ) -> Result<(PathBuf, Option<CacheHold>), OpError> {
        use rustix::fs::{FlockOperation, flock};
        let opt = m.cache_opt.clone().unwrap_or_default();
        let id = cache_mount_id(m);
        let key = cache_mount_name(m);
        fs::create_dir_all(&self.cache_mounts)?;
        let lock = |name: String| -> io::Result<fs::File> {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.cache_mounts.join(name))
        };
        let seed = |dir: &Path| -> Result<(), OpError> {
            let tmp = dir.with_extension("new");
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp)?;
            if !from.layers.is_empty() {
                let src = self.snapshots.mount(from, None)?;
                let selector = if m.selector.is_empty() {
                    "/"
                } else {
                    &m.selector
                };
                let top = rootpath::resolve(src.path(), selector, true)?;
                let copy = pb::FileActionCopy {
                    src: selector.into(),
                    dest: "/".into(),
                    mode: -1,
                    timestamp: -1,
                    dir_copy_contents: true,
                    follow_symlink: true,
                    ..Default::default()
                };
                fileops::copy(&tmp, src.path(), &copy, &self.scratch)?;
                if let Ok(md) = top.metadata() {
                    use std::os::unix::fs::{MetadataExt, PermissionsExt};
                    chown_mode(&tmp, md.uid(), md.gid(), md.mode() & 0o7777)?;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(md.mode() & 0o7777))?;
                }
            }
            fs::rename(&tmp, dir)?;
            Ok(())
        };
        let dir = self.cache_mounts.join(&key);
        let create = lock(format!("{key}.lock"))?;
        // Creating the directory is exclusive; `locked` keeps the lock for the step.
        flock(&create, FlockOperation::LockExclusive).map_err(io::Error::from)?;
        if !dir.exists() {
            seed(&dir)?;
        }
        // Under the exclusive lock: record the use for `du` and GC.
        let usage_path = self.cache_mounts.join(format!("{key}.json"));
        let mut usage: CacheMountUsage = fs::read(&usage_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let now = crate::snapshot::LayerMeta::now().created.unwrap_or(0);
        if usage.created == 0 {
            usage.created = now;
        }
        usage.id = id.clone();
        usage.description = format!("cached mount {} with id \"{id}\"", m.dest);
        usage.last_used = now;
        usage.usage_count += 1;
        let tmp = usage_path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(&usage).map_err(io::Error::other)?)?;
        fs::rename(&tmp, &usage_path)?;
        let sharing =
            pb::CacheSharingOpt::try_from(opt.sharing).unwrap_or(pb::CacheSharingOpt::Shared);
        match sharing {
            pb::CacheSharingOpt::Locked => Ok((dir, Some(CacheHold::Lock { _file: create }))),
            pb::CacheSharingOpt::Shared => Ok((dir, None)),
            pb::CacheSharingOpt::Private => {
                drop(create);
                let busy = lock(format!("{key}.busy"))?;
                if flock(&busy, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    return Ok((dir, Some(CacheHold::Lock { _file: busy })));
                }
                let own = tempfile_dir(&self.cache_mounts)?;
                fs::remove_dir(&own)?;
                seed(&own)?;
                Ok((
                    own.clone(),
                    Some(CacheHold::Private {
                        _dir: crate::exec::RemoveOnDrop(own),
                    }),
                ))
            }
        }
    }

    /// Run a container frontend: `process` on a read-only view of `image`, with `files`
    /// (path in the container, content) mounted read-only, and `pipes` as its stdin and
    /// stdout (the gateway connection). Its stderr lines go to `output`. Nothing of the
    /// container is kept.
    pub fn run_frontend(
        &self,
        image: &Snapshot,
        process: &Process,
        files: &[(&str, &[u8])],
        pipes: crate::exec::Pipes,
        output: Output,
        cancel: &AtomicBool,
    ) -> Result<ExitStatus, OpError> {
        use std::os::unix::fs::PermissionsExt;
        // runc makes mount points in the root: they go to a layer thrown away afterwards,
        // never into the image's.
        let upper = self.snapshots.new_layer()?;
        let root = self.snapshots.mount(image, Some(&upper))?;
        let dir = crate::exec::RemoveOnDrop(tempfile_dir(&self.runner.bundles)?);
        let mut mounts = Vec::new();
        for (i, (dest, content)) in files.iter().enumerate() {
            let source = dir.0.join(i.to_string());
            fs::write(&source, content)?;
            fs::set_permissions(&source, fs::Permissions::from_mode(0o400))?;
            mounts.push(ExecMount {
                dest: dest.to_string(),
                kind: MountKind::Bind {
                    source,
                    readonly: true,
                },
            });
        }
        let mut process = process.clone();
        process.readonly_root = true;
        process.apparmor_profile = self.options.apparmor_profile.clone();
        Ok(self
            .runner
            .run(root.path(), &process, &mounts, Some(pipes), output, cancel)?)
    }

    /// The directory holding cache mounts (`<root>/cache-mounts`).
    pub fn cache_mounts_dir(&self) -> &Path {
        &self.cache_mounts
    }

    /// Run a file op. `ids[i]` names the layer of output `i`.
    pub fn file(
        &self,
        op: &pb::FileOp,
        inputs: &[Snapshot],
        ids: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Snapshot>, OpError> {
        // Option: an action's result, until a later action builds on it and takes it.
        type State = Option<(Snapshot, LayerBuilder, Mounted)>;
        let n = inputs.len() as i64;
        let mut states: Vec<State> = Vec::new();
        let mut outputs: BTreeMap<usize, usize> = BTreeMap::new();
        for (k, action) in op.actions.iter().enumerate() {
            let (base, layer, mnt) = match action.input {
                i if i < 0 => {
                    let layer = self.snapshots.new_layer()?;
                    let mnt = self.snapshots.mount(&Snapshot::default(), Some(&layer))?;
                    (Snapshot::default(), layer, mnt)
                }
                i if i < n => {
                    let base = inputs[i as usize].clone();
                    let layer = self.snapshots.new_layer()?;
                    let mnt = self.snapshots.mount(&base, Some(&layer))?;
                    (base, layer, mnt)
                }
                i => {
                    let prev = (i - n) as usize;
                    match states
                        .get_mut(prev)
                        .ok_or_else(|| {
                            invalid(format!(
                                "file action {k} reads action {prev}, which comes later"
                            ))
                        })?
                        .take()
                    {
                        Some(open) => open,
                        None => {
                            return Err(invalid(format!(
                                "file action {k} builds on action {prev}, whose result another action took"
                            )));
                        }
                    }
                }
            };
            let root = mnt.path().to_path_buf();
            use pb::file_action::Action;
            let result = match &action.action {
                Some(Action::Mkdir(a)) => fileops::mkdir(&root, a),
                Some(Action::Mkfile(a)) => fileops::mkfile(&root, a),
                Some(Action::Rm(a)) => fileops::rm(&root, a),
                Some(Action::Symlink(a)) => fileops::symlink_action(&root, a),
                Some(Action::Copy(a)) => {
                    let s = action.secondary_input;
                    if s < 0 {
                        let empty = self.snapshots.mount(&Snapshot::default(), None)?;
                        fileops::copy(&root, empty.path(), a, &self.scratch)
                    } else if s < n {
                        let src = self.snapshots.mount(&inputs[s as usize], None)?;
                        fileops::copy(&root, src.path(), a, &self.scratch)
                    } else {
                        match states.get((s - n) as usize) {
                            Some(Some((_, _, m))) => {
                                fileops::copy(&root, m.path(), a, &self.scratch)
                            }
                            _ => {
                                return Err(invalid(format!(
                                    "file action {k} copies from a result that is not available"
                                )));
                            }
                        }
                    }
                }
                None => Err(io::Error::other("empty file action")),
            };
            result?;
            if action.output >= 0 {
                outputs.insert(action.output as usize, k);
            }
            states.push(Some((base, layer, mnt)));
        }
        let count = outputs.keys().max().map_or(0, |m| m + 1);
        let mut result = vec![Snapshot::default(); count];
        for (out, k) in outputs {
            let Some((base, layer, mnt)) = states[k].take() else {
                return Err(invalid(format!(
                    "output {out} of the file op was consumed by a later action"
                )));
            };
            mnt.finish()?;
            self.trim(&layer, &base)?;
            let layer = layer.commit(&ids(out), &LayerMeta::now())?;
            let mut snap = base;
            snap.layers.push(layer);
            result[out] = snap;
        }
        Ok(result)
    }

    /// Drop from a new layer on `base` what it holds unchanged (see
    /// [`crate::snapshot::trim_unchanged`]); the native snapshotter writes only changes.
    fn trim(&self, layer: &LayerBuilder, base: &Snapshot) -> io::Result<()> {
        if !self.snapshots.is_native() {
            let lower = self.snapshots.mount(base, None)?;
            crate::snapshot::trim_unchanged(&layer.dir(), lower.path());
        }
        Ok(())
    }

    /// Merge: the inputs' layers stacked in order.
    pub fn merge(&self, inputs: &[Snapshot]) -> Snapshot {
        Snapshot {
            layers: inputs
                .iter()
                .flat_map(|s| s.layers.iter().cloned())
                .collect(),
        }
    }

    /// Diff: what `upper` changes on top of `lower`: its own layers when it is built on
    /// `lower`, else one layer `id` computed by comparing the two.
    pub fn diff(&self, lower: &Snapshot, upper: &Snapshot, id: &str) -> Result<Snapshot, OpError> {
        if upper.layers.starts_with(&lower.layers) {
            return Ok(Snapshot {
                layers: upper.layers[lower.layers.len()..].to_vec(),
            });
        }
        let layer = self.snapshots.new_layer()?;
        let (l, u) = (
            self.snapshots.mount(lower, None)?,
            self.snapshots.mount(upper, None)?,
        );
        crate::snapshot::diff_trees(l.path(), u.path(), &layer.dir())?;
        drop((l, u));
        Ok(Snapshot {
            layers: vec![layer.commit(id, &LayerMeta::now())?],
        })
    }
}

/// Give `path` this owner and mode (mode 0: read-only for the owner).
pub(crate) fn chown_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    rustix::fs::chown(
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )?;
    fs::set_permissions(
        path,
        fs::Permissions::from_mode(if mode == 0 { 0o400 } else { mode }),
    )
}

/// Where `path` leads in the running container: symlinks followed as the step would see
/// them, in the root filesystem and in the step's mounts (an absolute link starts again
/// at the container's root), and `/dev/fd` and `/dev/std*` as the links into `/proc` runc
/// makes. `None` when it loops.
fn container_path(rootfs: &Path, mounts: &[ExecMount], path: &str) -> Option<String> {
    // The host directory a container path is in: the deepest mount holding it.
    let host = |logical: &str| -> Option<PathBuf> {
        let mut best: Option<(&str, Option<&Path>)> = Some(("/", Some(rootfs)));
        for m in mounts {
            let dest = m.dest.trim_end_matches('/');
            let under = logical == dest || logical.starts_with(&format!("{dest}/"));
            if under && best.is_none_or(|(d, _)| dest.len() > d.len()) {
                let source = match &m.kind {
                    MountKind::Bind { source, .. } => Some(source.as_path()),
                    MountKind::Tmpfs { .. } => None,
                };
                best = Some((dest, source));
            }
        }
        let (dest, source) = best?;
        let rest = logical[dest.len()..].trim_start_matches('/');
        source.map(|s| {
            if rest.is_empty() {
                s.to_path_buf()
            } else {
                s.join(rest)
            }
        })
    };
    let mut pending: Vec<String> = rootpath::clean(path)
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut stack: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            stack.pop();
            continue;
        }
        stack.push(name);
        let logical = format!("/{}", stack.join("/"));
        let target = match logical.as_str() {
            "/dev/fd" => Some(PathBuf::from("/proc/self/fd")),
            "/dev/stdin" | "/dev/stdout" | "/dev/stderr" => Some(PathBuf::from("/proc/self/fd/0")),
            _ if logical.starts_with("/proc") => return Some(logical),
            _ => host(&logical).and_then(|h| fs::read_link(h).ok()),
        };
        if let Some(target) = target {
            links += 1;
            if links > 40 {
                return None;
            }
            stack.pop();
            if target.is_absolute() {
                stack.clear();
            }
            let more: Vec<String> = target
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                    std::path::Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect();
            pending.extend(more.into_iter().rev());
        }
    }
    Some(format!("/{}", stack.join("/")))
}

/// Whether the kernel enforces AppArmor.
fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// Lock the state directory `root` for this process (`<root>/buildwit.lock`, which also
/// names the holder), or say which process holds it.
fn lock_root(root: &Path) -> io::Result<fs::File> {
    use rustix::fs::{FlockOperation, flock};
    use std::io::{Read, Seek, Write};
    fs::create_dir_all(root)?;
    let path = root.join("buildwit.lock");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "the state directory {} is in use by another buildwit process{}; build through it with --addr, or give this one another --root",
                root.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            ),
        ));
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

fn tempfile_dir(base: &Path) -> io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = base.join(format!(
        "files-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The first component of `path` missing in `root` (as an absolute container path).
fn first_missing(root: &Path, path: &str) -> Option<String> {
    let mut cur = String::new();
    for part in rootpath::clean(path).split('/') {
        cur = format!("{cur}/{part}");
        if rootpath::resolve(root, &cur, false).is_ok_and(|p| p.symlink_metadata().is_err()) {
            return Some(cur);
        }
    }
    None
}

/// Remove a mount stub: an empty file (a bind target), or a directory holding nothing but
/// empty directories and bind targets.
fn remove_stub(path: &Path) {
    let Ok(md) = path.symlink_metadata() else {
        return;
    };
    if md.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                remove_stub(&e.path());
            }
        }
        let _ = fs::remove_dir(path);
    } else if md.is_file() && md.len() == 0 {
        let _ = fs::remove_file(path);
    }
}

/// A command as BuildKit quotes it in errors: `/bin/sh -c echo hi`.
pub fn command_line(args: &[String]) -> String {
    args.join(" ")
}

/// A cache mount's id: its `id`, or its target path when it has none (as BuildKit).
fn cache_mount_id(m: &pb::Mount) -> String {
    match m.cache_opt.as_ref().map(|o| o.id.as_str()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => m.dest.clone(),
    }
}

/// The name of a cache mount's directory under `cache-mounts/` (hex of its id's hash).
pub fn cache_mount_name(m: &pb::Mount) -> String {
    hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(cache_mount_id(m).as_bytes())[..16])
}

/// What `cache-mounts/<name>.json` records about a cache mount's use.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheMountUsage {
    /// Its id.
    pub id: String,
    /// What `du` shows.
    pub description: String,
    /// First use, Unix seconds.
    pub created: i64,
    /// Last use, Unix seconds.
    pub last_used: i64,
    /// How many steps used it.
    pub usage_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_directories_resolve_as_the_container_sees_them() {
        let root = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let rootfs = root.path();
        fs::create_dir_all(rootfs.join("usr/src")).unwrap();
        std::os::unix::fs::symlink("/usr/src", rootfs.join("src")).unwrap();
        std::os::unix::fs::symlink("/proc/self/fd/7", rootfs.join("leak")).unwrap();
        std::os::unix::fs::symlink("/proc/self/fd", cache.path().join("fds")).unwrap();
        let mounts = vec![ExecMount {
            dest: "/c".into(),
            kind: MountKind::Bind {
                source: cache.path().to_path_buf(),
                readonly: false,
            },
        }];
        let at = |p: &str| container_path(rootfs, &mounts, p);
        assert_eq!(at("/src/app").as_deref(), Some("/usr/src/app"));
        assert_eq!(at("/a/../b").as_deref(), Some("/b"));
        assert!(at("/leak").unwrap().starts_with("/proc"));
        assert!(at("/dev/fd/7").unwrap().starts_with("/proc"));
        assert!(at("/c/fds/7").unwrap().starts_with("/proc"));
        assert!(at("/proc/../proc/self").unwrap().starts_with("/proc"));
        std::os::unix::fs::symlink("loop", rootfs.join("loop")).unwrap();
        assert_eq!(at("/loop"), None);
    }
}
