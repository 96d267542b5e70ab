//! BuildKit-compatible word lexer and variable expansion.
//!
//! Supports `$a`, `${a}`, `${a:-b}`, `${a-b}`, `${a:+b}`, `${a+b}`, `${a:?msg}`,
//! `${a?msg}`, `${a#p}`, `${a##p}`, `${a%p}`, `${a%%p}`, `${a/p/r}` and `${a//p/r}`,
//! the active escape character, and BuildKit's single/double quote rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A source of variable values for expansion.
pub trait Env {
    /// Returns the value of `name`, or `None` when it is unset.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// An environment in which every variable is unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// An expansion error; displays as BuildKit does: `failed to process "<word>": <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellError {
    /// The word that was being processed.
    pub word: String,
    /// The underlying message, e.g. `b: required`.
    pub message: String,
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed to process {}: {}",
            crate::gostr::go_quote(&self.word),
            self.message
        )
    }
}

impl std::error::Error for ShellError {}

/// The full result of processing a word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessResult {
    /// The word with quotes removed and variables expanded.
    pub result: String,
    /// The result split into words (quoted whitespace does not split).
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// The word lexer; configure the public option fields after [`Lexer::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quote characters as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables unexpanded (`$x`, `${x}`, ...).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// Creates a lexer with the given escape character and default options.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into a single string (quotes removed).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        Ok(self.process(word, env)?.result)
    }

    /// Expands `word` and splits it into words.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        Ok(self.process(word, env)?.words)
    }

    /// Expands `word`, returning the string, the words and the variables used.
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<ProcessResult, ShellError> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            lx: *self,
            raw_escapes: self.raw_escapes,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(ProcessResult {
                result,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(message) => Err(ShellError {
                word: word.to_string(),
                message,
            }),
        }
    }
}

