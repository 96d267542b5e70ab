//! Compiles BuildKit's gateway protocol (`proto/`) with protox. LLB messages are
//! buildwit-llb's own.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds =
        protox::compile(["gateway.proto"], ["proto"]).unwrap_or_else(|e| panic!("proto/: {e}"));
    tonic_prost_build::configure()
        .extern_path(".pb", "::buildwit_llb::pb")
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating code for proto/: {e}"));
}
