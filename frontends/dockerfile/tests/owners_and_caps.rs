//! `--chown` owners and exec caps as BuildKit's Go LLB client writes them: `root` is id 0
//! (`llb.WithUser` → `parseUID`), and any secret, even one only exposed as an environment
//! variable, needs `exec.mount.secret`.

mod common;

use buildwit_sdk::llb::{Definition, ExecOp, FileActionKind, OpKind, UserOpt};
use common::{build, gateway};

/// `id:N`, `name:NAME` or `-`.
fn show(u: &Option<UserOpt>) -> String {
    match u {
        Some(UserOpt::ById(id)) => format!("id:{id}"),
        Some(UserOpt::ByName(n)) => format!("name:{}", n.name),
        None => "-".into(),
    }
}

/// `user/group` of every owned copy, mkdir and mkfile, in op order.
fn owners(def: &Definition) -> Vec<String> {
    let mut out = Vec::new();
    for op in &def.ops {
        let OpKind::File(f) = &op.kind else { continue };
        for a in &f.actions {
            let owner = match &a.action {
                FileActionKind::Copy(c) => &c.owner,
                FileActionKind::Mkdir(m) => &m.owner,
                FileActionKind::Mkfile(m) => &m.owner,
                _ => continue,
            };
            if let Some(o) = owner {
                out.push(format!("{}/{}", show(&o.user), show(&o.group)));
            }
        }
    }
    out
}

fn owners_of(dockerfile: &str) -> Vec<String> {
    owners(&build(&gateway(dockerfile)).definition.unwrap())
}

/// The exec ops with their caps.
fn execs(def: &Definition) -> Vec<(&ExecOp, Vec<String>)> {
    def.ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match &o.kind {
            OpKind::Exec(e) => {
                let caps = def
                    .metadata
                    .iter()
                    .find(|(p, _)| *p as usize == i)
                    .map(|(_, m)| m.caps.iter().map(|(k, _)| k.clone()).collect())
                    .unwrap_or_default();
                Some((e, caps))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn chown_root_is_id_zero() {
    let df = "FROM busybox\n\
              COPY --chown=root a /a\n\
              COPY --chown=root:root b /b\n\
              ADD --chown=root:1 c /c\n\
              COPY --chown=1:root d /d\n\
              COPY --chown=nobody:root e /e\n\
              COPY --chown=app:staff f /f\n";
    assert_eq!(
        owners_of(df),
        [
            "id:0/-",
            "id:0/id:0",
            "id:0/id:1",
            "id:1/id:0",
            "name:nobody/id:0",
            "name:app/name:staff"
        ]
    );
}

#[test]
fn chown_root_through_a_variable() {
    let df = "FROM busybox\n\
              ARG OWNER=root\n\
              ARG GROUP=root\n\
              COPY --chown=$OWNER a /a\n\
              COPY --chown=${OWNER}:${GROUP} b /b\n\
              COPY --chown=1000:$GROUP c /c\n";
    assert_eq!(owners_of(df), ["id:0/-", "id:0/id:0", "id:1000/id:0"]);
}

#[test]
fn chown_root_on_every_copy_kind() {
    let df = "FROM busybox\n\
              COPY --link --chown=root a /a\n\
              COPY --chown=root:root <<EOF /heredoc\nhi\nEOF\n\
              ADD --chown=root:1 https://example.com/x.tar.gz /x\n\
              ADD --chown=1:root https://github.com/moby/buildkit.git#v0.10.1 /src\n";
    assert_eq!(
        owners_of(df),
        ["id:0/-", "id:0/id:0", "id:0/id:1", "id:1/id:0"]
    );
}

#[test]
fn workdir_mkdir_owner_reads_the_user_the_same_way() {
    let df = "FROM busybox\n\
              USER root\n\
              WORKDIR /a\n\
              USER app:root\n\
              WORKDIR /b\n\
              USER 1:2\n\
              WORKDIR /c\n";
    assert_eq!(owners_of(df), ["id:0/-", "name:app/id:0", "id:1/id:2"]);
}

#[test]
fn env_only_secret_needs_the_secret_mount_cap() {
    let df = "FROM busybox\n\
              RUN --mount=type=secret,id=x,env=FOO env\n\
              RUN --mount=type=secret,id=y,env=BAR,target=/s cat /s\n\
              RUN --mount=type=secret,id=z cat /run/secrets/z\n";
    let def = build(&gateway(df)).definition.unwrap();
    let execs = execs(&def);
    assert_eq!(execs.len(), 3);
    let has = |caps: &[String], c: &str| caps.iter().any(|k| k == c);
    for (e, caps) in &execs[..2] {
        assert!(has(caps, "exec.mount.secret"), "{caps:?}");
        assert!(has(caps, "exec.secretenv"), "{caps:?}");
        assert_eq!(e.secret_env.len(), 1);
    }
    assert!(execs[0].0.mounts.iter().all(|m| m.dest != "/s"));
    assert!(execs[1].0.mounts.iter().any(|m| m.dest == "/s"));
    let (_, caps) = &execs[2];
    assert!(has(caps, "exec.mount.secret"), "{caps:?}");
    assert!(!has(caps, "exec.secretenv"), "{caps:?}");
}

#[test]
fn cgroup_parent_needs_no_cap() {
    let gw = gateway("FROM busybox\nRUN true\n").option("cgroup-parent", "buildkit");
    let def = build(&gw).definition.unwrap();
    let execs = execs(&def);
    let (e, caps) = &execs[0];
    assert_eq!(e.meta.cgroup_parent, "buildkit");
    assert_eq!(
        caps,
        &[
            "exec.meta.base",
            "exec.meta.setsdefaultpath",
            "exec.mount.bind"
        ]
    );
}
