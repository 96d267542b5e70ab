//! The flags of `docker buildx build` that apply to one daemon, with buildx's syntax and
//! meaning: most become the frontend options buildx sends (`no-cache`, `label:KEY`,
//! `add-hosts`, ...); `--iidfile`, `--metadata-file` and `-q` say what was built as buildx
//! does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use buildwit_engine::BuildOutcome;

#[derive(clap::Args, Default)]
pub struct BuildxFlags {
    /// Do not use the cache for any step.
    #[arg(long)]
    no_cache: bool,
    /// Do not use the cache for these stages (repeatable, or comma-separated).
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Always pull a newer version of the images the build uses.
    #[arg(long)]
    pull: bool,
    /// Set a label on the image, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Add an annotation to the image: `KEY=VALUE`, `manifest:KEY=VALUE` or
    /// `manifest-descriptor:KEY=VALUE` (repeatable).
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// An additional build context, NAME=VALUE: a directory, `docker-image://REF`, a git or
    /// https URL, or `target:STAGE` (repeatable).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Add a host to the steps' /etc/hosts, HOST:IP or HOST=IP (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_hosts: Vec<String>,
    /// The network of RUN steps: `default`, `none` or `host` (host needs the daemon to
    /// permit `network.host`).
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// A ulimit of RUN steps, NAME=SOFT[:HARD] (repeatable).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// Size of /dev/shm in RUN steps, such as `64m`.
    #[arg(long, value_name = "BYTES")]
    shm_size: Option<String>,
    /// The cgroup parent of RUN steps.
    #[arg(long, value_name = "PATH")]
    cgroup_parent: Option<String>,
    /// Write the image id (its config digest) to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write what the build made (digests, names, the build's ref) to this JSON file, as
    /// buildx does.
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Print nothing but the image id.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Run the build checks instead of building (`--call check`).
    #[arg(long)]
    pub check: bool,
    /// An attestation to attach to the image: `type=provenance[,mode=min|max]` (SLSA
    /// provenance); `type=sbom` is not supported yet.
    #[arg(long, value_name = "SPEC")]
    attest: Vec<String>,
    /// Shorthand for `--attest type=provenance`: `true` (mode=min), `false`, or its
    /// options such as `mode=max`. Off unless given (buildx adds `mode=min` by default).
    #[arg(long, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true")]
    provenance: Option<String>,
    /// Shorthand for `--attest type=sbom` (not supported yet; `false` is accepted).
    #[arg(long, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true")]
    sbom: Option<String>,
    /// buildx loads into the Docker engine; there is none here.
    #[arg(long, hide = true)]
    load: bool,
    /// buildx picks a builder; here the daemon is `--addr`.
    #[arg(long, hide = true, value_name = "NAME")]
    builder: Option<String>,
}

/// What the flags add to a build request.
#[derive(Default)]
pub struct Request {
    /// Frontend options.
    pub options: Vec<(String, String)>,
    /// Local directories, by name (`--build-context NAME=DIR`).
    pub locals: BTreeMap<String, PathBuf>,
    /// Entitlements the flags need (`--network host`).
    pub allow: Vec<String>,
}

