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
    let is_star = |i: usize| pattern[i].as_ref() == "**";
    wildcard(pattern.len(), path.len(), is_star, |i, j| {
        glob(pattern[i].as_ref().as_bytes(), path[j].as_bytes()).then_some(i + 1)
    })
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
    wildcard(
        p.len(),
        n.len(),
        |i| p[i] == b'*',
        |i, j| {
            let c = n[j];
            match p[i] {
                b'?' => Some(i + 1),
                b'[' => match class(&p[i + 1..], c) {
                    Some((true, rest)) => Some(p.len() - rest.len()),
                    _ => None,
                },
                b'\\' if i + 1 < p.len() => (p[i + 1] == c).then_some(i + 2),
                a => (a == c).then_some(i + 1),
            }
        },
    )
}

/// Wildcard matching of a pattern of `pattern_len` elements against `len` items, where
/// `is_star(i)` says element `i` matches any run of items and `one(i, j)` matches element
/// `i` against item `j` alone, giving the next element. Only the last star is ever
/// resumed, which is exact when every other element takes one item, and takes at most
/// pattern × items steps; recursive backtracking took exponential time on a fuzzer's
/// `*a*a*a…` patterns.
fn wildcard(
    pattern_len: usize,
    len: usize,
    is_star: impl Fn(usize) -> bool,
    one: impl Fn(usize, usize) -> Option<usize>,
) -> bool {
    let (mut i, mut j) = (0, 0);
    // After the last star: the element that follows it, and the first item it left.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        if i < pattern_len && is_star(i) {
            i += 1;
            resume = Some((i, j));
            continue;
        }
        if i == pattern_len && j == len {
            return true;
        }
        if i < pattern_len
            && j < len
            && let Some(next) = one(i, j)
        {
            i = next;
            j += 1;
            continue;
        }
        // The last star takes one more item, if there is one.
        match resume {
            Some((after, from)) if from < len => {
                resume = Some((after, from + 1));
                i = after;
                j = from + 1;
            }
            _ => return false,
        }
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
    fn many_stars_match_without_backtracking() {
        let p = format!("{}b", "*a".repeat(30));
        assert!(!match_path(&p, &"a".repeat(80)));
        assert!(match_path(&p, &format!("{}b", "a".repeat(80))));
        let dirs = format!("{}b", "**/a/".repeat(15));
        assert!(!match_path(&dirs, &"a/".repeat(60)));
        assert!(match_path(&dirs, &format!("{}b", "a/".repeat(60))));
        assert!(match_path("x\\*y", "x*y") && !match_path("x\\*y", "xzy"));
        assert!(match_path("a[^b]c*", "axcde") && !match_path("a[^b]c*", "abc"));
    }

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
