//! One test per build-check rule, through the `frontend.lint` subrequest (messages, lines
//! and URLs as BuildKit's), plus the check options and the warnings of normal builds.

mod common;

use buildwit_sdk::testing::MemoryGateway;
use common::{build, gateway, meta_json};
use serde_json::Value;

/// `(rule, detail, first line)` of every finding of `frontend.lint`.
fn lint_gw(gw: MemoryGateway) -> Vec<(String, String, u64)> {
    let out = build(&gw.option("requestid", "frontend.lint"));
    let v = meta_json(&out, "result.json");
    assert!(
        v.get("buildError").is_none(),
        "unexpected build error: {}",
        v["buildError"]
    );
    v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    (
                        w["ruleName"].as_str().unwrap().to_string(),
                        w["detail"].as_str().unwrap().to_string(),
                        w["location"]["ranges"][0]["start"]["line"]
                            .as_u64()
                            .unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn lint(df: &str) -> Vec<(String, String, u64)> {
    lint_gw(gateway(df))
}

fn only(df: &str, rule: &str) -> Vec<(String, u64)> {
    lint(df)
        .into_iter()
        .filter(|(r, ..)| r == rule)
        .map(|(_, d, l)| (d, l))
        .collect()
}

fn one(detail: &str, line: u64) -> Vec<(String, u64)> {
    vec![(detail.to_string(), line)]
}

#[test]
fn stage_name_casing() {
    assert_eq!(
        only("FROM scratch AS Base\n", "StageNameCasing"),
        one("Stage name 'Base' should be lowercase", 1)
    );
    assert!(only("FROM scratch AS base\n", "StageNameCasing").is_empty());
}

#[test]
fn from_as_casing() {
    assert_eq!(
        only("FROM scratch as base\n", "FromAsCasing"),
        one("'as' and 'FROM' keywords' casing do not match", 1)
    );
    assert_eq!(
        only("from scratch AS base\n", "FromAsCasing"),
        one("'AS' and 'from' keywords' casing do not match", 1)
    );
    // A mixed-case FROM is ConsistentInstructionCasing's business, not this rule's.
    assert!(only("From scratch as base\n", "FromAsCasing").is_empty());
}

#[test]
fn no_empty_continuation() {
    // BuildKit points at the last line of the instruction.
    assert_eq!(
        only(
            "FROM scratch\nLABEL a=b \\\n\n  c=d\n",
            "NoEmptyContinuation"
        ),
        one("Empty continuation line", 4)
    );
}

#[test]
fn consistent_instruction_casing() {
    assert_eq!(
        only(
            "FROM scratch\nlabel a=b\nLABEL c=d\n",
            "ConsistentInstructionCasing"
        ),
        one(
            "Command 'label' should match the case of the command majority (uppercase)",
            2
        )
    );
    // Global ARGs before the first FROM are not counted.
    assert!(
        only(
            "arg a=1\narg b=2\nFROM scratch\nLABEL c=d\n",
            "ConsistentInstructionCasing"
        )
        .is_empty()
    );
}

#[test]
fn duplicate_stage_name() {
    assert_eq!(
        only(
            "FROM scratch AS a\nFROM scratch AS a\n",
            "DuplicateStageName"
        ),
        one(
            "Duplicate stage name \"a\", stage names should be unique",
            2
        )
    );
}

#[test]
fn reserved_stage_name() {
    assert_eq!(
        only("FROM scratch AS context\n", "ReservedStageName"),
        one(
            "Stage name should not use the same name as reserved stage \"context\"",
            1
        )
    );
}

#[test]
fn json_args_recommended() {
    assert_eq!(
        only("FROM scratch\nENTRYPOINT echo\n", "JSONArgsRecommended"),
        one(
            "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals",
            2
        )
    );
    // The instruction is named as written.
    assert_eq!(
        only("FROM scratch\ncmd echo\n", "JSONArgsRecommended"),
        one(
            "JSON arguments recommended for cmd to prevent unintended behavior related to OS signals",
            2
        )
    );
    // With a SHELL the shell form is deliberate.
    assert!(
        only(
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo\n",
            "JSONArgsRecommended"
        )
        .is_empty()
    );
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        only("FROM scratch\nMAINTAINER me\n", "MaintainerDeprecated"),
        one(
            "Maintainer instruction is deprecated in favor of using label",
            2
        )
    );
}

#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        only("FROM ${BASE:-scratch}\n", "UndefinedArgInFrom"),
        one("FROM argument 'BASE' is not declared", 1)
    );
    // A global ARG without a value counts as declared, and is suggested.
    assert_eq!(
        only("ARG BAS\nFROM ${BASE:-scratch}\n", "UndefinedArgInFrom"),
        one(
            "FROM argument 'BASE' is not declared (did you mean BAS?)",
            2
        )
    );
    assert!(only("ARG BASE\nFROM ${BASE:-scratch}\n", "UndefinedArgInFrom").is_empty());
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        only(
            "FROM scratch\nWORKDIR app\nWORKDIR /x\nWORKDIR y\n",
            "WorkdirRelativePath"
        ),
        one(
            "Relative workdir \"app\" can have unexpected results if the base image changes",
            2
        )
    );
    // Expanded first: `$HOME` is absolute once set.
    assert!(
        only(
            "FROM scratch\nENV HOME=/root\nWORKDIR $HOME/app\n",
            "WorkdirRelativePath"
        )
        .is_empty()
    );
    // An absolute WORKDIR in the base stage covers the stages built on it.
    assert!(
        only(
            "FROM scratch AS a\nWORKDIR /a\nFROM a\nWORKDIR b\n",
            "WorkdirRelativePath"
        )
        .is_empty()
    );
}

