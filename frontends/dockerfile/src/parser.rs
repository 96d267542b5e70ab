//! Dockerfile parser: parser directives, line continuations, comments, heredocs,
//! JSON (exec) form, instruction flags and the BuildKit-compatible AST dump.

use crate::Error;
use crate::gostr::{go_quote_list, push_go_quoted};
use crate::json::{self, Value};
use crate::shell::{EmptyEnv, Lexer};

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// A parser directive found at the top of the file (`# key=value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased key: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value with surrounding whitespace trimmed.
    pub value: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// A heredoc attached to an instruction, as read by the parser (content not chomped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (also the file name for COPY/ADD).
    pub name: String,
    /// The raw body, each line with its newline.
    pub content: String,
    /// Whether variables in the body are expanded (delimiter was not quoted).
    pub expand: bool,
    /// Whether `<<-` was used (leading tabs are stripped).
    pub chomp: bool,
    /// The file descriptor prefix (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
}

/// A parser warning (for lint reporting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Short description.
    pub short: String,
    /// 1-based last line of the instruction's continuation lines (BuildKit's location).
    pub line: usize,
}

/// An AST node. The root has one child per instruction; an instruction node has
/// its keyword in `value` (lowercased) and its arguments in `next`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Lowercased instruction keyword, or the argument value.
    pub value: String,
    /// The instruction keyword as written (instruction nodes only).
    pub keyword: String,
    /// The whole logical line (continuations joined), instruction nodes only.
    pub original: String,
    /// Instruction flags (`--name=value`), quotes removed.
    pub flags: Vec<String>,
    /// Argument nodes in order (Go's `Next` chain).
    pub next: Vec<Node>,
    /// Child instructions (root children, or the nested ONBUILD trigger).
    pub children: Vec<Node>,
    /// True when the arguments were given in JSON (exec) form.
    pub json: bool,
    /// Heredocs read after this instruction.
    pub heredocs: Vec<Heredoc>,
    /// Comment lines directly before the instruction.
    pub prev_comments: Vec<String>,
    /// Characters of leading whitespace before the keyword on the first line.
    pub indent: usize,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (including continuation and heredoc lines).
    pub end_line: usize,
}

impl Node {
    /// Dumps the node in BuildKit's `Node.Dump()` format (trimmed, no trailing newline).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        self.dump_into(&mut s);
        s.trim().to_string()
    }

    fn dump_into(&self, s: &mut String) {
        let start = s.len();
        s.push_str(&self.value.to_lowercase());
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_list(&self.flags));
        }
        for c in &self.children {
            s.push('(');
            let inner = c.dump();
            s.push_str(&inner);
            s.push_str(")\n");
        }
        for n in &self.next {
            s.push(' ');
            if !n.children.is_empty() {
                s.push_str(&n.dump());
            } else {
                push_go_quoted(s, &n.value);
            }
        }
        let _ = start;
    }

    /// The argument values, flattening a nested ONBUILD trigger like BuildKit's `nodeArgs`.
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.next {
            if n.children.is_empty() {
                out.push(n.value.clone());
            } else if n.children.len() == 1 {
                let c = &n.children[0];
                out.push(c.value.clone());
                out.extend(c.args());
            }
        }
        out
    }

    fn can_contain_heredoc(&self) -> bool {
        let mut node = self;
        if node.value == "onbuild"
            && let Some(c) = node.next.first().and_then(|n| n.children.first())
        {
            node = c;
        }
        matches!(node.value.as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// The result of [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseResult {
    /// The root node; its `children` are the instructions.
    pub ast: Node,
    /// The active escape character.
    pub escape: char,
    /// Parser directives in order.
    pub directives: Vec<Directive>,
    /// Non-fatal findings (e.g. empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl ParseResult {
    /// Returns the value of directive `name` (lowercase), if present.
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }
}

/// Splits `s` after the prefix into a directive `(key, value)` per BuildKit's regex
/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (applied after trimming leading space).
fn match_directive(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let is_re_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let after = rest[key_len..].trim_start_matches(is_re_space);
    let value = after.strip_prefix('=')?.trim_matches(is_re_space);
    if value.is_empty() {
        return None;
    }
    Some((rest[..key_len].to_ascii_lowercase(), value.to_string()))
}

fn is_known_directive(k: &str) -> bool {
    matches!(k, "syntax" | "escape" | "check")
}