impl BuildxFlags {
    /// The frontend options, locals and entitlements, as buildx turns these flags into them.
    pub fn request(&self) -> Result<Request> {
        if self.load {
            bail!(
                "--load: there is no Docker engine to load into; use `-o type=docker,dest=FILE` (then `docker load -i FILE`) or `-o type=oci,dest=FILE`"
            );
        }
        if let Some(builder) = &self.builder {
            bail!(
                "--builder {builder}: buildwit has no builders; use --addr to build on a buildwitd (unix:///PATH or tcp://HOST:PORT)"
            );
        }
        let mut r = Request::default();
        if let Some(provenance) = self.provenance_option()? {
            r.options.push(("attest:provenance".into(), provenance));
        }
        // The filter names stages; without it, every step.
        if self.no_cache || !self.no_cache_filter.is_empty() {
            r.options
                .push(("no-cache".into(), self.no_cache_filter.join(",")));
        }
        if self.pull {
            r.options.push(("image-resolve-mode".into(), "pull".into()));
        }
        for label in &self.labels {
            // `KEY` alone is an empty value, as in buildx.
            let (k, v) = label.split_once('=').unwrap_or((label, ""));
            if k.is_empty() {
                bail!("--label {label:?}: expected KEY=VALUE");
            }
            r.options.push((format!("label:{k}"), v.to_string()));
        }
        for context in &self.build_contexts {
            let (name, value) = context
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .with_context(|| format!("--build-context {context:?}: expected NAME=VALUE"))?;
            r.options.push((
                format!("context:{name}"),
                named_context(name, value, &mut r.locals)?,
            ));
        }
        if !self.add_hosts.is_empty() {
            let hosts = self
                .add_hosts
                .iter()
                .flat_map(|h| h.split(','))
                .map(extra_host)
                .collect::<Result<Vec<_>>>()?;
            r.options.push(("add-hosts".into(), hosts.join(",")));
        }
        match self.network.as_deref() {
            None | Some("default") => {}
            Some("none") => r.options.push(("force-network-mode".into(), "none".into())),
            Some("host") => {
                r.options.push(("force-network-mode".into(), "host".into()));
                r.allow.push("network.host".into());
            }
            Some(other) => bail!("--network {other:?}: use default, none or host"),
        }
        if !self.ulimits.is_empty() {
            for u in &self.ulimits {
                check_ulimit(u)?;
            }
            r.options.push(("ulimit".into(), self.ulimits.join(",")));
        }
        if let Some(size) = &self.shm_size {
            r.options
                .push(("shm-size".into(), parse_bytes(size)?.to_string()));
        }
        if let Some(parent) = &self.cgroup_parent {
            r.options.push(("cgroup-parent".into(), parent.clone()));
        }
        Ok(r)
    }

    /// The `attest:provenance` option buildx sends for `--provenance` and `--attest
    /// type=provenance` (the last one given wins); `None`: no provenance. SBOMs are refused.
    fn provenance_option(&self) -> Result<Option<String>> {
        let sbom_off = self
            .sbom
            .as_deref()
            .is_none_or(|v| matches!(v, "false" | "0" | "disabled=true"));
        // Go's booleans, as buildx reads them.
        let mut provenance = match self.provenance.as_deref() {
            None | Some("0" | "f" | "F" | "false" | "FALSE" | "False" | "disabled=true") => None,
            Some("1" | "t" | "T" | "true" | "TRUE" | "True" | "") => Some("mode=min".to_string()),
            Some(options) => Some(options.to_string()),
        };
        for spec in &self.attest {
            let mut kind = None;
            let mut rest = Vec::new();
            for field in spec.split(',') {
                match field.split_once('=') {
                    Some(("type", t)) => kind = Some(t),
                    _ => rest.push(field),
                }
            }
            match kind {
                Some("provenance") if rest.contains(&"disabled=true") => provenance = None,
                Some("provenance") => provenance = Some(rest.join(",")),
                Some("sbom") if rest.contains(&"disabled=true") => {}
                Some("sbom") => bail!(
                    "--attest {spec}: SBOMs are not supported yet: they come from a scanner frontend, and container frontends cannot run here yet"
                ),
                _ => bail!("--attest {spec:?}: expected type=provenance[,mode=min|max]"),
            }
        }
        if !sbom_off {
            bail!(
                "--sbom is not supported yet: SBOMs come from a scanner frontend, and container frontends cannot run here yet"
            );
        }
        Ok(provenance)
    }

