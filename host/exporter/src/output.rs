//! `--output` strings as buildx and buildctl take them: `type=oci,dest=out.tar`,
//! `type=image,name=REF,push=true`, `-o DIR` (local), `-` (tar to stdout).

use std::fmt;
use std::path::PathBuf;

use buildwit_worker::Snapshot;

use crate::image::{Annotations, ImageSpec};
use crate::layer::Compression;

/// Where an output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// An image for a registry (`type=image`; `type=registry` is this with push).
    Image,
    /// An OCI image layout, as a tarball or a directory.
    Oci,
    /// A Docker tarball (`docker load`).
    Docker,
    /// The files, into a directory.
    Local,
    /// The files, as a tar stream.
    Tar,
}

impl OutputKind {
    fn name(&self) -> &'static str {
        match self {
            OutputKind::Image => "image",
            OutputKind::Oci => "oci",
            OutputKind::Docker => "docker",
            OutputKind::Local => "local",
            OutputKind::Tar => "tar",
        }
    }

    /// Whether it exports an image (rather than files).
    pub fn is_image(&self) -> bool {
        matches!(
            self,
            OutputKind::Image | OutputKind::Oci | OutputKind::Docker
        )
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `dest=`: a path, or `-` for standard output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A file or directory.
    Path(PathBuf),
    /// Standard output (`dest=-`).
    Stdout,
}

/// A parsed `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// The exporter.
    pub kind: OutputKind,
    /// `dest=`; required for `local`. When absent for `oci`, `docker` and `tar`, buildx
    /// writes to standard output unless it is a terminal: the caller decides.
    pub dest: Option<Destination>,
    /// `tar=` for `oci`/`docker`: a tarball (default) or a layout directory.
    pub tar: bool,
    /// `name=`: image names (several: `"name=a,b"`, or `name=a,b` as a convenience).
    pub names: Vec<String>,
    /// `push=` (`type=registry` sets it).
    pub push: bool,
    /// `push-by-digest=`: push without a tag.
    pub push_by_digest: bool,
    /// `registry.insecure=`: push over plain HTTP or unverified TLS.
    pub insecure: bool,
    /// `compression=`.
    pub compression: Compression,
    /// `compression-level=`.
    pub compression_level: Option<u32>,
    /// `force-compression=`.
    pub force_compression: bool,
    /// `oci-mediatypes=` (default true).
    pub oci_mediatypes: bool,
    /// `annotation.KEY=`, `annotation-manifest.KEY=`, `annotation-manifest-descriptor.KEY=`.
    pub annotations: Annotations,
    /// `platform-split=` for `local` and `tar`: one directory per platform. Unset: split
    /// when there are several platforms.
    pub platform_split: Option<bool>,
    /// `source-date-epoch=` (Unix seconds): the time of the image and its history, or of
    /// every exported file. Unset: the build's `SOURCE_DATE_EPOCH`, if it has one.
    pub source_date_epoch: Option<i64>,
    /// `rewrite-timestamp=`: no file time in the image's new layers later than the epoch.
    pub rewrite_timestamp: bool,
}

impl OutputSpec {
    fn new(kind: OutputKind) -> Self {
        OutputSpec {
            kind,
            dest: None,
            tar: true,
            names: Vec::new(),
            push: false,
            push_by_digest: false,
            insecure: false,
            compression: Compression::Gzip,
            compression_level: None,
            force_compression: false,
            oci_mediatypes: true,
            annotations: Annotations::default(),
            platform_split: None,
            source_date_epoch: None,
            rewrite_timestamp: false,
        }
    }

    /// The image to build for this output from a snapshot and its config.
    pub fn image_spec(&self, snapshot: Snapshot, config: Vec<u8>) -> ImageSpec {
        ImageSpec {
            oci_mediatypes: self.oci_mediatypes,
            compression: self.compression,
            compression_level: self.compression_level,
            force_compression: self.force_compression,
            annotations: self.annotations.clone(),
            epoch: self.source_date_epoch,
            rewrite_timestamp: self.rewrite_timestamp,
            ..ImageSpec::new(snapshot, config)
        }
    }
}