struct Directives {
    line: usize,
    done: bool,
    escape: char,
    found: Vec<Directive>,
}

impl Directives {
    fn new() -> Self {
        Directives {
            line: 0,
            done: false,
            escape: DEFAULT_ESCAPE,
            found: Vec::new(),
        }
    }

    /// Records `line` if it is a parser directive; `Ok(true)` when it was one.
    fn possible_directive(&mut self, line: &str, lineno: usize) -> Result<bool, String> {
        self.line += 1;
        if self.done {
            return Ok(false);
        }
        if self.line == 1 && line.starts_with("#!") {
            return Ok(false);
        }
        let Some((k, v)) = line.strip_prefix('#').and_then(match_directive) else {
            self.done = true;
            return Ok(false);
        };
        if !is_known_directive(&k) {
            self.done = true;
            return Ok(false);
        }
        if self.found.iter().any(|d| d.name == k) {
            return Err(format!("only one {k} parser directive can be used"));
        }
        if k == "escape" {
            if v != "`" && v != "\\" {
                return Err(format!("invalid escape token '{v}' does not match ` or \\"));
            }
            self.escape = v.chars().next().unwrap_or(DEFAULT_ESCAPE);
        }
        self.found.push(Directive {
            name: k,
            value: v,
            line: lineno,
        });
        Ok(true)
    }
}

/// The `# syntax=` directive as found by [`detect_syntax`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The frontend reference: the value up to the first space.
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line (0 for the JSON form).
    pub line: usize,
}

/// Finds the `syntax` directive like BuildKit's `DetectSyntax`: `#` prefix, then
/// the `//` prefix, then a whole-file JSON object with a string `"syntax"` member.
pub fn detect_syntax(src: &str) -> Option<SyntaxDirective> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    for prefix in ["#", "//"] {
        if let Some(d) = detect_with_prefix(src, prefix) {
            return Some(d);
        }
    }
    if let Ok(Value::Object(members)) = json::decode_exact(src) {
        for (k, v) in members.iter().rev() {
            if k == "syntax" {
                if let Value::String(s) = v {
                    return Some(SyntaxDirective {
                        reference: s.clone(),
                        cmdline: s.clone(),
                        line: 0,
                    });
                }
                return None;
            }
        }
    }
    None
}

fn detect_with_prefix(src: &str, prefix: &str) -> Option<SyntaxDirective> {
    for (i, line) in src.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i == 0 && line.starts_with("#!") {
            continue;
        }
        let (k, v) = line.strip_prefix(prefix).and_then(match_directive)?;
        if !is_known_directive(&k) {
            return None;
        }
        if k == "syntax" {
            let reference = v.split(' ').next().unwrap_or("").to_string();
            return Some(SyntaxDirective {
                reference,
                cmdline: v,
                line: i + 1,
            });
        }
    }
    None
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line).trim_start().starts_with('#')
}

/// Removes a trailing escape character (plus trailing spaces/tabs) and reports
/// whether the line is complete (no continuation).
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    // BuildKit: `([^E]|^)E[ \t]*$` - an escape not preceded by another escape.
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(rest) if !rest.ends_with(escape) => (rest, false),
        _ => (line, true),
    }
}