#[test]
fn undefined_var() {
    let df = "ARG G=1\nFROM scratch\nARG FOO\nENV A=$FOO B=$BAR\nCOPY $PAHT /x\nLABEL g=$G\n";
    assert_eq!(
        only(df, "UndefinedVar"),
        vec![
            ("Usage of undefined variable '$BAR'".to_string(), 4),
            (
                "Usage of undefined variable '$PAHT' (did you mean $PATH?)".to_string(),
                5
            ),
            // A global ARG must be redeclared in the stage; the suggestion comes from the
            // stage's environment.
            (
                "Usage of undefined variable '$G' (did you mean $A?)".to_string(),
                6
            ),
        ]
    );
    // Mount options are expanded too; RUN's command is left to the shell.
    assert_eq!(
        only(
            "FROM scratch\nRUN --mount=type=secret,id=$SID,target=/s echo $NOTCHECKED\n",
            "UndefinedVar"
        ),
        one("Usage of undefined variable '$SID'", 2)
    );
}

#[test]
fn multiple_instructions_disallowed() {
    // Reported at the instruction that is overridden.
    assert_eq!(
        only(
            "FROM scratch\nCMD [\"a\"]\nHEALTHCHECK NONE\nCMD [\"b\"]\nHEALTHCHECK NONE\n",
            "MultipleInstructionsDisallowed"
        ),
        vec![
            (
                "Multiple CMD instructions should not be used in the same stage because only the last one will be used".to_string(),
                2
            ),
            (
                "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used".to_string(),
                3
            ),
        ]
    );
}

#[test]
fn legacy_key_value_format() {
    assert_eq!(
        only("FROM scratch\nENV a b\nLABEL c d\n", "LegacyKeyValueFormat"),
        vec![
            (
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                    .to_string(),
                2
            ),
            (
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                    .to_string(),
                3
            ),
        ]
    );
}

#[test]
fn invalid_base_image_platform() {
    // The fixture busybox is linux/amd64 only; the stage name avoids the const-platform rule.
    let df = "FROM --platform=linux/arm64 busybox AS build-arm64\n";
    assert_eq!(
        only(df, "InvalidBaseImagePlatform"),
        one(
            "Base image busybox was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build",
            1
        )
    );
    // BuildKit documents this rule without a URL.
    let out = build(&gateway(df).option("requestid", "frontend.lint"));
    let v = meta_json(&out, "result.json");
    assert!(v["warnings"][0].get("url").is_none());
}

#[test]
fn redundant_target_platform() {
    assert_eq!(
        only(
            "FROM --platform=$TARGETPLATFORM scratch\n",
            "RedundantTargetPlatform"
        ),
        one(
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            1
        )
    );
    assert!(
        only(
            "FROM --platform=$BUILDPLATFORM scratch\n",
            "RedundantTargetPlatform"
        )
        .is_empty()
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    assert_eq!(
        only(
            "FROM scratch\nARG API_KEY\nENV DB_PASSWORD=x PUBLIC_KEY=y\n",
            "SecretsUsedInArgOrEnv"
        ),
        vec![
            (
                "Do not use ARG or ENV instructions for sensitive data (ARG \"API_KEY\")"
                    .to_string(),
                2
            ),
            (
                "Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")"
                    .to_string(),
                3
            ),
        ]
    );
}

