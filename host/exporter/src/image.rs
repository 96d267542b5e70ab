//! An image from a snapshot and the config its frontend made: layer blobs, the config with
//! its rootfs and history made to agree with the layers, and the manifest.

use std::collections::{BTreeMap, HashMap};

use buildwit_worker::{ContentStore, Descriptor, Snapshot};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::ExportError;
use crate::cache::{CacheEntry, INLINE_CACHE_KEY, inline_cache_value};
use crate::layer::{Compression, LayerCompression, layer_blob_with};
use crate::layout::{DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};

/// The comment BuildKit puts on history entries its exporter adds for layers the config did
/// not account for; kept so tools that look for it still find it.
const ADDED_HISTORY_COMMENT: &str = "buildkit.exporter.image.v0";
/// `created_by` of such entries (BuildKit uses the step's description, which layers here
/// do not carry).
const ADDED_HISTORY_CREATED_BY: &str = "created by buildwit";
/// Annotation of the manifest descriptor: when the image was made.
pub(crate) const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// Annotations set with `annotation.*` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    /// On every platform's manifest (`annotation.KEY`, `annotation-manifest.KEY`).
    pub manifest: BTreeMap<String, String>,
    /// On every manifest's descriptor in an index (`annotation-manifest-descriptor.KEY`).
    pub manifest_descriptor: BTreeMap<String, String>,
    /// On the image index, when there is one (`annotation-index.KEY`).
    pub index: BTreeMap<String, String>,
    /// On the index's own descriptor in `index.json` (`annotation-index-descriptor.KEY`).
    pub index_descriptor: BTreeMap<String, String>,
    /// One platform's own (`annotation-manifest[linux/arm64].KEY`, and the same for
    /// `manifest-descriptor`), by its normalized platform id.
    pub platforms: BTreeMap<String, PlatformAnnotations>,
}

/// The annotations of one platform's manifest and its descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformAnnotations {
    /// On its manifest.
    pub manifest: BTreeMap<String, String>,
    /// On its descriptor in an index.
    pub manifest_descriptor: BTreeMap<String, String>,
}

impl Annotations {
    /// What goes on `platform`'s manifest and its descriptor: the annotations for every
    /// platform, then that platform's own over them.
    pub fn for_platform(&self, platform: &str) -> PlatformAnnotations {
        let mut out = PlatformAnnotations {
            manifest: self.manifest.clone(),
            manifest_descriptor: self.manifest_descriptor.clone(),
        };
        if let Some(own) = self.platforms.get(platform) {
            out.manifest.extend(own.manifest.clone());
            out.manifest_descriptor
                .extend(own.manifest_descriptor.clone());
        }
        out
    }

    /// Whether any goes somewhere but a manifest (Docker media types have no room for them).
    pub fn beyond_manifests(&self) -> bool {
        !self.manifest_descriptor.is_empty()
            || !self.index.is_empty()
            || !self.index_descriptor.is_empty()
            || self
                .platforms
                .values()
                .any(|p| !p.manifest_descriptor.is_empty())
    }
}

/// What to export as an image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The filesystem: its layers, bottom first.
    pub snapshot: Snapshot,
    /// The image config JSON the frontend made (`containerimage.config`). It may lack
    /// `rootfs` or have placeholder diff ids; empty means a default config for this host.
    pub config: Vec<u8>,
    /// OCI media types (default); Docker schema 2 ones when false.
    pub oci_mediatypes: bool,
    /// Layer compression.
    pub compression: Compression,
    /// Compression level; `None` for the default.
    pub compression_level: Option<u32>,
    /// Compress layers again even when a blob with the wanted compression exists.
    pub force_compression: bool,
    /// `annotation.*` options.
    pub annotations: Annotations,
    /// When the new layers were made (RFC 3339), BuildKit's layer creation time: given to
    /// history entries of layers that lack one, hence to the config's `created` when the
    /// frontend set none, and to the `org.opencontainers.image.created` annotation
    /// (the time of the export when `None`).
    pub created: Option<String>,
    /// Records to put in the config as an inline cache (`--cache-to type=inline`); their
    /// layers must be the snapshot's.
    pub inline_cache: Option<Vec<CacheEntry>>,
    /// `SOURCE_DATE_EPOCH` (Unix seconds): no history entry of this build and not the
    /// config dated later, and the time of the `created` annotation.
    pub epoch: Option<i64>,
    /// With `epoch`: no file time later than it in the layers this build made (those the
    /// base image has are its own and kept as they are).
    pub rewrite_timestamp: bool,
    /// The base image's config (`containerimage.base.config`): its layers and history are
    /// left as they are under an epoch.
    pub base_config: Option<Vec<u8>>,
}

