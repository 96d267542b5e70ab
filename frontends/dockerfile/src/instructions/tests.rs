use super::*;
use crate::parser::parse;

fn stages(src: &str) -> Stages {
    parse_stages(&parse(src).unwrap().ast).unwrap()
}

fn err(src: &str) -> String {
    parse_stages(&parse(src).unwrap().ast).unwrap_err().message
}

fn first(src: &str) -> Instruction {
    stages(&format!("FROM a\n{src}\n")).stages[0].commands[0]
        .instruction
        .clone()
}

#[test]
fn stages_and_meta_args() {
    let s = stages("ARG A=1 B\nFROM --platform=$P img AS Build\nRUN x\nfrom build\nENV a=b\n");
    assert_eq!(s.meta_args.len(), 1);
    assert_eq!(
        s.meta_args[0].instruction,
        Instruction::Arg(vec![
            ArgDef {
                key: "A".into(),
                value: Some("1".into())
            },
            ArgDef {
                key: "B".into(),
                value: None
            }
        ])
    );
    assert_eq!(s.stages.len(), 2);
    assert_eq!(s.stages[0].name.as_deref(), Some("build"));
    assert_eq!(s.stages[0].platform.as_deref(), Some("$P"));
    assert_eq!(s.stages[0].start_line, 2);
    assert_eq!(s.stages[1].image, "build");
    assert_eq!(s.stages[1].commands[0].start_line, 5);
    assert_eq!(err("RUN x\n"), "no build stage in current context");
    assert_eq!(
        err("FROM a b\n"),
        "dockerfile parse error on line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a AS 1x\n"),
        "dockerfile parse error on line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
}

#[test]
fn run() {
    let i = first(
        "RUN --mount=type=cache,target=/x --network=none --security=insecure <<EOF\n\techo $x\nEOF",
    );
    let Instruction::Run(r) = i else { panic!() };
    assert_eq!(r.cmd, ShellOrExec::Shell("<<EOF".into()));
    assert_eq!(r.mounts, ["type=cache,target=/x"]);
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security, Some(SecurityMode::Insecure));
    assert_eq!(r.heredocs[0].content, "\techo $x\n");
    assert_eq!(r.flags_used, ["mount", "network", "security"]);
    let Instruction::Run(r) = first("RUN <<-EOF\n\techo\n\tEOF") else {
        panic!()
    };
    // RUN keeps the body as written; the dispatcher chomps.
    assert_eq!(r.heredocs[0].content, "\techo\n");
    assert!(r.heredocs[0].chomp);
    assert_eq!(
        first("RUN [\"a\", \"b\"]"),
        Instruction::Run(RunCommand {
            cmd: ShellOrExec::Exec(vec!["a".into(), "b".into()]),
            mounts: vec![],
            network: None,
            security: None,
            devices: vec![],
            heredocs: vec![],
            flags_used: vec![],
        })
    );
    assert_eq!(
        err("FROM a\nRUN --network=bridge true\n"),
        "dockerfile parse error on line 2: invalid network mode \"bridge\""
    );
}

