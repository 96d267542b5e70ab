//! A bridge that answers a frontend from the client's local directories and the solver.
//!
//! Files of `local://NAME` results are read straight from the directory the client named
//! NAME, confined to it (no `..`, no symlink out) and to the source's `followpaths` /
//! `includepattern` / `excludepatterns`. Other results are built by the solver and read
//! from their mounted snapshot, confined to it.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use buildwit_frontend::bridge::{
    Bridge, ErrorKind, Event, FrontendOutput, GatewayError, ImageRequest, ResolvedImage, SolvedRef,
    Stat,
};
use buildwit_llb::pb;
use prost::Message;

use crate::frontends::{Frontends, Selected, Served};
use crate::{DaemonError, EventSink};

/// How deep frontends may forward to frontends (BuildKit limits named-context recursion
/// to 10 as well).
const MAX_NESTING: usize = 10;

/// Answers gateway calls from local directories and forwards to other frontends.
pub struct LocalBridge {
    pub(crate) session: Arc<buildwit_worker::Session>,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) frontends: Arc<Frontends>,
    depth: usize,
    /// The wall-time limit of each frontend run (`None`: the runtime's).
    pub(crate) deadline: Option<std::time::Duration>,
    /// The innermost forwarded frontend whose build failed, shared by every level: the
    /// error the outermost frontend passes on names it (a `# syntax=` image, not
    /// `dockerfile.v0`).
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

/// A local source: its directory and the filters of its op.
struct LocalView {
    root: PathBuf,
    follow: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    /// Keeps a built result mounted while it is read.
    _mounted: Option<buildwit_worker::Mounted>,
}

fn err(kind: ErrorKind, message: impl Into<String>) -> GatewayError {
    GatewayError::new(kind, message)
}

impl LocalBridge {
    /// A bridge over a build's session (its named directories, secrets, ssh agents).
    pub fn new(
        session: Arc<buildwit_worker::Session>,
        events: Arc<dyn EventSink>,
        frontends: Arc<Frontends>,
    ) -> Self {
        LocalBridge {
            session,
            events,
            frontends,
            depth: 0,
            deadline: None,
            failed: Arc::default(),
        }
    }

    /// `error` of the outermost frontend, named after the forwarded frontend that failed
    /// when one did.
    pub(crate) fn name_failure(
        &self,
        error: buildwit_frontend::FrontendError,
    ) -> buildwit_frontend::FrontendError {
        use buildwit_frontend::FrontendError;
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (error, failed) {
            (FrontendError::Build { error, .. }, Some(frontend)) => {
                FrontendError::Build { frontend, error }
            }
            (error, _) => error,
        }
    }