impl ImageSpec {
    /// A spec with the default options: OCI media types, gzip.
    pub fn new(snapshot: Snapshot, config: Vec<u8>) -> Self {
        ImageSpec {
            snapshot,
            config,
            oci_mediatypes: true,
            compression: Compression::Gzip,
            compression_level: None,
            force_compression: false,
            annotations: Annotations::default(),
            created: None,
            inline_cache: None,
            epoch: None,
            rewrite_timestamp: false,
            base_config: None,
        }
    }
}

/// An image whose blobs are all in the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The manifest.
    pub manifest: Descriptor,
    /// The config.
    pub config: Descriptor,
    /// The layers, bottom first (empty layers left out).
    pub layers: Vec<Descriptor>,
    /// The manifest's bytes.
    pub manifest_bytes: Vec<u8>,
    /// The config's bytes.
    pub config_bytes: Vec<u8>,
    /// Annotations of the manifest's descriptor where an index lists it (`index.json`):
    /// `org.opencontainers.image.created` and `annotation-manifest-descriptor.*`.
    pub descriptor_annotations: BTreeMap<String, String>,
    /// Its platform id, `os/architecture[/variant]`, from its config.
    pub platform: String,
    /// The index over this image and the build's other platforms' images and attestations
    /// ([`crate::index::build_index`]); the names then point at it.
    pub index: Option<crate::index::ImageIndex>,
}

impl BuiltImage {
    /// What the image's names point at: the index when there is one, else the manifest.
    pub fn top(&self) -> &Descriptor {
        match &self.index {
            Some(i) => &i.index,
            None => &self.manifest,
        }
    }
}

/// The `platform` of a descriptor for the platform id `os/architecture[/variant]`.
pub(crate) fn platform_descriptor(id: &str) -> serde_json::Value {
    let mut parts = id.splitn(3, '/');
    let (os, arch, variant) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut v = serde_json::json!({"architecture": arch, "os": os});
    if !variant.is_empty() {
        v["variant"] = serde_json::json!(variant);
    }
    v
}