#[test]
fn invalid_default_arg_in_from() {
    let gw = gateway("ARG TAG\nFROM busybox:${TAG}\n").option("build-arg:TAG", "latest");
    let found: Vec<_> = lint_gw(gw)
        .into_iter()
        .filter(|(r, ..)| r == "InvalidDefaultArgInFrom")
        .collect();
    assert_eq!(
        found,
        vec![(
            "InvalidDefaultArgInFrom".to_string(),
            "Default value for ARG busybox:${TAG} results in empty or invalid base image name"
                .to_string(),
            2
        )]
    );
}

#[test]
fn from_platform_flag_const_disallowed() {
    assert_eq!(
        only(
            "FROM --platform=linux/arm64 scratch AS build\n",
            "FromPlatformFlagConstDisallowed"
        ),
        one(
            "FROM --platform flag should not use constant value \"linux/arm64\"",
            1
        )
    );
    // Allowed when the stage is named after the platform.
    assert!(
        only(
            "FROM --platform=linux/arm64 scratch AS build-arm64\n",
            "FromPlatformFlagConstDisallowed"
        )
        .is_empty()
    );
}

#[test]
fn copy_ignored_file() {
    let df = "FROM scratch\nCOPY secret.txt /\nCOPY ok.txt /\nADD dir/sub/x /\nCOPY --from=busybox secret.txt /\n";
    let gw = gateway(df).file("context", ".dockerignore", "secret.txt\ndir\n");
    let found: Vec<_> = lint_gw(gw)
        .into_iter()
        .filter(|(r, ..)| r == "CopyIgnoredFile")
        .map(|(_, d, l)| (d, l))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"
                    .to_string(),
                2
            ),
            (
                "Attempting to Add file \"dir/sub/x\" that is excluded by .dockerignore"
                    .to_string(),
                4
            ),
        ]
    );
    // With `!` exceptions BuildKit does not guess.
    let gw = gateway(df).file("context", ".dockerignore", "secret.txt\n!keep\n");
    assert!(lint_gw(gw).iter().all(|(r, ..)| r != "CopyIgnoredFile"));
}

#[test]
fn expose_proto_casing() {
    assert_eq!(
        only("FROM scratch\nEXPOSE 80/TCP 81/udp\n", "ExposeProtoCasing"),
        one(
            "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase",
            2
        )
    );
}

#[test]
fn expose_invalid_format() {
    assert_eq!(
        only(
            "FROM scratch\nEXPOSE 127.0.0.1:80:80 8080:80 90\n",
            "ExposeInvalidFormat"
        ),
        vec![
            (
                "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'".to_string(),
                2
            ),
            (
                "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'".to_string(),
                2
            ),
        ]
    );
}

#[test]
fn invalid_definition_description_is_experimental() {
    let df = "# bar this is the bar\nARG foo=bar\n# a stage\nFROM scratch AS base\n";
    assert!(only(df, "InvalidDefinitionDescription").is_empty());
    let df = format!("# check=experimental=InvalidDefinitionDescription\n{df}");
    assert_eq!(
        only(&df, "InvalidDefinitionDescription"),
        vec![
            (
                "Comment for ARG should follow the format: `# foo <description>`".to_string(),
                3
            ),
            (
                "Comment for FROM should follow the format: `# base <description>`".to_string(),
                5
            ),
        ]
    );
}

#[test]
fn skips_from_directive_comments_and_build_arg() {
    let df = "FROM scratch AS Base\nCMD echo\n";
    assert_eq!(lint(df).len(), 2);
    let rules = |df: &str| -> Vec<String> { lint(df).into_iter().map(|(r, ..)| r).collect() };
    assert_eq!(
        rules(&format!("# check=skip=StageNameCasing\n{df}")),
        ["JSONArgsRecommended"]
    );
    // A `check=` comment right above an instruction applies to it alone.
    assert_eq!(
        rules(
            "FROM scratch AS Base\n# check=skip=JSONArgsRecommended\nCMD echo\nENTRYPOINT echo\n"
        ),
        ["StageNameCasing", "JSONArgsRecommended"]
    );
    // BUILDKIT_DOCKERFILE_CHECK replaces the directive.
    let gw = gateway(&format!("# check=skip=all\n{df}")).option(
        "build-arg:BUILDKIT_DOCKERFILE_CHECK",
        "skip=JSONArgsRecommended",
    );
    let found: Vec<String> = lint_gw(gw).into_iter().map(|(r, ..)| r).collect();
    assert_eq!(found, ["StageNameCasing"]);
}

