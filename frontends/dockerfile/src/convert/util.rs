//! Small pieces of BuildKit behaviour the conversion needs: path normalisation, `--chmod`
//! parsing, `EXPOSE` port specs, git references, Go formatting.

/// Go's `path.Clean`.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `path.Join`.
pub fn join(parts: &[&str]) -> String {
    let non_empty: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if non_empty.is_empty() {
        return String::new();
    }
    clean(&non_empty.join("/"))
}

/// BuildKit's `system.NormalizePath` for Linux: `new` resolved against `parent`, with a
/// trailing slash kept when `keep_slash` and the input had one.
pub fn normalize_path(parent: &str, new: &str, keep_slash: bool) -> String {
    let orig = new;
    let mut p = if new.starts_with('/') {
        clean(new)
    } else {
        clean(&format!("/{parent}/{new}"))
    };
    if keep_slash {
        let slash = orig.ends_with('/') && !p.ends_with('/');
        let dot = orig.ends_with("/.") && p != "/";
        if slash || dot {
            p.push('/');
        }
    }
    p
}

/// BuildKit's `pathRelativeToWorkingDir`: the destination of a COPY/ADD.
pub fn dest_path(cwd: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return normalize_path("/", dest, true);
    }
    let dest = if dest == "." || dest.is_empty() {
        "./"
    } else {
        dest
    };
    normalize_path(cwd, dest, true)
}

/// BuildKit's `system.NormalizeWorkdir` for Linux.
pub fn normalize_workdir(current: &str, requested: &str) -> String {
    if requested.is_empty() {
        return current.to_string();
    }
    let requested = if requested.starts_with('/') {
        requested.to_string()
    } else {
        let cur = if current.is_empty() { "/" } else { current };
        format!("{cur}/{requested}")
    };
    clean(&requested)
}

/// The parsed `--chmod` value: an octal mode or a symbolic mode string.
pub enum Chmod {
    /// Octal mode.
    Octal(i32),
    /// Symbolic mode (`u+x`).
    Symbolic(String),
}

/// Parse `--chmod` as BuildKit does.
pub fn parse_chmod(chmod: &str) -> Result<Chmod, String> {
    let non_octal = || {
        format!(
            "invalid chmod parameter: '{chmod}'. it should be octal string and between 0 and 07777"
        )
    };
    if !chmod.is_empty() && chmod.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        let v = u64::from_str_radix(chmod, 8).map_err(|_| non_octal())?;
        if v > 0o7777 {
            return Err(non_octal());
        }
        return Ok(Chmod::Octal(v as i32));
    }
    if chmod.bytes().all(|b| b.is_ascii_digit()) {
        return Err(non_octal());
    }
    // Symbolic: clause[,clause...], clause = [ugoa]*([-+=]([rwxXst]*|[ugo]))+
    for clause in chmod.split(',') {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if rest.is_empty() || !rest.starts_with(['+', '-', '=']) {
            return Err(format!("invalid mode: {chmod}"));
        }
        if !rest.chars().all(|c| "+-=rwxXstugo".contains(c)) {
            return Err(format!("invalid mode: {chmod}"));
        }
    }
    Ok(Chmod::Symbolic(chmod.to_string()))
}

/// `EXPOSE` port specs → `port/proto` entries (BuildKit's `parsePorts`).
pub fn parse_ports(ports: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in ports {
        let parts: Vec<&str> = raw.split(':').collect();
        let container = parts[parts.len() - 1];
        let (port, proto) = container.split_once('/').unwrap_or((container, ""));
        if port.is_empty() {
            return Err(format!("invalid port: {raw:?}: no port specified"));
        }
        let proto = match proto.to_ascii_lowercase().as_str() {
            "" => "tcp".to_string(),
            "tcp" | "udp" | "sctp" => proto.to_ascii_lowercase(),
            _ => return Err(format!("invalid port: {raw:?}: invalid proto: {proto}")),
        };
        let bad = || format!("invalid containerPort: {port}");
        let (start, end) = match port.split_once('-') {
            Some((s, e)) if s != e => {
                let s: u32 = s.parse().map_err(|_| bad())?;
                let e: u32 = e.parse().map_err(|_| bad())?;
                if e < s || e > 65535 {
                    return Err(bad());
                }
                (s, e)
            }
            _ => {
                let s = port.split_once('-').map(|(s, _)| s).unwrap_or(port);
                let v: u32 = s.parse().map_err(|_| bad())?;
                if v > 65535 {
                    return Err(bad());
                }
                (v, v)
            }
        };
        for p in start..=end {
            out.push(format!("{p}/{proto}"));
        }
    }
    Ok(out)
}

