//! Path patterns with Docker's semantics (`.dockerignore`, `local.excludepatterns`,
//! copy `include`/`exclude` patterns): anchored at the root, `*` and `?` within one
//! component, `[...]` classes, `**` across components, a pattern also matches everything
//! under a directory it matches, `!` re-includes, and the last matching pattern wins.

use crate::rootpath::clean;

#[derive(Clone, Debug)]
struct Pattern {
    negate: bool,
    parts: Vec<String>,
}

/// An ordered list of patterns.
#[derive(Clone, Debug, Default)]
pub struct Patterns {
    list: Vec<Pattern>,
}

impl Patterns {
    /// Parse patterns; empty lines and `#` comments are not patterns here (the caller reads
    /// `.dockerignore` files).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let list = patterns
            .iter()
            .filter_map(|p| {
                let p = p.as_ref().trim();
                let (negate, p) = match p.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, p),
                };
                let cleaned = clean(p);
                (!cleaned.is_empty()).then(|| Pattern {
                    negate,
                    parts: cleaned.split('/').map(str::to_string).collect(),
                })
            })
            .collect();
        Patterns { list }
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `path` (relative, `/`-separated) is matched: by a pattern, or because a
    /// pattern matches one of its parent directories.
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut matched = false;
        for p in &self.list {
            let hit = (1..=parts.len()).any(|n| match_parts(&p.parts, &parts[..n]));
            if hit {
                matched = !p.negate;
            }
        }
        matched
    }

    /// Whether a walk must look inside the excluded directory `dir`, because a `!` pattern
    /// may re-include something below it.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let depth = dir.split('/').filter(|s| !s.is_empty()).count();
        self.list
            .iter()
            .any(|p| p.negate && (p.parts.len() > depth || p.parts.iter().any(|s| s == "**")))
    }
}

/// Match path components against pattern components; `**` spans any number of them.
pub fn match_parts<P: AsRef<str>>(pattern: &[P], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p.as_ref() == "**" => {
            match_parts(&pattern[1..], path)
                || (!path.is_empty() && match_parts(pattern, &path[1..]))
        }
        (Some(p), Some(n)) if glob(p.as_ref().as_bytes(), n.as_bytes()) => {
            match_parts(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Whether something below the directory `dir` may match `pattern`, so that a walk must
/// look inside it (`**` may match anything).
pub fn may_match_below<P: AsRef<str>>(pattern: &[P], dir: &[&str]) -> bool {
    match (pattern.first(), dir.first()) {
        (Some(_), None) => true,
        (None, _) => false,
        (Some(p), _) if p.as_ref() == "**" => true,
        (Some(p), Some(d)) => {
            glob(p.as_ref().as_bytes(), d.as_bytes()) && may_match_below(&pattern[1..], &dir[1..])
        }
    }
}

/// Whether a whole `/`-separated path matches a pattern (no parent-directory rule).
pub fn match_path(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let n: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_parts(&p, &n)
}

/// Whether a pattern has glob characters.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.bytes().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// One component: `*`, `?`, `[a-z]`, `[^a]`, `\x`.
fn glob(p: &[u8], n: &[u8]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(b'*') => glob(&p[1..], n) || (!n.is_empty() && glob(p, &n[1..])),
        Some(b'?') => !n.is_empty() && glob(&p[1..], &n[1..]),
        Some(b'[') => {
            let Some(&c) = n.first() else { return false };
            match class(&p[1..], c) {
                Some((ok, rest)) => ok && glob(rest, &n[1..]),
                None => false,
            }
        }
        Some(b'\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob(&p[2..], &n[1..]),
        Some(&a) => n.first() == Some(&a) && glob(&p[1..], &n[1..]),
    }
}

/// A character class after `[`: whether `c` is in it, and the pattern after `]`.
fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negate, mut i) = if p.first() == Some(&b'^') {
        (true, 1)
    } else {
        (false, 0)
    };
    let mut found = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((found != negate, &p[i + 1..]));
        }
        first = false;
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            found |= (lo..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let p = Patterns::new(&["*.log", "build", "!build/keep", "docs/**/*.md", "/abs/x"]);
        assert!(p.matches("a.log"));
        assert!(!p.matches("sub/a.log"), "anchored at the root");
        assert!(p.matches("build/out/o"), "parents match");
        assert!(!p.matches("build/keep"));
        assert!(p.matches("docs/a/b/c.md"));
        assert!(p.matches("docs/c.md"));
        assert!(p.matches("abs/x"));
        assert!(p.may_include_below("build"));
        assert!(match_path("[a-c]?.rs", "b1.rs"));
        assert!(!match_path("[^a-c]?.rs", "b1.rs"));
        assert!(match_path("a/*", "a/run.sh"));
        assert!(!match_path("*", "a/b"));
        assert!(may_match_below(&["con?", "*.txt"], &["conf"]));
        assert!(!may_match_below(&["con?", "*.txt"], &["data"]));
        assert!(!may_match_below(&["con?", "*.txt"], &["conf", "a.txt"]));
        assert!(may_match_below(&["a", "**", "x.txt"], &["a", "b", "c"]));
    }
}