/// What is wrong with an `--output` string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// Nothing given.
    #[error("empty --output")]
    Empty,
    /// A quoted field that does not end.
    #[error("--output {0:?}: unterminated quote")]
    Unterminated(String),
    /// A field that is not `key=value`.
    #[error("--output field {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// No `type=`.
    #[error(
        "--output {0:?} has no type= (expected type=image, registry, oci, docker, local or tar)"
    )]
    MissingType(String),
    /// A `type=` we do not have.
    #[error("unknown --output type {0:?} (expected image, registry, oci, docker, local or tar)")]
    UnknownType(String),
    /// An option the type does not take.
    #[error("unknown option {key:?} for --output type={kind}")]
    UnknownKey {
        /// The option.
        key: String,
        /// The output type.
        kind: String,
    },
    /// An option with a value it cannot have.
    #[error("invalid value {value:?} for --output option {key:?}: {reason}")]
    BadValue {
        /// The option.
        key: String,
        /// Its value.
        value: String,
        /// What it may be.
        reason: String,
    },
    /// A required option missing.
    #[error("--output type={kind} needs {key}=")]
    Missing {
        /// The output type.
        kind: String,
        /// The missing option.
        key: String,
    },
    /// Options that do not go together.
    #[error("{0}")]
    Conflict(String),
}

/// Parse an `--output` value.
pub fn parse_output(s: &str) -> Result<OutputSpec, OutputError> {
    if s.is_empty() {
        return Err(OutputError::Empty);
    }
    // Shorthands: `-` is a tar stream to stdout, anything without '=' a local directory.
    if s == "-" {
        let mut out = OutputSpec::new(OutputKind::Tar);
        out.dest = Some(Destination::Stdout);
        return Ok(out);
    }
    if !s.contains('=') {
        let mut out = OutputSpec::new(OutputKind::Local);
        out.dest = Some(Destination::Path(PathBuf::from(s)));
        return Ok(out);
    }

    let fields = split_csv(s)?;
    let mut pairs = Vec::new();
    let mut kind = None;
    for field in fields {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
            // `name=a,b` without quotes: the bare field is one more name.
            None if pairs.last().is_some_and(|(k, _)| k == "name") => {
                let (_, names) = pairs.last_mut().expect("checked");
                names.push(',');
                names.push_str(&field);
            }
            None => return Err(OutputError::NotKeyValue(field)),
        }
    }
    let kind = kind.ok_or_else(|| OutputError::MissingType(s.to_string()))?;
    output_from_attrs(&kind, pairs)
}

/// An output from its exporter type and attributes, as BuildKit's API carries one.
pub fn output_from_attrs(
    kind: &str,
    attrs: impl IntoIterator<Item = (String, String)>,
) -> Result<OutputSpec, OutputError> {
    let kind = kind.to_string();
    let mut out = match kind.as_str() {
        "image" => OutputSpec::new(OutputKind::Image),
        "registry" => OutputSpec {
            push: true,
            ..OutputSpec::new(OutputKind::Image)
        },
        "oci" => OutputSpec::new(OutputKind::Oci),
        "docker" => OutputSpec::new(OutputKind::Docker),
        "local" => OutputSpec::new(OutputKind::Local),
        "tar" => OutputSpec::new(OutputKind::Tar),
        _ => return Err(OutputError::UnknownType(kind)),
    };
    for (key, value) in attrs {
        apply(&mut out, &kind, key, value)?;
    }

    if out.kind == OutputKind::Local {
        match &out.dest {
            None => return Err(missing(&kind, "dest")),
            Some(Destination::Stdout) => {
                return Err(bad(
                    "dest",
                    "-",
                    "type=local writes a directory, not to stdout",
                ));
            }
            Some(Destination::Path(_)) => {}
        }
    }
    if let Some(level) = out.compression_level
        && !out.compression.levels().contains(&level)
    {
        let range = out.compression.levels();
        return Err(bad(
            "compression-level",
            &level.to_string(),
            &format!(
                "{} takes levels {} to {}",
                out.compression,
                range.start(),
                range.end()
            ),
        ));
    }
    if !out.oci_mediatypes {
        if out.compression == Compression::Zstd {
            return Err(OutputError::Conflict(format!(
                "exporter option \"compression={}\" conflicts with \"oci-mediatypes=false\"",
                out.compression
            )));
        }
        if out.annotations.beyond_manifests() {
            return Err(OutputError::Conflict(
                "cannot export annotations with \"oci-mediatypes=false\"".into(),
            ));
        }
    }
    Ok(out)
}

