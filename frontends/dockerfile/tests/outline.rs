//! `frontend.outline` with the cases of BuildKit's `dockerfile_outline_test.go`, and the
//! text and JSON it prints.

mod common;

use common::{build, gateway, meta_json};
use serde_json::{Value, json};

fn outline(df: &str, opts: &[(&str, &str)]) -> (Value, String) {
    let mut gw = gateway(df).option("requestid", "frontend.outline");
    for (k, v) in opts {
        gw = gw.option(k, v);
    }
    let out = build(&gw);
    assert_eq!(out.metadata_str("version").as_deref(), Some("1.0.0"));
    (
        meta_json(&out, "result.json"),
        out.metadata_str("result.txt").unwrap(),
    )
}

fn line(v: &Value) -> u64 {
    v["location"]["ranges"][0]["start"]["line"]
        .as_u64()
        .unwrap()
}

const ARGS: &str = r#"
ARG inherited=box
ARG inherited2=box2
ARG unused=abc${inherited2}
# sfx is a suffix
ARG sfx="usy${inherited}"

FROM b${sfx} AS first
# this is not assigned to anything
ARG FOO=123
# BAR is a number
ARG BAR=456
RUN true

FROM alpine${unused} AS second
ARG BAZ
RUN true

FROM scratch AS third
ARG ABC=a
# check=skip=all
ARG password
# alternate_password will show up in the outline
# check=skip=all
ARG alternate_password

# target defines build target
FROM third AS target
COPY --from=first /etc/passwd /

FROM second
"#;

#[test]
fn outline_args() {
    let (v, _) = outline(ARGS, &[("build-arg:BAR", "678"), ("target", "target")]);
    assert_eq!(v["name"], "target");
    assert_eq!(v["description"], "defines build target");
    let args = v["args"].as_array().unwrap();
    let got: Vec<(&str, &str, &str, u64)> = args
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap(),
                a["value"].as_str().unwrap_or(""),
                a["description"].as_str().unwrap_or(""),
                line(a),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("inherited", "box", "", 2),
            ("sfx", "usybox", "is a suffix", 6),
            ("FOO", "123", "", 10),
            ("BAR", "678", "is a number", 12),
            ("ABC", "a", "", 20),
            ("password", "", "", 22),
            ("alternate_password", "", "will show up in the outline", 25),
        ]
    );
    // Only the stages the target needs were resolved: `second`'s image is unknown here.
    assert_eq!(v["sources"][0], common_base64(ARGS));
}

fn common_base64(s: &str) -> String {
    buildwit_dockerfile::subrequests::base64(s.as_bytes())
}

#[test]
fn outline_secrets_and_ssh() {
    let df = r#"
FROM busybox AS first
RUN --mount=type=secret,target=/etc/passwd,required=true --mount=type=ssh true

FROM busybox AS second
RUN --mount=type=secret,id=unused --mount=type=ssh,id=ssh2 true

FROM scratch AS third
ARG BAR
RUN --mount=type=secret,id=second${BAR} true

FROM third AS target
COPY --from=first /foo /
RUN --mount=type=ssh,id=ssh3,required true

FROM second
"#;
    let (v, txt) = outline(df, &[("build-arg:BAR", "678"), ("target", "target")]);
    assert_eq!(
        v["secrets"],
        json!([
            {"name": "passwd", "required": true, "location": {"ranges": [{"start": {"line": 3}, "end": {"line": 3}}]}},
            {"name": "second678", "location": {"ranges": [{"start": {"line": 10}, "end": {"line": 10}}]}},
        ])
    );
    let ssh: Vec<(&str, bool, u64)> = v["ssh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["required"].as_bool().unwrap_or(false),
                line(s),
            )
        })
        .collect();
    assert_eq!(ssh, [("default", false, 3), ("ssh3", true, 14)]);
    assert_eq!(
        txt,
        "TARGET: target\n\n\
         BUILD ARG   VALUE   DESCRIPTION\n\
         BAR         678     \n\n\
         SECRET      REQUIRED\n\
         passwd      true\n\
         second678   \n\n\
         SSH       REQUIRED\n\
         default   \n\
         ssh3      true\n\n"
    );
}

#[test]
fn outline_recursive_args() {
    let df = r#"
ARG FOO=123
ARG ABC=abc
ARG DEF=def
ARG FOO=${FOO}${ABC}
ARG BAR=${FOO}456
ARG FOO=${FOO}456${BAR}
FROM scratch
ARG FOO
ARG INFOO=123
ARG INBAR=${INFOO}456
ARG INFOO=${INFOO}456${INBAR}
"#;
    let (v, txt) = outline(df, &[]);
    let got: Vec<(&str, &str)> = v["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("ABC", "abc"),
            ("BAR", "123abc456"),
            ("FOO", "123abc456123abc456"),
            ("INBAR", "123456"),
            ("INFOO", "123456123456"),
        ]
    );
    // An unnamed target has no name or description, so no TARGET block.
    assert!(v.get("name").is_none());
    assert_eq!(
        txt,
        "BUILD ARG   VALUE                DESCRIPTION\n\
         ABC         abc                  \n\
         BAR         123abc456            \n\
         FOO         123abc456123abc456   \n\
         INBAR       123456               \n\
         INFOO       123456123456         \n\n"
    );
}

#[test]
fn outline_json_layout() {
    let df = "# base is the base\nFROM scratch AS base\n# V a version\nARG V=1\n";
    let (_, txt) = outline(df, &[]);
    assert_eq!(
        txt,
        "TARGET:      base\nDESCRIPTION: is the base\n\nBUILD ARG   VALUE   DESCRIPTION\nV           1       a version\n\n"
    );
    let out = build(&gateway(df).option("requestid", "frontend.outline"));
    assert_eq!(
        out.metadata_str("result.json").unwrap(),
        format!(
            "{{\n  \"name\": \"base\",\n  \"description\": \"is the base\",\n  \"args\": [\n    {{\n      \"name\": \"V\",\n      \"description\": \"a version\",\n      \"value\": \"1\",\n      \"location\": {{\n        \"ranges\": [\n          {{\n            \"start\": {{\n              \"line\": 4\n            }},\n            \"end\": {{\n              \"line\": 4\n            }}\n          }}\n        ]\n      }}\n    }}\n  ],\n  \"sources\": [\n    \"{}\"\n  ]\n}}",
            common_base64(df)
        )
    );
}

#[test]
fn describe_advertises_outline() {
    let out =
        build(&gateway("FROM scratch\n").option("requestid", "frontend.subrequests.describe"));
    let v = meta_json(&out, "result.json");
    let outline = &v.as_array().unwrap()[0];
    assert_eq!(outline["name"], "frontend.outline");
    assert_eq!(outline["type"], "rpc");
    assert_eq!(outline["version"], "1.0.0");
    assert_eq!(
        outline["metadata"],
        json!([{"name": "result.json", "description": ""}, {"name": "result.txt", "description": ""}])
    );
    let err = buildwit_sdk::testing::run::<buildwit_dockerfile::frontend::Dockerfile>(
        &gateway("FROM scratch\n").option("requestid", "frontend.bogus"),
    )
    .unwrap_err();
    assert_eq!(err.message, "unsupported request frontend.bogus");
}