/// Make the image: layer blobs (reused when made before), the config with the real diff
/// ids and a history that agrees with the layers, and the manifest; all stored in `content`.
pub fn build_image(content: &ContentStore, spec: &ImageSpec) -> Result<BuiltImage, ExportError> {
    if !spec.oci_mediatypes {
        if spec.compression == Compression::Zstd {
            return Err(ExportError::Conflict(format!(
                "exporter option \"compression={}\" conflicts with \"oci-mediatypes=false\"",
                spec.compression
            )));
        }
        if spec.annotations.beyond_manifests() {
            return Err(ExportError::Conflict(
                "cannot export annotations with \"oci-mediatypes=false\"".into(),
            ));
        }
    }
    let raw = if spec.config.is_empty() {
        default_config()
    } else {
        spec.config.clone()
    };
    let mut config: RawConfig = serde_json::from_slice(&raw)
        .map_err(|e| ExportError::InvalidConfig(format!("not a JSON object: {e}")))?;
    for key in ["os", "architecture"] {
        let value: Option<String> = config.parse(key)?;
        if value.as_deref().unwrap_or("").is_empty() {
            return Err(ExportError::InvalidConfig(format!("missing {key}")));
        }
    }
    let history: Vec<History> = config.parse("history")?.unwrap_or_default();
    let platform = config.platform()?;
    let annotations = spec.annotations.for_platform(&platform);

    // A blob for every layer, an empty one included (a RUN that changed nothing gets an
    // empty tar, as in BuildKit).
    let opts = LayerCompression {
        compression: spec.compression,
        level: spec.compression_level,
        force: spec.force_compression,
        not_after: None,
    };
    let base = spec
        .base_config
        .as_deref()
        .and_then(|b| serde_json::from_slice::<BaseImage>(b).ok())
        .unwrap_or_default();
    let not_after = match (spec.rewrite_timestamp, spec.epoch) {
        (true, None) => {
            tracing::warn!("rewrite-timestamp is specified, but no source-date-epoch was found");
            None
        }
        (true, epoch) => epoch,
        (false, _) => None,
    };
    // Under rewrite-timestamp the base image's layers stay as they are, up to the first
    // layer that is not the base image's (as BuildKit decides).
    let mut past_base = false;
    let mut blobs = Vec::with_capacity(spec.snapshot.layers.len());
    for (i, layer) in spec.snapshot.layers.iter().enumerate() {
        let what = || format!("exporting layer {} ({})", layer.id, layer.dir.display());
        let mut opts = opts;
        if not_after.is_some() {
            let diff_id = layer.meta().ok().and_then(|m| m.diff_id);
            past_base |= diff_id.is_none() || base.rootfs.diff_ids.get(i) != diff_id.as_ref();
            if past_base {
                opts.not_after = not_after;
            }
        }
        let (mut desc, diff_id) =
            layer_blob_with(content, layer, &opts).map_err(|e| ExportError::io(what(), e))?;
        desc.media_type = spec
            .compression
            .layer_media_type(spec.oci_mediatypes)
            .to_string();
        blobs.push((desc, diff_id));
    }

    // Without a time given, new layers date from when the build made them, so an image
    // rebuilt from the cache is the same image.
    let created = spec.created.clone().or_else(|| {
        spec.snapshot
            .layers
            .iter()
            .filter_map(|l| l.meta().ok()?.created)
            .max()
            .map(rfc3339_utc)
    });
    let mut history = normalize_history(history, blobs.len(), created.as_deref());
    if let Some(epoch) = spec.epoch {
        clamp_history(&mut history, &base.history, epoch);
        if let Some(c) = config.parse::<String>("created")?
            && later_than(&c, epoch)
        {
            config.set("created", &rfc3339_utc(epoch))?;
        }
    }
    if let Some(entries) = &spec.inline_cache {
        let by_layer: HashMap<String, Option<String>> = spec
            .snapshot
            .layers
            .iter()
            .zip(&blobs)
            .map(|(l, (d, _))| (l.id.clone(), Some(d.digest.clone())))
            .collect();
        config.set(INLINE_CACHE_KEY, &inline_cache_value(entries, &by_layer)?)?;
    }
    let (layers, diff_ids): (Vec<Descriptor>, Vec<String>) = blobs.into_iter().unzip();

    config.set(
        "rootfs",
        &serde_json::json!({"type": "layers", "diff_ids": diff_ids}),
    )?;
    config.set("history", &history)?;
    if config.get("created").is_none()
        && let Some(created) = history.iter().rev().find_map(|h| h.created.clone())
    {
        config.set("created", &created)?;
    }
    let config_bytes = config.to_bytes();

    let (manifest_type, config_type) = if spec.oci_mediatypes {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let store = |what: &str, bytes: &[u8]| {
        content
            .write(bytes)
            .map_err(|e| ExportError::io(format!("storing the image {what}"), e))
    };
    let config_desc = Descriptor {
        media_type: config_type.to_string(),
        digest: store("config", &config_bytes)?,
        size: config_bytes.len() as u64,
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: manifest_type,
        config: &config_desc,
        layers: &layers,
        annotations: &annotations.manifest,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    let manifest_desc = Descriptor {
        media_type: manifest_type.to_string(),
        digest: store("manifest", &manifest_bytes)?,
        size: manifest_bytes.len() as u64,
    };

    let mut descriptor_annotations = annotations.manifest_descriptor;
    if !descriptor_annotations.contains_key(ANNOTATION_CREATED) {
        let created = match spec.epoch {
            Some(epoch) => rfc3339_utc(epoch),
            None => created.clone().unwrap_or_else(now_rfc3339),
        };
        descriptor_annotations.insert(ANNOTATION_CREATED.to_string(), created);
    }
    Ok(BuiltImage {
        manifest: manifest_desc,
        config: config_desc,
        layers,
        manifest_bytes,
        config_bytes,
        descriptor_annotations,
        platform,
        index: None,
    })
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// An entry of the config's `history`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    empty_layer: bool,
}

/// What the export needs of the base image's config.
#[derive(Default, Deserialize)]
struct BaseImage {
    #[serde(default)]
    rootfs: BaseRootfs,
    #[serde(default)]
    history: Vec<History>,
}

#[derive(Default, Deserialize)]
struct BaseRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Date no history entry later than `epoch`, as BuildKit does under `SOURCE_DATE_EPOCH`,
/// except the base image's own (the entries up to the first that differs from its
/// history), which keep their times.
fn clamp_history(history: &mut [History], base: &[History], epoch: i64) {
    let at = rfc3339_utc(epoch);
    let own = history.iter().zip(base).take_while(|(h, b)| h == b).count();
    for h in &mut history[own..] {
        if h.created.as_deref().is_none_or(|c| later_than(c, epoch)) {
            h.created = Some(at.clone());
        }
    }
}

/// Whether an RFC 3339 time is later than `epoch` (Unix seconds); one that cannot be read
/// counts as later, so it is replaced.
fn later_than(time: &str, epoch: i64) -> bool {
    parse_rfc3339(time).is_none_or(|(secs, nanos)| (secs, nanos) > (epoch, 0))
}

/// An RFC 3339 time (`2024-01-01T00:00:00.5+01:00`) as Unix seconds and nanoseconds.
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i + 1..i + 1 + digits].iter().enumerate().take(9) {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - k as u32);
        }
        i += 1 + digits;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from a civil date, counting from 0000-03-01 (the inverse of `rfc3339_utc`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

/// Make `history` agree with `layers` layers, as BuildKit's image exporter does:
///
/// - more non-empty entries than layers: the entries past the last layer become empty;
/// - fewer: entries are added for the remaining layers;
/// - entries of layers without a time get the layers' creation time (`layer_created`);
/// - other entries without a time get the first time that follows an entry without one
///   (else the last time known), and later ones the time of the entry before them, so
///   metadata-only steps do not take the time of a base image layer.
fn normalize_history(
    mut history: Vec<History>,
    layers: usize,
    layer_created: Option<&str>,
) -> Vec<History> {
    let with_layer = history.iter().filter(|h| !h.empty_layer).count();
    if with_layer > layers {
        tracing::warn!(
            "image config history has {with_layer} layers for {layers}; marking the extra ones empty"
        );
        let mut seen = 0;
        for h in &mut history {
            if seen >= layers {
                h.empty_layer = true;
            }
            if !h.empty_layer {
                seen += 1;
            }
        }
    }
    for _ in with_layer..layers {
        history.push(History {
            created: layer_created.map(str::to_string),
            created_by: Some(ADDED_HISTORY_CREATED_BY.to_string()),
            comment: Some(ADDED_HISTORY_COMMENT.to_string()),
            ..Default::default()
        });
    }
    for h in &mut history {
        if !h.empty_layer && h.created.is_none() {
            h.created = layer_created.map(str::to_string);
        }
    }

    // The time to start with: the first one found after an entry without one, else the
    // last one found.
    let mut fill = None;
    let mut missing = false;
    for h in &history {
        match &h.created {
            Some(t) => {
                fill = Some(t.clone());
                if missing {
                    break;
                }
            }
            None => missing = true,
        }
    }
    let mut missing = false;
    for h in &mut history {
        match &h.created {
            Some(t) if missing => fill = Some(t.clone()),
            Some(_) => {}
            None => {
                missing = true;
                h.created = fill.clone();
            }
        }
    }
    history
}

/// The image config: its top-level members in their order, each value kept as written.
struct RawConfig(Vec<(String, Box<RawValue>)>);

impl RawConfig {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// A member parsed as `T`; `None` when absent or null.
    fn parse<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, ExportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_str::<Option<T>>(v.get())
                .map_err(|e| ExportError::InvalidConfig(format!("{key}: {e}"))),
        }
    }

    /// `os/architecture[/variant]`, the platform id of the image.
    fn platform(&self) -> Result<String, ExportError> {
        let field = |key| Ok::<_, ExportError>(self.parse::<String>(key)?.unwrap_or_default());
        let mut id = format!("{}/{}", field("os")?, field("architecture")?);
        let variant = field("variant")?;
        if !variant.is_empty() {
            id = format!("{id}/{variant}");
        }
        Ok(id)
    }

    /// Replace a member where it is, or add it at the end.
    fn set(&mut self, key: &str, value: &impl Serialize) -> Result<(), ExportError> {
        let raw = serde_json::value::to_raw_value(value)
            .map_err(|e| ExportError::InvalidConfig(format!("{key}: {e}")))?;
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
        Ok(())
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"{".to_vec();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&serde_json::to_vec(k).expect("strings serialize"));
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }
}

