//! Compiles buildwit's gRPC API (`proto/buildwit.proto`) with protox, a pure-Rust protoc.

fn main() {
    let proto = "proto/buildwit.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).unwrap_or_else(|e| panic!("{proto}: {e}"));
    tonic_prost_build::configure()
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating code for {proto}: {e}"));
}
