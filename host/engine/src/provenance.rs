//! SLSA provenance of a build, as BuildKit records it (`attest:provenance=mode=min|max`,
//! which `--provenance` and `--attest type=provenance` send): SLSA v1, with the sources the
//! build read pinned, the frontend and the request; `max` adds the build arguments and the
//! LLB of the build.

use std::collections::BTreeMap;
use std::time::SystemTime;

use buildwit_exporter::attestation::{Statement, docker_purl};
use buildwit_llb::pb;
use buildwit_solver::Material;
use serde_json::{Map, Value, json};

use crate::{DaemonError, FrontendRecord};

/// The frontend option that asks for provenance.
pub(crate) const OPTION: &str = "attest:provenance";
const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

/// What `attest:provenance` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    max: bool,
    builder_id: String,
}

impl Wanted {
    /// The request's provenance option (`None`: none wanted, or `disabled=true`).
    pub(crate) fn from_options(
        options: &[(String, String)],
    ) -> Result<Option<Wanted>, DaemonError> {
        let Some((_, value)) = options.iter().rev().find(|(k, _)| k == OPTION) else {
            return Ok(None);
        };
        let bad = |why: String| DaemonError::Export(format!("{OPTION}={value}: {why}"));
        // Without a mode, BuildKit records everything.
        let mut wanted = Wanted {
            max: true,
            builder_id: String::new(),
        };
        for field in value.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match (k, v) {
                ("mode", "min") => wanted.max = false,
                ("mode", "max" | "full") => wanted.max = true,
                ("mode", other) => return Err(bad(format!("mode {other:?}: use min or max"))),
                ("disabled", "true") => return Ok(None),
                ("version", "v1" | "") => {}
                ("version", other) => {
                    return Err(bad(format!("version {other:?}: buildwit writes SLSA v1")));
                }
                ("builder-id", id) => wanted.builder_id = id.to_string(),
                // Others (`type=`, `reproducible`, `filename`, ...) change nothing here, and
                // BuildKit ignores what it does not know.
                _ => {}
            }
        }
        Ok(Some(wanted))
    }
}

/// What a build was, for its provenance.
pub(crate) struct Facts<'a> {
    /// The frontend as the request named it (`dockerfile.v0`, a reference, a file).
    pub frontend: &'a str,
    /// The component that ran.
    pub record: &'a FrontendRecord,
    pub options: &'a [(String, String)],
    pub locals: Vec<&'a str>,
    pub materials: &'a [Material],
    pub definition: Option<&'a pb::Definition>,
    pub invocation_id: &'a str,
    pub started: SystemTime,
    pub finished: SystemTime,
}

/// The provenance statement of a build (its subject is added per image by the exporter).
pub(crate) fn statement(wanted: &Wanted, facts: &Facts) -> Result<Statement, DaemonError> {
    let mut dependencies = Vec::new();
    for m in facts.materials {
        dependencies.push(material(m)?);
    }
    dependencies.push(frontend_dependency(facts.record));

    let mut request = Map::new();
    request.insert("frontend".into(), json!(facts.frontend));
    let mut args = request_args(facts.options, wanted.max);
    // The file the frontend reads is where the build's configuration comes from.
    let mut config_source = Map::new();
    if let Some(filename) = args.remove("filename") {
        config_source.insert("path".into(), json!(filename));
    }
    // Min mode leaves out build arguments and labels: the request is then incomplete.
    let complete = wanted.max
        || !facts
            .options
            .iter()
            .any(|(k, _)| k.starts_with("build-arg:") || k.starts_with("label:"));
    if !args.is_empty() {
        request.insert("args".into(), json!(args));
    }
    let locals: Vec<Value> = facts.locals.iter().map(|n| json!({"name": n})).collect();
    if !locals.is_empty() {
        request.insert("locals".into(), Value::Array(locals));
    }

    let mut internal = Map::new();
    let mut metadata = Map::new();
    if wanted.max
        && let Some(def) = facts.definition
    {
        let (config, steps) = build_config(def)?;
        internal.insert("buildConfig".into(), config);
        if let Some(source) = &def.source {
            metadata.insert("source".into(), source_map(source, &steps)?);
        }
    }
    internal.insert(
        "builderPlatform".into(),
        json!(format!("linux/{}", buildwit_exporter::host_architecture())),
    );
    if facts.record.name.starts_with("dockerfile") {
        internal.insert("dockerfileVersion".into(), json!(facts.record.version));
    }

    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "resolvedDependencies": dependencies,
            "externalParameters": {
                "configSource": config_source,
                "request": request,
            },
            "internalParameters": internal,
        },
        "runDetails": {
            "builder": {"id": wanted.builder_id},
            "metadata": {
                "invocationId": facts.invocation_id,
                "startedOn": buildwit_exporter::rfc3339_nanos(facts.started),
                "finishedOn": buildwit_exporter::rfc3339_nanos(facts.finished),
                "buildkit_metadata": metadata,
                "buildkit_completeness": {
                    "request": complete,
                    "resolvedDependencies": false,
                },
            },
        },
    });
    Ok(Statement {
        predicate_type: PREDICATE_TYPE.to_string(),
        predicate,
    })
}

