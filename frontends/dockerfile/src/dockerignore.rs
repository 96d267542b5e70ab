//! `.dockerignore` files, read like moby's `ignorefile.ReadAll`.

use crate::convert::util::clean;

/// The exclude patterns of a `.dockerignore`: comments and blank lines dropped,
/// `!` exceptions kept, paths cleaned and made relative to the context.
pub fn parse(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        if invert {
            p.insert(0, '!');
        }
        out.push(p);
    }
    out
}

/// moby's `patternmatcher.PatternMatcher`: decides whether a context path is excluded.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `foo/**`: everything under the prefix.
    Prefix(String),
    /// `**/foo`: anything ending in the suffix.
    Suffix(String),
    Tokens(Vec<Tok>),
}

/// The pieces of the regular expression moby compiles a pattern into.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    One,
    /// `**/` in the middle: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    Any,
    /// `[...]`, a regexp character class.
    Class(Vec<(char, char)>, bool),
}

impl Matcher {
    /// Compiles `.dockerignore` patterns; an invalid pattern is an error, as in moby.
    pub fn new(patterns: &[String]) -> Result<Matcher, String> {
        let mut m = Matcher::default();
        for p in patterns {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err("illegal exclusion pattern: \"!\"".into());
                }
                p.remove(0);
                m.exclusions = true;
            }
            let kind =
                compile(&p).map_err(|e| format!("invalid .dockerignore pattern {p:?}: {e}"))?;
            m.patterns.push(Pattern {
                text: p,
                exclusion,
                kind,
            });
        }
        Ok(m)
    }

    /// Whether any pattern starts with `!`.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether a pattern is exactly one of `*`, `**`, `**/*` (and not an exclusion).
    pub fn ignores_root(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| !p.exclusion && matches!(p.text.as_str(), "*" | "**" | "**/*"))
    }

    /// moby's `MatchesOrParentMatches`: `file` or one of its parent directories matches
    /// the last pattern that decides it.
    pub fn matches_or_parent_matches(&self, file: &str) -> bool {
        let parent = match file.rfind('/') {
            Some(0) => "/",
            Some(i) => &file[..i],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(file);
            if !hit && parent != "." {
                hit = (0..parent_dirs.len()).any(|i| p.matches(&parent_dirs[..=i].join("/")));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Tokens(t) => {
                let chars: Vec<char> = path.chars().collect();
                tokens_match(t, &chars)
            }
        }
    }
}

/// moby's `Pattern.compile`: an exact, prefix (`a/**`), suffix (`**/a`) or regexp match.
fn compile(p: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Det {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut det = Det::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if det == Det::Exact {
                        det = Det::Prefix;
                    } else {
                        toks.push(Tok::Any);
                        det = Det::Regexp;
                    }
                } else {
                    toks.push(Tok::AnyDirs);
                    det = Det::Regexp;
                }
                if step == 0 {
                    det = Det::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                det = Det::Regexp;
            }
            '?' => {
                toks.push(Tok::One);
                det = Det::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                    det = Det::Regexp;
                }
                None => toks.push(Tok::Lit('\\')),
            },
            '[' => {
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut set = Vec::new();
                let mut closed = false;
                while i < chars.len() {
                    let a = chars[i];
                    i += 1;
                    if a == ']' && !set.is_empty() {
                        closed = true;
                        break;
                    }
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&b| b != ']') {
                        set.push((a, chars[i + 1]));
                        i += 2;
                    } else {
                        set.push((a, a));
                    }
                }
                if !closed {
                    return Err("syntax error in pattern".into());
                }
                toks.push(Tok::Class(set, negated));
                det = Det::Regexp;
            }
            c => toks.push(Tok::Lit(c)),
        }
        step += 1;
    }
    Ok(match det {
        Det::Exact => Kind::Exact,
        Det::Prefix => Kind::Prefix(p[..p.len() - 2].to_string()),
        Det::Suffix => Kind::Suffix(p[2..].to_string()),
        Det::Regexp => Kind::Tokens(toks),
    })
}

