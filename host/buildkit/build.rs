//! Compiles the part of BuildKit's API buildwitd speaks (`proto/`) with protox. LLB
//! messages are buildwit-llb's own, the gateway's buildwit-gateway's.

fn main() {
    let files = [
        "control.proto",
        "session.proto",
        "secrets.proto",
        "content.proto",
        "ssh.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    // The gateway's messages (and the worker and fsutil types) are buildwit-gateway's.
    let fds = protox::compile(files, ["proto", "../gateway/proto"])
        .unwrap_or_else(|e| panic!("proto/: {e}"));
    tonic_prost_build::configure()
        .extern_path(".pb", "::buildwit_llb::pb")
        .extern_path(
            ".moby.buildkit.v1.types",
            "::buildwit_gateway::proto::moby::buildkit::v1::types",
        )
        .extern_path(
            ".moby.buildkit.v1.frontend",
            "::buildwit_gateway::proto::moby::buildkit::v1::frontend",
        )
        .extern_path(".google.rpc", "::buildwit_gateway::proto::google::rpc")
        .extern_path(".fsutil.types", "::buildwit_gateway::proto::fsutil::types")
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating code for proto/: {e}"));
}
