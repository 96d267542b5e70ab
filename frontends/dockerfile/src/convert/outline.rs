//! BuildKit's outline capture: which build args, secrets and ssh sockets a target uses,
//! collected while the stages are dispatched and walked over the target's dependencies.

use std::collections::{BTreeMap, BTreeSet};

use super::DState;

/// An ARG as the outline reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgInfo {
    /// Name.
    pub name: String,
    /// Value after build args and expansion (`None` without one).
    pub value: Option<String>,
    /// Text of a `# NAME text` comment above the ARG.
    pub description: String,
    /// Lines of the ARG instruction.
    pub lines: (usize, usize),
    /// Global ARGs the default value refers to.
    pub deps: BTreeSet<String>,
}

impl ArgInfo {
    /// An entry for `name` declared at `lines` below `comments`.
    pub fn new(name: &str, comments: &[String], lines: (usize, usize)) -> Self {
        ArgInfo {
            name: name.to_string(),
            value: None,
            description: doc_comment(comments, name),
            lines,
            deps: BTreeSet::new(),
        }
    }
}

/// BuildKit's `getDocComment`: the rest of the first comment line that starts with
/// `name `.
pub fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

/// Secret or ssh id → (required, lines of the first RUN that mounts it).
pub(super) type MountUses = BTreeMap<String, (bool, (usize, usize))>;

/// What one stage records (BuildKit's `outlineCapture`).
#[derive(Clone, Debug, Default)]
pub(super) struct OutlineCapture {
    /// Every ARG the stage knows, by name (the last definition wins).
    pub all_args: BTreeMap<String, ArgInfo>,
    /// The ARGs the stage uses.
    pub used_args: BTreeSet<String>,
    /// Secrets.
    pub secrets: MountUses,
    /// SSH sockets.
    pub ssh: MountUses,
}

/// A secret or ssh socket in the outline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlineMount {
    /// The id.
    pub name: String,
    /// `required=true` on the mount.
    pub required: bool,
    /// Lines of the RUN instruction.
    pub lines: (usize, usize),
}

/// The outline of a target (BuildKit's `outline.Outline` without the sources).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outline {
    /// Stage name (empty for an unnamed stage).
    pub name: String,
    /// From a `# NAME text` comment above the FROM.
    pub description: String,
    /// Build args in source order.
    pub args: Vec<ArgInfo>,
    /// Secrets in source order.
    pub secrets: Vec<OutlineMount>,
    /// SSH sockets in source order.
    pub ssh: Vec<OutlineMount>,
}

/// Walks the target, its base and its dependencies; the first stage to report a name wins.
pub(super) fn build(states: &[DState], target: usize) -> Outline {
    let mut args = Vec::new();
    collect_args(states, target, &mut BTreeSet::new(), &mut args);
    args.sort_by_key(|a| a.lines.0);
    let mut secrets = Vec::new();
    collect_mounts(states, target, &mut BTreeSet::new(), &mut secrets, |o| {
        &o.secrets
    });
    secrets.sort_by_key(|m| m.lines.0);
    let mut ssh = Vec::new();
    collect_mounts(states, target, &mut BTreeSet::new(), &mut ssh, |o| &o.ssh);
    ssh.sort_by_key(|m| m.lines.0);
    let t = &states[target];
    let name = t.stage.name.clone().unwrap_or_default();
    Outline {
        description: doc_comment(&t.stage.comments, &name),
        name,
        args,
        secrets,
        ssh,
    }
}

fn collect_args(
    states: &[DState],
    i: usize,
    visited: &mut BTreeSet<String>,
    out: &mut Vec<ArgInfo>,
) {
    let o = &states[i].outline;
    // An arg in use makes the global args its default refers to used too.
    let mut used = BTreeSet::new();
    let mut stack: Vec<&String> = o.used_args.iter().collect();
    while let Some(k) = stack.pop() {
        if used.insert(k.clone())
            && let Some(a) = o.all_args.get(k)
        {
            stack.extend(a.deps.iter());
        }
    }
    for k in &used {
        if let Some(a) = o.all_args.get(k)
            && visited.insert(k.clone())
        {
            out.push(a.clone());
        }
    }
    let d = &states[i];
    for next in d.base.iter().chain(d.deps.iter()) {
        collect_args(states, *next, visited, out);
    }
}

fn collect_mounts(
    states: &[DState],
    i: usize,
    visited: &mut BTreeSet<String>,
    out: &mut Vec<OutlineMount>,
    pick: fn(&OutlineCapture) -> &MountUses,
) {
    for (id, (required, lines)) in pick(&states[i].outline) {
        if visited.insert(id.clone()) {
            out.push(OutlineMount {
                name: id.clone(),
                required: *required,
                lines: *lines,
            });
        }
    }
    let d = &states[i];
    for next in d.base.iter().chain(d.deps.iter()) {
        collect_mounts(states, *next, visited, out, pick);
    }
}
