//! The Dockerfile parser: directives, line continuations, heredocs, builder flags.
#![no_main]

use buildwit_dockerfile::parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parser::detect_syntax(src);
    let _ = parser::parse_heredoc(src);
    if let Ok(parsed) = parser::parse(src) {
        let _ = parsed.ast.dump();
        for node in &parsed.ast.children {
            let _ = parser::extract_builder_flags(&node.original);
        }
    }
});
