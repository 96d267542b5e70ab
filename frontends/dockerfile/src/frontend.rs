//! The Dockerfile frontend: reads the Dockerfile through the gateway like BuildKit's
//! `dockerui`, maps the frontend options, answers subrequests, converts and solves once per
//! target platform, and returns the image configs.

use std::collections::BTreeMap;

use buildwit_sdk::llb::{self as sdkllb, Metadata, NetMode, Platform, SourceInfo, line_range};
use buildwit_sdk::{
    BuildResult, Client, Error, Frontend, FrontendInfo, ResolveMode, Subrequests, Warning,
};
use serde_json::json;

use crate::convert::{ConvertOpts, Converter};
use crate::image::go_json_strings;
use crate::lint::LintWarning;
use crate::subrequests;

/// BuildKit's Dockerfile frontend version this implementation follows.
pub const VERSION: &str = "1.26.0";

/// The release channel of this build (`labs` with the `labs` cargo feature).
pub const CHANNEL: &str = if cfg!(feature = "labs") {
    "labs"
} else {
    "stable"
};

/// An internal option that fixes `local.unique` of the build context (tests and replay).
pub const LOCAL_UNIQUE_OPTION: &str = "buildwit:local-unique";

/// The built-in Dockerfile frontend.
pub struct Dockerfile;

impl Frontend for Dockerfile {
    fn info() -> FrontendInfo {
        FrontendInfo::new("dockerfile", VERSION, CHANNEL)
    }

    /// Every request reaches `build`: a `# syntax=` line forwards it, else the Dockerfile
    /// frontend answers or refuses it as BuildKit's does.
    fn subrequests() -> Subrequests {
        Subrequests::All
    }

    fn build(client: &dyn Client) -> Result<BuildResult, Error> {
        let options = client.options();
        let opt = |k: &str| {
            options
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let filename = opt("filename")
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "Dockerfile".into());
        let (filename, src, ignore) =
            read_dockerfile(client, &filename, opt("dockerfilekey").as_deref())?;
        // `cmdline` is set when this frontend was itself forwarded to: never forward again.
        if opt("cmdline").is_none() {
            let syntax = opt("build-arg:BUILDKIT_SYNTAX").filter(|s| !s.trim().is_empty());
            if let Some(forwarded) = forward_syntax(client, &options, &filename, &src, syntax)? {
                return Ok(forwarded);
            }
        }
        let request = opt("requestid").filter(|r| !r.is_empty());
        match request.as_deref() {
            None | Some(subrequests::OUTLINE) | Some(subrequests::LINT) => {}
            Some(subrequests::DESCRIBE) => return Ok(subrequests::describe()),
            Some(subrequests::TARGETS) => {
                return subrequests::targets(&src).map_err(|e| sdk_error(e, &filename));
            }
            Some(other) => return Err(Error::unsupported(format!("unsupported request {other}"))),
        }
        let worker = client.default_platform();
        let (mut convert_opts, platforms, multi) = convert_options(&options, &opt, &worker)?;
        let ignore = match ignore {
            Some(data) => Some(data),
            None => read_context_dockerignore(client, &convert_opts.context_name)?,
        };
        convert_opts.exclude_patterns = ignore
            .map(|d| crate::dockerignore::parse(&d))
            .unwrap_or_default();
        let source = Source {
            filename: &filename,
            src: &src,
        };
        if request.is_some() {
            // BuildKit answers subrequests for the worker's platform, whatever `platform` says.
            convert_opts.target_platform = worker;
            convert_opts.implicit_target = true;
        }
        match request.as_deref() {
            Some(subrequests::OUTLINE) => {
                let mut c = source.converter(client, convert_opts)?;
                let converted = c.convert(&src);
                source.report(client, &c.lint.warnings);
                converted.map_err(|e| sdk_error(e, &filename))?;
                let outline = c.outline().unwrap_or_default();
                Ok(subrequests::outline(&outline, &src))
            }
            Some(_) => {
                // Without a target, every stage is checked; nothing is reported as a
                // warning: the findings are the answer.
                convert_opts.all_stages = convert_opts.target.is_empty();
                let mut c = source.converter(client, convert_opts)?;
                let err = c.convert(&src).err();
                Ok(subrequests::lint(
                    &c.lint.warnings,
                    err.as_ref(),
                    &filename,
                    &src,
                ))
            }
            None => build_platforms(client, &source, convert_opts, &platforms, multi),
        }
    }
}

