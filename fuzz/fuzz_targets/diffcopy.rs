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
    // The mirror sits in a sandbox directory beside a sentinel: an escape shows as a change
    // of the sandbox's listing.
    let sandbox = tempfile::tempdir().expect("a temporary directory");
    let mirror = sandbox.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    std::fs::write(sandbox.path().join("sentinel"), b"untouched").unwrap();
    let _ = receive_packets(&mirror, &sandbox.path().join("partial"), packets);
    assert_untouched(sandbox.path());
});

fn assert_untouched(sandbox: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(sandbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "partial")
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["mirror", "sentinel"],
        "the packets wrote outside the mirror"
    );
    assert_eq!(
        std::fs::read(sandbox.join("sentinel")).unwrap(),
        b"untouched"
    );
}
