//! `platform=a,b`: one build per platform, one reference each, keyed by platform id, with
//! BuildKit's metadata keys.

mod common;

use buildwit_dockerfile::frontend::Dockerfile;
use buildwit_sdk::llb::Definition;
use buildwit_sdk::testing::run;
use common::{build, gateway, meta_json};

fn names(def: &Definition) -> Vec<String> {
    def.metadata
        .iter()
        .filter_map(|(_, m)| m.description.iter().find(|(k, _)| k == "llb.customname"))
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn one_reference_per_platform() {
    let gw = gateway("FROM scratch\nCOPY a /a\nCMD echo\n")
        .option("platform", "linux/amd64,linux/arm/v7");
    let out = build(&gw);
    assert!(out.definition.is_none());
    let ids: Vec<&str> = out.platforms.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["linux/amd64", "linux/arm/v7"]);
    // Progress names carry the platform.
    assert!(names(&out.platforms[1].1).contains(&"[linux/arm/v7 1/1] COPY a /a".to_string()));
    let amd = meta_json(&out, "containerimage.config/linux/amd64");
    let arm = meta_json(&out, "containerimage.config/linux/arm/v7");
    assert_eq!(amd["architecture"], "amd64");
    assert_eq!(
        (arm["architecture"].as_str(), arm["variant"].as_str()),
        (Some("arm"), Some("v7"))
    );
    assert!(out.metadata_str("containerimage.config").is_none());
    assert_eq!(
        out.metadata_str("refs.platforms").unwrap(),
        r#"{"Platforms":[{"ID":"linux/amd64","Platform":{"architecture":"amd64","os":"linux"}},{"ID":"linux/arm/v7","Platform":{"architecture":"arm","os":"linux","variant":"v7"}}]}"#
    );
    // The build checks run, and warn, once.
    assert_eq!(gw.warnings().len(), 1);
}

#[test]
fn base_configs_per_platform_and_cross_compilation_names() {
    let df = "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETPLATFORM\nRUN make\nFROM busybox\nCOPY --from=build /out /out\n";
    let out = build(&gateway(df).option("platform", "linux/amd64,linux/arm64"));
    let base = meta_json(&out, "containerimage.base.config/linux/arm64");
    assert_eq!(base["architecture"], "amd64");
    let arm = names(&out.platforms[1].1);
    assert!(
        arm.contains(&"[linux/amd64->arm64 build 2/2] RUN make".to_string()),
        "{arm:?}"
    );
    let amd = names(&out.platforms[0].1);
    assert!(
        amd.contains(&"[linux/amd64 build 2/2] RUN make".to_string()),
        "{amd:?}"
    );
}

#[test]
fn single_platform_and_the_multi_platform_flag() {
    let out = build(&gateway("FROM scratch\nCOPY a /a\n"));
    assert!(out.definition.is_some() && out.platforms.is_empty());
    assert!(out.metadata_str("containerimage.config").is_some());
    assert_eq!(
        out.metadata_str("refs.platforms").unwrap(),
        r#"{"Platforms":[{"ID":"linux/amd64","Platform":{"architecture":"amd64","os":"linux"}}]}"#
    );
    // Forced multi-platform shape for one platform.
    let gw = gateway("FROM scratch\nCOPY a /a\n")
        .option("platform", "linux/arm64")
        .option("multi-platform", "true");
    let out = build(&gw);
    assert_eq!(out.platforms.len(), 1);
    assert!(
        out.metadata_str("containerimage.config/linux/arm64")
            .is_some()
    );
    let gw = gateway("FROM scratch\n")
        .option("platform", "linux/amd64,linux/arm64")
        .option("build-arg:BUILDKIT_MULTI_PLATFORM", "0");
    assert_eq!(
        run::<Dockerfile>(&gw).unwrap_err().message,
        "conflicting config: returning multiple target platforms is not allowed"
    );
    let gw = gateway("FROM scratch\n").option("platform", "linux/amd64,nope");
    assert!(
        run::<Dockerfile>(&gw)
            .unwrap_err()
            .message
            .starts_with("failed to parse target platform nope: ")
    );
}
