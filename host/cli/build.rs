//! Whether `../shared` is here for the tests (see `tests/shared_probe.rs`).

#[path = "../../tests/shared_probe.rs"]
mod shared_probe;

fn main() {
    shared_probe::probe(&["peers/install.sh", "conformance/dockerfile", "seeds"]);
}
