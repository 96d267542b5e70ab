//! Named build contexts (BuildKit's `dockerui.NamedContext`): the `context:NAME=VALUE`
//! options that replace a stage or an image of `FROM` / `COPY --from` / `RUN --mount`, and
//! the splicing of frontend inputs into the final graph.

use std::collections::BTreeSet;

use buildwit_sdk::llb::{self, Definition, Metadata, OpKind, OpOutput, Platform, Source, State};
use buildwit_sdk::reference::ImageRef;
use buildwit_sdk::{ResolveImageRequest, SolveRequest};

use super::{Converter, util};
use crate::Error;
use crate::image::{Image, go_json_strings};

/// A `context:` option that matched a name.
#[derive(Clone, Debug)]
pub(crate) struct NamedContext {
    /// The option key after `context:` that matched (`NAME` or `NAME::os/arch`).
    name_with_platform: String,
    /// The option value, `<type>:<rest>`.
    value: String,
    /// Platform images of the context are resolved for.
    platform: Platform,
}

/// A named `local:` context whose source is built once the paths used from it are known.
#[derive(Clone, Debug)]
pub(crate) struct LocalContext {
    local: String,
    name_with_platform: String,
    shared_key: String,
    excludes: Vec<String>,
    /// The platform of the stage that uses it as FROM.
    platform: Option<Platform>,
}

impl LocalContext {
    pub(crate) fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    fn state(&self, paths: Option<&BTreeSet<String>>) -> State {
        let mut src = Source::local(&self.local)
            .attr(
                "local.sharedkeyhint",
                format!("context:{}-{}", self.name_with_platform, self.shared_key),
            )
            .metadata(Metadata::new().custom_name(format!(
                "[context {}] load from client",
                self.name_with_platform
            )));
        if !self.excludes.is_empty() {
            src = src.attr("local.excludepatterns", go_json_strings(&self.excludes));
        }
        if let Some(paths) = paths.filter(|p| !p.is_empty() && !p.contains("/")) {
            let mut follow: Vec<String> = paths
                .iter()
                .map(|p| util::clean(&format!("./{p}")))
                .collect();
            follow.sort();
            src = src.attr("local.followpaths", go_json_strings(&follow));
        }
        let st = src.state();
        match &self.platform {
            Some(p) => st.platform(p.clone()),
            None => st,
        }
    }
}

/// Docker's familiar form of a reference (`docker.io/library/alpine:3` → `alpine:3`).
fn familiar(r: &ImageRef) -> String {
    let mut s = match r.path.strip_prefix("library/") {
        Some(p) if r.domain == "docker.io" && !p.contains('/') => p.to_string(),
        _ if r.domain == "docker.io" => r.path.clone(),
        _ => r.name(),
    };
    if let Some(t) = &r.tag {
        s = format!("{s}:{t}");
    }
    if let Some(d) = &r.digest {
        s = format!("{s}@{d}");
    }
    s
}

/// `docker.io/library/alpine:latest` → `alpine`: the name `context:` options use.
pub(crate) fn context_name(name: &str) -> Result<String, String> {
    let r = ImageRef::parse(name).map_err(|e| format!("invalid context name {name}: {e}"))?;
    let f = familiar(&r);
    Ok(f.strip_suffix(":latest").map(str::to_string).unwrap_or(f))
}

/// BuildKit's `WithImageConfig`: env, working directory and platform of an image config.
fn with_image_config(mut st: State, img: &Image) -> State {
    for e in &img.config.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        if !k.is_empty() {
            st = st.env(k, v);
        }
    }
    st = st.dir(&img.config.working_dir);
    if !img.architecture.is_empty() && !img.os.is_empty() {
        st = st.platform(super::image_platform(img));
    }
    st
}

/// The placeholder source that stands for frontend input `name` until it is spliced in.
fn input_placeholder(name: &str) -> String {
    format!("buildwit-input://{name}")
}

