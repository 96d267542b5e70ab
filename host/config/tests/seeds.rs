//! The example configs BuildKit documents, and the mistakes a user would make.

use std::path::Path;

use buildwit_config::{
    Config, ConfigError, DEFAULT_GC_FILTER, DiskSpace, Duration, GcConfig, GcSettings, Loaded,
    default_gc_policy, default_path, gc_rules, load, load_explicit, load_str,
};

const SEED: &str = concat!(env!("BUILDWIT_SHARED_DIR"), "/seeds/buildkitd.toml");
const LEGACY_SEED: &str = concat!(env!("BUILDWIT_SHARED_DIR"), "/seeds/buildkitd-legacy.toml");

fn seed() -> Loaded {
    load(Path::new(SEED)).unwrap()
}

fn legacy() -> Loaded {
    load(Path::new(LEGACY_SEED)).unwrap()
}

const GIB: i64 = 1 << 30;

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn the_full_example_loads() {
    let loaded = seed();
    assert_eq!(loaded.source.as_deref(), Some(Path::new(SEED)));
    let c = &loaded.config;
    assert_eq!(c.debug, Some(true));
    assert_eq!(c.trace, Some(true));
    assert_eq!(c.root.as_deref(), Some("/var/lib/buildkit"));
    assert_eq!(
        c.insecure_entitlements,
        ["network.host", "security.insecure", "device"]
    );
    assert_eq!(
        c.provenance_env_dir.as_deref(),
        Some("/etc/buildkit/provenance.d")
    );
    assert_eq!(c.log.format.as_deref(), Some("text"));
    let dns = c.dns.as_ref().unwrap();
    assert_eq!(dns.nameservers, ["1.1.1.1", "8.8.8.8"]);
    assert_eq!(dns.options, ["edns0"]);
    assert_eq!(dns.search_domains, ["example.com"]);
    assert_eq!(c.grpc.address, ["tcp://0.0.0.0:1234"]);
    assert_eq!(c.grpc.debug_address.as_deref(), Some("0.0.0.0:6060"));
    assert_eq!((c.grpc.uid, c.grpc.gid), (Some(0), Some(0)));
    let tls = c.grpc.tls.as_ref().unwrap();
    assert_eq!(tls.cert, "/etc/buildkit/tls.crt");
    assert_eq!(tls.key, "/etc/buildkit/tls.key");
    assert_eq!(tls.ca, "/etc/buildkit/tlsca.crt");
    assert_eq!(
        c.otel.socket_path.as_deref(),
        Some("/run/buildkit/otel-grpc.sock")
    );
    assert_eq!(c.cdi.disabled, Some(true));
    assert_eq!(c.cdi.spec_dirs.len(), 3);
    let history = c.history.as_ref().unwrap();
    assert_eq!(history.max_age, Some(Duration::from_secs(172_800)));
    assert_eq!(history.max_entries, Some(50));

    let oci = &c.worker.oci;
    assert_eq!(oci.enabled, Some(true));
    assert_eq!(oci.platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(oci.snapshotter.as_deref(), Some("auto"));
    assert_eq!(oci.rootless, Some(false));
    assert_eq!(oci.no_process_sandbox, Some(false));
    assert_eq!(oci.gc, Some(true));
    assert_eq!(oci.reserved_space, Some(DiskSpace::percent(30)));
    assert_eq!(oci.max_used_space, Some(DiskSpace::percent(60)));
    assert_eq!(oci.min_free_space, Some(DiskSpace::bytes(20 * GIB)));
    assert_eq!(oci.binary.as_deref(), Some(""));
    assert_eq!(oci.apparmor_profile.as_deref(), Some(""));
    assert_eq!(oci.max_parallelism, Some(4));
    assert_eq!(oci.cni_pool_size, Some(16));
    assert_eq!(oci.labels["foo"], "bar");
    assert_eq!(oci.gc_policy.len(), 2);
    let p0 = &oci.gc_policy[0];
    assert_eq!(p0.reserved_space, Some(DiskSpace::bytes(536_870_912))); // "512MB"
    assert_eq!(p0.max_used_space, Some(DiskSpace::bytes(GIB))); // "1GB"
    assert_eq!(p0.min_free_space, Some(DiskSpace::bytes(10 * GIB))); // "10GB"
    assert_eq!(p0.keep_duration, Some(Duration::from_secs(48 * 3600)));
    assert_eq!(
        p0.filters,
        [
            "type==source.local",
            "type==exec.cachemount",
            "type==source.git.checkout"
        ]
    );
    assert!(!p0.all);
    let p1 = &oci.gc_policy[1];
    assert!(p1.all);
    assert_eq!(p1.reserved_space, Some(DiskSpace::bytes(1_024_000_000)));

    let ctrd = &c.worker.containerd;
    assert_eq!(
        ctrd.address.as_deref(),
        Some("/run/containerd/containerd.sock")
    );
    assert_eq!(ctrd.namespace.as_deref(), Some("buildkit"));
    assert_eq!(ctrd.default_cgroup_parent.as_deref(), Some("buildkit"));
    assert_eq!(ctrd.max_parallelism, Some(4));
    let runtime = ctrd.runtime.as_ref().unwrap();
    assert_eq!(runtime.name, "io.containerd.runc.v2");
    assert_eq!(runtime.path, "/path/to/containerd/runc/shim");
    assert_eq!(runtime.options["BinaryName"].as_str(), Some("runc"));
    assert_eq!(
        ctrd.gc_policy[0].keep_duration,
        Some(Duration::from_secs(172_800))
    );
    assert_eq!(
        ctrd.gc_policy[0].reserved_space,
        Some(DiskSpace::bytes(512_000_000))
    );

    let hub = &c.registry["docker.io"];
    assert_eq!(
        hub.mirrors,
        [
            "yourmirror.local:5000",
            "core.harbor.domain/proxy.docker.io"
        ]
    );
    assert_eq!((hub.http, hub.insecure), (Some(true), Some(true)));
    assert_eq!(hub.ca, ["/etc/config/myca.pem"]);
    assert_eq!(hub.keypair.len(), 1);
    assert_eq!(hub.keypair[0].key, "/etc/config/key.pem");
    assert_eq!(hub.keypair[0].cert, "/etc/config/cert.pem");
    assert_eq!(c.registry["yourmirror.local:5000"].http, Some(true));

    assert_eq!(c.frontend.dockerfile.enabled, Some(true));
    assert_eq!(c.frontend.gateway.enabled, Some(true));
    assert!(c.frontend.gateway.allowed_repositories().is_empty());
    assert_eq!(
        c.system.as_ref().unwrap().platforms_cache_max_age,
        Some(Duration::from_secs(3600))
    );
    // The seed uses the documented (wrong) [ghacache] tables, not [cache.gha].
    assert_eq!(c.cache.gha, None);
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn the_seeds_ghacache_tables_are_unknown_keys() {
    let loaded = seed();
    let keys: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ghacache.sign.cmd",
            "ghacache.verify.required",
            "ghacache.verify.policy.timestampThreshold",
            "ghacache.verify.policy.tlogThreshold",
            "ghacache.verify.policy.certificateIssuer",
            "ghacache.verify.policy.subjectAlternativeName",
            "ghacache.verify.policy.buildSignerURI",
        ]
    );
    let cmd = &loaded.warnings[0];
    assert_eq!(cmd.line, 205);
    assert_eq!(
        cmd.to_string(),
        format!("{SEED}: unknown key \"ghacache.sign.cmd\" at line 205 (ignored)")
    );
    assert_eq!(loaded.warnings[6].line, 214);
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn the_legacy_example_loads_and_converts() {
    let loaded = legacy();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    assert_eq!(
        c.insecure_entitlements,
        ["network.host", "security.insecure"]
    );
    let oci = &c.worker.oci;
    assert_eq!(oci.gc_keep_storage, Some(DiskSpace::bytes(9000)));
    assert_eq!(oci.reserved_space, None);
    assert_eq!(
        oci.gc_policy[0].keep_bytes,
        Some(DiskSpace::bytes(512_000_000))
    );
    assert_eq!(oci.gc_policy[0].reserved_space, None);

    // keepBytes → reservedSpace, per rule.
    let p = oci.gc_policy[0].normalized();
    assert_eq!(p.reserved_space, Some(DiskSpace::bytes(512_000_000)));
    assert_eq!(p.keep_bytes, None);
    let rules = gc_rules(oci, 100 * GIB);
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].reserved_space, 512_000_000);
    assert_eq!(rules[0].keep_duration.as_secs(), 172_800);
    assert_eq!(rules[1].reserved_space, 1_024_000_000);
    assert!(rules[1].all);

    // The effective config converts both legacy keys.
    let eff = c.effective();
    let oci = &eff.worker.oci;
    assert_eq!(oci.gc_keep_storage, None);
    assert_eq!(oci.reserved_space, Some(DiskSpace::bytes(9000)));
    assert_eq!(
        oci.gc_policy[1].reserved_space,
        Some(DiskSpace::bytes(1_024_000_000))
    );
    assert_eq!(oci.gc_policy[1].keep_bytes, None);
    let ctrd = &eff.worker.containerd;
    assert_eq!(ctrd.reserved_space, Some(DiskSpace::bytes(9000)));
    assert_eq!(
        ctrd.gc_policy[0].reserved_space,
        Some(DiskSpace::bytes(512_000_000))
    );
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn gckeepstorage_feeds_the_default_policy() {
    let mut oci = legacy().config.worker.oci;
    oci.gc_policy.clear();
    let policy = default_gc_policy(&oci, 100 * GIB);
    assert_eq!(policy.len(), 4);
    for p in &policy[1..] {
        assert_eq!(p.reserved_space, Some(DiskSpace::bytes(9000)));
        assert_eq!(p.max_used_space, None);
        assert_eq!(p.min_free_space, None);
    }
    // gckeepstorage is ignored once any limit is set.
    oci.min_free_space = Some(DiskSpace::percent(5));
    let policy = default_gc_policy(&oci, 100 * GIB);
    assert_eq!(policy[3].reserved_space, None);
    assert_eq!(policy[3].min_free_space, Some(DiskSpace::percent(5)));
}

