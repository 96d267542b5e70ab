//! The two gRPC messages that carry a build from a BuildKit client: `Control/Solve` (its
//! exporters, cache entries, frontend inputs and definition), checked and placed as buildwitd
//! does before it touches a session, and `LLBBridge/Return` (a client's build result).
//! Whatever the client names, every path a Solve writes must lie under the build's own
//! directory. The first byte picks the input's form: a Solve request's protobuf encoding (0),
//! a Return request's (1), or a Solve request built from the bytes (any other), whose strings
//! are made of attribute words, separators and raw text (no encoding's lengths to break).
#![no_main]

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use buildwit_buildkit::plan_solve;
use buildwit_buildkit::proto::moby::buildkit::v1::frontend::ReturnRequest;
use buildwit_buildkit::proto::moby::buildkit::v1::{
    CacheOptions, CacheOptionsEntry, Exporter, SolveRequest,
};
use buildwit_exporter::Destination;
use buildwit_exporter::cache::CacheTarget;
use buildwit_frontend::bridge::SolvedRef;
use buildwit_llb::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(req) = SolveRequest::decode(bytes) {
                solve(&req);
            }
        }
        1 => returned(bytes),
        _ => {
            if let Ok(req) = Request::arbitrary_take_rest(Unstructured::new(bytes)) {
                solve(&req.into_proto());
            }
        }
    }
});

/// A Solve request's parts that name types, attributes and paths.
#[derive(Arbitrary, Debug)]
struct Request {
    frontend: Text,
    exporters: Vec<Entry>,
    deprecated: Option<Entry>,
    cache_to: Vec<Entry>,
    cache_from: Vec<Entry>,
    frontend_attrs: Vec<(Text, Text)>,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    kind: Text,
    attrs: Vec<(Text, Text)>,
}

/// A string made of the words and separators of BuildKit's attributes and of raw text, so
/// that a type or value such as `registry,type=local,dest=/etc` is a few steps away.
#[derive(Arbitrary, Debug)]
struct Text(Vec<Piece>);

#[derive(Arbitrary, Debug)]
enum Piece {
    Word(Word),
    Comma,
    Equals,
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Word {
    Type,
    Local,
    Registry,
    Inline,
    Oci,
    Tar,
    Docker,
    Image,
    S3,
    Gha,
    Dest,
    Src,
    Ref,
    Digest,
    Tag,
    Name,
    Mode,
    Max,
    True,
    False,
    Root,
    Up,
}

impl Word {
    fn text(self) -> &'static str {
        match self {
            Word::Type => "type",
            Word::Local => "local",
            Word::Registry => "registry",
            Word::Inline => "inline",
            Word::Oci => "oci",
            Word::Tar => "tar",
            Word::Docker => "docker",
            Word::Image => "image",
            Word::S3 => "s3",
            Word::Gha => "gha",
            Word::Dest => "dest",
            Word::Src => "src",
            Word::Ref => "ref",
            Word::Digest => "digest",
            Word::Tag => "tag",
            Word::Name => "name",
            Word::Mode => "mode",
            Word::Max => "max",
            Word::True => "true",
            Word::False => "false",
            Word::Root => "/",
            Word::Up => "..",
        }
    }
}

impl Text {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Word(w) => w.text(),
                Piece::Comma => ",",
                Piece::Equals => "=",
                Piece::Raw(s) => s,
            })
            .collect()
    }
}

fn map(pairs: &[(Text, Text)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.text(), v.text())).collect()
}

impl Request {
    fn into_proto(self) -> SolveRequest {
        let entry = |e: &Entry| CacheOptionsEntry {
            r#type: e.kind.text(),
            attrs: map(&e.attrs),
        };
        let (exporter_deprecated, exporter_attrs_deprecated) = self
            .deprecated
            .map(|e| (e.kind.text(), map(&e.attrs)))
            .unwrap_or_default();
        SolveRequest {
            r#ref: "build-1".into(),
            frontend: self.frontend.text(),
            exporters: self
                .exporters
                .iter()
                .map(|e| Exporter {
                    r#type: e.kind.text(),
                    attrs: map(&e.attrs),
                })
                .collect(),
            exporter_deprecated,
            exporter_attrs_deprecated,
            cache: Some(CacheOptions {
                exports: self.cache_to.iter().map(entry).collect(),
                imports: self.cache_from.iter().map(entry).collect(),
                ..Default::default()
            }),
            frontend_attrs: map(&self.frontend_attrs),
            ..Default::default()
        }
    }
}

fn solve(req: &SolveRequest) {
    let scratch = Path::new("/var/lib/buildwit/buildkit-outputs/0123");
    let Ok(plan) = plan_solve(req, scratch) else {
        return;
    };
    let inside =
        |p: &Path| p.starts_with(scratch) && !p.components().any(|c| c == Component::ParentDir);
    for output in &plan.outputs {
        match &output.dest {
            None => {}
            Some(Destination::Path(p)) => assert!(inside(p), "output to {}", p.display()),
            Some(Destination::Stdout) => panic!("an output to the daemon's stdout"),
        }
    }
    let imports = plan.cache_from.iter().map(|i| &i.spec);
    for spec in plan.cache_to.iter().chain(imports) {
        if let CacheTarget::Local(p) = &spec.target {
            assert!(inside(p), "a local cache in {}", p.display());
        }
    }
    for client in plan.cache_from.iter().filter_map(|i| i.client.as_ref()) {
        assert!(
            inside(&client.layout),
            "a cache fetched to {}",
            client.layout.display()
        );
    }
}

fn returned(bytes: &[u8]) {
    let Ok(req) = ReturnRequest::decode(bytes) else {
        return;
    };
    let Some(result) = req.result else {
        return;
    };
    // The daemon looks a ref up by its id among the build's; here any id with a
    // definition that decodes is one.
    let _ = buildwit_gateway::wire::from_result(result, |r| {
        pb::Definition::decode(r.def.as_slice())
            .map(|d| SolvedRef {
                definition: Arc::new(d),
            })
            .map_err(|_| ())
    });
}