/// A git source named in `ADD` (BuildKit's `dfgitutil.ParseGitRef`, the common forms).
pub struct GitRef {
    /// Remote URL.
    pub remote: String,
    /// Branch, tag or commit (empty = default).
    pub reference: String,
    /// Subdirectory.
    pub subdir: String,
    /// `keep-git-dir` query value.
    pub keep_git_dir: Option<bool>,
    /// `checksum` query value.
    pub checksum: String,
}

/// Recognise `https://host/x.git[#ref[:subdir]]`, `git@host:path[#…]`, `ssh://…`, `git://…`.
pub fn parse_git_ref(src: &str) -> Option<GitRef> {
    let (url, fragment) = match src.split_once('#') {
        Some((u, f)) => (u, f),
        None => (src, ""),
    };
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, q),
        None => (url, ""),
    };
    let is_git = if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        rest.contains('/') && url.ends_with(".git")
    } else if url.starts_with("git://") || url.starts_with("ssh://") {
        true
    } else if let Some((user, rest)) = url.split_once('@') {
        !user.contains('/') && !user.is_empty() && rest.contains(':') && !url.contains("://")
    } else {
        false
    };
    if !is_git {
        return None;
    }
    let (reference, subdir) = match fragment.split_once(':') {
        Some((r, s)) => (r.to_string(), s.to_string()),
        None => (fragment.to_string(), String::new()),
    };
    let mut git = GitRef {
        remote: url.to_string(),
        reference,
        subdir,
        keep_git_dir: None,
        checksum: String::new(),
    };
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "ref" | "tag" | "branch" => git.reference = v.to_string(),
            "subdir" => git.subdir = v.to_string(),
            "checksum" | "commit" => git.checksum = v.to_string(),
            "keep-git-dir" => git.keep_git_dir = Some(v.is_empty() || v == "true" || v == "1"),
            _ => {}
        }
    }
    Some(git)
}

/// `http://` or `https://` and not a git repository.
pub fn is_http_source(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && parse_git_ref(src).is_none()
}

/// Go's `time.Duration.String()`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Sub-second: ns, µs or ms with a fraction.
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&frac(u, div));
        out.push_str(unit);
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s_ns = u % 60_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&frac(s_ns, 1_000_000_000));
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

fn frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let rem = v % div;
    if rem == 0 {
        return whole.to_string();
    }
    let digits = div.to_string().len() - 1;
    let f = format!("{rem:0digits$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Whether `STOPSIGNAL` accepts the value (moby's `signal.ParseSignal` on Linux).
pub fn valid_signal(raw: &str) -> bool {
    if let Ok(n) = raw.parse::<i64>() {
        return n != 0;
    }
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ", "RTMIN", "RTMAX",
    ];
    let upper = raw.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if NAMES.contains(&name) {
        return true;
    }
    let rt = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    rt("RTMIN+", 15) || rt("RTMAX-", 14)
}

/// BuildKit's `summarizeHeredoc`.
pub fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim();
    let doc = doc.replace("\r\n", "\n");
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

/// Uppercase the first word (BuildKit's `uppercaseCmd`).
pub fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((a, b)) => format!("{} {b}", a.to_uppercase()),
        None => s.to_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(dest_path("/app", "./"), "/app/");
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/", "/"), "/");
        assert_eq!(dest_path("/a/b/d", "rel/"), "/a/b/d/rel/");
        assert_eq!(normalize_workdir("/a/b", "../d"), "/a/d");
        assert_eq!(normalize_workdir("/a", "b/"), "/a/b");
        assert_eq!(clean("c/"), "c");
        assert_eq!(join(&["/", "dir", "a.txt"]), "/dir/a.txt");
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(10_000_000_000), "10s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(100_000_000), "100ms");
    }

    #[test]
    fn ports_and_git() {
        assert_eq!(
            parse_ports(&["8000-8002".into(), "53/UDP".into()])
                .unwrap()
                .len(),
            4
        );
        assert!(parse_git_ref("https://github.com/moby/buildkit.git#v0.10.1:docs").is_some());
        assert!(parse_git_ref("git@github.com:moby/buildkit.git").is_some());
        assert!(parse_git_ref("https://example.com/path/file.txt").is_none());
        assert!(is_http_source("https://example.com/x.tar.gz"));
    }
}
