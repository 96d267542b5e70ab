//! `.dockerignore`: the file's parser, pattern compilation and matching. The first line of
//! the input is a path to match; the rest is the file.
#![no_main]

use buildwit_dockerfile::dockerignore::{Matcher, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (path, file) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let patterns = parse(file);
    let Ok(matcher) = Matcher::new(&patterns) else {
        return;
    };
    let _ = matcher.has_exclusions();
    let _ = matcher.ignores_root();
    let path = String::from_utf8_lossy(path);
    for candidate in [&*path, "a/b/c.txt", ".git", "node_modules/x/package.json"] {
        let _ = matcher.matches_or_parent_matches(candidate);
    }
});