    /// The same bridge with frontends forwarded to limited to `deadline` per run.
    pub fn deadline(mut self, deadline: Option<std::time::Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Report what the selection of a frontend wants the user to know.
    pub(crate) fn warn_all(&self, selected: &Selected) {
        for w in &selected.warnings {
            self.events.event(Event::Warning {
                frontend: selected.served.label().to_string(),
                warning: buildwit_frontend::bridge::Warning {
                    level: 1,
                    short: w.clone(),
                    detail: Vec::new(),
                    url: String::new(),
                    location: None,
                },
            });
        }
    }

    /// Run a frontend; this bridge answers its calls.
    pub(crate) fn run(
        self: &Arc<Self>,
        served: &Served,
        options: Vec<(String, String)>,
        inputs: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, buildwit_frontend::FrontendError> {
        match served {
            Served::Wasm(loaded) => {
                self.frontends
                    .runtime
                    .run(loaded, options, inputs, self.clone(), self.deadline)
            }
            Served::Container(image) => self.run_container(image, options, inputs),
        }
    }

    /// Build a result with the solver and mount it read-only.
    fn built(&self, r: &SolvedRef) -> Result<LocalView, GatewayError> {
        let solver = self
            .frontends
            .solver()
            .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        let events = self.events.clone();
        let progress = Arc::new(move |e: buildwit_solver::ProgressEvent| events.progress(e));
        let snapshot = self
            .frontends
            .io
            .block_on(solver.solve(
                &r.definition,
                self.session.clone(),
                &buildwit_solver::Entitlements::default(),
                progress,
            ))
            .map_err(|e| err(ErrorKind::Failed, e.to_string()))?
            .unwrap_or_default();
        let mounted = solver
            .worker()
            .snapshots
            .mount(&snapshot, None)
            .map_err(|e| err(ErrorKind::Internal, format!("mounting the result: {e}")))?;
        Ok(LocalView {
            root: mounted.path().to_path_buf(),
            follow: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            _mounted: Some(mounted),
        })
    }

    /// The files of a result: a local source's directory, or a built snapshot.
    fn view(&self, r: &SolvedRef) -> Result<LocalView, GatewayError> {
        let def = &r.definition;
        let terminal = def
            .def
            .last()
            .and_then(|b| pb::Op::decode(b.as_slice()).ok())
            .ok_or_else(|| err(ErrorKind::InvalidArgument, "empty definition"))?;
        let target = terminal
            .inputs
            .first()
            .map(|i| i.digest.clone())
            .ok_or_else(|| err(ErrorKind::InvalidArgument, "definition has no result"))?;
        let op = def
            .def
            .iter()
            .find(|b| buildwit_llb::digest_of(b).to_string() == target)
            .and_then(|b| pb::Op::decode(b.as_slice()).ok());
        let local = match op.and_then(|o| o.op) {
            Some(pb::op::Op::Source(s)) if s.identifier.starts_with("local://") => s,
            _ => return self.built(r),
        };
        let source = local;
        let name = &source.identifier["local://".len()..];
        let root = self.session.local_dir(name).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("the client sent no local directory named {name:?}"),
            )
        })?;
        let json_list = |key: &str| -> Vec<String> {
            source
                .attrs
                .get(key)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default()
        };
        let wanted = buildwit_worker::local::LocalSource {
            dir: root.clone(),
            follow: json_list("local.followpaths"),
            include: json_list("local.includepattern"),
            exclude: json_list("local.excludepatterns"),
        };
        self.session.sync_local(name, &wanted).map_err(|e| {
            err(
                ErrorKind::Failed,
                format!("local {name:?} from the client: {e}"),
            )
        })?;
        Ok(LocalView {
            root: root
                .canonicalize()
                .map_err(|e| err(ErrorKind::NotFound, format!("local {name:?}: {e}")))?,
            follow: json_list("local.followpaths"),
            include: json_list("local.includepattern"),
            exclude: json_list("local.excludepatterns"),
            _mounted: None,
        })
    }
}

/// A path a view resolved: the real path, or the `/proc` path of a descriptor opened below
/// a client's directory (valid while this lives).
struct Resolved {
    path: PathBuf,
    _opened: Option<std::os::fd::OwnedFd>,
}

impl std::ops::Deref for Resolved {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Resolved {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl LocalView {
    /// The real path of `path` inside the root; refuses anything that leaves it or that the
    /// source's filters hide.
    fn resolve(&self, path: &str) -> Result<Resolved, GatewayError> {
        if self._mounted.is_some() {
            // A built snapshot: its symlinks are followed inside it, as in a container.
            let p = buildwit_worker::rootpath::resolve(&self.root, path, true)
                .map_err(|e| err(ErrorKind::NotFound, format!("{path}: {e}")))?;
            if p.symlink_metadata().is_err() {
                return Err(err(
                    ErrorKind::NotFound,
                    format!("{path}: no such file or directory"),
                ));
            }
            return Ok(Resolved {
                path: p,
                _opened: None,
            });
        }
        let rel = clean_relative(path)?;
        let rel_str = rel.to_string_lossy().to_string();
        // Opened below the root, symlinks followed only while they stay in it: a link out
        // fails like a missing file, with the same words, so a client learns nothing of
        // the daemon's files from it.
        let not_found = || {
            err(
                ErrorKind::NotFound,
                format!("{path}: no such file or directory in the local directory"),
            )
        };
        let opened = buildwit_worker::beneath::open_root(&self.root)
            .and_then(|root| buildwit_worker::beneath::open_path(root.as_fd(), &rel))
            .map_err(|_| not_found())?;
        let real = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
        let is_dir = real.metadata().is_ok_and(|m| m.is_dir());
        if !rel_str.is_empty() && !self.visible(&rel_str, is_dir) {
            return Err(err(
                ErrorKind::NotFound,
                format!("{path}: not in the files this source selects"),
            ));
        }
        Ok(Resolved {
            path: real,
            _opened: Some(opened),
        })
    }

