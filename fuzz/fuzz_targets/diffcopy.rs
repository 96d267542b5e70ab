//! A BuildKit client's file sync (fsutil's DiffCopy over the session): any walk, with paths
//! that climb out, absolute and dangling symlinks, hard links to anything, data for ids never
//! asked for, sizes that lie, a transfer cut short. The input is a sequence of
//! length-delimited `Packet` messages. Nothing may be written outside the mirror and its
//! staging directory.
#![no_main]

use std::path::Path;

use buildwit_buildkit::proto::fsutil::types::Packet;
use buildwit_buildkit::receive_packets;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let mut packets = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && packets.len() < 512 {
        match Packet::decode_length_delimited(&mut rest) {
            Ok(p) => packets.push(p),
            Err(_) => break,
        }
    }
    // The mirror sits two levels down in a sandbox directory, beside sentinels at each level:
    // an escape (up to two levels, or anywhere in the sandbox) shows as a change of the
    // sandbox's listing outside the mirror and the staging directory.
    let sandbox = tempfile::tempdir().expect("a temporary directory");
    let inner = sandbox.path().join("a/b");
    std::fs::create_dir_all(inner.join("mirror")).unwrap();
    for sentinel in ["sentinel", "a/sentinel", "a/b/sentinel"] {
        std::fs::write(sandbox.path().join(sentinel), b"untouched").unwrap();
    }
    let _ = receive_packets(&inner.join("mirror"), &inner.join("partial"), packets);
    assert_untouched(sandbox.path());
});

/// Everything in the sandbox but the mirror and the staging directory: the sentinels, as
/// they were.
fn assert_untouched(sandbox: &Path) {
    fn list(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{rel}{}", entry.file_name().to_string_lossy());
            if name == "a/b/mirror" || name == "a/b/partial" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                list(&entry.path(), &format!("{name}/"), out);
            }
            out.push(name);
        }
    }
    let mut names = Vec::new();
    list(sandbox, "", &mut names);
    names.sort();
    assert_eq!(
        names,
        ["a", "a/b", "a/b/sentinel", "a/sentinel", "sentinel"],
        "the packets wrote outside the mirror"
    );
    for sentinel in ["sentinel", "a/sentinel", "a/b/sentinel"] {
        assert_eq!(std::fs::read(sandbox.join(sentinel)).unwrap(), b"untouched");
    }
}
