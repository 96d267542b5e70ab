//! `buildwit du` and `buildwit prune` on a real root: a Dockerfile build offline (a local
//! context copied onto scratch), then buildctl's output and what prune removes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(root: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_buildwit"))
        .args(args)
        .env("BUILDWIT_ROOT", root)
        .env("BUILDWIT_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn empty_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/empty.toml")
}

#[test]
fn du_lists_records_and_prune_frees_them() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY big.txt /big.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("big.txt"), vec![b'x'; 300_000]).unwrap();
    let (root, config) = (root.path(), empty_config());
    ok(run(root, &config, &["build", ctx.path().to_str().unwrap()]));

    let du = ok(run(root, &config, &["du"]));
    let lines: Vec<&str> = du.lines().collect();
    assert_eq!(
        lines[0], "ID\t\t\t\tRECLAIMABLE\tSIZE\tLAST ACCESSED",
        "{du}"
    );
    // The context and the copy, each about 300kB, and the totals.
    assert!(
        lines.iter().filter(|l| l.contains("\ttrue\t")).count() >= 2,
        "{du}"
    );
    assert!(du.contains("Reclaimable:\t"), "{du}");
    let total = du
        .lines()
        .find_map(|l| l.strip_prefix("Total:\t\t"))
        .unwrap_or_else(|| panic!("{du}"));
    assert!(total.ends_with("kB") || total.ends_with("MB"), "{du}");

    let verbose = ok(run(root, &config, &["du", "-v"]));
    assert!(verbose.contains("Type:\t\tsource.local\n"), "{verbose}");
    assert!(verbose.contains("Type:\t\tregular\n"), "{verbose}");
    assert!(
        verbose.contains("Description:\t[internal] load build context\n"),
        "{verbose}"
    );
    assert!(verbose.contains("Usage count:\t1\n"), "{verbose}");

    let locals = ok(run(
        root,
        &config,
        &["du", "-v", "--filter", "type==source.local"],
    ));
    assert!(!locals.contains("Type:\t\tregular"), "{locals}");

    // A 48h keep-duration keeps everything just built.
    let kept = ok(run(root, &config, &["prune", "--keep-duration", "48h"]));
    assert_eq!(kept, "Total:\t0B\n");

    // Only the context, listed with --verbose.
    let pruned = ok(run(
        root,
        &config,
        &["prune", "--filter", "type==source.local", "--verbose"],
    ));
    assert!(pruned.contains("Type:\t\tsource.local\n"), "{pruned}");
    assert!(!pruned.contains("Type:\t\tregular"), "{pruned}");
    let freed = pruned.lines().last().unwrap();
    assert!(
        freed.starts_with("Total:\t300") && freed.ends_with("kB"),
        "{pruned}"
    );

    ok(run(root, &config, &["prune", "--all"]));
    let du = ok(run(root, &config, &["du"]));
    assert_eq!(
        du,
        "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\nReclaimable:\t0B\nTotal:\t\t0B\n"
    );

    // Errors name the filter and the flag.
    let out = run(root, &config, &["du", "--filter", "kind==x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid filter \"kind==x\": unknown field \"kind\""),
        "{err}"
    );
    let out = run(root, &config, &["prune", "--max-used-space", "lots"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-used-space") && err.contains("invalid disk space lots"),
        "{err}"
    );
}

#[test]
fn compiled_frontends_are_cache_records() {
    let root = tempfile::tempdir().unwrap();
    let (root, config) = (root.path(), empty_config());
    let plugin = format!("{}/toml-spec.wasm", buildwit_frontend::BUILT_FRONTENDS_DIR);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toml-spec");
    let build = || {
        ok(run(
            root,
            &config,
            &[
                "build",
                "--frontend-file",
                &plugin,
                example.to_str().unwrap(),
                "--dump-llb",
            ],
        ))
    };
    build();
    let compiled = |root: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(root.join("frontends/compiled"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    };
    assert_eq!(compiled(root).len(), 1);

    let frontends = ok(run(
        root,
        &config,
        &["du", "-v", "--filter", "type==frontend"],
    ));
    assert!(frontends.contains("Type:\t\tfrontend\n"), "{frontends}");
    assert!(
        frontends.contains("Description:\tcompiled frontend component "),
        "{frontends}"
    );
    let size = std::fs::metadata(&compiled(root)[0]).unwrap().len();
    assert!(size > 100_000, "{size}");

    // Kept without --all, as BuildKit keeps frontend records; removed with it.
    let kept = ok(run(root, &config, &["prune"]));
    assert_eq!(kept, "Total:\t0B\n");
    assert_eq!(compiled(root).len(), 1);
    let pruned = ok(run(root, &config, &["prune", "--all", "--verbose"]));
    assert!(pruned.contains("Type:\t\tfrontend\n"), "{pruned}");
    assert!(compiled(root).is_empty());
    assert!(
        !ok(run(root, &config, &["du", "-v"])).contains("frontend"),
        "nothing left to count"
    );

    // The next build compiles it again.
    build();
    assert_eq!(compiled(root).len(), 1);
}