/// Chomps heredoc content: removes leading tabs from every line (`<<-`).
pub fn chomp_heredoc_content(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// Parses one word as a heredoc marker (`[n]<<[-]WORD`), BuildKit's `ParseHeredoc`.
pub fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    let digits = src.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = src[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = if digits == 0 {
        0
    } else {
        src[..digits].parse().unwrap_or(u32::MAX)
    };
    let mut lx = Lexer::new('\\');
    lx.skip_unset_env = true;
    let words = lx
        .process_words(rest, &EmptyEnv)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lx.raw_quotes = true;
    let raw = lx
        .process_words(rest, &EmptyEnv)
        .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let count = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let word = words.into_iter().next().unwrap_or_default();
    Ok(Some(Heredoc {
        expand: count(&word) == count(&raw[0]),
        name: word,
        content: String::new(),
        chomp,
        file_descriptor: fd,
    }))
}

fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lx = Lexer::new('\\');
    lx.raw_quotes = true;
    lx.raw_escapes = true;
    let words = lx.process_words(line, &EmptyEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// Parses a Dockerfile into an AST.
pub fn parse(src: &str) -> Result<ParseResult, Error> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut d = Directives::new();
    let mut root = Node {
        start_line: 0,
        ..Node::default()
    };
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut idx = 0;
    let mut current_line = 0;

    while idx < lines.len() {
        let raw = lines[idx];
        idx += 1;
        if is_comment(raw) {
            let c: String = raw.chars().skip(1).collect();
            let c = c.trim();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c.to_string());
            }
        }
        let untrimmed = trim_newline(raw);
        let token = untrimmed.trim_start();
        let indent = untrimmed[..untrimmed.len() - token.len()].chars().count();
        // A directive is not a comment of the next instruction (BuildKit drops it too).
        if d.possible_directive(token, current_line + 1)
            .map_err(|m| Error::new(current_line + 1, current_line + 1, m))?
        {
            comments.pop();
        }
        let processed = if is_comment(token) { "" } else { token };
        current_line += 1;
        let start_line = current_line;
        let (first, mut eol) = trim_continuation(processed, d.escape);
        if eol && first.is_empty() {
            continue;
        }
        let mut buf = String::from(first);
        let mut has_empty = false;
        while !eol && idx < lines.len() {
            let raw = lines[idx];
            idx += 1;
            let token = trim_newline(raw);
            d.possible_directive(token, current_line + 1)
                .map_err(|m| Error::new(current_line + 1, current_line + 1, m))?;
            current_line += 1;
            if is_comment(token) {
                continue;
            }
            if token.trim_start().is_empty() {
                has_empty = true;
                continue;
            }
            let (cont, e) = trim_continuation(token, d.escape);
            eol = e;
            buf.push_str(cont);
        }

        if has_empty {
            // BuildKit points at the last line read so far, not at the instruction start.
            warnings.push(Warning {
                short: format!("Empty continuation line found in: {buf}"),
                line: current_line,
            });
        }

        let mut child = new_node_from_line(&buf, d.escape, std::mem::take(&mut comments))
            .map_err(|m| Error::new(start_line, current_line, m))?;

        if child.can_contain_heredoc() && buf.contains("<<") {
            let heredocs =
                heredocs_from_line(&buf).map_err(|m| Error::new(start_line, current_line, m))?;
            for mut h in heredocs {
                let mut terminated = false;
                while idx < lines.len() {
                    let raw = lines[idx];
                    idx += 1;
                    current_line += 1;
                    let mut possible = trim_newline(raw);
                    if h.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == h.name {
                        terminated = true;
                        break;
                    }
                    h.content.push_str(raw);
                }
                if !terminated {
                    return Err(Error::new(start_line, current_line, "unterminated heredoc"));
                }
                child.heredocs.push(h);
            }
        }
        child.start_line = start_line;
        child.end_line = current_line;
        child.indent = indent;
        if root.children.is_empty() {
            root.start_line = start_line;
        }
        root.end_line = current_line;
        root.children.push(child);
    }

    if root.children.is_empty() {
        return Err(Error::new(
            current_line,
            current_line,
            "file with no instructions",
        ));
    }
    Ok(ParseResult {
        ast: root,
        escape: d.escape,
        directives: d.found,
        warnings,
    })
}

/// Go's `regexp.MustCompile("[\t\v\f\r ]+")` character set.
fn is_split_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn new_node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, String> {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_split_ws) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(is_split_ws)),
        None => (trimmed, ""),
    };
    let (args, flags) = if rest.is_empty() {
        ("", Vec::new())
    } else {
        extract_builder_flags(rest)
    };
    let args = args.trim();
    let lower = cmd.to_lowercase();
    let (next, json) = match lower.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(args)?,
        "arg" => (word_nodes(parse_words(args, escape)), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(args)?,
        "env" => (parse_name_val(args, "ENV", escape)?, false),
        "label" => (parse_name_val(args, "LABEL", escape)?, false),
        "expose" | "from" => (parse_whitespace_delimited(args), false),
        "healthcheck" => parse_health_config(args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (parse_string(args), false),
        "onbuild" => {
            if args.is_empty() {
                (Vec::new(), false)
            } else {
                let child = new_node_from_line(args, escape, Vec::new())?;
                (
                    vec![Node {
                        children: vec![child],
                        ..Node::default()
                    }],
                    false,
                )
            }
        }
        _ => (vec![Node::default()], false),
    };
    Ok(Node {
        value: lower,
        keyword: cmd.to_string(),
        original: line.to_string(),
        flags,
        next,
        json,
        prev_comments: comments,
        ..Node::default()
    })
}

