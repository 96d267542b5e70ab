//! The daemon's path patterns (`.dockerignore` on the context, `local.excludepatterns`,
//! `COPY --exclude`): the first line is a path, the rest patterns. Short inputs are also
//! checked against a plain backtracking matcher, the definition the fast one must agree with.
#![no_main]

use buildwit_worker::pattern::{Patterns, match_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let path = lines.next().unwrap_or_default();
    let patterns: Vec<&str> = lines.collect();
    let set = Patterns::new(&patterns);
    let _ = set.matches(path);
    let _ = set.may_include_below(path);
    for p in &patterns {
        let fast = match_path(p, path);
        if p.len() <= 16 && path.len() <= 16 {
            let parts = |s: &str| -> Vec<String> {
                s.split('/')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            };
            let slow = reference::parts(&parts(p), &parts(path));
            assert_eq!(fast, slow, "pattern {p:?} on {path:?}");
        }
    }
});

/// Backtracking, exponential, obviously right.
mod reference {
    pub fn parts(p: &[String], n: &[String]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(s), _) if s == "**" => parts(&p[1..], n) || (!n.is_empty() && parts(p, &n[1..])),
            (Some(s), Some(c)) if glob(s.as_bytes(), c.as_bytes()) => parts(&p[1..], &n[1..]),
            _ => false,
        }
    }

    fn glob(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => glob(&p[1..], n) || (!n.is_empty() && glob(p, &n[1..])),
            Some(b'?') => !n.is_empty() && glob(&p[1..], &n[1..]),
            Some(b'[') => {
                let Some(&c) = n.first() else { return false };
                match class(&p[1..], c) {
                    Some((true, rest)) => glob(rest, &n[1..]),
                    _ => false,
                }
            }
            Some(b'\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob(&p[2..], &n[1..]),
            Some(&a) => n.first() == Some(&a) && glob(&p[1..], &n[1..]),
        }
    }

    fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
        let (negate, mut i) = if p.first() == Some(&b'^') {
            (true, 1)
        } else {
            (false, 0)
        };
        let (mut found, mut first) = (false, true);
        while i < p.len() {
            if p[i] == b']' && !first {
                return Some((found != negate, &p[i + 1..]));
            }
            first = false;
            if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                found |= (p[i]..=p[i + 2]).contains(&c);
                i += 3;
            } else {
                found |= p[i] == c;
                i += 1;
            }
        }
        None
    }
}
