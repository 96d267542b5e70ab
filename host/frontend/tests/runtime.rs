//! The runtime against real components: the probe frontend (well-behaved and hostile modes)
//! and the toml-spec plugin, all built by this crate's build script.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildwit_frontend::bridge::{
    Bridge, ErrorKind, Event, FrontendOutput, GatewayError, ImageRequest, ResolvedImage, SolvedRef,
    Stat,
};
use buildwit_frontend::{BUILT_FRONTENDS_DIR, FrontendError, Limit, Limits, Runtime};
use buildwit_llb::pb;

fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(BUILT_FRONTENDS_DIR).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A forwarded request: frontend name and options.
type Forwarded = (String, Vec<(String, String)>);

/// Answers reads from memory and records everything it is told.
#[derive(Default)]
struct TestBridge {
    events: Mutex<Vec<Event>>,
    forwarded: Mutex<Vec<Forwarded>>,
}

impl Bridge for TestBridge {
    fn read_file(
        &self,
        _r: &SolvedRef,
        path: &str,
        _range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GatewayError> {
        match path {
            "present.txt" => Ok(b"present\n".to_vec()),
            _ => Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("{path}: no such file"),
            )),
        }
    }

    fn read_dir(
        &self,
        _r: &SolvedRef,
        _path: &str,
        _p: Option<&str>,
    ) -> Result<Vec<Stat>, GatewayError> {
        Ok(vec![Stat {
            path: "present.txt".into(),
            mode: 0o100644,
            size: 8,
            ..Default::default()
        }])
    }

    fn stat_file(&self, _r: &SolvedRef, path: &str) -> Result<Stat, GatewayError> {
        Ok(Stat {
            path: path.into(),
            ..Default::default()
        })
    }

    fn evaluate(&self, _r: &SolvedRef) -> Result<(), GatewayError> {
        Ok(())
    }

    fn resolve_image_config(&self, request: &ImageRequest) -> Result<ResolvedImage, GatewayError> {
        Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("{}: not found", request.reference),
        ))
    }

    fn worker_platforms(&self) -> Vec<pb::Platform> {
        vec![pb::Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Default::default()
        }]
    }

    fn forward(
        &self,
        frontend: &str,
        options: Vec<(String, String)>,
        _inputs: Vec<(String, pb::Definition)>,
    ) -> Result<FrontendOutput, GatewayError> {
        self.forwarded
            .lock()
            .unwrap()
            .push((frontend.to_string(), options));
        Ok(FrontendOutput {
            metadata: vec![("forwarded-to".into(), frontend.as_bytes().to_vec())],
            ..Default::default()
        })
    }

    fn event(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }
}

fn limits() -> Limits {
    Limits {
        deadline: Duration::from_millis(500),
        memory: 64 << 20,
        ..Limits::default()
    }
}

fn probe(runtime: &Runtime, mode: &str) -> Result<FrontendOutput, FrontendError> {
    let probe = runtime.load("probe", &component("probe")).unwrap();
    let options = vec![("mode".to_string(), mode.to_string())];
    runtime.run(
        &probe,
        options,
        Vec::new(),
        Arc::new(TestBridge::default()),
        None,
    )
}

#[test]
fn a_small_graph_comes_back_as_buildkit_llb() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let out = probe(&runtime, "ok").unwrap();
    let def = &out.reference.expect("a result").definition;
    // One mkfile op plus the terminal op, valid by BuildKit's rules.
    assert_eq!(def.def.len(), 2);
    buildwit_llb::validate(def).unwrap();
    let lines = buildwit_llb::dump_json_lines(def).unwrap();
    assert!(lines[0].contains("\"mkfile\""), "{}", lines[0]);
}