    /// Whether the source's filters show `rel`: selected, or a directory with something
    /// selected below it.
    fn visible(&self, rel: &str, is_dir: bool) -> bool {
        let filter = buildwit_worker::local::Filter::new(
            &self.root,
            &self.follow,
            &self.include,
            &self.exclude,
        );
        let (keep, descend) = filter.visit(rel, is_dir);
        keep || descend
    }
}

/// `path` as a relative path with no `..` that climbs out.
fn clean_relative(path: &str) -> Result<PathBuf, GatewayError> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir if !out.pop() => {
                return Err(err(
                    ErrorKind::PermissionDenied,
                    format!("{path}: leads outside the directory"),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Glob on whole paths: `*` and `?` within a component, `**` across components.
fn glob_path(pattern: &str, path: &str) -> bool {
    fn go(p: &[&str], n: &[&str]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(&"**"), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(a), Some(b)) if glob(a.as_bytes(), b.as_bytes()) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    fn glob(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], n) || (!n.is_empty() && glob(p, &n[1..])),
            (Some(b'?'), Some(_)) => glob(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let n: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    go(&p, &n)
}

fn stat_of(name: &str, md: &fs::Metadata, link: Option<PathBuf>) -> Stat {
    let mode = md.permissions().mode();
    Stat {
        path: name.to_string(),
        mode,
        uid: md.uid(),
        gid: md.gid(),
        size: md.len() as i64,
        mod_time: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        linkname: link
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default(),
        devmajor: 0,
        devminor: 0,
    }
}

impl Bridge for LocalBridge {
    fn worker_platforms(&self) -> Vec<pb::Platform> {
        match self.frontends.solver() {
            Ok(solver) => crate::worker_platforms(&solver.worker().platforms),
            Err(_) => crate::worker_platforms(&[]),
        }
    }

    fn read_file(
        &self,
        r: &SolvedRef,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GatewayError> {
        let real = self.view(r)?.resolve(path)?;
        if !real.is_file() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{path} is not a regular file"),
            ));
        }
        let data = fs::read(&real).map_err(|e| err(ErrorKind::Internal, format!("{path}: {e}")))?;
        Ok(match range {
            Some((offset, length)) => {
                let start = (offset as usize).min(data.len());
                let end = start.saturating_add(length as usize).min(data.len());
                data[start..end].to_vec()
            }
            None => data,
        })
    }

    fn read_dir(
        &self,
        r: &SolvedRef,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<Stat>, GatewayError> {
        let view = self.view(r)?;
        let real = view.resolve(path)?;
        let rel = clean_relative(path)?;
        let mut out = Vec::new();
        let entries =
            fs::read_dir(&real).map_err(|e| err(ErrorKind::NotFound, format!("{path}: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = rel.join(&name).to_string_lossy().into_owned();
            let Ok(md) = entry.path().symlink_metadata() else {
                continue;
            };
            if !view.visible(&child, md.is_dir())
                || include_pattern.is_some_and(|p| !glob_path(p, &name))
            {
                continue;
            }
            let link = md
                .file_type()
                .is_symlink()
                .then(|| fs::read_link(entry.path()).ok())
                .flatten();
            out.push(stat_of(&name, &md, link));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn stat_file(&self, r: &SolvedRef, path: &str) -> Result<Stat, GatewayError> {
        let real = self.view(r)?.resolve(path)?;
        let md = real
            .metadata()
            .map_err(|e| err(ErrorKind::NotFound, format!("{path}: {e}")))?;
        Ok(stat_of(path, &md, None))
    }

    fn evaluate(&self, r: &SolvedRef) -> Result<(), GatewayError> {
        self.view(r).map(|_| ())
    }

    fn resolve_image_config(&self, request: &ImageRequest) -> Result<ResolvedImage, GatewayError> {
        let (os, arch, variant) = match &request.platform {
            Some(p) => (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
            None => ("linux", "amd64", ""),
        };
        let registries = self
            .frontends
            .registries
            .with_access(&self.session.registry);
        let resolved = self
            .frontends
            .io
            .block_on(registries.resolve_image_config(&request.reference, os, arch, variant))
            .map_err(|e| {
                use buildwit_registry::RegistryErrorKind as K;
                let kind = match e.kind() {
                    K::NotFound | K::NoPlatform => ErrorKind::NotFound,
                    K::Unauthorized => ErrorKind::PermissionDenied,
                    K::Invalid => ErrorKind::InvalidArgument,
                    K::Unreachable | K::Config => ErrorKind::Internal,
                };
                err(kind, e.to_string())
            })?;
        Ok(ResolvedImage {
            reference: resolved.reference,
            digest: resolved.digest,
            config: resolved.config,
        })
    }

    fn forward(
        &self,
        frontend: &str,
        options: Vec<(String, String)>,
        inputs: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, GatewayError> {
        if self.depth >= MAX_NESTING {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("frontends forwarded more than {MAX_NESTING} levels deep (at {frontend})"),
            ));
        }
        // Policy applies at every level, as for a top-level request.
        let selected = self
            .frontends
            .select(frontend, &options, &self.session.registry)
            .map_err(|e| match e {
                DaemonError::InvalidFrontend(_) | DaemonError::Policy(_) => {
                    err(ErrorKind::PermissionDenied, e.to_string())
                }
                other => err(ErrorKind::Internal, other.to_string()),
            })?;
        self.warn_all(&selected);
        let child = Arc::new(LocalBridge {
            session: self.session.clone(),
            events: self.events.clone(),
            frontends: self.frontends.clone(),
            depth: self.depth + 1,
            deadline: self.deadline,
            failed: self.failed.clone(),
        });
        // Which frontend served this, as the build record shows it for the top level.
        let served = match &selected.served {
            Served::Wasm(loaded) => {
                let about = match self.frontends.runtime.info(loaded, child.clone()) {
                    Ok(i) => format!("{} {} ({}), ", i.name, i.version, i.channel),
                    Err(_) => String::new(),
                };
                format!("{about}component {}, {}", loaded.digest, loaded.wit_version)
            }
            Served::Container(_) => "container image".to_string(),
        };
        self.events.event(Event::Log {
            frontend: frontend.to_string(),
            level: buildwit_frontend::bridge::LogLevel::Info,
            message: format!("served by {} ({served})", selected.source),
        });
        child
            .run(&selected.served, options, inputs)
            .map_err(|e| match e {
                buildwit_frontend::FrontendError::Build { error, .. } => {
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert_with(|| selected.source.clone());
                    error
                }
                other => err(ErrorKind::Failed, other.to_string()),
            })
    }

    fn event(&self, event: Event) {
        self.events.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_path("*.toml", "build.toml"));
        assert!(!glob_path("*.toml", "sub/build.toml"));
        assert!(glob_path("**/*.toml", "sub/build.toml"));
        assert!(glob_path("app/*", "app/run.sh"));
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(clean_relative("/a/./b/../c").unwrap(), PathBuf::from("a/c"));
        assert!(clean_relative("../etc/passwd").is_err());
        assert!(clean_relative("a/../../x").is_err());
    }
}