#[test]
fn builds_check_only_the_stages_they_need() {
    // Rules that run while dispatching only see the stages the target needs...
    let df = "FROM scratch AS unused\nENV a b\nFROM scratch\nCMD [\"x\"]\n";
    let gw = gateway(df);
    build(&gw);
    assert!(gw.warnings().is_empty(), "{:?}", gw.warnings());
    // ...but `lint` without a target checks every stage.
    assert_eq!(only(df, "LegacyKeyValueFormat").len(), 1);
    // Rules that run while parsing see everything.
    let gw = gateway("FROM scratch AS unused\nMAINTAINER me\nFROM scratch\n");
    build(&gw);
    assert_eq!(gw.warnings().len(), 1);
    // A build sends each finding as a warning with the rule's details.
    let gw = gateway("FROM scratch\nMAINTAINER me\n");
    build(&gw);
    let w = &gw.warnings()[0];
    assert_eq!(
        w.short,
        "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"
    );
    assert_eq!(
        w.detail,
        ["The MAINTAINER instruction is deprecated, use a label instead to define an image author"]
    );
    assert_eq!(
        w.url,
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    );
    assert_eq!(w.ranges[0].start.line, 2);
    assert_eq!(w.source.as_ref().unwrap().filename, "Dockerfile");
}

#[test]
fn error_true_fails_builds_and_lint_reports_it() {
    let df = "# check=error=true\nFROM scratch\nCMD echo\n";
    let err = buildwit_sdk::testing::run::<buildwit_dockerfile::frontend::Dockerfile>(&gateway(df))
        .unwrap_err();
    assert_eq!(
        err.message,
        "lint violation found for rules: JSONArgsRecommended"
    );
    let out = build(&gateway(df).option("requestid", "frontend.lint"));
    let v = meta_json(&out, "result.json");
    assert_eq!(
        v["buildError"],
        serde_json::json!({"message": "lint violation found for rules: JSONArgsRecommended", "location": {}})
    );
    assert_eq!(out.metadata_str("result.statuscode").as_deref(), Some("1"));
}

#[test]
fn lint_result_like_buildkit() {
    let df = "FROM scratch\nMAINTAINER me\nCMD echo\n";
    let out = build(&gateway(df).option("requestid", "frontend.lint"));
    assert_eq!(
        out.metadata_str("result.txt").unwrap(),
        "\nWARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n\
         Maintainer instruction is deprecated in favor of using label\n\
         Dockerfile:2\n\
         --------------------\n\
         \x20  1 |     FROM scratch\n\
         \x20  2 | >>> MAINTAINER me\n\
         \x20  3 |     CMD echo\n\
         \x20  4 |     \n\
         --------------------\n\
         \nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
         JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
         Dockerfile:3\n\
         --------------------\n\
         \x20  1 |     FROM scratch\n\
         \x20  2 |     MAINTAINER me\n\
         \x20  3 | >>> CMD echo\n\
         \x20  4 |     \n\
         --------------------\n"
    );
    let json = out.metadata_str("result.json").unwrap();
    assert!(json.starts_with("{\n  \"warnings\": [\n    {\n      \"ruleName\": \"MaintainerDeprecated\",\n      \"description\": \"The MAINTAINER instruction is deprecated, use a label instead to define an image author\",\n      \"url\": \"https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\",\n      \"detail\": \"Maintainer instruction is deprecated in favor of using label\",\n      \"location\": {\n        \"ranges\": [\n          {\n            \"start\": {\n              \"line\": 2\n            },\n            \"end\": {\n              \"line\": 2\n            }\n          }\n        ]\n      }\n    },"), "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["sources"][0]["filename"], "Dockerfile");
    assert_eq!(v["sources"][0]["language"], "Dockerfile");
    assert_eq!(out.metadata_str("version").as_deref(), Some("1.0.0"));
    // A Dockerfile that does not convert still answers, with the error and its lines.
    let out = build(&gateway("FROM scratch\nFOO bar\n").option("requestid", "frontend.lint"));
    let v = meta_json(&out, "result.json");
    assert!(v["warnings"].is_null());
    assert_eq!(
        v["buildError"]["message"],
        "dockerfile parse error on line 2: unknown instruction: FOO (did you mean FROM?)"
    );
    assert_eq!(v["buildError"]["location"]["ranges"][0]["start"]["line"], 2);
}