    /// Before a build: an `--iidfile` of an earlier build is removed, as buildx does, so a
    /// failed build leaves none.
    pub fn clear_results(&self) -> Result<()> {
        if let Some(path) = &self.iidfile {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("remove {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// After a build: the image id to `--iidfile` and stdout (`-q`), the metadata to
    /// `--metadata-file`.
    pub fn write_results(&self, outcome: &BuildOutcome) -> Result<()> {
        let id = image_id(outcome);
        if let Some(path) = &self.iidfile {
            let id = id.with_context(|| {
                format!("--iidfile {}: the build exported no image", path.display())
            })?;
            std::fs::write(path, id).with_context(|| format!("write {}", path.display()))?;
        }
        if self.quiet
            && let Some(id) = id
        {
            println!("{id}");
        }
        if let Some(path) = &self.metadata_file {
            let json = serde_json::to_vec_pretty(&metadata(outcome))?;
            std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }
}

/// A `--build-context` value as buildx sends it: URLs and images as they are, a directory
/// as a local of its own.
fn named_context(
    name: &str,
    value: &str,
    locals: &mut BTreeMap<String, PathBuf>,
) -> Result<String> {
    let passes = [
        "docker-image://",
        "target:",
        "https://",
        "http://",
        "git@",
        "git://",
    ];
    if passes.iter().any(|p| value.starts_with(p)) {
        return Ok(value.to_string());
    }
    if value.starts_with("oci-layout://") {
        bail!(
            "--build-context {name}={value}: OCI layout contexts are not supported yet; use --oci-layout NAME=DIR with FROM oci-layout://NAME@sha256:…"
        );
    }
    let dir = Path::new(value);
    if !dir.is_dir() {
        bail!("--build-context {name}={value}: build context must be a directory");
    }
    // `context` and `dockerfile` are the main locals' names.
    let local = match name {
        "context" | "dockerfile" => format!("_{name}"),
        _ => name.to_string(),
    };
    locals.insert(local.clone(), dir.to_path_buf());
    Ok(format!("local:{local}"))
}

/// `HOST:IP` or `HOST=IP` as `HOST=IP` (an IPv6 address may be in brackets).
fn extra_host(spec: &str) -> Result<String> {
    let (host, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .filter(|(h, _)| !h.is_empty())
        .with_context(|| format!("--add-host {spec:?}: expected HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip == "host-gateway" {
        bail!("--add-host {spec}: host-gateway is the Docker engine's; give the address");
    }
    ip.parse::<std::net::IpAddr>()
        .with_context(|| format!("--add-host {spec:?}: {ip:?} is not an IP address"))?;
    Ok(format!("{host}={ip}"))
}

fn check_ulimit(spec: &str) -> Result<()> {
    let bad = || format!("--ulimit {spec:?}: expected NAME=SOFT[:HARD], such as nofile=1024:2048");
    let (name, values) = spec.split_once('=').with_context(bad)?;
    if name.is_empty() {
        bail!(bad());
    }
    for v in values.split(':') {
        v.parse::<i64>().ok().with_context(bad)?;
    }
    Ok(())
}

/// Docker's sizes: a number with an optional unit b, k, m, g, t (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let (number, unit) = lower.split_at(
        lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len()),
    );
    // `k`, `kb`, `kib` are the same unit.
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => bail!("--shm-size {s:?}: unknown unit (use b, k, m, g or t)"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("--shm-size {s:?}: not a size"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("--shm-size {s:?}: too large"))
}

/// The image id as buildx gives it: the config digest, else the manifest's.
fn image_id(outcome: &BuildOutcome) -> Option<&str> {
    let image = outcome.exported.iter().find(|e| e.digest.is_some())?;
    image.config_digest.as_deref().or(image.digest.as_deref())
}

/// What buildx writes to `--metadata-file` for one build: the exporter's answer
/// (`containerimage.*`, `image.name`) and `buildx.build.ref`.
fn metadata(outcome: &BuildOutcome) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert(
        "buildx.build.ref".into(),
        // buildx's BUILDER/NODE/REF; the ref is the id `buildwit history inspect` takes.
        format!("buildwit/buildwit0/{}", outcome.build_id).into(),
    );
    if let Some(image) = outcome.exported.iter().find(|e| e.digest.is_some()) {
        for (k, v) in image.response() {
            m.insert(k.into(), v);
        }
    }
    m.into()
}

/// A `type=gha` cache spec with what it leaves out taken from the GitHub Actions runner's
/// environment, on the client's side as buildx and buildctl take it: `version=2` when
/// `$ACTIONS_CACHE_SERVICE_V2` is true, `url_v2` from `$ACTIONS_RESULTS_URL`, `url` from
/// `$ACTIONS_CACHE_URL` (else `$ACTIONS_RESULTS_URL`), `token` from `$ACTIONS_RUNTIME_TOKEN`.
/// Other specs are returned as they are.
pub fn github_cache_env(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let parts: Vec<(&str, &str)> = spec
        .split(',')
        .map(|part| part.split_once('=').unwrap_or((part, "")))
        .map(|(k, v)| (k.trim(), v))
        .collect();
    if !parts.contains(&("type", "gha")) {
        return Ok(spec.to_string());
    }
    let has = |k: &str| parts.iter().any(|(key, _)| *key == k);
    let mut added: Vec<(&str, String)> = Vec::new();
    let v2 = parts.contains(&("version", "2"))
        || !has("version")
            && env("ACTIONS_CACHE_SERVICE_V2")
                .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
    if v2 && !has("version") {
        added.push(("version", "2".into()));
    }
    if v2
        && !has("url_v2")
        && let Some(v) = env("ACTIONS_RESULTS_URL")
    {
        added.push(("url_v2", v));
    }
    if !has("url")
        && let Some(v) = env("ACTIONS_CACHE_URL").or_else(|| env("ACTIONS_RESULTS_URL"))
    {
        added.push(("url", v));
    }
    let url = |k: &str| has(k) || added.iter().any(|(key, _)| *key == k);
    if !url("url") && !url("url_v2") {
        bail!("a cache of type gha needs url= or url_v2= (or $ACTIONS_RESULTS_URL)");
    }
    if !has("token") {
        let token = env("ACTIONS_RUNTIME_TOKEN")
            .context("a cache of type gha needs token= or $ACTIONS_RUNTIME_TOKEN")?;
        added.push(("token", token));
    }
    let mut out = spec.to_string();
    for (k, v) in added {
        if v.contains(',') {
            bail!("a cache of type gha: the {k} from the environment has a comma");
        }
        out.push_str(&format!(",{k}={v}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gha_caches_take_the_runners_environment() {
        let env = |k: &str| match k {
            "ACTIONS_CACHE_SERVICE_V2" => Some("True".to_string()),
            "ACTIONS_RESULTS_URL" => Some("https://results/".to_string()),
            "ACTIONS_RUNTIME_TOKEN" => Some("a.b.c".to_string()),
            _ => None,
        };
        assert_eq!(
            super::github_cache_env("type=gha,scope=app", env).unwrap(),
            "type=gha,scope=app,version=2,url_v2=https://results/,url=https://results/,token=a.b.c"
        );
        assert_eq!(
            super::github_cache_env("type=local,dest=d", env).unwrap(),
            "type=local,dest=d"
        );
        let e = super::github_cache_env("type=gha", |_| None).unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
    }

    use super::*;

    #[test]
    fn sizes_are_dockers() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2g").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("10kb").unwrap(), 10 << 10);
        assert!(parse_bytes("10x").is_err());
        assert!(parse_bytes("m").is_err());
    }

    #[test]
    fn extra_hosts_are_buildkits_form() {
        assert_eq!(extra_host("db:10.0.0.2").unwrap(), "db=10.0.0.2");
        assert_eq!(extra_host("db=10.0.0.2").unwrap(), "db=10.0.0.2");
        assert_eq!(extra_host("v6=[::1]").unwrap(), "v6=::1");
        assert!(extra_host("db:nope").is_err());
        assert!(extra_host(":1.2.3.4").is_err());
    }

    #[test]
    fn ulimits_are_checked() {
        assert!(check_ulimit("nofile=1024:2048").is_ok());
        assert!(check_ulimit("nproc=10").is_ok());
        assert!(check_ulimit("nofile").is_err());
        assert!(check_ulimit("nofile=a").is_err());
    }
}