impl OutputSpec {
    /// Add a `--annotation` as buildx gives it to image outputs: `KEY=VALUE`, or
    /// `TYPE:KEY=VALUE` with `manifest`, `manifest-descriptor` or `index` (the image index
    /// of a multi-platform or attested image) as the type.
    pub fn annotate(&mut self, annotation: &str) -> Result<(), OutputError> {
        let (key, value) = annotation.split_once('=').ok_or_else(|| {
            OutputError::NotKeyValue(format!("--annotation {annotation}: expected KEY=VALUE"))
        })?;
        let kind = self.kind.to_string();
        match key.split_once(':') {
            // `index,manifest[linux/amd64]:KEY=VALUE`: one annotation per type.
            Some((types, name)) => {
                for target in types.split(',') {
                    let (target, platform) = match target.split_once('[') {
                        Some((t, p)) => (t, format!("[{p}")),
                        None => (target, String::new()),
                    };
                    let key = format!("annotation-{target}{platform}.{name}");
                    apply(self, &kind, key, value.to_string())?;
                }
                Ok(())
            }
            None => apply(self, &kind, format!("annotation.{key}"), value.to_string()),
        }
    }
}

/// Set one option, if the output type takes it.
fn apply(out: &mut OutputSpec, kind: &str, key: String, value: String) -> Result<(), OutputError> {
    let image = out.kind.is_image();
    let layout = matches!(out.kind, OutputKind::Oci | OutputKind::Docker);
    let registry = out.kind == OutputKind::Image;
    let files = matches!(out.kind, OutputKind::Local | OutputKind::Tar);
    match key.as_str() {
        "dest" if !registry => {
            out.dest = Some(match value.as_str() {
                "" => return Err(bad(&key, &value, "an empty path")),
                "-" => Destination::Stdout,
                path => Destination::Path(PathBuf::from(path)),
            });
        }
        "tar" if layout => out.tar = parse_bool(&key, &value, false)?,
        "platform-split" if files => out.platform_split = Some(parse_bool(&key, &value, true)?),
        "name" if image => {
            out.names = value
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
        }
        "push" if registry => out.push = parse_bool(&key, &value, true)?,
        "push-by-digest" if registry => out.push_by_digest = parse_bool(&key, &value, true)?,
        "registry.insecure" if registry => out.insecure = parse_bool(&key, &value, true)?,
        "compression" if image => {
            out.compression = Compression::parse(&value)
                .ok_or_else(|| bad(&key, &value, "expected uncompressed, gzip or zstd"))?;
        }
        "compression-level" if image => {
            let level = value
                .parse()
                .map_err(|_| bad(&key, &value, "expected a number"))?;
            out.compression_level = Some(level);
        }
        "force-compression" if image => {
            out.force_compression = parse_bool(&key, &value, true)?;
        }
        "oci-mediatypes" if image => out.oci_mediatypes = parse_bool(&key, &value, false)?,
        "rewrite-timestamp" if image => out.rewrite_timestamp = parse_bool(&key, &value, true)?,
        "source-date-epoch" => {
            out.source_date_epoch = match value.as_str() {
                "" => None,
                v => Some(
                    v.parse()
                        .map_err(|_| bad(&key, &value, "expected seconds since 1970-01-01"))?,
                ),
            };
        }
        // About containerd's image store, which buildwit has none of (buildx sends
        // `unpack=false` with every push).
        "unpack" | "store" if registry => {
            parse_bool(&key, &value, true)?;
        }
        "dangling-name-prefix" | "name-canonical" if registry => {}
        k if image && k.starts_with("annotation") => add_annotation(out, kind, &key, value)?,
        _ => {
            return Err(OutputError::UnknownKey {
                key,
                kind: kind.to_string(),
            });
        }
    }
    Ok(())
}