impl Converter<'_> {
    /// The `context:` option for `name` (a stage name or a normalised image reference),
    /// trying `NAME::<platform>` before `NAME`, as BuildKit's `dockerui` does.
    pub(super) fn named_context(
        &self,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<Option<NamedContext>, Error> {
        if name.eq_ignore_ascii_case("scratch") || name.eq_ignore_ascii_case("context") {
            return Ok(None);
        }
        let name = context_name(name).map_err(Error::msg)?;
        let platform = platform
            .cloned()
            .unwrap_or_else(|| self.opts.target_platform.clone());
        let with_platform = format!("{name}::{}", platform.id());
        for key in [&with_platform, &name] {
            if let Some(value) = self.opts.context_options.get(&format!("context:{key}")) {
                return Ok(Some(NamedContext {
                    name_with_platform: key.clone(),
                    value: value.clone(),
                    platform,
                }));
            }
        }
        Ok(None)
    }

    /// Loads a named context: its state, its image config if it is an image, and for
    /// `local:` the description to rebuild it from once the used paths are known.
    pub(super) fn load_named_context(
        &mut self,
        nc: &NamedContext,
    ) -> Result<(State, Option<Image>, Option<LocalContext>), Error> {
        let nwp = &nc.name_with_platform;
        let Some((kind, rest)) = nc.value.split_once(':') else {
            return Err(Error::msg(format!(
                "invalid context specifier {} for {nwp}",
                nc.value
            )));
        };
        // `git@host:path` without a scheme is git, for backwards compatibility.
        let kind = if kind.starts_with("git@") {
            "git"
        } else {
            kind
        };
        match kind {
            "docker-image" => {
                let reference = rest.strip_prefix("//").unwrap_or(rest);
                if reference == "scratch" {
                    return Ok((llb::scratch(), None, None));
                }
                let named = ImageRef::parse(reference).map_err(Error::msg)?.normalized();
                let resolved = self
                    .client
                    .resolve_image_config(ResolveImageRequest {
                        ref_: named,
                        platform: Some(nc.platform.clone()),
                        resolve_mode: self.opts.resolve_mode,
                        log_name: format!("[context {nwp}] load metadata for {reference}"),
                    })
                    .map_err(|e| Error::msg(e.message))?;
                let mut img = Image::parse(&resolved.config).map_err(Error::msg)?;
                img.created = None;
                // BuildKit pins nothing here: the image is taken by the resolved name.
                let st = Source::image(&resolved.ref_)
                    .map_err(Error::msg)?
                    .platform(nc.platform.clone())
                    .metadata(Metadata::new().custom_name(format!("[context {nwp}] {reference}")))
                    .state();
                Ok((with_image_config(st, &img), Some(img), None))
            }
            "git" => match git_state(&nc.value) {
                Some(st) => Ok((st, None, None)),
                None => Err(Error::msg(format!("invalid git context {}", nc.value))),
            },
            "http" | "https" => {
                if let Some(st) = git_state(&nc.value) {
                    return Ok((st, None, None));
                }
                let st = Source::http(&nc.value)
                    .attr("http.filename", "context")
                    .metadata(Metadata::new().custom_name(format!("[context {nwp}] {}", nc.value)))
                    .state();
                Ok((st, None, None))
            }
            "oci-layout" => Err(Error::msg(format!(
                "named context {} for {nwp} is not supported: the gateway has no way to resolve an image from an OCI layout store",
                nc.value
            ))),
            "local" => {
                let local = self.named_local(rest, nwp)?;
                Ok((local.state(None), None, Some(local)))
            }
            "input" => self.named_input(rest, nwp),
            other => Err(Error::msg(format!(
                "unsupported context source {other} for {nwp}"
            ))),
        }
    }

    /// A `local:NAME` context: its `.dockerignore` is read first (BuildKit does it with a
    /// separate, evaluated local source).
    fn named_local(&self, local: &str, nwp: &str) -> Result<LocalContext, Error> {
        let def = Source::local(local)
            .attr(
                "local.followpaths",
                go_json_strings(&[".dockerignore".into()]),
            )
            .attr(
                "local.sharedkeyhint",
                format!("context:{nwp}-.dockerignore"),
            )
            .attr("local.differ", "none")
            .metadata(Metadata::new().custom_name(format!("[context {nwp}] load .dockerignore")))
            .state()
            .marshal();
        let res = self
            .client
            .solve(SolveRequest {
                definition: Some(def),
                frontend: None,
                frontend_opts: Vec::new(),
                frontend_inputs: Vec::new(),
                evaluate: true,
            })
            .map_err(|e| Error::msg(e.message))?;
        let excludes = res
            .reference
            .and_then(|r| r.read_file(".dockerignore").ok())
            .map(|d| crate::dockerignore::parse(&d))
            .unwrap_or_default();
        let shared_key = self
            .opts
            .context_options
            .get(&format!("sharedkey:localdir:{nwp}"))
            .cloned()
            .unwrap_or_default();
        Ok(LocalContext {
            local: local.to_string(),
            name_with_platform: nwp.to_string(),
            shared_key,
            excludes,
            platform: None,
        })
    }

    /// An `input:NAME` context: a definition the caller passed as a frontend input, with
    /// the image config from `input-metadata:NAME` if given.
    fn named_input(
        &mut self,
        input: &str,
        nwp: &str,
    ) -> Result<(State, Option<Image>, Option<LocalContext>), Error> {
        let Some((_, def)) = self.client.inputs().into_iter().find(|(n, _)| n == input) else {
            return Err(Error::msg(format!("invalid input {input} for {nwp}")));
        };
        let mut st = if def.result.is_none() {
            llb::scratch()
        } else {
            if !self.inputs.iter().any(|(n, _)| n == input) {
                self.inputs.push((input.to_string(), def));
            }
            Source::raw(input_placeholder(input)).state()
        };
        let Some(md) = self
            .opts
            .context_options
            .get(&format!("input-metadata:{input}"))
        else {
            return Ok((st, None, None));
        };
        let bad = |e: String| Error::msg(format!("failed to parse input metadata {md}: {e}"));
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(md).map_err(|e| bad(e.to_string()))?;
        let Some(config) = map.get("containerimage.config") else {
            return Ok((st, None, None));
        };
        // Go encodes the metadata values ([]byte) as base64 strings.
        let raw = config
            .as_str()
            .and_then(base64_decode)
            .ok_or_else(|| bad("containerimage.config is not base64".into()))?;
        let img = Image::parse(&raw)
            .map_err(|e| Error::msg(format!("failed to parse image config for {nwp}: {e}")))?;
        st = with_image_config(st, &img);
        Ok((st, Some(img), None))
    }

    /// Rebuilds the named local contexts with the paths the first dispatch pass used
    /// from them (BuildKit computes them lazily, when the graph is marshalled).
    pub(super) fn finish_local_contexts(
        &mut self,
        used: &std::collections::HashMap<usize, BTreeSet<String>>,
    ) {
        for i in 0..self.all.states.len() {
            let Some(local) = self.all.states[i].local_context.clone() else {
                continue;
            };
            let root = self.root(i);
            self.all.states[i].state = local.state(used.get(&root));
        }
    }
}

