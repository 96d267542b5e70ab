//! The example configs BuildKit documents, and the errors a user would make.

use buildwit_config::{
    ConfigError, DiskSpace, default_path, gc_rules, load, load_explicit, load_str,
};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/seeds");

#[test]
fn the_full_example_loads() {
    let loaded = load(std::path::Path::new(&format!("{SEEDS}/buildkitd.toml"))).unwrap();
    let c = &loaded.config;
    assert_eq!(c.root.as_deref(), Some("/var/lib/buildkit"));
    assert_eq!(
        c.insecure_entitlements,
        ["network.host", "security.insecure", "device"]
    );
    assert_eq!(c.grpc.address, ["tcp://0.0.0.0:1234"]);
    assert_eq!(c.grpc.tls.as_ref().unwrap().ca, "/etc/buildkit/tlsca.crt");
    let oci = &c.worker.oci;
    assert_eq!(oci.max_parallelism, Some(4));
    assert_eq!(oci.reserved_space, Some(DiskSpace::percent(30)));
    assert_eq!(oci.min_free_space.unwrap().bytes, 20 << 30);
    assert_eq!(oci.gc_policy.len(), 2);
    assert_eq!(
        oci.gc_policy[0].keep_duration.unwrap().0.as_secs(),
        48 * 3600
    );
    assert_eq!(oci.gc_policy[0].reserved_space.unwrap().bytes, 512 << 20);
    assert_eq!(
        oci.gc_policy[1].reserved_space.unwrap().bytes,
        1_024_000_000
    );
    assert_eq!(oci.labels["foo"], "bar");
    assert_eq!(oci.cni_pool_size, Some(16));
    let ctrd = &c.worker.containerd;
    assert_eq!(
        ctrd.gc_policy[0].keep_duration.unwrap().0.as_secs(),
        172_800
    );
    assert_eq!(
        ctrd.runtime.as_ref().unwrap().options["BinaryName"].as_str(),
        Some("runc")
    );
    let hub = &c.registry["docker.io"];
    assert_eq!(
        hub.mirrors,
        [
            "yourmirror.local:5000",
            "core.harbor.domain/proxy.docker.io"
        ]
    );
    assert_eq!(hub.keypair[0].cert, "/etc/config/cert.pem");
    assert_eq!(c.registry["yourmirror.local:5000"].http, Some(true));
    assert!(c.gateway_enabled() && c.dockerfile_enabled());
    assert!(c.frontend.gateway.allowed_repositories.is_empty());
    assert_eq!(
        c.history_limits(),
        (std::time::Duration::from_secs(172_800), 50)
    );
    assert_eq!(c.dns.as_ref().unwrap().search_domains, ["example.com"]);
    assert_eq!(
        c.system
            .as_ref()
            .unwrap()
            .platforms_cache_max_age
            .unwrap()
            .0
            .as_secs(),
        3600
    );

    // The documented [ghacache.*] tables are not keys BuildKit reads: we say so, with lines.
    let unknown: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert!(unknown.contains(&"ghacache"), "{unknown:?}");
    let gha = loaded
        .warnings
        .iter()
        .find(|w| w.key == "ghacache")
        .unwrap();
    assert!(gha.line > 200, "{gha:?}");
    assert!(
        gha.message.contains("unknown key \"ghacache\""),
        "{}",
        gha.message
    );
}

#[test]
fn the_legacy_example_loads_and_converts() {
    let loaded = load(std::path::Path::new(&format!(
        "{SEEDS}/buildkitd-legacy.toml"
    )))
    .unwrap();
    let oci = &loaded.config.worker.oci;
    assert_eq!(oci.gc_keep_storage.unwrap().bytes, 9000);
    let p = oci.gc_policy[0].normalized();
    assert_eq!(p.reserved_space.unwrap().bytes, 512_000_000);
    assert!(p.keep_bytes.is_none());
    let rules = gc_rules(&oci.gc_config(), 100 << 30);
    assert_eq!(rules[1].reserved_space, 1_024_000_000);
    assert!(rules[1].all);
}