/// The frontend options provenance records, as BuildKit filters them: not what is about
/// this host (`cgroup-parent`, `image-resolve-mode`, `platform`, cache imports) or internal,
/// credentials in context URLs removed, and in min mode no build arguments or labels.
fn request_args(options: &[(String, String)], max: bool) -> BTreeMap<String, String> {
    const HOST_SPECIFIC: &[&str] = &[
        "cgroup-parent",
        "image-resolve-mode",
        "platform",
        "cache-imports",
    ];
    options
        .iter()
        .filter(|(k, _)| !k.starts_with("attest:") && !k.starts_with("buildwit:"))
        .filter(|(k, _)| !HOST_SPECIFIC.contains(&k.as_str()))
        .filter(|(k, _)| max || !(k.starts_with("build-arg:") || k.starts_with("label:")))
        .map(|(k, v)| {
            let v = if k == "context" || k.starts_with("context:") {
                without_credentials(v)
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// A URL without its `user:password@` part.
fn without_credentials(value: &str) -> String {
    match value.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => value.to_string(),
            }
        }
        None => value.to_string(),
    }
}

fn digest_map(digest: &str) -> Value {
    match digest.split_once(':') {
        Some((alg, hex)) => json!({ alg: hex }),
        None => json!({ "sha1": digest }),
    }
}

/// A source as BuildKit names it: images as package URLs, git remotes and URLs as they are.
fn material(m: &Material) -> Result<Value, DaemonError> {
    Ok(match m {
        Material::Image {
            reference,
            platform,
        } => {
            let (name, digest) = reference.rsplit_once('@').unwrap_or((reference, ""));
            let purl = docker_purl(name, Some(platform))
                .map_err(|e| DaemonError::Export(e.to_string()))?;
            json!({"uri": purl, "digest": digest_map(digest)})
        }
        Material::Git { url, commit } => json!({"uri": url, "digest": {"sha1": commit}}),
        Material::Http { url, digest } => json!({"uri": url, "digest": digest_map(digest)}),
    })
}

/// The frontend component that ran: BuildKit lists a `# syntax=` image among the
/// dependencies; buildwit lists the component it ran, by the component's digest, under
/// its image's package URL, or `pkg:generic/buildwit-frontend/NAME@VERSION` when built in
/// or given as a file.
fn frontend_dependency(record: &FrontendRecord) -> Value {
    let pulled = record.source.contains("@sha256:");
    let uri = pulled
        .then(|| docker_purl(&record.source, None).ok())
        .flatten()
        .unwrap_or_else(|| {
            format!(
                "pkg:generic/buildwit-frontend/{}@{}",
                record.name, record.version
            )
        });
    json!({"uri": uri, "digest": digest_map(&record.digest)})
}

/// `max` mode's source map, as BuildKit writes it: the build definition's files (a
/// Dockerfile: its name, language and bytes, with the LLB that loaded it), and the lines
/// of each step, keyed by step.
fn source_map(source: &pb::Source, steps: &BTreeMap<String, String>) -> Result<Value, DaemonError> {
    use base64::Engine as _;
    let position = |p: &Option<pb::Position>| {
        let p = p.clone().unwrap_or_default();
        let mut v = json!({"line": p.line});
        if p.character != 0 {
            v["character"] = json!(p.character);
        }
        v
    };
    let mut locations = Map::new();
    for (digest, step) in steps {
        let mut entry = Map::new();
        if let Some(l) = source.locations.get(digest) {
            let list: Vec<Value> = l
                .locations
                .iter()
                .map(|l| {
                    let ranges: Vec<Value> = l
                        .ranges
                        .iter()
                        .map(|r| json!({"start": position(&r.start), "end": position(&r.end)}))
                        .collect();
                    let mut v = json!({"ranges": ranges});
                    if l.source_index != 0 {
                        v["sourceIndex"] = json!(l.source_index);
                    }
                    v
                })
                .collect();
            entry.insert("locations".into(), Value::Array(list));
        }
        locations.insert(step.clone(), Value::Object(entry));
    }
    let mut infos = Vec::new();
    for info in &source.infos {
        let mut v = json!({
            "filename": info.filename,
            "language": info.language,
            "data": base64::engine::general_purpose::STANDARD.encode(&info.data),
        });
        if let Some(def) = &info.definition {
            let (config, _) = build_config(def)?;
            v["llbDefinition"] = config["llbDefinition"].clone();
            v["digestMapping"] = config["digestMapping"].clone();
        }
        infos.push(v);
    }
    Ok(json!({"locations": locations, "infos": infos}))
}

/// `max` mode's LLB: each op with its inputs as `stepN:OUTPUT`, and which digest is which
/// step, as BuildKit writes `buildConfig`; and that mapping.
fn build_config(def: &pb::Definition) -> Result<(Value, BTreeMap<String, String>), DaemonError> {
    let lines =
        buildwit_llb::dump_json_lines(def).map_err(|e| DaemonError::Export(e.to_string()))?;
    let mut steps = BTreeMap::new();
    let mut parsed = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let v: Value =
            serde_json::from_str(line).map_err(|e| DaemonError::Export(e.to_string()))?;
        let digest = v["Digest"].as_str().unwrap_or_default().to_string();
        steps.insert(digest.clone(), format!("step{i}"));
        parsed.push((digest, v));
    }
    let mut definition = Vec::new();
    for (digest, mut v) in parsed {
        let mut op = v["Op"].take();
        let inputs: Vec<String> = op
            .as_object_mut()
            .and_then(|o| o.remove("inputs"))
            .and_then(|i| i.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|input| {
                let step = input["digest"]
                    .as_str()
                    .and_then(|d| steps.get(d))
                    .cloned()
                    .unwrap_or_default();
                format!("{step}:{}", input["index"].as_u64().unwrap_or(0))
            })
            .collect();
        let mut step = json!({"id": steps[&digest], "op": op});
        if !inputs.is_empty() {
            step["inputs"] = json!(inputs);
        }
        definition.push(step);
    }
    let config = json!({"llbDefinition": definition, "digestMapping": steps});
    Ok((config, steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(v: &str) -> Result<Option<Wanted>, DaemonError> {
        Wanted::from_options(&[(OPTION.to_string(), v.to_string())])
    }

    #[test]
    fn source_maps_are_keyed_by_step() {
        let position = |line| Some(pb::Position { line, character: 0 });
        let source = pb::Source {
            locations: BTreeMap::from([(
                "sha256:b".to_string(),
                pb::Locations {
                    locations: vec![pb::Location {
                        source_index: 0,
                        ranges: vec![pb::Range {
                            start: position(3),
                            end: position(4),
                        }],
                    }],
                },
            )]),
            infos: vec![pb::SourceInfo {
                filename: "Dockerfile".into(),
                data: b"FROM scratch\n".to_vec(),
                definition: None,
                language: "Dockerfile".into(),
            }],
        };
        let steps = BTreeMap::from([
            ("sha256:a".to_string(), "step0".to_string()),
            ("sha256:b".to_string(), "step1".to_string()),
        ]);
        let map = source_map(&source, &steps).unwrap();
        assert_eq!(
            map["locations"]["step1"]["locations"][0]["ranges"][0],
            json!({"start": {"line": 3}, "end": {"line": 4}})
        );
        assert_eq!(map["locations"]["step0"], json!({}));
        assert_eq!(map["infos"][0]["filename"], "Dockerfile");
        assert_eq!(map["infos"][0]["data"], "RlJPTSBzY3JhdGNoCg==");
    }

    #[test]
    fn the_option_reads_as_buildkit_reads_it() {
        assert_eq!(Wanted::from_options(&[]).unwrap(), None);
        assert!(!wanted("mode=min").unwrap().unwrap().max);
        assert!(wanted("").unwrap().unwrap().max);
        assert!(wanted("type=provenance").unwrap().unwrap().max);
        assert!(wanted("mode=max,version=v1").unwrap().unwrap().max);
        assert_eq!(wanted("mode=max,disabled=true").unwrap(), None);
        assert!(wanted("mode=all").is_err());
        assert!(wanted("version=v0.2").is_err());
    }

    #[test]
    fn recorded_arguments_are_filtered_as_buildkit_filters_them() {
        let options: Vec<(String, String)> = [
            ("build-arg:A", "1"),
            ("label:l", "x"),
            ("target", "app"),
            ("cgroup-parent", "mine"),
            ("platform", "linux/arm64"),
            ("attest:provenance", "mode=max"),
            (
                "context:src",
                "https://user:token@example.com/repo.git#main",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let max = request_args(&options, true);
        assert_eq!(max["build-arg:A"], "1");
        assert_eq!(max["context:src"], "https://example.com/repo.git#main");
        assert!(!max.contains_key("cgroup-parent") && !max.contains_key("platform"));
        let min = request_args(&options, false);
        assert_eq!(min.keys().collect::<Vec<_>>(), ["context:src", "target"]);
    }
}