fn value_node(v: impl Into<String>) -> Node {
    Node {
        value: v.into(),
        ..Node::default()
    }
}

fn word_nodes(words: Vec<String>) -> Vec<Node> {
    words.into_iter().map(value_node).collect()
}

fn parse_string(rest: &str) -> Vec<Node> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![value_node(rest)]
    }
}

fn parse_whitespace_delimited(rest: &str) -> Vec<Node> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_split_ws)
        .filter(|s| !s.is_empty())
        .map(value_node)
        .collect()
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

enum JsonOutcome {
    Strings(Vec<String>),
    NotStringArray,
    Invalid,
}

fn parse_json(rest: &str) -> JsonOutcome {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonOutcome::Invalid;
    }
    match json::decode_prefix(rest) {
        Ok((Value::Array(items), _)) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Value::String(s) => out.push(s),
                    _ => return JsonOutcome::NotStringArray,
                }
            }
            JsonOutcome::Strings(out)
        }
        Ok(_) => JsonOutcome::NotStringArray,
        Err(_) => JsonOutcome::Invalid,
    }
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<Node>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        JsonOutcome::Strings(v) => Ok((word_nodes(v), true)),
        JsonOutcome::NotStringArray => Err(NOT_STRING_ARRAY.into()),
        JsonOutcome::Invalid => Ok((vec![value_node(rest)], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<Node>, bool), String> {
    match parse_json(rest) {
        JsonOutcome::Strings(v) => Ok((word_nodes(v), true)),
        JsonOutcome::NotStringArray => Err(NOT_STRING_ARRAY.into()),
        JsonOutcome::Invalid => Ok((parse_whitespace_delimited(rest), false)),
    }
}

fn parse_health_config(rest: &str) -> Result<(Vec<Node>, bool), String> {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let bytes = rest.as_bytes();
    let sep = bytes.iter().position(|&b| is_ws(b)).unwrap_or(bytes.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let next = bytes[sep..]
        .iter()
        .position(|&b| !is_ws(b))
        .map_or(bytes.len(), |p| sep + p);
    let (cmd, json) = parse_maybe_json(&rest[next..])?;
    let mut nodes = vec![value_node(&rest[..sep])];
    nodes.extend(cmd);
    Ok((nodes, json))
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<Node>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let kv = |k: &str, v: &str, sep: &str| [value_node(k), value_node(v), value_node(sep)];
    if !words[0].contains('=') {
        let Some(i) = rest.find(is_split_ws) else {
            return Err(format!("{key} must have two arguments"));
        };
        let value = rest[i..].trim_start_matches(is_split_ws);
        return Ok(kv(&rest[..i], value, "").into());
    }
    let mut nodes = Vec::with_capacity(words.len() * 3);
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::gostr::go_quote(w)
            ));
        };
        nodes.extend(kv(k, v, "="));
    }
    Ok(nodes)
}

/// Splits `rest` into words on whitespace, honouring quotes and the escape
/// character; quotes and escapes are kept in the words (BuildKit's `parseWords`).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    loop {
        let at_end = pos >= chars.len();
        let mut ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // in quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// Splits leading `--flag` words off `line` (quotes removed, `\` escapes the next