impl<'de> Deserialize<'de> for RawConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawConfig, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the last value wins, as in Go's decoder.
                    match members.iter_mut().find(|(key, _)| *key == k) {
                        Some((_, old)) => *old = v,
                        None => members.push((k, v)),
                    }
                }
                Ok(RawConfig(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// This host's architecture as OCI names it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// The config BuildKit exports when the frontend gave none: this host's platform, a
/// working directory and PATH.
fn default_config() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": host_architecture(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
    }))
    .expect("json serializes")
}

/// The current time as RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339_utc(secs)
}

/// A time as RFC 3339 in UTC with its nanoseconds, trailing zeros left out (Go's
/// `RFC3339Nano`, as BuildKit writes times in provenance).
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = rfc3339_utc(d.as_secs() as i64);
    match d.subsec_nanos() {
        0 => seconds,
        n => {
            let fraction = format!("{n:09}");
            format!(
                "{}.{}Z",
                seconds.trim_end_matches('Z'),
                fraction.trim_end_matches('0')
            )
        }
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
pub fn rfc3339_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Count from 0000-03-01 so the leap day ends each 4/100/400-year cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(created: Option<&str>, empty: bool) -> History {
        History {
            created: created.map(str::to_string),
            created_by: Some("x".into()),
            empty_layer: empty,
            ..Default::default()
        }
    }

    fn times(history: &[History]) -> Vec<Option<&str>> {
        history.iter().map(|h| h.created.as_deref()).collect()
    }

    #[test]
    fn missing_history_entries_are_added_for_layers() {
        let out = normalize_history(vec![h(Some("t0"), false)], 3, Some("tl"));
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|h| !h.empty_layer));
        assert_eq!(out[2].comment.as_deref(), Some(ADDED_HISTORY_COMMENT));
        assert_eq!(times(&out), [Some("t0"), Some("tl"), Some("tl")]);
    }

    #[test]
    fn extra_history_entries_become_empty() {
        let out = normalize_history(
            vec![
                h(Some("a"), false),
                h(Some("b"), true),
                h(Some("c"), false),
                h(Some("d"), false),
            ],
            2,
            None,
        );
        let empty: Vec<bool> = out.iter().map(|h| h.empty_layer).collect();
        assert_eq!(empty, [false, true, false, true]);
    }

    #[test]
    fn missing_times_are_filled_like_buildkit() {
        // Base layer with a time, then metadata steps without, then a new layer.
        let out = normalize_history(
            vec![
                h(Some("base"), false),
                h(None, true),
                h(Some("new"), false),
                h(None, true),
            ],
            2,
            None,
        );
        assert_eq!(
            times(&out),
            [Some("base"), Some("new"), Some("new"), Some("new")]
        );
        // No time anywhere and none for layers: none invented.
        let out = normalize_history(vec![h(None, true)], 0, None);
        assert_eq!(times(&out), [None]);
    }

    #[test]
    fn config_members_keep_their_order_and_bytes() {
        let raw = br#"{"z":1.50,"os":"linux","architecture":"amd64","a":{"b":"\u003c"},"z":2}"#;
        let mut c: RawConfig = serde_json::from_slice(raw).unwrap();
        c.set("rootfs", &serde_json::json!({"type": "layers"}))
            .unwrap();
        c.set("os", &"linux").unwrap();
        assert_eq!(
            String::from_utf8(c.to_bytes()).unwrap(),
            r#"{"z":2,"os":"linux","architecture":"amd64","a":{"b":"\u003c"},"rootfs":{"type":"layers"}}"#
        );
    }

    #[test]
    fn rfc3339_times_read_back() {
        for secs in [0, 1_445_412_480, 951_782_400, 4_107_542_399, -86_401] {
            assert_eq!(parse_rfc3339(&rfc3339_utc(secs)), Some((secs, 0)));
        }
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00.25+01:00"),
            Some((1_704_067_200, 250_000_000))
        );
        assert_eq!(
            parse_rfc3339("2023-12-31T23:00:00-01:00"),
            Some((1_704_067_200, 0))
        );
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(later_than("2024-01-01T00:00:00.000000001Z", 1_704_067_200));
        assert!(!later_than("2024-01-01T00:00:00Z", 1_704_067_200));
        assert!(later_than("yesterday", 1_704_067_200));
    }

    #[test]
    fn an_epoch_dates_the_builds_history_but_not_the_base_images() {
        let entry = |created: Option<&str>, by: &str| History {
            created: created.map(str::to_string),
            created_by: Some(by.into()),
            ..Default::default()
        };
        let base = vec![entry(Some("2030-01-01T00:00:00Z"), "base")];
        let mut history = vec![
            entry(Some("2030-01-01T00:00:00Z"), "base"),
            entry(Some("2031-01-01T00:00:00Z"), "RUN a"),
            entry(Some("1999-01-01T00:00:00Z"), "RUN b"),
            entry(None, "ENV c"),
        ];
        clamp_history(&mut history, &base, 1_704_067_200);
        let times: Vec<_> = history
            .iter()
            .map(|h| h.created.as_deref().unwrap())
            .collect();
        assert_eq!(
            times,
            [
                "2030-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
                "1999-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z"
            ]
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_445_412_480), "2015-10-21T07:28:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
