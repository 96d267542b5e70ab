//! Run a frontend natively against an in-memory gateway: unit tests without a daemon.
//!
//! ```ignore
//! let gw = MemoryGateway::new()
//!     .option("filename", "build.toml")
//!     .file("dockerfile", "build.toml", "...")
//!     .images_json(include_str!("images.json"))?;
//! let out = run::<MyFrontend>(&gw)?;
//! assert_eq!(out.definition.unwrap().ops.len(), 3);
//! ```
//!
//! `solve` records the definition and returns a reference; reading files works for
//! references whose result is a `local://NAME` source (served from the files you added);
//! anything else needs a real solver and returns `unsupported`.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::client::{BuildResult, Client, Reference, ReferenceBackend, SolveRequest};
use crate::llb::{Definition, OpKind, Platform};
use crate::{
    Error, FileRange, Frontend, LogLevel, ResolveImageRequest, ResolvedImage, Stat, Warning,
};

type Files = Rc<BTreeMap<String, Vec<u8>>>;

/// An in-memory gateway: options, inputs, local directories and image configs, on a
/// `linux/amd64` worker unless [`MemoryGateway::worker_platforms`] says otherwise.
#[derive(Default)]
pub struct MemoryGateway {
    options: Vec<(String, String)>,
    worker_platforms: Option<Vec<Platform>>,
    inputs: Vec<(String, Definition)>,
    locals: HashMap<String, BTreeMap<String, Vec<u8>>>,
    images: HashMap<String, ResolvedImage>,
    recorded: RefCell<Recorded>,
}

#[derive(Default)]
struct Recorded {
    warnings: Vec<Warning>,
    logs: Vec<(LogLevel, String)>,
    solved: Vec<Definition>,
}

impl MemoryGateway {
    /// An empty gateway.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a frontend option.
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The platforms the worker builds for, its own first.
    pub fn worker_platforms(mut self, platforms: &[&str]) -> Result<Self, String> {
        let parsed = platforms
            .iter()
            .map(|p| Platform::parse(p))
            .collect::<Result<_, _>>()?;
        self.worker_platforms = Some(parsed);
        Ok(self)
    }

    /// Add a named input.
    pub fn input(mut self, name: &str, definition: Definition) -> Self {
        self.inputs.push((name.into(), definition));
        self
    }

    /// Add a file to the local directory `local` (`context`, `dockerfile`).
    pub fn file(mut self, local: &str, path: &str, data: impl Into<Vec<u8>>) -> Self {
        let path = path.trim_start_matches('/').to_string();
        self.locals
            .entry(local.into())
            .or_default()
            .insert(path, data.into());
        self
    }

    /// Answer lookups of `reference` with this digest and raw config.
    pub fn image(mut self, reference: &str, digest: &str, config: impl Into<Vec<u8>>) -> Self {
        self.images.insert(
            reference.into(),
            ResolvedImage {
                ref_: reference.into(),
                digest: digest.into(),
                config: config.into(),
            },
        );
        self
    }

    /// Load image answers from a JSON fixture: `{"<ref>": {"digest": "sha256:…",
    /// "configRaw": "<json text>"}}` (`config` as a JSON value works too).
    pub fn images_json(mut self, json: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("image fixture: {e}"))?;
        let map = v.as_object().ok_or("image fixture: expected an object")?;
        for (reference, entry) in map {
            let digest = entry["digest"]
                .as_str()
                .ok_or_else(|| format!("image fixture: {reference}: no digest"))?;
            let config = match (
                entry.get("configRaw").and_then(|c| c.as_str()),
                entry.get("config"),
            ) {
                (Some(raw), _) => raw.as_bytes().to_vec(),
                (None, Some(c)) => serde_json::to_vec(c).map_err(|e| e.to_string())?,
                (None, None) => return Err(format!("image fixture: {reference}: no config")),
            };
            self = self.image(reference, digest, config);
        }
        Ok(self)
    }

    /// Warnings the frontend reported.
    pub fn warnings(&self) -> Vec<Warning> {
        self.recorded.borrow().warnings.clone()
    }

    /// Log lines the frontend wrote.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.recorded.borrow().logs.clone()
    }

    /// Every definition the frontend solved, in order.
    pub fn solved(&self) -> Vec<Definition> {
        self.recorded.borrow().solved.clone()
    }
}