#[test]
fn built_in_frontends_run_from_code_compiled_when_buildwit_was_built() {
    use buildwit_frontend::builtin;
    let dir = tempdir();
    let runtime = Runtime::new(limits(), Some(dir.clone())).unwrap();
    let loaded = runtime
        .load_builtin(
            "dockerfile.v0",
            builtin::DOCKERFILE,
            builtin::DOCKERFILE_DIGEST,
            builtin::DOCKERFILE_COMPILED,
        )
        .unwrap();
    assert!(!loaded.compiled, "the embedded artifact fits this engine");
    assert!(
        std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()),
        "nothing compiled into the cache"
    );
    let info = runtime
        .info(&loaded, Arc::new(TestBridge::default()))
        .unwrap();
    assert_eq!(info.name, "dockerfile");

    // An artifact another engine made (other settings) is refused, and the component is
    // compiled instead: never run as code for the wrong engine.
    let mut other = wasmtime::Config::new();
    other.cranelift_nan_canonicalization(false);
    let foreign = wasmtime::Engine::new(&other)
        .unwrap()
        .precompile_component(&component("probe"))
        .unwrap();
    let probe_digest = {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(component("probe")))
        )
    };
    let loaded = runtime
        .load_builtin("probe", &component("probe"), &probe_digest, &foreign)
        .unwrap();
    assert!(loaded.compiled);
    assert!(probe(&runtime, "ok").is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_core_module_built_with_the_sdk_is_wrapped_into_its_component() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let module = component("probe-module");
    assert!(wasmparser::Parser::is_core_wasm(&module));
    let loaded = runtime.load("probe-module", &module).unwrap();
    // The same component the build wrapped: the same digest, whoever wraps it.
    let wrapped = runtime.load("probe", &component("probe")).unwrap();
    assert_eq!(loaded.digest, wrapped.digest);
    assert!(probe(&runtime, "ok").is_ok());

    // A core module that is no frontend says so.
    let err = runtime
        .load("plain", &wat::parse_str("(module)").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plain") && err.contains("core Wasm module, not a component"),
        "{err}"
    );
}

#[test]
fn compiled_components_are_cached_on_disk_by_digest() {
    let dir = tempdir();
    let first = Runtime::new(limits(), Some(dir.clone())).unwrap();
    let loaded = first.load("probe", &component("probe")).unwrap();
    assert!(loaded.compiled);
    assert!(Arc::ptr_eq(
        &loaded,
        &first.load("probe", &component("probe")).unwrap()
    ));
    // A new process (runtime) with the same cache directory does not compile again.
    let second = Runtime::new(limits(), Some(dir.clone())).unwrap();
    let again = second.load("probe", &component("probe")).unwrap();
    assert!(!again.compiled);
    assert_eq!(again.digest, loaded.digest);
    assert!(probe(&second, "ok").is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn info_reports_name_version_channel() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let loaded = runtime.load("toml-spec", &component("toml-spec")).unwrap();
    let info = runtime
        .info(&loaded, Arc::new(TestBridge::default()))
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.channel.as_str()),
        ("toml-spec", "stable")
    );
    assert_eq!(loaded.wit_version, "buildwit:frontend@0.1.0");
    assert_eq!(
        loaded.imports,
        [
            "buildwit:frontend/llb@0.1.0",
            "buildwit:frontend/gateway@0.1.0"
        ]
    );
}

#[test]
fn an_endless_loop_hits_the_deadline_and_the_runtime_stays_usable() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let err = probe(&runtime, "loop").unwrap_err();
    assert!(
        matches!(&err, FrontendError::LimitExceeded { limit: Limit::Deadline(_), frontend, .. } if frontend == "probe"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("frontend probe exceeded the deadline of 0.5s"),
        "{err}"
    );
    assert!(probe(&runtime, "ok").is_ok());
    // A run can have a deadline of its own (a daemon's client's --frontend-timeout).
    let fe = runtime.load("probe", &component("probe")).unwrap();
    let options = vec![("mode".to_string(), "loop".to_string())];
    let bridge = Arc::new(TestBridge::default());
    let err = runtime
        .run(
            &fe,
            options,
            Vec::new(),
            bridge,
            Some(Duration::from_millis(100)),
        )
        .unwrap_err();
    assert!(err.to_string().contains("deadline of 0.1s"), "{err}");
}