#[test]
fn default_gc_policy_is_buildkits() {
    let gc = buildwit_config::GcConfig::default();
    let rules = gc_rules(&gc, 100 << 30);
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0].filters.len(), 3);
    assert_eq!(rules[0].max_used_space, 512_000_000);
    assert_eq!(rules[0].keep_duration.as_secs(), 48 * 3600);
    assert_eq!(rules[1].keep_duration.as_secs(), 60 * 24 * 3600);
    // 10% of 100 GiB = 11 GB (rounded up to whole GiB, decimal GB), capped at 10 GB.
    assert_eq!(rules[2].reserved_space, 10_000_000_000);
    assert_eq!(rules[2].min_free_space, 21_000_000_000);
    assert_eq!(rules[2].max_used_space, 81_000_000_000);
    assert!(rules[3].all);
    // gckeepstorage becomes the reserved space when nothing else is set.
    let legacy = buildwit_config::GcConfig {
        gc_keep_storage: Some(DiskSpace {
            bytes: 9000,
            percentage: 0,
        }),
        ..Default::default()
    };
    assert_eq!(gc_rules(&legacy, 100 << 30)[3].reserved_space, 9000);
    let off = buildwit_config::GcConfig {
        gc: Some(false),
        ..Default::default()
    };
    assert!(gc_rules(&off, 100 << 30).is_empty());
}

#[test]
fn errors_name_the_key_and_the_line() {
    let text = "root = \"/x\"\n[worker.oci]\n  max-parallelism = \"four\"\n";
    let ConfigError::Invalid { line, message, .. } = load_str(text, "buildkitd.toml").unwrap_err()
    else {
        panic!()
    };
    assert_eq!(line, 3);
    assert!(
        message.starts_with("worker.oci.max-parallelism:"),
        "{message}"
    );

    let err = load_str("[worker.oci]\nreservedSpace = \"lots\"\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("b.toml:2:"), "{err}");
    assert!(err.contains("invalid disk space lots"), "{err}");

    let err = load_str("[history]\nmaxAge = \"2d\"\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid duration 2d"), "{err}");

    let err = load_str("root = \n", "b.toml").unwrap_err().to_string();
    assert!(err.starts_with("b.toml:1:"), "{err}");

    let err = load_str("insecure-entitlements = [\"network.hots\"]\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid entitlement \"network.hots\""),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_warnings_with_lines() {
    let loaded = load_str(
        "[worker.oci]\nmax-parallelism = 2\nmaxParallelism = 3\n",
        "b.toml",
    )
    .unwrap();
    assert_eq!(loaded.config.worker.oci.max_parallelism, Some(2));
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].key, "worker.oci.maxParallelism");
    assert_eq!(loaded.warnings[0].line, 3);
}

#[test]
fn sizes_and_durations_accept_integers() {
    let loaded = load_str(
        "[worker.oci]\nreservedSpace = 20\n[[worker.oci.gcpolicy]]\nkeepDuration = 3600\n",
        "b",
    )
    .unwrap();
    assert_eq!(loaded.config.worker.oci.reserved_space.unwrap().bytes, 20);
    assert_eq!(
        loaded.config.worker.oci.gc_policy[0]
            .keep_duration
            .unwrap()
            .0
            .as_secs(),
        3600
    );
}

#[test]
fn missing_files() {
    assert!(
        load(std::path::Path::new("/nonexistent/buildkitd.toml"))
            .unwrap()
            .config
            == Default::default()
    );
    assert!(load_explicit(std::path::Path::new("/nonexistent/buildkitd.toml")).is_err());
    // This machine runs tests as root or not; either way the path is one of BuildKit's.
    let p = default_path();
    assert!(p.ends_with("buildkit/buildkitd.toml"), "{}", p.display());
}

#[test]
fn prints_as_toml_and_reads_back() {
    let loaded = load(std::path::Path::new(&format!("{SEEDS}/buildkitd.toml"))).unwrap();
    let text = loaded.config.to_toml();
    assert!(text.contains("max-parallelism = 4"), "{text}");
    let again = load_str(&text, "printed").unwrap();
    assert_eq!(again.config, loaded.config);
    assert!(
        again.warnings.iter().all(|w| w.key == "debug"),
        "{:?}",
        again.warnings
    );
}