impl Client for MemoryGateway {
    fn options(&self) -> Vec<(String, String)> {
        self.options.clone()
    }

    fn inputs(&self) -> Vec<(String, Definition)> {
        self.inputs.clone()
    }

    fn worker_platforms(&self) -> Vec<Platform> {
        self.worker_platforms
            .clone()
            .unwrap_or_else(|| vec![Platform::linux_amd64()])
    }

    fn solve(&self, request: SolveRequest) -> Result<BuildResult, Error> {
        if let Some(frontend) = request.frontend {
            return Err(Error::unsupported(format!(
                "the test gateway cannot forward to frontend {frontend:?}"
            )));
        }
        let Some(definition) = request.definition else {
            return Ok(BuildResult::default());
        };
        self.recorded.borrow_mut().solved.push(definition.clone());
        let Some(result) = definition.result else {
            return Ok(BuildResult::default());
        };
        let files = match &definition.ops.get(result.op as usize).map(|o| &o.kind) {
            Some(OpKind::Source(s)) => s
                .identifier
                .strip_prefix("local://")
                .map(|name| Rc::new(self.locals.get(name).cloned().unwrap_or_default())),
            _ => None,
        };
        Ok(BuildResult::from_ref(Some(Reference::new(
            MemoryReference { definition, files },
        ))))
    }

    fn resolve_image_config(&self, request: ResolveImageRequest) -> Result<ResolvedImage, Error> {
        self.images
            .get(&request.ref_)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("{}: not found", request.ref_)))
    }

    fn warn(&self, warning: Warning) {
        self.recorded.borrow_mut().warnings.push(warning);
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.recorded
            .borrow_mut()
            .logs
            .push((level, message.into()));
    }

    fn progress(&self, _id: &str, _name: &str, _current: u64, _total: u64, _completed: bool) {}
}

/// A reference of the test gateway.
pub struct MemoryReference {
    /// The definition that was solved.
    pub definition: Definition,
    files: Option<Files>,
}

impl MemoryReference {
    fn files(&self) -> Result<&Files, Error> {
        self.files.as_ref().ok_or_else(|| {
            Error::unsupported("the test gateway can only read files of local:// sources")
        })
    }
}

fn file_stat(path: &str, size: usize, dir: bool) -> Stat {
    Stat {
        path: path.into(),
        mode: if dir { 0o40755 } else { 0o100644 },
        uid: 0,
        gid: 0,
        size: size as i64,
        mod_time: 0,
        linkname: String::new(),
        devmajor: 0,
        devminor: 0,
    }
}

impl ReferenceBackend for MemoryReference {
    fn read_file(&self, path: &str, range: Option<FileRange>) -> Result<Vec<u8>, Error> {
        let data = self
            .files()?
            .get(path.trim_start_matches('/'))
            .ok_or_else(|| Error::not_found(format!("{path}: no such file or directory")))?;
        Ok(match range {
            Some(r) => {
                let start = (r.offset as usize).min(data.len());
                let end = start.saturating_add(r.length as usize).min(data.len());
                data[start..end].to_vec()
            }
            None => data.clone(),
        })
    }

    fn read_dir(&self, path: &str, include_pattern: Option<&str>) -> Result<Vec<Stat>, Error> {
        let dir = path.trim_matches('/');
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut entries: BTreeMap<String, Stat> = BTreeMap::new();
        for (p, data) in self.files()?.iter() {
            let Some(rest) = p.strip_prefix(&prefix) else {
                continue;
            };
            let (name, is_dir) = match rest.split_once('/') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            if include_pattern.is_some_and(|pat| !glob_match(pat, name)) {
                continue;
            }
            entries.insert(
                name.into(),
                file_stat(name, if is_dir { 0 } else { data.len() }, is_dir),
            );
        }
        Ok(entries.into_values().collect())
    }