/// Whether the tokens match all of `s`. Dynamic programming over (token, position), from
/// the last token back: time is tokens × characters, as with Go's regexp engine that moby
/// uses. (Backtracking was exponential in the number of stars: a fuzzer's `****…x` hung.)
fn tokens_match(t: &[Tok], s: &[char]) -> bool {
    let n = s.len();
    // next[i]: the tokens after the current one match s[i..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut cur = vec![false; n + 1];
    for tok in t.iter().rev() {
        // For `**/`: some `/` at or after i is followed by a match of the rest.
        let mut slash_then_rest = false;
        for i in (0..=n).rev() {
            let c = s.get(i).copied();
            cur[i] = match tok {
                Tok::Lit(l) => c == Some(*l) && next[i + 1],
                Tok::One => c.is_some_and(|c| c != '/') && next[i + 1],
                Tok::Class(set, negated) => {
                    c.is_some_and(|c| set.iter().any(|&(a, b)| a <= c && c <= b) != *negated)
                        && next[i + 1]
                }
                Tok::Star => next[i] || (c.is_some_and(|c| c != '/') && cur[i + 1]),
                Tok::Any => true,
                Tok::AnyDirs => {
                    slash_then_rest |= c == Some('/') && next[i + 1];
                    next[i] || slash_then_rest
                }
            };
        }
        std::mem::swap(&mut next, &mut cur);
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_patternmatcher() {
        let m = |pats: &[&str], f: &str| {
            let pats: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
            Matcher::new(&pats).unwrap().matches_or_parent_matches(f)
        };
        assert!(m(&["node_modules"], "node_modules/a/b.js"));
        assert!(m(&["*.md"], "README.md"));
        assert!(!m(&["*.md"], "docs/README.md"));
        assert!(m(&["**/*.md"], "docs/README.md"));
        assert!(m(&["**/*.md"], "README.md"));
        assert!(m(&["docs/**"], "docs/a/b"));
        assert!(m(&["a/**/c"], "a/c") && m(&["a/**/c"], "a/b/x/c"));
        assert!(m(&["fil?.txt"], "file.txt") && !m(&["fil?.txt"], "fil/.txt"));
        assert!(m(&["[a-c]at"], "bat") && !m(&["[a-c]at"], "rat"));
        assert!(!m(&["*.md", "!README.md"], "README.md"));
        assert!(Matcher::new(&["!".to_string()]).is_err());
        let ex = Matcher::new(&["a".to_string(), "!b".to_string()]).unwrap();
        assert!(ex.has_exclusions());
        assert!(Matcher::new(&["**".to_string()]).unwrap().ignores_root());
    }

    #[test]
    fn many_stars_match_without_backtracking() {
        // Found by fuzz/ (dockerignore): exponential before, instant now.
        let stars = format!("{}x", "*?".repeat(20));
        let m = Matcher::new(&[stars]).unwrap();
        assert!(!m.matches_or_parent_matches(&"a".repeat(60)));
        assert!(m.matches_or_parent_matches(&format!("{}x", "a".repeat(60))));
        let dirs = Matcher::new(&["**/a/**/a/**/a/**/a/**/b".to_string()]).unwrap();
        assert!(!dirs.matches_or_parent_matches(&"a/".repeat(40)));
        assert!(dirs.matches_or_parent_matches("x/a/a/y/a/a/b"));
    }

    #[test]
    fn patterns_like_docker() {
        let got = parse(
            b"\xEF\xBB\xBF# comment\n\n  node_modules  \r\n/abs/../x/./y\n!/keep.txt\n !  spaced \n*.md\n#!not\n/\n",
        );
        assert_eq!(
            got,
            ["node_modules", "x/y", "!keep.txt", "!spaced", "*.md", "/"]
        );
    }
}