/// A git context (`https://…/x.git#ref:dir`, `git@host:path`, …) as BuildKit's
/// `DetectGitContext` builds it; `None` when the value is not a git reference.
fn git_state(value: &str) -> Option<State> {
    let git = util::parse_git_ref(value)?;
    let mut reference = git.reference.clone();
    if !git.subdir.is_empty() {
        reference = format!("{reference}:{}", git.subdir);
    }
    let mut src = Source::git(&git.remote, &reference);
    if git.keep_git_dir == Some(true) {
        src = src.attr("git.keepgitdir", "true");
    }
    if !git.checksum.is_empty() {
        src = src.attr("git.checksum", git.checksum.clone());
    }
    Some(
        src.metadata(Metadata::new().custom_name(format!("[internal] load git source {value}")))
            .state(),
    )
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = T.iter().position(|&t| t == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Replaces each input placeholder op of `def` with the ops of that input's definition,
/// renumbering every op reference, metadata entry and source location after it.
pub(crate) fn splice_inputs(mut def: Definition, inputs: &[(String, Definition)]) -> Definition {
    for (name, input) in inputs {
        let id = input_placeholder(name);
        let Some(p) = def
            .ops
            .iter()
            .position(|o| matches!(&o.kind, OpKind::Source(s) if s.identifier == id))
        else {
            continue;
        };
        let Some(result) = input.result else {
            continue;
        };
        let n = input.ops.len() as u32;
        let p32 = p as u32;
        let remap = |o: OpOutput| -> OpOutput {
            if o.op < p32 {
                o
            } else if o.op == p32 {
                OpOutput {
                    op: p32 + result.op,
                    output: result.output,
                }
            } else {
                OpOutput {
                    op: o.op + n - 1,
                    output: o.output,
                }
            }
        };
        let remap_pos = |pos: u32| if pos < p32 { pos } else { pos + n - 1 };
        let mut ops = Vec::with_capacity(def.ops.len() + input.ops.len());
        ops.extend(def.ops.drain(..p));
        for op in &input.ops {
            let mut op = op.clone();
            for i in op.inputs.iter_mut() {
                i.op += p32;
            }
            ops.push(op);
        }
        for mut op in def.ops.drain(1..) {
            for i in op.inputs.iter_mut() {
                *i = remap(*i);
            }
            ops.push(op);
        }
        def.ops = ops;
        let mut metadata: Vec<_> = def
            .metadata
            .drain(..)
            .filter(|(pos, _)| *pos != p32)
            .map(|(pos, m)| (remap_pos(pos), m))
            .collect();
        metadata.extend(input.metadata.iter().map(|(pos, m)| (pos + p32, m.clone())));
        def.metadata = metadata;
        if let Some(sm) = def.source.as_mut() {
            sm.locations.retain(|(pos, _)| *pos != p32);
            for (pos, _) in sm.locations.iter_mut() {
                *pos = remap_pos(*pos);
            }
        }
        if let Some(src) = input.source.clone() {
            let sm = def.source.get_or_insert(llb::SourceMap {
                files: Vec::new(),
                locations: Vec::new(),
            });
            let offset = sm.files.len() as i32;
            sm.files.extend(src.files);
            for (pos, mut locs) in src.locations {
                for l in locs.iter_mut() {
                    l.source_index += offset;
                }
                sm.locations.push((pos + p32, locs));
            }
        }
        def.result = def.result.map(remap);
    }
    def
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_are_familiar() {
        assert_eq!(
            context_name("docker.io/library/alpine:latest").unwrap(),
            "alpine"
        );
        assert_eq!(context_name("alpine:3.20").unwrap(), "alpine:3.20");
        assert_eq!(context_name("base").unwrap(), "base");
        assert_eq!(
            context_name("127.0.0.1:5000/library/busybox:latest").unwrap(),
            "127.0.0.1:5000/library/busybox"
        );
        assert_eq!(context_name("docker.io/org/app:1").unwrap(), "org/app:1");
        assert!(
            context_name("Bad")
                .unwrap_err()
                .starts_with("invalid context name Bad: ")
        );
    }

    #[test]
    fn base64_and_splice() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        let input = Source::image("busybox")
            .unwrap()
            .state()
            .file(llb::FileAction::mkdir("/x", 0o755, false, None))
            .marshal();
        let main = llb::scratch().file(llb::FileAction::copy(
            &Source::raw(input_placeholder("in")).state(),
            "/x",
            "/y",
            Default::default(),
        ));
        let spliced = splice_inputs(main.marshal(), &[("in".into(), input.clone())]);
        assert_eq!(spliced.ops.len(), input.ops.len() + 1);
        assert!(
            !spliced
                .ops
                .iter()
                .any(|o| matches!(&o.kind, OpKind::Source(s) if s.identifier.starts_with("buildwit-input://")))
        );
        // The copy now reads the input's result op.
        let last = spliced.ops.last().unwrap();
        assert_eq!(last.inputs[0].op, input.result.unwrap().op);
        assert_eq!(spliced.result.unwrap().op as usize, spliced.ops.len() - 1);
    }
}
