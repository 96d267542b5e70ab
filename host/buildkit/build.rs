//! Compiles the part of BuildKit's API buildwitd speaks (`proto/`) with protox. LLB
//! messages are buildwit-llb's own.

fn main() {
    let files = [
        "control.proto",
        "gateway.proto",
        "session.proto",
        "fsutil.proto",
        "secrets.proto",
        "content.proto",
        "ssh.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"]).unwrap_or_else(|e| panic!("proto/: {e}"));
    tonic_prost_build::configure()
        .extern_path(".pb", "::buildwit_llb::pb")
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating code for proto/: {e}"));
}
