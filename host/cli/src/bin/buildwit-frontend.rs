//! `buildwit-frontend COMPONENT.wasm`: a buildwit Wasm frontend as a container frontend of a
//! stock BuildKit. BuildKit starts it with the gateway connection on its stdin and stdout
//! (see `buildwit_gateway::client`); the frontend's result or error goes back over it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(component) = std::env::args_os().nth(1) else {
        eprintln!("usage: buildwit-frontend COMPONENT.wasm");
        return ExitCode::from(2);
    };
    match buildwit_gateway::client::run_in_buildkit(std::path::Path::new(&component)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("buildwit-frontend: {e}");
            ExitCode::FAILURE
        }
    }
}