#[test]
fn copy_add() {
    let Instruction::Copy(c) = first(
        "COPY --from=build --chown=1:2 --chmod=755 --link --parents --exclude=*.md --exclude=x a <<EOF b /d/\nhi\nEOF",
    ) else {
        panic!()
    };
    assert_eq!(c.sources, ["a", "b"]);
    assert_eq!(c.heredocs[0].name, "EOF");
    assert_eq!(c.heredocs[0].content, "hi\n");
    assert_eq!(c.dest, "/d/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, ["*.md", "x"]);
    let Instruction::Add(a) =
        first("ADD --checksum=sha256:x --keep-git-dir --unpack=false --link=false https://x/y /z")
    else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:x"));
    assert!(a.keep_git_dir == Some(true) && !a.link);
    assert_eq!(a.unpack, Some(false));
    assert_eq!(
        err("FROM a\nCOPY a <<EOF\nx\nEOF\n"),
        "dockerfile parse error on line 2: COPY cannot accept a heredoc as a destination"
    );
    assert_eq!(
        err("FROM a\nCOPY --link=maybe a b\n"),
        "dockerfile parse error on line 2: expecting boolean value for flag link, not: maybe"
    );
    assert_eq!(
        err("FROM a\nCOPY --from a b\n"),
        "dockerfile parse error on line 2: missing a value on flag: from"
    );
    assert_eq!(
        err("FROM a\nCOPY --from=a --from=b a b\n"),
        "dockerfile parse error on line 2: duplicate flag specified: from"
    );
    assert_eq!(
        err("FROM a\nCOPY --chmd=1 a b\n"),
        "dockerfile parse error on line 2: unknown flag: --chmd (did you mean chmod?)"
    );
    let e = parse_stages(&parse("FROM a\nCOPY  --bogus=1 a b\n").unwrap().ast).unwrap_err();
    assert_eq!((e.line, e.column), (2, 7));
}

#[test]
fn kv_instructions() {
    assert_eq!(
        first("ENV a=1 b=\"2 3\""),
        Instruction::Env(vec![
            KeyValue {
                key: "a".into(),
                value: "1".into(),
                no_delim: false
            },
            KeyValue {
                key: "b".into(),
                value: "\"2 3\"".into(),
                no_delim: false
            },
        ])
    );
    assert_eq!(
        first("LABEL legacy some value"),
        Instruction::Label(vec![KeyValue {
            key: "legacy".into(),
            value: "some value".into(),
            no_delim: true
        }])
    );
    assert_eq!(
        err("FROM a\nENV\n"),
        "dockerfile parse error on line 2: ENV requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nENV =x\n"),
        "dockerfile parse error on line 2: ENV names can not be blank"
    );
    assert_eq!(
        err("FROM a\nARG =x\n"),
        "dockerfile parse error on line 2: ARG names can not be blank"
    );
    assert_eq!(
        parse("FROM a\nENV a=b c\n").unwrap_err().message,
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
}

#[test]
fn simple_instructions() {
    assert_eq!(
        first("EXPOSE 80/tcp 443"),
        Instruction::Expose(vec!["443".into(), "80/tcp".into()])
    );
    assert_eq!(
        first("VOLUME [\"/a\", \"/b\"]"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        first("VOLUME /a /b"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(first("USER a:b"), Instruction::User("a:b".into()));
    assert_eq!(first("WORKDIR /x y"), Instruction::Workdir("/x y".into()));
    assert_eq!(
        first("STOPSIGNAL SIGKILL"),
        Instruction::StopSignal("SIGKILL".into())
    );
    assert_eq!(
        first("MAINTAINER me <m@x>"),
        Instruction::Maintainer("me <m@x>".into())
    );
    assert_eq!(first("CMD []"), Instruction::Cmd(ShellOrExec::Exec(vec![])));
    assert_eq!(
        first("ENTRYPOINT echo hi"),
        Instruction::Entrypoint(ShellOrExec::Shell("echo hi".into()))
    );
    assert_eq!(
        first("SHELL [\"/bin/bash\", \"-c\"]"),
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(
        first("onbuild RUN echo hi"),
        Instruction::Onbuild("RUN echo hi".into())
    );
    assert_eq!(
        first("ONBUILD RUN <<EOF\nx\nEOF"),
        Instruction::Onbuild("RUN <<EOF\nx\nEOF".into())
    );
    assert_eq!(
        err("FROM a\nUSER\n"),
        "dockerfile parse error on line 2: USER requires exactly one argument"
    );
    assert_eq!(
        err("FROM a\nONBUILD ONBUILD RUN x\n"),
        "dockerfile parse error on line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err("FROM a\nSHELL [\"c:\\windows\\x.exe\"]\n"),
        "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form. It looks like 'SHELL [\"c:\\windows\\x.exe\"]' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
    );
    let e = parse_stages(&parse("FROM a\n  RUNN x\n").unwrap().ast).unwrap_err();
    assert_eq!(
        e.message,
        "dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(e.column, 3);
}

#[test]
fn healthcheck() {
    assert_eq!(
        first(
            "HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 --start-period=1.5s CMD /check --q"
        ),
        Instruction::Healthcheck(HealthcheckCommand {
            test: vec!["CMD-SHELL".into(), "/check --q".into()],
            interval: 5_000_000_000,
            timeout: 90_000_000_000,
            start_period: 1_500_000_000,
            start_interval: 0,
            retries: 3,
        })
    );
    assert_eq!(
        first("HEALTHCHECK cmd [\"a\", \"b\"]"),
        Instruction::Healthcheck(HealthcheckCommand {
            test: vec!["CMD".into(), "a".into(), "b".into()],
            ..Default::default()
        })
    );
    assert_eq!(
        first("HEALTHCHECK NONE"),
        Instruction::Healthcheck(HealthcheckCommand {
            test: vec!["NONE".into()],
            ..Default::default()
        })
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK CONNECT TCP 7000\n"),
        "dockerfile parse error on line 2: Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --interval=1us CMD x\n"),
        "dockerfile parse error on line 2: Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --retries=-1 CMD x\n"),
        "dockerfile parse error on line 2: --retries cannot be negative (-1)"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_go_duration("0"), Ok(0));
    assert_eq!(parse_go_duration("1h2m3.5s"), Ok(3_723_500_000_000));
    assert_eq!(parse_go_duration("-1.5ms"), Ok(-1_500_000));
    assert_eq!(parse_go_duration("300µs"), Ok(300_000));
    assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
    assert_eq!(
        parse_go_duration("abc"),
        Err("time: invalid duration \"abc\"".into())
    );
    assert_eq!(
        parse_go_duration("5"),
        Err("time: missing unit in duration \"5\"".into())
    );
    assert_eq!(
        parse_go_duration("5x"),
        Err("time: unknown unit \"x\" in duration \"5x\"".into())
    );
    assert_eq!(
        parse_go_duration(""),
        Err("time: invalid duration \"\"".into())
    );
    assert!(parse_go_duration("9999999999h").is_err());
}

#[test]
fn mounts() {
    let m = parse_mount(
        "type=cache,target=/x,id=c,sharing=locked,mode=0755,uid=1,gid=2",
        &mut no_expand,
    )
    .unwrap();
    assert_eq!(m.kind, MountType::Cache);
    assert_eq!(m.target.as_deref(), Some("/x"));
    assert_eq!(m.cache_sharing, Some(CacheSharing::Locked));
    assert_eq!((m.mode, m.uid, m.gid), (Some(0o755), Some(1), Some(2)));
    assert!(!m.read_only);
    let m = parse_mount("target=/src,from=build,source=/out,rw", &mut no_expand).unwrap();
    assert_eq!(m.kind, MountType::Bind);
    assert!(!m.read_only);
    assert!(parse_mount("dst=/s", &mut no_expand).unwrap().read_only);
    let m = parse_mount("type=secret,id=tok,env=TOKEN,required", &mut no_expand).unwrap();
    assert!(m.required && m.read_only);
    assert_eq!(m.env.as_deref(), Some("TOKEN"));
    let m = parse_mount("type=ssh,id=default,required=false", &mut no_expand).unwrap();
    assert!(!m.required);
    let m = parse_mount("type=tmpfs,target=/t,size=64m", &mut no_expand).unwrap();
    assert_eq!(m.size_limit, Some(64 << 20));
    assert_eq!(
        parse_mount("type=cache,target=/x,cache_sharing=x", &mut no_expand).unwrap_err(),
        "unexpected key 'cache_sharing' in 'cache_sharing=x'"
    );
    assert_eq!(
        parse_mount("type=cache,target=/x,trget=/y", &mut no_expand).unwrap_err(),
        "unexpected key 'trget' in 'trget=/y' (did you mean target?)"
    );
    assert_eq!(
        parse_mount("type=weird", &mut no_expand).unwrap_err(),
        "unsupported mount type \"weird\""
    );
    assert_eq!(
        parse_mount("type=bind,required", &mut no_expand).unwrap_err(),
        "unexpected key 'required' for mount type 'bind'"
    );
    assert_eq!(
        parse_mount("type=bind,mode=0700", &mut no_expand).unwrap_err(),
        "mode not allowed for \"bind\" type mounts"
    );
    assert_eq!(
        parse_mount("type=bind,sharing=locked", &mut no_expand).unwrap_err(),
        "invalid cache sharing set for bind mount"
    );
    assert_eq!(
        parse_mount("type=secret", &mut no_expand).unwrap_err(),
        "one of source, target required"
    );
    assert_eq!(
        parse_mount("type=cache,uid=x", &mut no_expand).unwrap_err(),
        "invalid value x for uid"
    );
    assert_eq!(
        parse_mount("type=cache,foo", &mut no_expand).unwrap_err(),
        "invalid field 'foo' must be a key=value pair"
    );
    let m = parse_mount("type=bind,\"source=a,b\",target=/t", &mut no_expand).unwrap();
    assert_eq!(m.source.as_deref(), Some("a,b"));
    let mut exp = |v: &str| -> Result<String, String> { Ok(v.replace("$ID", "abc")) };
    let m = parse_mount("type=cache,id=$ID,target=/t", &mut exp).unwrap();
    assert_eq!(m.cache_id.as_deref(), Some("abc"));
}

#[test]
fn mounts_before_expansion() {
    // Only type/from are read before expansion; other values wait for dispatch.
    let m = parse_mount_unexpanded("type=cache,target=$T,uid=$U,from=base").unwrap();
    assert_eq!(
        (m.kind, m.from.as_deref(), m.target),
        (MountType::Cache, Some("base"), None)
    );
    assert_eq!(
        err("FROM a\nRUN --mount=from=$X,target=/x true\n"),
        "dockerfile parse error on line 2: 'from' doesn't support variable expansion, define alias stage instead"
    );
    let Instruction::Run(r) =
        first("RUN --mount=type=bind,from=b,target=/x --mount=target=/y true")
    else {
        panic!()
    };
    assert_eq!(r.mount_froms(), ["b", ""]);
}

#[test]
fn onbuild_trigger() {
    let c = parse_onbuild_trigger("RUN echo hi", 4, 5).unwrap();
    assert_eq!((c.start_line, c.end_line), (4, 5));
    assert!(matches!(c.instruction, Instruction::Run(_)));
    let e = parse_onbuild_trigger("COPY a", 3, 3).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(
        e.message
            .starts_with("dockerfile parse error on line 3: COPY requires")
    );
}