#[test]
fn endless_allocation_hits_the_memory_cap() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let err = probe(&runtime, "alloc").unwrap_err();
    assert!(
        matches!(
            err,
            FrontendError::LimitExceeded {
                limit: Limit::Memory(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("the memory limit of 64 MiB"),
        "{err}"
    );
    assert!(probe(&runtime, "ok").is_ok());
}

#[test]
fn endless_recursion_hits_the_stack_cap() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let err = probe(&runtime, "stack").unwrap_err();
    assert!(
        matches!(
            err,
            FrontendError::LimitExceeded {
                limit: Limit::Stack(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(probe(&runtime, "ok").is_ok());
}

#[test]
fn a_panic_is_a_crash_with_its_message() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let err = probe(&runtime, "panic").unwrap_err();
    assert!(matches!(err, FrontendError::Trap { .. }), "{err}");
    assert!(
        err.to_string().contains("the probe was told to panic"),
        "{err}"
    );
}

#[test]
fn a_garbage_definition_is_refused_with_the_reason() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let err = probe(&runtime, "garbage").unwrap_err();
    assert!(matches!(err, FrontendError::Build { .. }), "{err}");
    assert!(err.to_string().contains("refers to op 7"), "{err}");
}

#[test]
fn oversized_output_hits_the_output_limit() {
    let runtime = Runtime::new(
        Limits {
            memory: 512 << 20,
            deadline: Duration::from_secs(30),
            ..limits()
        },
        None,
    )
    .unwrap();
    let err = probe(&runtime, "huge").unwrap_err();
    assert!(
        matches!(
            err,
            FrontendError::LimitExceeded {
                limit: Limit::Output(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_frontend_error_keeps_its_location() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let err = probe(&runtime, "error").unwrap_err();
    let FrontendError::Build { error, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(error.kind, ErrorKind::InvalidArgument);
    assert_eq!(error.location.as_ref().unwrap().filename, "Probefile");
    assert!(
        err.to_string()
            .starts_with("Probefile:3: the probe was told to fail"),
        "{err}"
    );
}

#[test]
fn options_and_inputs_reach_the_frontend() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let probe_fe = runtime.load("probe", &component("probe")).unwrap();
    // An input definition: run the probe once to get one.
    let input = probe(&runtime, "ok").unwrap().reference.unwrap().definition;
    let options = vec![
        ("mode".into(), "echo".into()),
        ("build-arg:A".into(), "1".into()),
    ];
    let out = runtime
        .run(
            &probe_fe,
            options,
            vec![("base".into(), (*input).clone())],
            Arc::new(TestBridge::default()),
            None,
        )
        .unwrap();
    assert_eq!(out.metadata("opt:build-arg:A"), Some(b"1".as_slice()));
    assert_eq!(out.metadata("input:base"), Some(b"1".as_slice()));
}

#[test]
fn files_are_read_through_the_bridge() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let fe = runtime.load("probe", &component("probe")).unwrap();
    let run = |file: &str| {
        let options = vec![("mode".into(), "read".into()), ("file".into(), file.into())];
        runtime.run(
            &fe,
            options,
            Vec::new(),
            Arc::new(TestBridge::default()),
            None,
        )
    };
    let out = run("present.txt").unwrap();
    assert_eq!(out.metadata("data"), Some(b"present\n".as_slice()));
    assert_eq!(out.metadata("entries"), Some(b"1".as_slice()));
    let err = run("absent.txt").unwrap_err();
    assert!(
        err.to_string().contains("absent.txt: no such file"),
        "{err}"
    );
}

#[test]
fn forwarding_goes_through_the_bridge() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let fe = runtime.load("probe", &component("probe")).unwrap();
    let bridge = Arc::new(TestBridge::default());
    let options = vec![
        ("mode".into(), "forward".into()),
        ("to".into(), "dockerfile.v0".into()),
        ("target".into(), "x".into()),
    ];
    let out = runtime
        .run(&fe, options, Vec::new(), bridge.clone(), None)
        .unwrap();
    assert_eq!(
        out.metadata("forwarded-to"),
        Some(b"dockerfile.v0".as_slice())
    );
    let forwarded = bridge.forwarded.lock().unwrap();
    assert_eq!(
        forwarded[0],
        (
            "dockerfile.v0".to_string(),
            vec![("target".to_string(), "x".to_string())]
        )
    );
}

#[test]
fn bad_components_are_refused_before_compiling() {
    let runtime = Runtime::new(limits(), None).unwrap();
    let load = |wat: &str| {
        runtime
            .load("bad", &wat::parse_str(wat).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(load("(module)").contains("core Wasm module, not a component"));
    assert!(load("(component)").contains("does not export buildwit:frontend/builder"));
    let v2 =
        r#"(component (instance $i) (export "buildwit:frontend/builder@0.2.0" (instance $i)))"#;
    assert!(
        load(v2).contains(
            "targets buildwit:frontend@0.2.0; this buildwit supports buildwit:frontend@0.1"
        )
    );
    // WASI beyond 0.2's command world (which grants nothing here), or of another version.
    for import in ["wasi:http/types@0.2.6", "wasi:filesystem/types@0.3.0"] {
        let wat = format!(
            r#"(component (import "{import}" (instance)) (instance $i)
                (export "buildwit:frontend/builder@0.1.0" (instance $i)))"#
        );
        let err = load(&wat);
        assert!(
            err.contains(&format!(
                "imports {import}, which buildwit does not provide"
            )),
            "{err}"
        );
    }
    let garbage = runtime
        .load("junk", b"\0asm garbage")
        .unwrap_err()
        .to_string();
    assert!(
        garbage.starts_with("cannot load frontend junk: it is not a valid Wasm binary"),
        "{garbage}"
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "buildwit-runtime-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