/// An `annotation[-TYPE][[PLATFORM]].KEY` option, as BuildKit's image exporters read it.
fn add_annotation(
    out: &mut OutputSpec,
    kind: &str,
    key: &str,
    value: String,
) -> Result<(), OutputError> {
    let unknown = || OutputError::UnknownKey {
        key: key.to_string(),
        kind: kind.to_string(),
    };
    let rest = &key["annotation".len()..];
    let (target, rest) = match rest.strip_prefix('-') {
        Some(r) => {
            let end = r
                .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .unwrap_or(r.len());
            (&r[..end], &r[end..])
        }
        None => ("manifest", rest),
    };
    let (platform, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (p, rest) = r.split_once(']').ok_or_else(unknown)?;
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-');
            if p.is_empty() || !p.chars().all(valid) {
                return Err(bad(
                    key,
                    &value,
                    "expected a platform in brackets: [os/arch]",
                ));
            }
            (Some(p), rest)
        }
        None => (None, rest),
    };
    let name = rest.strip_prefix('.').ok_or_else(unknown)?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad(
            key,
            &value,
            "the annotation needs a key: annotation.KEY=VALUE",
        ));
    }
    let a = &mut out.annotations;
    let map = match (target, platform) {
        ("manifest", None) => &mut a.manifest,
        ("manifest-descriptor", None) => &mut a.manifest_descriptor,
        ("manifest", Some(p)) => &mut a.platforms.entry(p.to_string()).or_default().manifest,
        ("manifest-descriptor", Some(p)) => {
            &mut a
                .platforms
                .entry(p.to_string())
                .or_default()
                .manifest_descriptor
        }
        ("index", None) => &mut a.index,
        ("index-descriptor", None) => &mut a.index_descriptor,
        ("index" | "index-descriptor", Some(_)) => {
            return Err(bad(
                key,
                &value,
                "an index is for every platform: no [platform]",
            ));
        }
        _ => return Err(unknown()),
    };
    map.insert(name.to_string(), value);
    Ok(())
}