    fn stat_file(&self, path: &str) -> Result<Stat, Error> {
        let p = path.trim_matches('/');
        let files = self.files()?;
        if let Some(data) = files.get(p) {
            return Ok(file_stat(p, data.len(), false));
        }
        let prefix = format!("{p}/");
        if p.is_empty() || files.keys().any(|k| k.starts_with(&prefix)) {
            return Ok(file_stat(p, 0, true));
        }
        Err(Error::not_found(format!(
            "{path}: no such file or directory"
        )))
    }

    fn evaluate(&self) -> Result<(), Error> {
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A `*`/`?` glob on one path component.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// What a frontend produced in a test run.
#[derive(Debug)]
pub struct TestOutput {
    /// The definition behind the single result (`None` for scratch).
    pub definition: Option<Definition>,
    /// The definitions behind per-platform results.
    pub platforms: Vec<(String, Definition)>,
    /// Result metadata (`containerimage.config`, ...).
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl TestOutput {
    /// A metadata value as text.
    pub fn metadata_str(&self, key: &str) -> Option<String> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Run frontend `F` against `gateway`, as the export does (subrequests `F` does not list
/// are answered by the SDK).
pub fn run<F: Frontend>(gateway: &MemoryGateway) -> Result<TestOutput, Error> {
    let result = crate::export::run::<F>(gateway)?;
    let definition_of = |r: Reference| {
        r.into_backend::<MemoryReference>()
            .map(|m| m.definition)
            .ok_or_else(|| {
                Error::internal("result holds a reference the test gateway did not make")
            })
    };
    Ok(TestOutput {
        definition: result.reference.map(definition_of).transpose()?,
        platforms: result
            .refs
            .into_iter()
            .map(|(k, r)| Ok((k, definition_of(r)?)))
            .collect::<Result<_, Error>>()?,
        metadata: result.metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrontendInfo;
    use crate::llb::{FileAction, Source};

    struct CatFrontend;
    impl Frontend for CatFrontend {
        fn info() -> FrontendInfo {
            FrontendInfo::new("cat", "0.1.0", "stable")
        }
        fn build(client: &dyn Client) -> Result<BuildResult, Error> {
            let name = client.option("filename").unwrap_or_else(|| "spec".into());
            let spec = client
                .solve_definition(Source::local("dockerfile").state().marshal())?
                .expect("a local source is not scratch");
            let text = spec.read_file(&name)?;
            let listing = spec.read_dir("/", Some("*.txt"))?;
            let out = crate::llb::scratch().file(FileAction::mkfile("/copy", 0o644, text));
            Ok(
                BuildResult::from_ref(client.solve_definition(out.marshal())?)
                    .with_metadata("entries", listing.len().to_string()),
            )
        }
    }

    #[test]
    fn runs_a_frontend_against_memory_files() {
        let gw = MemoryGateway::new()
            .option("filename", "a.txt")
            .file("dockerfile", "a.txt", "hello")
            .file("dockerfile", "b.txt", "x")
            .file("dockerfile", "sub/c.md", "y");
        let out = run::<CatFrontend>(&gw).unwrap();
        let def = out.definition.as_ref().unwrap();
        let crate::llb::OpKind::File(f) = &def.ops[0].kind else {
            panic!()
        };
        let crate::llb::FileActionKind::Mkfile(m) = &f.actions[0].action else {
            panic!()
        };
        assert_eq!(m.data, b"hello");
        assert_eq!(out.metadata_str("entries").as_deref(), Some("2"));
        assert_eq!(gw.solved().len(), 2);
    }

    #[test]
    fn missing_file_is_not_found() {
        let gw = MemoryGateway::new().option("filename", "nope");
        let err = run::<CatFrontend>(&gw).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::NotFound);
    }

    #[test]
    fn images_from_fixture() {
        let gw = MemoryGateway::new()
            .images_json(r#"{"a:1": {"digest": "sha256:00", "configRaw": "{\"os\":\"linux\"}"}}"#)
            .unwrap();
        let img = gw
            .resolve_image_config(ResolveImageRequest {
                ref_: "a:1".into(),
                platform: None,
                resolve_mode: crate::ResolveMode::Default,
                log_name: String::new(),
            })
            .unwrap();
        assert_eq!(img.config, br#"{"os":"linux"}"#);
        assert!(glob_match("*.toml", "build.toml") && !glob_match("*.toml", "a.txt"));
    }
}