/// The Dockerfile being built.
struct Source<'a> {
    filename: &'a str,
    src: &'a str,
}

impl Source<'_> {
    fn converter<'c>(
        &self,
        client: &'c dyn Client,
        opts: ConvertOpts,
    ) -> Result<Converter<'c>, Error> {
        let patterns = opts.exclude_patterns.clone();
        let mut c = Converter::new(client, opts);
        c.set_ignore_patterns(&patterns)
            .map_err(|e| sdk_error(e, self.filename))?;
        Ok(c)
    }

    /// Sends build-check findings as build warnings, as BuildKit's Dockerfile frontend does.
    fn report(&self, client: &dyn Client, warnings: &[LintWarning]) {
        for w in warnings {
            client.warn(Warning {
                level: 1,
                short: w.short(),
                detail: vec![w.rule.description.to_string()],
                url: w.rule.url.to_string(),
                source: Some(SourceInfo {
                    filename: self.filename.to_string(),
                    data: self.src.as_bytes().to_vec(),
                    language: "Dockerfile".into(),
                }),
                ranges: vec![line_range(w.start_line as u32, w.end_line as u32)],
            });
        }
    }
}

/// A conversion error as a gateway error pointing into the Dockerfile.
fn sdk_error(e: crate::Error, filename: &str) -> Error {
    let err = Error::invalid(e.message);
    if e.line == 0 {
        return err;
    }
    let mut err = err.at(filename, e.line as u32, e.end_line.max(e.line) as u32);
    if let Some(r) = err.location.as_mut().and_then(|l| l.ranges.first_mut()) {
        r.start.character = e.column as i32;
    }
    err
}

/// Converts and solves once per target platform (BuildKit's `dockerui.Build`): one
/// reference, or one per platform keyed by platform id when several are requested, with
/// the image configs and `refs.platforms` in the metadata.
fn build_platforms(
    client: &dyn Client,
    source: &Source<'_>,
    opts: ConvertOpts,
    platforms: &[Platform],
    multi: bool,
) -> Result<BuildResult, Error> {
    let targets: Vec<Option<&Platform>> = if platforms.is_empty() {
        vec![None]
    } else {
        platforms.iter().map(Some).collect()
    };
    let mut result = BuildResult::default();
    let mut exported = Vec::new();
    for (idx, p) in targets.into_iter().enumerate() {
        let mut opts = opts.clone();
        if let Some(p) = p {
            opts.target_platform = p.clone();
            opts.implicit_target = false;
        }
        // Only the first platform reports (and fails on) build checks.
        opts.lint = idx == 0;
        opts.multi_platform = multi;
        let platform = opts.target_platform.clone();
        let mut c = source.converter(client, opts)?;
        let converted = c.convert(source.src);
        source.report(client, &c.lint.warnings);
        let converted = converted.map_err(|e| sdk_error(e, source.filename))?;
        let reference = client.solve_definition(converted.marshal())?;
        let id = platform.id();
        let suffix = if multi {
            format!("/{id}")
        } else {
            String::new()
        };
        if multi {
            // A scratch result has no reference; WIT `refs` cannot hold an empty one, so
            // the platform is only listed in `refs.platforms`.
            if let Some(r) = reference {
                result.refs.push((id.clone(), r));
            }
        } else {
            result.reference = reference;
        }
        result = result.with_metadata(
            format!("containerimage.config{suffix}"),
            converted.image.to_json(),
        );
        if let Some(base) = converted.base_image {
            result = result.with_metadata(
                format!("containerimage.base.config{suffix}"),
                base.to_json(),
            );
        }
        if let Some(epoch) = converted.epoch {
            result = result.with_metadata(format!("source.date.epoch{suffix}"), epoch.to_string());
        }
        exported.push(json!({"ID": id, "Platform": platform_json(&platform)}));
    }
    let platforms = serde_json::to_string(&json!({ "Platforms": exported })).unwrap_or_default();
    Ok(result.with_metadata("refs.platforms", platforms))
}