/// Go's `strconv.ParseBool`; an empty value is true where `empty_is_true` (`push=` alone
/// means push).
fn parse_bool(key: &str, value: &str, empty_is_true: bool) -> Result<bool, OutputError> {
    match value {
        "" if empty_is_true => Ok(true),
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

fn bad(key: &str, value: &str, reason: &str) -> OutputError {
    OutputError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn missing(kind: &str, key: &str) -> OutputError {
    OutputError::Missing {
        kind: kind.to_string(),
        key: key.to_string(),
    }
}

/// Split on commas outside double quotes; `""` inside quotes is one quote (CSV, as buildx
/// reads `--output`).
fn split_csv(s: &str) -> Result<Vec<String>, OutputError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err(OutputError::Unterminated(s.to_string()));
    }
    fields.push(field);
    Ok(fields.into_iter().filter(|f| !f.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Option<Destination> {
        Some(Destination::Path(PathBuf::from(p)))
    }

    #[test]
    fn shorthands() {
        let o = parse_output("out").unwrap();
        assert_eq!((o.kind, o.dest), (OutputKind::Local, path("out")));
        let o = parse_output("-").unwrap();
        assert_eq!(
            (o.kind, o.dest),
            (OutputKind::Tar, Some(Destination::Stdout))
        );
        // A directory with a comma in its name is still a directory.
        assert_eq!(parse_output("a,b").unwrap().dest, path("a,b"));
    }

    #[test]
    fn image_outputs() {
        let o = parse_output("type=oci,dest=out.tar").unwrap();
        assert_eq!(
            (o.kind.clone(), o.dest.clone(), o.tar),
            (OutputKind::Oci, path("out.tar"), true)
        );
        assert_eq!(o.compression, Compression::Gzip);
        assert!(o.oci_mediatypes);

        let o = parse_output("type=docker,dest=d.tar,name=a:1").unwrap();
        assert_eq!(
            (o.kind, o.names),
            (OutputKind::Docker, vec!["a:1".to_string()])
        );

        let o = parse_output("type=image,name=reg/x:1,push=true").unwrap();
        assert_eq!(o.kind, OutputKind::Image);
        assert!(o.push && o.dest.is_none());
        assert!(parse_output("type=registry,name=x").unwrap().push);

        let o = parse_output(
            "type=oci,dest=o,tar=false,compression=zstd,compression-level=19,force-compression=true,\
             annotation.org.x=1,annotation-manifest-descriptor.d=2",
        )
        .unwrap();
        assert!(!o.tar && o.force_compression);
        assert_eq!(
            (o.compression, o.compression_level),
            (Compression::Zstd, Some(19))
        );
        assert_eq!(o.annotations.manifest["org.x"], "1");
        assert_eq!(o.annotations.manifest_descriptor["d"], "2");

        let o = parse_output("type=docker,dest=x,oci-mediatypes=false,compression=uncompressed")
            .unwrap();
        assert!(!o.oci_mediatypes);
        assert_eq!(o.compression, Compression::Uncompressed);
    }

    #[test]
    fn annotations_land_where_their_type_and_platform_say() {
        let o = parse_output(
            "type=image,annotation.a=1,annotation-manifest[linux/arm64].b=2,\
             annotation-manifest-descriptor[linux/arm64].c=3,annotation-index.d=4,\
             annotation-index-descriptor.e=5,annotation.org.f[x]=6",
        )
        .unwrap();
        let a = &o.annotations;
        assert_eq!(a.manifest["a"], "1");
        assert_eq!(a.manifest["org.f[x]"], "6");
        assert_eq!(a.index["d"], "4");
        assert_eq!(a.index_descriptor["e"], "5");
        let arm = a.for_platform("linux/arm64");
        assert_eq!(arm.manifest["b"], "2");
        assert_eq!(arm.manifest["a"], "1");
        assert_eq!(arm.manifest_descriptor["c"], "3");
        assert!(!a.for_platform("linux/amd64").manifest.contains_key("b"));

        // buildx's `--annotation TYPES:KEY=VALUE`.
        let mut o = parse_output("type=oci,dest=o").unwrap();
        o.annotate("index,manifest[linux/amd64]:k=v").unwrap();
        o.annotate("plain=1").unwrap();
        assert_eq!(o.annotations.index["k"], "v");
        assert_eq!(o.annotations.platforms["linux/amd64"].manifest["k"], "v");
        assert_eq!(o.annotations.manifest["plain"], "1");
    }

    #[test]
    fn several_names() {
        let want = vec!["a:1".to_string(), "b:2".to_string()];
        assert_eq!(
            parse_output("type=image,name=a:1,b:2,push=true")
                .unwrap()
                .names,
            want
        );
        assert_eq!(
            parse_output("type=image,\"name=a:1,b:2\"").unwrap().names,
            want
        );
    }

    #[test]
    fn files_outputs() {
        let o = parse_output("type=local,dest=dir").unwrap();
        assert_eq!((o.kind, o.dest), (OutputKind::Local, path("dir")));
        assert_eq!(o.platform_split, None);
        let o = parse_output("type=local,dest=dir,platform-split=false").unwrap();
        assert_eq!(o.platform_split, Some(false));
        let o = parse_output("type=tar,dest=-").unwrap();
        assert_eq!(
            (o.kind, o.dest),
            (OutputKind::Tar, Some(Destination::Stdout))
        );
        assert_eq!(parse_output("type=tar").unwrap().dest, None);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            ("type=foo,dest=x", "\"foo\""),
            ("type=oci,dest=x,colour=red", "\"colour\""),
            (
                "type=local,dest=x,name=a",
                "\"name\" for --output type=local",
            ),
            ("type=tar,dest=x,compression=gzip", "\"compression\""),
            ("type=image,dest=x", "\"dest\""),
            ("type=local", "needs dest="),
            ("type=local,dest=-", "\"dest\""),
            ("type=oci,compression=lz4", "\"compression\""),
            ("type=oci,compression-level=x", "\"compression-level\""),
            (
                "type=oci,compression=gzip,compression-level=10",
                "\"compression-level\"",
            ),
            ("type=oci,force-compression=maybe", "\"force-compression\""),
            (
                "type=oci,compression=zstd,oci-mediatypes=false",
                "oci-mediatypes=false",
            ),
            (
                "type=oci,annotation-indexes.a=1",
                "\"annotation-indexes.a\"",
            ),
            (
                "type=oci,annotation-index[linux/amd64].a=1",
                "no [platform]",
            ),
            (
                "type=oci,annotation[linux amd64].a=1",
                "platform in brackets",
            ),
            (
                "type=oci,oci-mediatypes=false,annotation-index.a=1",
                "oci-mediatypes=false",
            ),
            ("type=oci,annotation.=1", "\"annotation.\""),
            ("dest=x,type=oci,bare", "\"bare\""),
            ("dest=x", "no type="),
            ("type=oci,\"dest=x", "unterminated"),
        ];
        for (input, want) in cases {
            let err = parse_output(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