#[test]
fn default_gc_policy_numbers() {
    let gc = GcConfig::default();
    // 100 GiB disk.
    let policy = default_gc_policy(&gc, 100 * GIB);
    assert_eq!(policy.len(), 4);
    assert_eq!(policy[0].filters, [DEFAULT_GC_FILTER]);
    assert_eq!(
        DEFAULT_GC_FILTER,
        "type==source.local,type==exec.cachemount,type==source.git.checkout"
    );
    assert_eq!(policy[0].keep_duration, Some(Duration::from_secs(172_800)));
    assert_eq!(
        policy[0].max_used_space,
        Some(DiskSpace::bytes(512_000_000))
    );
    assert_eq!(policy[0].reserved_space, None);
    assert_eq!(
        policy[1].keep_duration,
        Some(Duration::from_secs(60 * 24 * 3600))
    );
    assert_eq!(policy[2].keep_duration, None);
    assert!(!policy[2].all && policy[3].all);
    // 10% of 100 GiB → 11e9 > 10e9: capped, in bytes.
    assert_eq!(
        policy[1].reserved_space,
        Some(DiskSpace::bytes(10_000_000_000))
    );
    // 80% of 100 GiB → 81e9 ≤ 100e9: kept as a percentage.
    assert_eq!(policy[1].max_used_space, Some(DiskSpace::percent(80)));
    assert_eq!(policy[1].min_free_space, Some(DiskSpace::percent(20)));

    let rules = gc_rules(&gc, 100 * GIB);
    assert_eq!(rules[0].max_used_space, 512_000_000);
    assert_eq!(rules[0].keep_duration.as_secs(), 48 * 3600);
    for r in &rules[1..] {
        assert_eq!(r.reserved_space, 10_000_000_000);
        assert_eq!(r.max_used_space, 81_000_000_000);
        assert_eq!(r.min_free_space, 21_000_000_000);
    }

    // 1 TiB disk: both caps apply.
    let rules = gc_rules(&gc, 1 << 40);
    assert_eq!(rules[3].reserved_space, 10_000_000_000);
    assert_eq!(rules[3].max_used_space, 100_000_000_000);
    assert_eq!(rules[3].min_free_space, 205_000_000_000);

    // 20 GiB disk: no cap.
    let rules = gc_rules(&gc, 20 * GIB);
    assert_eq!(rules[2].reserved_space, 3_000_000_000);
    assert_eq!(rules[2].max_used_space, 17_000_000_000);
    assert_eq!(rules[2].min_free_space, 5_000_000_000);

    // Unknown disk size: every percentage is 2e9.
    let rules = gc_rules(&gc, 0);
    assert_eq!(rules[1].reserved_space, 2_000_000_000);
    assert_eq!(rules[1].max_used_space, 2_000_000_000);
    assert_eq!(rules[1].min_free_space, 2_000_000_000);

    // gc = false: no rules at all.
    let off = GcConfig {
        gc: Some(false),
        ..Default::default()
    };
    assert!(gc_rules(&off, 100 * GIB).is_empty());
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn configured_worker_limits_feed_the_default_policy() {
    let mut oci = seed().config.worker.oci;
    oci.gc_policy.clear();
    let rules = gc_rules(&oci, 100 * GIB);
    assert_eq!(rules.len(), 4);
    // 30% of 100 GiB → 31e9, 60% → 61e9, "20GB" → 20 GiB.
    assert_eq!(rules[1].reserved_space, 31_000_000_000);
    assert_eq!(rules[1].max_used_space, 61_000_000_000);
    assert_eq!(rules[1].min_free_space, 20 * GIB);
    assert_eq!(oci.gc_config().gc_policy.len(), 0);
}

#[test]
fn type_errors_name_the_key_line_and_column() {
    let text = "root = \"/x\"\n[worker.oci]\n  max-parallelism = \"four\"\n";
    let err = load_str(text, "buildkitd.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "buildkitd.toml:3:21: worker.oci.max-parallelism: expected an integer, found a string"
    );
    let ConfigError::Invalid {
        line, column, key, ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!((line, column), (3, 21));
    assert_eq!(key.as_deref(), Some("worker.oci.max-parallelism"));

    let err = load_str("[grpc]\naddress = \"tcp://x\"\n", "b.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.toml:2:11: grpc.address: expected an array, found a string"
    );
    let err = load_str("[registry.\"docker.io\"]\nhttp = 1\n", "b.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.toml:2:8: registry.\"docker.io\".http: expected a boolean, found an integer"
    );
}

#[test]
fn size_and_duration_errors_name_the_key() {
    let err = load_str("[worker.oci]\nreservedSpace = \"lots\"\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "b.toml:2:17: worker.oci.reservedSpace: invalid disk space lots"
    );
    let err = load_str("[worker.oci]\nminFreeSpace = \"10.5%\"\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("invalid disk space 10.5%"), "{err}");
    let err = load_str("[worker.oci]\nmaxUsedSpace = -1\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("worker.oci.maxUsedSpace: invalid disk space -1"),
        "{err}"
    );
    let err = load_str(
        "[[worker.oci.gcpolicy]]\nall = true\n[[worker.oci.gcpolicy]]\nkeepDuration = \"2d\"\n",
        "b.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "b.toml:4:16: worker.oci.gcpolicy[1].keepDuration: invalid duration 2d"
    );
    let err = load_str("[history]\nmaxAge = \"2d\"\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("history.maxAge: invalid duration 2d"), "{err}");
}

#[test]
fn syntax_errors_have_positions() {
    let err = load_str("root = \n", "b.toml").unwrap_err();
    let ConfigError::Invalid { line, column, .. } = err else {
        panic!("{err}")
    };
    assert_eq!((line, column), (1, 8));
    let err = load_str("[log]\nformat = \"x\"\n[log]\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("b.toml:3:"), "{err}");
}

#[test]
fn entitlements_are_checked() {
    let err = load_str(
        "insecure-entitlements = [\"device\", \"network.hots\"]\n",
        "b.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "b.toml:1:36: insecure-entitlements: invalid entitlement \"network.hots\" \
         (allowed: security.insecure, network.host, device)"
    );
    let c = Config {
        insecure_entitlements: vec!["security.insecure".into(), "bogus".into()],
        ..Default::default()
    };
    let err = c.validate_entitlements().unwrap_err();
    assert!(
        err.contains("insecure-entitlements") && err.contains("\"bogus\""),
        "{err}"
    );

    // `device` is allowed automatically unless CDI is disabled.
    let c = load_str("insecure-entitlements = [\"network.host\"]\n", "b")
        .unwrap()
        .config;
    assert!(c.validate_entitlements().is_ok());
    assert_eq!(c.allowed_entitlements(), ["network.host", "device"]);
    let c = load_str(
        "insecure-entitlements = [\"network.host\"]\n[cdi]\ndisabled = true\n",
        "b",
    )
    .unwrap()
    .config;
    assert_eq!(c.allowed_entitlements(), ["network.host"]);
}

#[test]
fn unknown_keys_are_warnings_with_full_keys_and_lines() {
    let text = "[worker.oci]\nmax-parallelism = 2\nmaxParallelism = 3\n\
                [[worker.oci.gcpolicy]]\nkeep = 1\n\
                [registry.\"a.io\"]\nmirror = [\"m\"]\n\
                [gc]\nenabled = true\n\
                [empty]\n";
    let loaded = load_str(text, "b.toml").unwrap();
    assert_eq!(loaded.config.worker.oci.max_parallelism, Some(2));
    let got: Vec<(&str, usize)> = loaded
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.line))
        .collect();
    assert_eq!(
        got,
        [
            ("worker.oci.maxParallelism", 3),
            ("worker.oci.gcpolicy[0].keep", 5),
            ("registry.\"a.io\".mirror", 7),
            ("gc.enabled", 9),
            ("empty", 10),
        ]
    );
    assert_eq!(
        loaded.warnings[0].to_string(),
        "b.toml: unknown key \"worker.oci.maxParallelism\" at line 3 (ignored)"
    );
}

#[test]
fn sizes_and_durations_accept_integers() {
    let loaded = load_str(
        "[worker.oci]\nreservedSpace = 20\n[[worker.oci.gcpolicy]]\nkeepDuration = 3600\n\
         [system]\nplatformsCacheMaxAge = \"1h30m\"\n",
        "b",
    )
    .unwrap();
    let oci = &loaded.config.worker.oci;
    assert_eq!(oci.reserved_space, Some(DiskSpace::bytes(20)));
    assert_eq!(
        oci.gc_policy[0].keep_duration,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        loaded.config.system.unwrap().platforms_cache_max_age,
        Some(Duration::from_secs(5400))
    );
}

#[test]
fn cache_gha_is_the_real_table() {
    let loaded = load_str(
        "[cache.gha.sign]\ncommand = [\"cosign\", \"sign-blob\"]\n\
         [cache.gha.verify]\nrequired = true\n\
         [cache.gha.verify.policy]\ntimestampThreshold = 1\ntlogThreshold = 2\n\
         certificateIssuer = \"https://token.actions.githubusercontent.com\"\n",
        "b",
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let gha = loaded.config.cache.gha.unwrap();
    assert_eq!(gha.sign.unwrap().command, ["cosign", "sign-blob"]);
    let verify = gha.verify.unwrap();
    assert!(verify.required);
    let policy = verify.policy.unwrap();
    assert_eq!(policy.timestamp_threshold, Some(1));
    assert_eq!(policy.tlog_threshold, Some(2));
    assert_eq!(
        policy.certificate["certificateIssuer"].as_str(),
        Some("https://token.actions.githubusercontent.com")
    );
}

#[test]
fn allowed_repositories_are_raw() {
    let c = load_str(
        "[frontend.\"gateway.v0\"]\nallowedRepositories = [\"docker.io/docker/dockerfile\", \"ghcr.io/x/y\"]\n\
         [frontend.\"dockerfile.v0\"]\nenabled = false\n",
        "b",
    )
    .unwrap()
    .config;
    assert_eq!(
        c.frontend.gateway.allowed_repositories(),
        ["docker.io/docker/dockerfile", "ghcr.io/x/y"]
    );
    assert!(c.gateway_enabled());
    assert!(!c.dockerfile_enabled());
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn defaults() {
    let c = Config::with_defaults();
    assert_eq!(c.root.as_deref(), Some("/var/lib/buildwit"));
    assert_eq!(c.grpc.address, ["unix:///run/buildwit/buildwitd.sock"]);
    let h = c.history.as_ref().unwrap();
    assert_eq!(h.max_age, Some(Duration::from_secs(48 * 3600)));
    assert_eq!(h.max_entries, Some(50));
    assert_eq!(c.frontend.dockerfile.enabled, Some(true));
    assert_eq!(c.frontend.gateway.enabled, Some(true));
    assert_eq!(c.worker.oci.gc, Some(true));
    assert_eq!(c.worker.oci.network_mode.as_deref(), Some("auto"));
    assert_eq!(
        c.worker.oci.cni_config_path.as_deref(),
        Some("/etc/buildkit/cni.json")
    );
    assert_eq!(
        c.worker.oci.cni_binary_path.as_deref(),
        Some("/opt/cni/bin")
    );
    assert_eq!(c.worker.oci.max_parallelism, None);
    assert_eq!(
        c.cdi.spec_dirs,
        ["/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi"]
    );
    assert_eq!(c.root(), Path::new("/var/lib/buildwit"));
    assert_eq!(
        Config::default().history_limits(),
        (std::time::Duration::from_secs(172_800), 50)
    );

    // Values that are set are kept.
    let s = seed().config.effective();
    assert_eq!(s.root.as_deref(), Some("/var/lib/buildkit"));
    assert_eq!(s.grpc.address, ["tcp://0.0.0.0:1234"]);
    assert_eq!(s.worker.oci.max_parallelism, Some(4));
    assert_eq!(s.cdi.disabled, Some(true));
}

#[test]
fn missing_files() {
    let missing = Path::new("/nonexistent/buildkitd.toml");
    let loaded = load(missing).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.source, None);
    let err = load_explicit(missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/buildkitd.toml"),
        "{err}"
    );
    // Whether tests run as root or not, the path is one of BuildKit's.
    let p = default_path();
    assert!(p.ends_with("buildkit/buildkitd.toml"), "{}", p.display());
}

#[cfg_attr(
    no_shared,
    ignore = "needs ../shared (set BUILDWIT_SHARED to its path), absent from this checkout"
)]
#[test]
fn prints_as_toml_and_reads_back() {
    for loaded in [seed(), legacy()] {
        let c = &loaded.config;
        let text = c.to_toml();
        assert!(text.contains("max-parallelism = 4"), "{text}");
        assert!(text.contains("insecure-entitlements = "), "{text}");
        let again = load_str(&text, "printed").unwrap();
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        assert_eq!(&again.config, c);

        let eff = c.effective();
        let again = load_str(&eff.to_toml(), "printed").unwrap();
        assert_eq!(again.config, eff);
    }
    let text = seed().config.to_toml();
    assert!(text.contains("reservedSpace = \"30%\""), "{text}");
    assert!(text.contains("keepDuration = \"48h\""), "{text}");
    assert!(text.contains("[registry.\"docker.io\"]"), "{text}");
    assert!(text.contains("[frontend.\"gateway.v0\"]"), "{text}");
    let defaults = Config::with_defaults().to_toml();
    assert!(defaults.contains("maxAge = \"48h\""), "{defaults}");
}