/// An OCI platform as Go's `json.Marshal(ocispecs.Platform)` writes it.
fn platform_json(p: &Platform) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("architecture".into(), json!(p.architecture));
    m.insert("os".into(), json!(p.os));
    if !p.os_version.is_empty() {
        m.insert("os.version".into(), json!(p.os_version));
    }
    if !p.os_features.is_empty() {
        m.insert("os.features".into(), json!(p.os_features));
    }
    if !p.variant.is_empty() {
        m.insert("variant".into(), json!(p.variant));
    }
    serde_json::Value::Object(m)
}

/// `# syntax=REF` (or the `BUILDKIT_SYNTAX` build arg): hand the build to `gateway.v0` with
/// `source=REF` and `cmdline=<the whole value>`, every other option and input unchanged, as
/// BuildKit's Dockerfile frontend does. `None` when there is nothing to forward.
fn forward_syntax(
    client: &dyn Client,
    options: &[(String, String)],
    filename: &str,
    src: &str,
    build_arg: Option<String>,
) -> Result<Option<BuildResult>, Error> {
    let (reference, cmdline, line) = match &build_arg {
        Some(value) => {
            let value = value.trim();
            let reference = value.split_whitespace().next().unwrap_or(value);
            (reference.to_string(), value.to_string(), None)
        }
        None => match crate::parser::detect_syntax(src) {
            Some(d) => (d.reference, d.cmdline, Some(d.line)),
            None => return Ok(None),
        },
    };
    let mut frontend_opts: Vec<(String, String)> = options
        .iter()
        .filter(|(k, _)| k != "source" && k != "cmdline")
        .cloned()
        .collect();
    frontend_opts.push(("cmdline".into(), cmdline));
    frontend_opts.push(("source".into(), reference));
    let request = buildwit_sdk::SolveRequest {
        definition: None,
        frontend: Some("gateway.v0".into()),
        frontend_opts,
        frontend_inputs: client.inputs(),
        evaluate: false,
    };
    client.solve(request).map(Some).map_err(|mut e| {
        match (&build_arg, line) {
            (Some(value), _) => {
                e.message = format!(
                    "failed with build-arg:BUILDKIT_SYNTAX = {value}: {}",
                    e.message
                )
            }
            (None, Some(line)) if e.location.is_none() && line > 0 => {
                e = e.at(filename, line as u32, line as u32)
            }
            _ => {}
        }
        e
    })
}

