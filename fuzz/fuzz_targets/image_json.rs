//! Image JSON from registries and frontends: manifests and indexes as a registry's answer is
//! read (with platform choice), cache manifests and cache configs (`--cache-from`), and an
//! image config from a frontend written into an exported image. The first byte picks one.
#![no_main]

use std::sync::OnceLock;

use buildwit_exporter::ImageSpec;
use buildwit_exporter::cache::{CacheSource, parse_cache_config, parse_cache_manifest};
use buildwit_worker::{ContentStore, Snapshot};
use libfuzzer_sys::fuzz_target;

fn content() -> &'static ContentStore {
    static STORE: OnceLock<(tempfile::TempDir, ContentStore)> = OnceLock::new();
    let (_, store) = STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = ContentStore::open(dir.path()).expect("a content store");
        (dir, store)
    });
    store
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            buildwit_registry::fuzz_manifest(body);
        }
        1 => {
            // A manifest, then its config after the first NUL.
            let (manifest, config) = match body.iter().position(|&b| b == 0) {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &body[..0]),
            };
            if let Ok(CacheSource::Cache(m)) = parse_cache_manifest(manifest, "fuzz") {
                let _ = parse_cache_config(config, &m, "fuzz");
            }
        }
        _ => {
            let spec = ImageSpec::new(Snapshot { layers: Vec::new() }, body.to_vec());
            let _ = buildwit_exporter::build_image(content(), &spec);
        }
    }
});