/// character). A bare `--` ends the flags and is dropped. Returns `(rest, flags)`.
pub fn extract_builder_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut it = line.char_indices().peekable();
    loop {
        let cur = it.next();
        if phase == Phase::Spaces {
            let Some((pos, ch)) = cur else { break };
            if ch.is_whitespace() {
                continue;
            }
            if !line[pos..].starts_with("--") {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        let Some((pos, mut ch)) = cur else {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                continue;
            }
            if ch == '\\' {
                match it.next() {
                    None => continue,
                    Some((_, n)) => ch = n,
                }
            }
            word.push(ch);
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
            continue;
        }
        if ch == '\\' {
            match it.next() {
                None => {
                    phase = Phase::Word;
                    continue;
                }
                Some((_, n)) => ch = n,
            }
        }
        word.push(ch);
    }
    ("", words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse(src).unwrap().ast.dump()
    }

    #[test]
    fn basic_dump() {
        assert_eq!(
            dump("FROM a\nRUN echo \\\n  hi\n"),
            "(from \"a\")\n(run \"echo   hi\")"
        );
        assert_eq!(dump("ONBUILD RUN [\"a\"]\n"), "(onbuild (run \"a\"))");
        assert_eq!(
            dump("COPY --link --chmod=\"7 5\" -- a b\n"),
            "(copy [\"--link\" \"--chmod=7 5\"] \"a\" \"b\")"
        );
    }

    #[test]
    fn directives() {
        let r = parse(
            "\u{feff}#!/bin/x\n# syntax = foo // bar\n#ESCAPE=`\n# check=skip=all\nFROM a `\n  b\n",
        )
        .unwrap();
        assert_eq!(r.escape, '`');
        assert_eq!(r.directive("syntax").unwrap().value, "foo // bar");
        assert_eq!(r.directive("check").unwrap().line, 4);
        assert_eq!(r.ast.children[0].start_line, 5);
        assert_eq!(r.ast.children[0].end_line, 6);
        let e = parse("# syntax=a\n# syntax=b\nFROM x\n").unwrap_err();
        assert_eq!(e.message, "only one syntax parser directive can be used");
        assert_eq!(e.line, 2);
        // after a non-directive line, directives are comments
        let r = parse("# hello\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(r.escape, '\\');
        assert!(parse("# escape=x\nFROM a\n").is_err());
    }

    #[test]
    fn syntax_detection() {
        let d = detect_syntax("# syntax = dockerfile:experimental // opts\nFROM x").unwrap();
        assert_eq!(d.reference, "dockerfile:experimental");
        assert_eq!(d.cmdline, "dockerfile:experimental // opts");
        assert_eq!(d.line, 1);
        assert_eq!(
            detect_syntax("#!/x\n# escape=`\n#syntax=a\n").unwrap().line,
            3
        );
        assert_eq!(detect_syntax("//syntax=foo\n").unwrap().reference, "foo");
        assert!(detect_syntax(" # syntax=foo\n").is_none());
        assert!(detect_syntax("# hello\n# syntax=foo\n").is_none());
        assert_eq!(
            detect_syntax(r#"{"syntax": "foo", "x": 1}"#)
                .unwrap()
                .reference,
            "foo"
        );
        assert!(detect_syntax(r#"{"syntax": "foo"} x"#).is_none());
        assert_eq!(
            detect_syntax("# syntax=a\n# syntax=b\n").unwrap().reference,
            "a"
        );
    }

    #[test]
    fn heredocs() {
        let r =
            parse("FROM a\nRUN <<EOF cat && cat <<-'X' > /f\nhello $x\nEOF\n\tbody\n\tX\nRUN ok\n")
                .unwrap();
        let run = &r.ast.children[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].name, "EOF");
        assert_eq!(run.heredocs[0].content, "hello $x\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[1].name, "X");
        assert!(run.heredocs[1].chomp);
        assert!(!run.heredocs[1].expand);
        assert_eq!(run.heredocs[1].content, "\tbody\n");
        assert_eq!((run.start_line, run.end_line), (2, 6));
        assert_eq!(r.ast.children[2].start_line, 7);
        let e = parse("FROM a\nRUN <<EOF\nx\n").unwrap_err();
        assert_eq!(e.message, "unterminated heredoc");
        assert_eq!(e.line, 2);
        // JSON form has no heredocs; <<< is not a heredoc
        assert!(
            parse("FROM a\nRUN [\"<<EOF\"]\n").unwrap().ast.children[1]
                .heredocs
                .is_empty()
        );
        assert!(
            parse("FROM a\nRUN cat <<<EOF\n").unwrap().ast.children[1]
                .heredocs
                .is_empty()
        );
        let h = parse_heredoc("3<<\"E\"OF").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.file_descriptor),
            ("EOF", false, 3)
        );
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\nc\t\n"), "a\nb\nc\t\n");
    }

    #[test]
    fn json_prefix_and_errors() {
        assert_eq!(dump("CMD [\"a\"] trailing\n"), "(cmd \"a\")");
        assert_eq!(
            parse("CMD [\"a\", 1]\n").unwrap_err().message,
            NOT_STRING_ARRAY
        );
        assert_eq!(dump("FOO bar\n"), "(foo \"\")");
    }
}