/// Read the Dockerfile from the `dockerfile` local, as BuildKit's `dockerui` does:
/// `(name, text, the <name>.dockerignore next to it if any)`.
fn read_dockerfile(
    client: &dyn Client,
    filename: &str,
    key: Option<&str>,
) -> Result<(String, String, Option<Vec<u8>>), Error> {
    let local = key.filter(|k| !k.is_empty()).unwrap_or("dockerfile");
    let name = filename.rsplit('/').next().unwrap_or(filename).to_string();
    let mut candidates = vec![filename.to_string()];
    if name == "Dockerfile" {
        let dir = &filename[..filename.len() - name.len()];
        candidates.push(format!("{dir}dockerfile"));
    }
    let mut follow: Vec<String> = Vec::new();
    for c in &candidates {
        follow.push(c.clone());
        follow.push(format!("{c}.dockerignore"));
    }
    let def = sdkllb::Source::local(local)
        .attr("local.followpaths", go_json_strings(&follow))
        .attr("local.sharedkeyhint", filename)
        .attr("local.differ", "none")
        .metadata(
            Metadata::new().custom_name(format!("[internal] load build definition from {name}")),
        )
        .state()
        .marshal();
    let reference = client
        .solve_definition(def)?
        .ok_or_else(|| Error::not_found("failed to read dockerfile: no build definition"))?;
    let mut last_err = None;
    for c in &candidates {
        match reference.read_file(c) {
            Ok(data) => {
                let text = String::from_utf8(data).map_err(|_| {
                    Error::invalid(format!("failed to read dockerfile: {c} is not UTF-8"))
                })?;
                let ignore = reference.read_file(&format!("{c}.dockerignore")).ok();
                return Ok((c.clone(), text, ignore));
            }
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.map(|e| e.message).unwrap_or_default();
    Err(Error::not_found(format!(
        "failed to read dockerfile: open {filename}: no such file or directory ({e})"
    )))
}

/// `.dockerignore` at the root of the build context (`None` when absent or when the
/// context is a frontend input), loaded like BuildKit's `dockerui`.
fn read_context_dockerignore(client: &dyn Client, context: &str) -> Result<Option<Vec<u8>>, Error> {
    if client.inputs().iter().any(|(name, _)| name == context) {
        return Ok(None);
    }
    let def = sdkllb::Source::local(context)
        .attr(
            "local.followpaths",
            go_json_strings(&[".dockerignore".to_string()]),
        )
        .attr("local.sharedkeyhint", format!("{context}-.dockerignore"))
        .attr("local.differ", "none")
        .metadata(Metadata::new().custom_name("[internal] load .dockerignore"))
        .state()
        .marshal();
    let Some(reference) = client.solve_definition(def)? else {
        return Ok(None);
    };
    Ok(reference.read_file(".dockerignore").ok())
}

fn parse_bytes(v: &str) -> Option<i64> {
    v.trim().parse().ok()
}

/// The conversion options, the target platforms (empty: the default one) and whether the
/// result is multi-platform.
fn convert_options(
    options: &[(String, String)],
    opt: &dyn Fn(&str) -> Option<String>,
    worker: &Platform,
) -> Result<(ConvertOpts, Vec<Platform>, bool), Error> {
    let mut build_args = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut context_options = BTreeMap::new();
    for (k, v) in options {
        if let Some(name) = k.strip_prefix("build-arg:") {
            build_args.insert(name.to_string(), v.clone());
        } else if let Some(name) = k.strip_prefix("label:") {
            labels.insert(name.to_string(), v.clone());
        } else if k.starts_with("context:")
            || k.starts_with("input-metadata:")
            || k.starts_with("sharedkey:localdir:")
        {
            context_options.insert(k.clone(), v.clone());
        }
    }
    let default = worker.clone();
    let mut platforms = Vec::new();
    if let Some(list) = opt("platform").filter(|v| !v.is_empty()) {
        for p in list.split(',') {
            platforms.push(Platform::parse(p).map_err(|e| {
                Error::invalid(format!("failed to parse target platform {p}: {e}"))
            })?);
        }
    }
    let mut multi = platforms.len() > 1;
    let flag = build_args
        .get("BUILDKIT_MULTI_PLATFORM")
        .filter(|v| !v.is_empty())
        .cloned()
        .or_else(|| opt("multi-platform").filter(|v| !v.is_empty()));
    if let Some(v) = flag {
        let b = crate::instructions::go_parse_bool(&v).ok_or_else(|| {
            Error::invalid(format!("invalid boolean value for multi-platform: {v}"))
        })?;
        if !b && multi {
            return Err(Error::invalid(
                "conflicting config: returning multiple target platforms is not allowed",
            ));
        }
        multi = b;
    }
    let (target_platform, implicit) = match platforms.first() {
        Some(p) => (p.clone(), false),
        None => (default.clone(), true),
    };
    let no_cache = opt("no-cache").map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let mut extra_hosts = Vec::new();
    if let Some(h) = opt("add-hosts") {
        for entry in h.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, ip) = entry
                .split_once('=')
                .or_else(|| entry.split_once(':'))
                .ok_or_else(|| Error::invalid(format!("invalid key-value pair {entry}")))?;
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::invalid(format!("invalid host ip {ip}")));
            }
            extra_hosts.push((host.to_lowercase(), ip.to_string()));
        }
    }
    let mut ulimits = Vec::new();
    if let Some(u) = opt("ulimit") {
        for entry in u.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, vals) = entry
                .split_once('=')
                .ok_or_else(|| Error::invalid(format!("invalid ulimit argument: {entry}")))?;
            let (soft, hard) = match vals.split_once(':') {
                Some((s, h)) => (s, h),
                None => (vals, vals),
            };
            let soft: i64 = soft
                .parse()
                .map_err(|_| Error::invalid(format!("invalid ulimit soft value {soft}")))?;
            let hard: i64 = hard
                .parse()
                .map_err(|_| Error::invalid(format!("invalid ulimit hard value {hard}")))?;
            ulimits.push((name.to_string(), soft, hard));
        }
    }
    let network = match opt("force-network-mode").as_deref() {
        None | Some("") | Some("sandbox") => NetMode::Unset,
        Some("none") => NetMode::None,
        Some("host") => NetMode::Host,
        Some(other) => return Err(Error::invalid(format!("invalid network mode {other:?}"))),
    };
    let resolve_mode = match opt("image-resolve-mode").as_deref() {
        None | Some("") | Some("default") => ResolveMode::Default,
        Some("pull") => ResolveMode::Pull,
        Some("local") => ResolveMode::Local,
        Some(other) => {
            return Err(Error::invalid(format!(
                "invalid image-resolve-mode: {other}"
            )));
        }
    };
    let hostname = build_args
        .get("BUILDKIT_SANDBOX_HOSTNAME")
        .cloned()
        .or_else(|| opt("hostname"))
        .unwrap_or_default();
    let opts = ConvertOpts {
        target: opt("target").unwrap_or_default(),
        cache_id_namespace: build_args
            .get("BUILDKIT_CACHE_MOUNT_NS")
            .cloned()
            .unwrap_or_default(),
        build_args,
        labels,
        build_platform: default,
        target_platform,
        implicit_target: implicit,
        local_unique: opt(LOCAL_UNIQUE_OPTION),
        exclude_patterns: Vec::new(),
        context_name: "context".into(),
        no_cache,
        hostname,
        extra_hosts,
        shm_size: opt("shm-size").and_then(|v| parse_bytes(&v)).unwrap_or(0),
        ulimits,
        cgroup_parent: opt("cgroup-parent").unwrap_or_default(),
        network,
        resolve_mode,
        labs: cfg!(feature = "labs"),
        lint: true,
        all_stages: false,
        multi_platform: multi,
        context_options,
    };
    Ok((opts, platforms, multi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildwit_sdk::llb::{FileActionKind, OpKind};
    use buildwit_sdk::testing::{MemoryGateway, TestOutput, run};

    const BB: &str = "127.0.0.1:5000/library/busybox";

    fn gateway(dockerfile: &str) -> MemoryGateway {
        let images = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/conformance/dockerfile/images.json"
        ))
        .unwrap_or_else(|_| "{}".into());
        MemoryGateway::new()
            .file("dockerfile", "Dockerfile", dockerfile)
            .images_json(&images)
            .unwrap()
    }

    trait Fixture {
        fn resolve_image_config_for_test(&self) -> bool;
    }

    impl Fixture for MemoryGateway {
        /// True when the busybox fixture is missing.
        fn resolve_image_config_for_test(&self) -> bool {
            self.resolve_image_config(buildwit_sdk::ResolveImageRequest {
                ref_: format!("{BB}:latest"),
                platform: None,
                resolve_mode: ResolveMode::Default,
                log_name: String::new(),
            })
            .is_err()
        }
    }

    #[test]
    fn info_reports_channel() {
        let info = Dockerfile::info();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("dockerfile", "1.26.0")
        );
        assert_eq!(info.channel, CHANNEL);
    }

    #[test]
    fn link_platform_chmod_and_secrets() {
        let df = format!(
            "# check=skip=all\nFROM --platform=linux/arm64 {BB}\nRUN --mount=type=secret,id=tok,env=TOKEN echo $TOKEN\nCOPY --link a /a\nCOPY --chmod=u+x,go-w b /b\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/f.txt /f\nSTOPSIGNAL SIGTERM\n"
        );
        let gw = gateway(&df);
        if gw.resolve_image_config_for_test() {
            return; // no corpus fixture available
        }
        let out = run::<Dockerfile>(&gw).unwrap();
        let def = out.definition.clone().unwrap();
        let exec = def.ops.iter().find_map(|o| match &o.kind {
            OpKind::Exec(e) => Some((e, o.platform.clone())),
            _ => None,
        });
        let (exec, platform) = exec.unwrap();
        assert_eq!(platform.unwrap().architecture, "arm64");
        assert_eq!(exec.secret_env[0].name, "TOKEN");
        assert!(def.ops.iter().any(|o| matches!(o.kind, OpKind::Merge(_))));
        let mode_str = def.ops.iter().any(|o| match &o.kind {
            OpKind::File(f) => f.actions.iter().any(|a| matches!(&a.action, FileActionKind::Copy(c) if c.mode_str == "u+x,go-w" && c.mode == 0)),
            _ => false,
        });
        assert!(mode_str);
        let config = out.metadata_str("containerimage.config").unwrap();
        assert!(
            config.contains(r#""architecture":"amd64""#)
                && config.contains(r#""StopSignal":"SIGTERM""#)
        );
    }

    #[test]
    fn without_a_platform_option_the_build_is_for_the_workers_own() {
        let gw = gateway("FROM scratch\nARG TARGETPLATFORM\nENV T=$TARGETPLATFORM\n")
            .worker_platforms(&["linux/arm64", "linux/amd64"])
            .unwrap();
        let out = run::<Dockerfile>(&gw).unwrap();
        let config = out.metadata_str("containerimage.config").unwrap();
        assert!(config.contains(r#""architecture":"arm64""#), "{config}");
        assert!(config.contains("T=linux/arm64"), "{config}");
    }

    /// The `created` times of the history a build's image config carries.
    fn history_times(out: &TestOutput) -> Vec<Option<String>> {
        let config = out.metadata_str("containerimage.config").unwrap();
        let v: serde_json::Value = serde_json::from_str(&config).unwrap();
        v["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created"].as_str().map(str::to_string))
            .collect()
    }

    fn mkdir_timestamps(out: &TestOutput) -> Vec<i64> {
        let def = out.definition.clone().unwrap();
        def.ops
            .iter()
            .flat_map(|o| match &o.kind {
                OpKind::File(f) => f.actions.clone(),
                _ => Vec::new(),
            })
            .filter_map(|a| match a.action {
                FileActionKind::Mkdir(m) => Some(m.timestamp),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn source_date_epoch_dates_the_history_and_workdir_and_reaches_the_exporters() {
        let df = "FROM scratch\nWORKDIR /app\nENV A=1\nCOPY f /f\n";
        let plain = run::<Dockerfile>(&gateway(df)).unwrap();
        assert!(history_times(&plain).iter().all(Option::is_none));
        assert_eq!(mkdir_timestamps(&plain), vec![-1]);
        assert_eq!(plain.metadata_str("source.date.epoch"), None);

        let gw = gateway(df).option("build-arg:SOURCE_DATE_EPOCH", "1704067200");
        let out = run::<Dockerfile>(&gw).unwrap();
        let at = Some("2024-01-01T00:00:00Z".to_string());
        assert_eq!(history_times(&out), vec![at.clone(); 3]);
        assert_eq!(mkdir_timestamps(&out), vec![1_704_067_200_000_000_000]);
        assert_eq!(
            out.metadata_str("source.date.epoch").as_deref(),
            Some("1704067200")
        );

        // A global ARG's default counts when the caller gives none; the stage reads the
        // value in canonical form.
        let df = "ARG SOURCE_DATE_EPOCH=0100\nFROM scratch\nARG SOURCE_DATE_EPOCH\nENV E=$SOURCE_DATE_EPOCH\n";
        let out = run::<Dockerfile>(&gateway(df)).unwrap();
        assert_eq!(
            out.metadata_str("source.date.epoch").as_deref(),
            Some("100")
        );
        let config = out.metadata_str("containerimage.config").unwrap();
        assert!(config.contains("E=100"), "{config}");
        assert!(
            config.contains(r#""created":"1970-01-01T00:01:40Z""#),
            "{config}"
        );
    }

    #[test]
    fn source_date_epoch_context_of_a_local_context_is_unset_and_nonsense_is_refused() {
        let df = "FROM scratch\nARG SOURCE_DATE_EPOCH\nENV E=x$SOURCE_DATE_EPOCH\n";
        let gw = gateway(df).option("build-arg:SOURCE_DATE_EPOCH", "context");
        let out = run::<Dockerfile>(&gw).unwrap();
        assert_eq!(out.metadata_str("source.date.epoch"), None);
        let config = out.metadata_str("containerimage.config").unwrap();
        assert!(config.contains(r#""E=x""#), "{config}");

        let gw = gateway(df).option("build-arg:SOURCE_DATE_EPOCH", "yesterday");
        let err = run::<Dockerfile>(&gw).unwrap_err();
        assert!(
            err.message
                .contains("invalid SOURCE_DATE_EPOCH \"yesterday\""),
            "{}",
            err.message
        );
    }

    fn context_attrs(gw: &MemoryGateway) -> Vec<(String, String)> {
        let out = run::<Dockerfile>(gw).unwrap();
        let def = out.definition.unwrap();
        def.ops
            .iter()
            .find_map(|o| match &o.kind {
                OpKind::Source(s) if s.identifier == "local://context" => Some(s.attrs.clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn dockerignore_patterns() {
        let df = "FROM scratch\nCOPY . /\n";
        let gw = gateway(df).file("context", ".dockerignore", "# c\n/node_modules\n!keep\n");
        let attrs = context_attrs(&gw);
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["local.excludepatterns", "local.sharedkeyhint"]);
        assert_eq!(attrs[0].1, r#"["node_modules","!keep"]"#);
        // `<Dockerfile>.dockerignore` next to the Dockerfile wins.
        let gw = gw.file("dockerfile", "Dockerfile.dockerignore", "*.md\n");
        assert_eq!(context_attrs(&gw)[0].1, r#"["*.md"]"#);
        // No file: no attribute.
        let attrs = context_attrs(&gateway(df));
        assert!(attrs.iter().all(|(k, _)| k != "local.excludepatterns"));
    }

    #[test]
    fn build_checks_warn_and_fail() {
        let gw = gateway("FROM scratch AS Base\nCMD echo\n");
        run::<Dockerfile>(&gw).unwrap();
        let shorts: Vec<String> = gw.warnings().iter().map(|w| w.short.clone()).collect();
        assert_eq!(
            shorts,
            [
                "StageNameCasing: Stage name 'Base' should be lowercase (line 1)",
                "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"
            ]
        );
        assert_eq!(gw.warnings()[0].level, 1);
        let gw = gateway("# check=error=true\nFROM scratch\nCMD echo\n");
        let err = run::<Dockerfile>(&gw).unwrap_err();
        assert_eq!(
            err.message,
            "lint violation found for rules: JSONArgsRecommended"
        );
        assert_eq!(
            gw.warnings()[0].url,
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        // The lint subrequest answers instead of warning: status 1 when anything fired.
        let gw = gateway("FROM scratch\nCMD echo\n").option("requestid", "frontend.lint");
        let out = run::<Dockerfile>(&gw).unwrap();
        assert_eq!(out.metadata_str("result.statuscode").as_deref(), Some("1"));
        assert!(gw.warnings().is_empty());
        let gw = gateway("FROM scratch\nCMD [\"echo\"]\n").option("requestid", "frontend.lint");
        let out = run::<Dockerfile>(&gw).unwrap();
        assert_eq!(out.metadata_str("result.statuscode").as_deref(), Some("0"));
    }

    #[test]
    fn bad_check_directive_and_labs_device() {
        let gw = gateway(&format!("# check=bogus\nFROM {BB}\n"));
        let err = run::<Dockerfile>(&gw).unwrap_err();
        assert_eq!(
            err.message,
            "failed to parse check options: invalid check option \"bogus\""
        );
        let gw = gateway("FROM scratch\nCOPY a /a\nFOO\n");
        let err = run::<Dockerfile>(&gw).unwrap_err();
        assert!(err.location.is_some());
    }
}
