//! Word expansion (`$VAR`, `${VAR:-default}`, `${VAR%pattern}`, quotes, escapes), with both
//! escape characters and every lexer option.
#![no_main]

use std::collections::HashMap;

use buildwit_dockerfile::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(rest) else {
        return;
    };
    let env: HashMap<String, String> = [
        ("A", "a b"),
        ("EMPTY", ""),
        ("PATH", "/usr/bin:/bin"),
        ("GLOB", "*.txt?[a-z]"),
        ("Q", "'\"\\$"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut lexer = Lexer::new(if flags & 1 == 0 { '\\' } else { '`' });
    lexer.raw_quotes = flags & 2 != 0;
    lexer.raw_escapes = flags & 4 != 0;
    lexer.skip_process_quotes = flags & 8 != 0;
    lexer.skip_unset_env = flags & 16 != 0;
    let _ = lexer.process(word, &env);
});
