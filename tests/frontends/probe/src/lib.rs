//! A frontend for testing the host. Option `mode` picks what it does:
//!
//! - `ok` (default): solve a one-op graph and return it (the benchmark's "small graph");
//! - `echo`: return the options and inputs it was given as metadata;
//! - `read`: read option `file` from the `context` local and return it as metadata;
//! - `source`: return the source op of option `identifier` (an `oci-layout://…`, say);
//! - `forward`: forward to frontend option `to` with the remaining options;
//! - `loop`: spin forever; `alloc`: allocate without end; `stack`: recurse without end;
//! - `panic`: panic with a message; `garbage`: solve a definition with a dangling input;
//! - `huge`: return more metadata than any sane limit; `error`: fail with a located error.

use std::hint::black_box;

use buildwit_sdk::llb::{self, Definition, FileAction, Op, OpKind, OpOutput, SourceOp};
use buildwit_sdk::{BuildResult, Client, Error, Frontend, FrontendInfo, SolveRequest};

/// The probe frontend.
pub struct Probe;

impl Frontend for Probe {
    fn info() -> FrontendInfo {
        FrontendInfo::new("probe", env!("CARGO_PKG_VERSION"), "test")
    }

    fn build(client: &dyn Client) -> Result<BuildResult, Error> {
        let mode = client.option("mode").unwrap_or_else(|| "ok".into());
        match mode.as_str() {
            "ok" => {
                let st = llb::scratch().file(FileAction::mkfile("/hello", 0o644, "hello\n"));
                Ok(BuildResult::from_ref(
                    client.solve_definition(st.marshal())?,
                ))
            }
            "echo" => {
                let mut r = BuildResult::default();
                for (k, v) in client.options() {
                    r = r.with_metadata(format!("opt:{k}"), v);
                }
                for (k, d) in client.inputs() {
                    r = r.with_metadata(format!("input:{k}"), d.ops.len().to_string());
                }
                Ok(r)
            }
            "read" => {
                let file = client
                    .option("file")
                    .ok_or_else(|| Error::invalid("option file is required"))?;
                let ctx = llb::Source::local("context").state();
                let reference = client
                    .solve_definition(ctx.marshal())?
                    .expect("local is not scratch");
                let data = reference.read_file(&file)?;
                let entries = reference.read_dir("/", None)?.len();
                Ok(BuildResult::default()
                    .with_metadata("data", data)
                    .with_metadata("entries", entries.to_string()))
            }
            "source" => {
                let identifier = client
                    .option("identifier")
                    .ok_or_else(|| Error::invalid("option identifier is required"))?;
                let st = llb::Source::raw(identifier).state();
                Ok(BuildResult::from_ref(
                    client.solve_definition(st.marshal())?,
                ))
            }
            "forward" => {
                let to = client
                    .option("to")
                    .ok_or_else(|| Error::invalid("option to is required"))?;
                let opts = client
                    .options()
                    .into_iter()
                    .filter(|(k, _)| k != "mode" && k != "to")
                    .collect();
                let r = client.solve(SolveRequest {
                    definition: None,
                    frontend: Some(to),
                    frontend_opts: opts,
                    frontend_inputs: Vec::new(),
                    evaluate: false,
                })?;
                Ok(r)
            }
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "stack" => Ok(BuildResult::default().with_metadata("depth", recurse(0).to_string())),
            "panic" => panic!("the probe was told to panic"),
            "garbage" => {
                let source = Op {
                    inputs: vec![OpOutput { op: 7, output: 0 }],
                    kind: OpKind::Source(SourceOp {
                        identifier: "local://context".into(),
                        attrs: Vec::new(),
                    }),
                    platform: None,
                    constraints: None,
                };
                let def = Definition {
                    ops: vec![source],
                    metadata: Vec::new(),
                    source: None,
                    result: Some(OpOutput { op: 0, output: 0 }),
                };
                Ok(BuildResult::from_ref(client.solve_definition(def)?))
            }
            "huge" => Ok(BuildResult::default().with_metadata("huge", vec![b'x'; 96 << 20])),
            "error" => Err(Error::invalid("the probe was told to fail").at("Probefile", 3, 4)),
            other => Err(Error::invalid(format!("unknown mode {other:?}"))),
        }
    }
}

/// Recursion on scalars only, so it grows the Wasm stack (not Rust's data stack in linear
/// memory) until the engine's stack limit stops it.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    black_box(recurse(black_box(depth + 1))).wrapping_add(depth)
}

buildwit_sdk::export_frontend!(Probe);