#[derive(Default)]
struct Words {
    words: Vec<String>,
    buf: String,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if self.in_word {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    lx: Lexer,
    raw_escapes: bool,
    env: &'a dyn Env,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Go's `string(rune(-1))` for EOF.
const EOF_STR: &str = "\u{fffd}";

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            let quotes = !self.lx.skip_process_quotes;
            if ch == '$' || (quotes && (ch == '\'' || ch == '"')) {
                let tmp = match ch {
                    '$' => self.process_dollar()?,
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
            } else {
                self.pos += 1;
                let mut c = ch;
                if c == self.lx.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    match self.next() {
                        None => break,
                        Some(n) => {
                            c = n;
                            words.add_raw_char(c);
                        }
                    }
                } else {
                    words.add_char(c);
                }
                result.push(c);
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.lx.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.lx.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.lx.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lx.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(c) => {
                    self.pos += 1;
                    if c == self.lx.escape {
                        match self.peek() {
                            None => {
                                if self.raw_escapes {
                                    result.push(c);
                                }
                            }
                            Some(n) if n == '"' || n == '$' || n == self.lx.escape => {
                                if self.raw_escapes {
                                    result.push(c);
                                }
                                self.pos += 1;
                                result.push(n);
                            }
                            Some(_) => result.push(c),
                        }
                    } else {
                        result.push(c);
                    }
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek() {
                    if !is_digit(d) {
                        break;
                    }
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !(ch.is_alphabetic() || is_digit(ch) || ch == '_') {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lx.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut chs = first.map_or(EOF_STR.to_string(), String::from);
        let mut ch = first;
        let mut null_is_unset = false;
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lx.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') | Some('+' | '-' | '?' | '#' | '%') => {
                if ch == Some(':') {
                    null_is_unset = true;
                    ch = self.next();
                    chs.push_str(&ch.map_or(EOF_STR.to_string(), String::from));
                }
                let raw = matches!(ch, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lx.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match ch {
                    Some('-') => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if empty { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v),
                    },
                    Some(m @ ('#' | '%')) => {
                        let (greedy, pat) = match word.strip_prefix(m) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let value = value.unwrap_or_default();
                        let pat = compile_pattern(pat);
                        Ok(if m == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = match self.get_env(&name) {
                    Some(v) => v,
                    None if self.lx.skip_unset_env => {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    None => String::new(),
                };
                let pat = compile_pattern(&pattern);
                Ok(replace(&pat, &value, &replacement, replace_all))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// Compiles a shell pattern: `*`, `?`, `\x` = literal `x`; everything else literal.
fn compile_pattern(p: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = p.chars();
    while let Some(c) = it.next() {
        out.push(match c {
            '*' => Tok::Star,
            '?' => Tok::Any,
            '\\' => match it.next() {
                Some(n) => Tok::Lit(n),
                None => Tok::Lit('\\'),
            },
            c => Tok::Lit(c),
        });
    }
    out
}

/// Whole-string glob match (iterative, with single-star backtracking).
fn glob_match(p: &[Tok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Tok::Star) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Tok::Any) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Lit(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == Tok::Star)
}

fn trim_prefix(p: &[Tok], value: &str, greedy: bool) -> String {
    let v: Vec<char> = value.chars().collect();
    let found = if greedy {
        (0..=v.len()).rev().find(|&l| glob_match(p, &v[..l]))
    } else {
        (0..=v.len()).find(|&l| glob_match(p, &v[..l]))
    };
    match found {
        Some(l) => v[l..].iter().collect(),
        None => value.to_string(),
    }
}

fn trim_suffix(p: &[Tok], value: &str, greedy: bool) -> String {
    let v: Vec<char> = value.chars().collect();
    let found = if greedy {
        (0..=v.len()).find(|&s| glob_match(p, &v[s..]))
    } else {
        (0..=v.len()).rev().find(|&s| glob_match(p, &v[s..]))
    };
    match found {
        Some(s) => v[..s].iter().collect(),
        None => value.to_string(),
    }
}

/// Longest match of `p` starting at `start`, as an end index.
fn longest_at(p: &[Tok], v: &[char], start: usize) -> Option<usize> {
    (start..=v.len())
        .rev()
        .find(|&e| glob_match(p, &v[start..e]))
}

fn replace(p: &[Tok], value: &str, replacement: &str, all: bool) -> String {
    let v: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut last_match_end: Option<usize> = None;
    while i <= v.len() {
        match longest_at(p, &v, i) {
            Some(e) if !(e == i && last_match_end == Some(i)) => {
                out.push_str(replacement);
                if !all {
                    out.extend(&v[e..]);
                    return out;
                }
                last_match_end = Some(e);
                if e == i {
                    if i < v.len() {
                        out.push(v[i]);
                    }
                    i += 1;
                } else {
                    i = e;
                }
            }
            _ => {
                if i < v.len() {
                    out.push(v[i]);
                }
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SET", "value"),
            ("EMPTY", ""),
            ("V", "hello.tar.gz"),
            ("A", "value"),
        ]
    }

    fn w(s: &str) -> String {
        Lexer::new('\\').process_word(s, &env()).unwrap()
    }

    fn err(s: &str) -> String {
        Lexer::new('\\')
            .process_word(s, &env())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn default_and_alt() {
        assert_eq!(w("${SET:-d} ${EMPTY:-d} ${UNSET:-d}"), "value d d");
        assert_eq!(w("${SET:+a} ${EMPTY:+a} ${UNSET:+a}"), "a  ");
        assert_eq!(w("${SET-d} ${EMPTY-d} ${UNSET-d}"), "value  d");
        assert_eq!(w("${SET+a} ${EMPTY+a} ${UNSET+a}"), "a a ");
        assert_eq!(w("$SET ${SET} $UNSET. ${UNSET}"), "value value . ");
    }

    #[test]
    fn required() {
        assert_eq!(w("${SET:?x} ${SET?x} ${EMPTY?x}"), "value value ");
        assert_eq!(
            err("${b:?required}"),
            r#"failed to process "${b:?required}": b: required"#
        );
        assert_eq!(
            err("${b?}"),
            r#"failed to process "${b?}": b: is not allowed to be unset"#
        );
        assert_eq!(
            err("${EMPTY:?}"),
            r#"failed to process "${EMPTY:?}": EMPTY: is not allowed to be empty"#
        );
        assert_eq!(
            err("${EMPTY:?m}"),
            r#"failed to process "${EMPTY:?m}": EMPTY: m"#
        );
    }

    #[test]
    fn patterns() {
        assert_eq!(
            w("${V#*.} ${V##*.} ${V%.*} ${V%%.*}"),
            "tar.gz gz hello.tar hello"
        );
        assert_eq!(w("${V/l/L} ${V//l/L}"), "heLlo.tar.gz heLLo.tar.gz");
        assert_eq!(w("${V/#hel/HEL} ${V/%gz/GZ}"), "hello.tar.gz hello.tar.gz");
        assert_eq!(w("${V#nomatch} ${V%x}"), "hello.tar.gz hello.tar.gz");
        assert_eq!(w("${UNSET#a} ${EMPTY%%a}|"), " |");
        assert_eq!(w("${UNSET/a/b}|${EMPTY//a/b}|"), "||");
        assert_eq!(w("${V/l*/X} ${V/?/X}"), "heX Xello.tar.gz");
        assert_eq!(w(r"${V#h\*}"), "hello.tar.gz");
        assert_eq!(
            err("${V:#x}"),
            r#"failed to process "${V:#x}": unsupported modifier (:#) in substitution"#
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("${b"),
            "failed to process \"${b\": unsupported modifier (\u{fffd}) in substitution"
        );
        assert_eq!(
            err("${"),
            r#"failed to process "${": syntax error: missing '}'"#
        );
        assert_eq!(
            err("${}"),
            r#"failed to process "${}": syntax error: bad substitution"#
        );
        assert_eq!(
            err("${a:-b"),
            r#"failed to process "${a:-b": syntax error: missing '}'"#
        );
        assert_eq!(
            err("'abc"),
            r#"failed to process "'abc": unexpected end of statement while looking for matching single-quote"#
        );
        assert_eq!(
            err("\"abc"),
            r#"failed to process "\"abc": unexpected end of statement while looking for matching double-quote"#
        );
        assert_eq!(
            err("${a/b"),
            r#"failed to process "${a/b": syntax error: missing '/' in ${}"#
        );
        assert_eq!(
            err("${a^}"),
            r#"failed to process "${a^}": unsupported modifier (^) in substitution"#
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w(r"\$A"), "$A");
        assert_eq!(w(r#""\${A}""#), "${A}");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w(r"hello\ world"), "hello world");
        assert_eq!(w(r#""quote \" inside""#), "quote \" inside");
        assert_eq!(w("'it''s'"), "its");
        assert_eq!(w(r#""a\nb""#), r"a\nb");
        assert_eq!(w(r#""a\\b""#), r"a\b");
        assert_eq!(w("$A-${B}"), "value-");
        assert_eq!(w("$"), "$");
        assert_eq!(w("a$ b"), "a$ b");
        assert_eq!(w(r"trailing\"), "trailing");
        let bt = Lexer::new('`');
        assert_eq!(bt.process_word(r"C:\dir`$A", &env()).unwrap(), r"C:\dir$A");
        assert_eq!(bt.process_word(r#""a\b""#, &env()).unwrap(), r"a\b");
    }

    #[test]
    fn raw_modes() {
        let mut l = Lexer::new('\\');
        l.raw_quotes = true;
        l.raw_escapes = true;
        assert_eq!(
            l.process_word(r#"'a' "b\"" \x"#, &EmptyEnv).unwrap(),
            r#"'a' "b\"" \x"#
        );
        let mut s = Lexer::new('\\');
        s.skip_process_quotes = true;
        assert_eq!(
            s.process_word(r#"echo "$A" '\$A'"#, &env()).unwrap(),
            r#"echo "value" '$A'"#
        );
        let mut u = Lexer::new('\\');
        u.skip_unset_env = true;
        assert_eq!(
            u.process_word("$X ${X} ${X:-d} ${X/a/b} $A", &env())
                .unwrap(),
            "$X ${X} ${X:-d} ${X/a/b} value"
        );
    }

    #[test]
    fn words() {
        let l = Lexer::new('\\');
        let e = vec![("X", "a b  c"), ("E", "")];
        assert_eq!(
            l.process_words("one $X \"two three\" ''", &e).unwrap(),
            ["one", "a", "b", "c", "two three", ""]
        );
        assert_eq!(l.process_words("  a\\ b   c ", &e).unwrap(), ["a b", "c"]);
        assert_eq!(l.process_words("$E", &e).unwrap(), Vec::<String>::new());
        assert_eq!(l.process_words("x\"$X\"y", &e).unwrap(), ["xa b  cy"]);
    }

    #[test]
    fn matches() {
        let r = Lexer::new('\\')
            .process("$A ${U:-x} ${SET}", &env())
            .unwrap();
        assert_eq!(r.matched.into_iter().collect::<Vec<_>>(), ["A", "SET"]);
        assert_eq!(r.unmatched.into_iter().collect::<Vec<_>>(), ["U"]);
    }
}
