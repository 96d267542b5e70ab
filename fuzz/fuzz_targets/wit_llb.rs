//! The host's WIT ↔ protobuf LLB conversion: what a frontend hands over as typed LLB
//! becomes the protobuf the solver runs. Fuzzed protobufs go to WIT (as a frontend's named
//! inputs do) and back; the way back must never panic, and a graph that was valid must
//! stay valid with the same number of ops.
#![no_main]

use buildwit_frontend::convert::{from_wit, to_wit};
use buildwit_llb::{decode_definition, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(def) = decode_definition(data) else {
        return;
    };
    let wit = to_wit(&def);
    let back = from_wit(&wit);
    if let (Ok(graph), Ok(back)) = (validate(&def), &back) {
        let again = validate(back).expect("a valid graph stays valid through WIT");
        assert!(again.ops().len() <= graph.ops().len());
    }
});
