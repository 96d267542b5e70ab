//! An LLB `Definition` from a client or frontend: protobuf decoding, graph validation, and
//! the JSON and dot dumps (`buildwit debug dump-llb`).
#![no_main]

use buildwit_llb::{decode_definition, dump_json_lines, to_dot, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(def) = decode_definition(data) else {
        return;
    };
    if let Ok(graph) = validate(&def) {
        let _ = graph.terminal();
        for v in graph.ops() {
            let _ = graph.position(&v.digest);
        }
    }
    let _ = dump_json_lines(&def);
    let _ = to_dot(&def);
});
