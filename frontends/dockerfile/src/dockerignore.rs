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

#[cfg(test)]
mod tests {
    use super::*;

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
