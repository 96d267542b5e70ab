//! Layer tarballs from registries and `ADD` archives: tar headers (long names, PAX, huge
//! sizes), whiteouts, hard links, symlinks and `..` escapes. Whatever the archive says,
//! nothing may be written outside the destination directory.
#![no_main]

use std::path::Path;

use buildwit_worker::unpack::{Compression, unpack_archive, unpack_layer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, tar)) = data.split_first() else {
        return;
    };
    // The destination sits in a sandbox directory beside a sentinel: an escape shows as a
    // change of the sandbox's listing.
    let sandbox = tempfile::tempdir().expect("a temporary directory");
    let dest = sandbox.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(sandbox.path().join("sentinel"), b"untouched").unwrap();
    let _ = if which & 1 == 0 {
        unpack_layer(tar, "application/vnd.oci.image.layer.v1.tar", &dest).map(|_| ())
    } else {
        unpack_archive(tar, Compression::None, &dest).map(|_| ())
    };
    assert_untouched(sandbox.path());
});

fn assert_untouched(sandbox: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(sandbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dest", "sentinel"],
        "the archive wrote outside its destination"
    );
    assert_eq!(
        std::fs::read(sandbox.join("sentinel")).unwrap(),
        b"untouched"
    );
}
