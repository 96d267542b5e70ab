//! RUN steps reach the network as in BuildKit: the default mode (host, as BuildKit without a
//! CNI config), the built-in bridge, `--network=none|host` and the `network.host`
//! entitlement; `apt-get install` on a real Debian base; DNS, hosts and proxies; and what
//! the bridge leaves on the machine afterwards (nothing of its own).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{Build, Daemon, Setup, text};

/// Bridge-mode sections run one at a time: they share iptables and the CNI IPAM store.
static BRIDGE: Mutex<()> = Mutex::new(());

/// A server answering every request with `body`, on `addr` (a port of its own; the
/// address may take a moment to appear, as a bridge's gateway does).
fn serve(addr: &str, body: &'static str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind(format!("{addr}:0")) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    };
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.0 200 OK\r\n\r\n{body}\n");
        }
    });
    port
}

/// A step line that fetches `addr:port` with busybox nc and prints what came back (or
/// `unreachable`).
fn fetch(addr: &str, port: u16) -> String {
    format!(
        "(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {addr} {port} | busybox tail -n 1 | grep . || echo unreachable {addr})"
    )
}

/// A config with `extra` (top-level keys first, then tables) and the setup's registry.
fn write_config(s: &Setup, name: &str, extra: &str) -> std::path::PathBuf {
    let base = std::fs::read_to_string(&s.config).unwrap();
    let path = s.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, format!("{extra}\n{base}")).unwrap();
    path
}

/// buildwitd with `config`, a root and a socket of its own named `name`.
fn daemon(s: &Setup, config: &Path, name: &str) -> Daemon {
    Daemon::start(
        config,
        &s.dir.path().join(format!("{name}-root")),
        &format!(
            "unix://{}",
            s.dir.path().join(format!("{name}.sock")).display()
        ),
        s.dir.path().join(format!("{name}.log")),
    )
}

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn iptables(table: &str) -> String {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .unwrap();
    text(&out.stdout)
}

/// What a bridge-mode run may leave: nothing naming its bridge or its subnet, no veth of
/// its own, no namespace file.
fn assert_bridge_cleaned(bridge: &str, subnet_prefix: &str, root: &Path) {
    assert!(!interface_exists(bridge), "{bridge} is still there");
    for table in ["filter", "nat"] {
        let rules = iptables(table);
        assert!(
            !rules.contains(bridge) && !rules.contains(subnet_prefix),
            "{table} still has rules of {bridge}:\n{rules}"
        );
    }
    let netns = root.join("net/cni");
    let left: Vec<_> = std::fs::read_dir(&netns)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "namespaces left in {}: {left:?}",
        netns.display()
    );
}

#[test]
fn steps_reach_the_network_as_their_mode_says() {
    let s = support::setup();
    let host_port = serve("127.0.0.1", "from-host-loopback");
    let ctx = s.context(
        "modes",
        &[(
            "Dockerfile",
            &format!(
                "FROM BASE\n\
                 RUN {}\n\
                 RUN --network=none busybox ls /sys/class/net && {}\n",
                fetch("127.0.0.1", host_port),
                fetch("127.0.0.1", host_port)
            ),
        )],
    );
    // The default, with no CNI config: the host's network, as BuildKit.
    let b = s.build(&ctx, &[]).ok();
    assert!(
        b.logs.iter().any(|l| l == "from-host-loopback"),
        "{:?}",
        b.logs
    );
    // none: loopback only.
    assert!(b.logs.iter().any(|l| l == "lo"), "{:?}", b.logs);
    assert!(
        b.logs.iter().any(|l| l == "unreachable 127.0.0.1"),
        "{:?}",
        b.logs
    );

    // The built-in bridge, through buildwitd with a pool: the bridge exists once the
    // daemon is up, and a server on its gateway is what steps reach.
    let _one = BRIDGE.lock().unwrap_or_else(|e| e.into_inner());
    let (bridge, subnet) = ("bwtest0", "10.213.0.0/16");
    let config = write_config(
        &s,
        "bridge",
        &format!(
            "[worker.oci]\nnetworkMode = \"bridge\"\ncniPoolSize = 2\nbridgeName = \"{bridge}\"\nbridgeSubnet = \"{subnet}\"\n"
        ),
    );
    let mut d = daemon(&s, &config, "bridge");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !interface_exists(bridge) {
        assert!(Instant::now() < deadline, "no bridge:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let gateway_port = serve("10.213.0.1", "from-the-gateway");
    let ctx = s.context(
        "bridge",
        &[(
            "Dockerfile",
            &format!(
                "FROM BASE\n\
                 RUN busybox ip -4 addr show eth0 && busybox ip route && {} && {}\n\
                 RUN --network=none busybox ls /sys/class/net && {}\n",
                fetch("10.213.0.1", gateway_port),
                fetch("127.0.0.1", host_port),
                fetch("10.213.0.1", gateway_port),
            ),
        )],
    );
    let b = d.build(&ctx, &[]).ok();
    let logs = b.logs.join("\n");
    assert!(logs.contains("inet 10.213."), "{logs}");
    assert!(logs.contains("default via 10.213.0.1"), "{logs}");
    assert!(logs.contains("from-the-gateway"), "{logs}");
    assert!(logs.contains("unreachable 127.0.0.1"), "{logs}");
    assert!(logs.contains("unreachable 10.213.0.1"), "{logs}");
    // The pool: the namespaces made ahead are there while the daemon runs.
    let pooled = std::fs::read_dir(s.dir.path().join("bridge-root/net/cni"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_none())
        .count();
    assert!(pooled >= 2, "{pooled} namespaces in the pool");
    assert!(d.stop().success(), "{}", d.log());
    assert_bridge_cleaned(bridge, "10.213.", &s.dir.path().join("bridge-root"));
}

#[test]
fn host_networking_needs_both_grants() {
    let s = support::setup();
    let port = serve("127.0.0.1", "granted");
    let ctx = s.context(
        "grants",
        &[(
            "Dockerfile",
            &format!(
                "FROM BASE\nRUN --network=host {}\n",
                fetch("127.0.0.1", port)
            ),
        )],
    );
    let daemon_grants = write_config(&s, "grants", "insecure-entitlements = [\"network.host\"]\n");
    let no_grants = s.config.clone();
    for (config, allow, expect) in [
        (&no_grants, false, Err("network.host is not allowed")),
        (&daemon_grants, false, Err("network.host is not allowed")),
        (
            &no_grants,
            true,
            Err("granting entitlement network.host is not allowed by build daemon configuration"),
        ),
        (&daemon_grants, true, Ok("granted")),
    ] {
        let extra: &[&str] = if allow {
            &["--allow", "network.host"]
        } else {
            &[]
        };
        let b = s.build_with(config, &ctx, extra);
        let stderr = text(&b.out.stderr);
        match expect {
            Ok(line) => {
                assert!(b.out.status.success(), "{stderr}");
                assert!(b.logs.iter().any(|l| l == line), "{:?}", b.logs);
            }
            Err(message) => {
                assert!(!b.out.status.success());
                assert!(stderr.contains(message), "{message}: {stderr}");
                assert!(b.ran.iter().all(|r| !r.contains("RUN")), "{:?}", b.ran);
            }
        }
    }
}

#[test]
fn dns_hosts_and_proxies_reach_the_step_as_in_buildkit() {
    let s = support::setup();
    let config = write_config(
        &s,
        "dns",
        "[dns]\nnameservers = [\"10.99.99.53\"]\nsearchDomains = [\"buildwit.test\"]\noptions = [\"ndots:1\"]\n",
    );
    let ctx = s.context(
        "dns",
        &[(
            "Dockerfile",
            "FROM BASE\n\
             RUN cat /etc/resolv.conf /etc/hosts && ! sh -c 'echo x >> /etc/resolv.conf' 2>/dev/null\n\
             RUN echo \"proxy=$HTTP_PROXY lower=$http_proxy\" > /proxy.txt && cat /proxy.txt\n",
        )],
    );
    let out = s.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let b = s
        .build_with(
            &config,
            &ctx,
            &[
                "--opt",
                "add-hosts=myhost=10.99.99.80",
                "--build-arg",
                "HTTP_PROXY=http://proxy-one:3128",
                "-o",
                &dest,
            ],
        )
        .ok();
    let logs = b.logs.join("\n");
    assert!(
        logs.contains("nameserver 10.99.99.53\nsearch buildwit.test\noptions ndots:1"),
        "{logs}"
    );
    assert!(
        logs.contains("127.0.0.1\tlocalhost buildkitsandbox"),
        "{logs}"
    );
    assert!(logs.contains("10.99.99.80\tmyhost"), "{logs}");
    assert!(
        logs.contains("proxy=http://proxy-one:3128 lower=http://proxy-one:3128"),
        "{logs}"
    );
    // Neither file reaches the result.
    assert!(!out.join("etc/resolv.conf").exists() && !out.join("etc/hosts").exists());
    // Another proxy or another address of the same host: still cached, as in BuildKit.
    let b = s
        .build_with(
            &config,
            &ctx,
            &[
                "--opt",
                "add-hosts=myhost=10.99.99.81",
                "--build-arg",
                "HTTP_PROXY=http://proxy-two:3128",
                "-o",
                &dest,
            ],
        )
        .ok();
    assert!(b.ran.iter().all(|r| !r.contains("RUN")), "{:?}", b.ran);
    assert_eq!(
        std::fs::read_to_string(out.join("proxy.txt")).unwrap(),
        "proxy=http://proxy-one:3128 lower=http://proxy-one:3128\n"
    );
    // Another host name is another step.
    let b = s
        .build_with(&config, &ctx, &["--opt", "add-hosts=other=10.99.99.81"])
        .ok();
    assert!(b.ran.iter().any(|r| r.contains("RUN cat")), "{:?}", b.ran);
}

#[test]
fn a_broken_network_config_fails_clearly_and_none_still_works() {
    let s = support::setup();
    let ctx = s.context("default", &[("Dockerfile", "FROM BASE\nRUN true\n")]);
    let none = s.context(
        "none",
        &[("Dockerfile", "FROM BASE\nRUN --network=none true\n")],
    );
    let empty = s.dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    for (name, settings, message) in [
        (
            "bogus",
            "networkMode = \"bogus\"".to_string(),
            "invalid network mode: \"bogus\"",
        ),
        (
            "noplugins",
            format!(
                "networkMode = \"bridge\"\ncniBinaryPath = \"{}\"",
                empty.display()
            ),
            "failed to find CNI bridge",
        ),
        (
            "nocni",
            format!(
                "networkMode = \"cni\"\ncniConfigPath = \"{}\"\ncniBinaryPath = \"/usr/lib/cni\"",
                s.dir.path().join("missing.json").display()
            ),
            "failed to read cni config",
        ),
    ] {
        let config = write_config(&s, name, &format!("[worker.oci]\n{settings}\n"));
        let b = s.build_with(&config, &ctx, &[]);
        assert!(!b.out.status.success());
        let stderr = text(&b.out.stderr);
        assert!(stderr.contains(message), "{name}: {stderr}");
        s.build_with(&config, &none, &[]).ok();
    }
}

#[test]
fn apt_get_installs_on_a_debian_base_in_every_mode() {
    let s = support::setup();
    let debian = s.push_debian();
    let dockerfile = format!(
        "FROM {debian}\n\
         RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n\
             --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n\
             apt-get update && apt-get install -y --no-install-recommends curl\n\
         RUN curl --version | head -1\n"
    );
    let ctx = s.context("apt", &[("Dockerfile", &dockerfile)]);
    let curl = |b: &Build| b.logs.iter().any(|l| l.starts_with("curl 7."));
    // The default mode, in-process.
    let b = s.build(&ctx, &[]).ok();
    assert!(curl(&b), "{:?}", b.logs);
    // The built-in bridge, in-process: NAT to the mirror through the bridge.
    {
        let _one = BRIDGE.lock().unwrap_or_else(|e| e.into_inner());
        let (bridge, subnet) = ("bwtest1", "10.214.0.0/16");
        let config = write_config(
            &s,
            "apt-bridge",
            &format!(
                "[worker.oci]\nnetworkMode = \"bridge\"\nbridgeName = \"{bridge}\"\nbridgeSubnet = \"{subnet}\"\n"
            ),
        );
        let ctx = s.context(
            "apt-bridge",
            &[(
                "Dockerfile",
                // Another environment, so the steps run again rather than come from the
                // cache of the first build.
                &format!(
                    "{}RUN grep -m1 -o '10\\.214\\.[0-9.]*' /proc/net/fib_trie\n",
                    dockerfile.replacen('\n', "\nENV BUILT_IN=bridge\n", 1)
                ),
            )],
        );
        let b = s.build_with(&config, &ctx, &[]).ok();
        assert!(curl(&b), "{:?}", b.logs);
        assert!(
            b.ran.iter().any(|r| r.contains("apt-get update")),
            "{:?}",
            b.ran
        );
        assert!(
            b.logs.iter().any(|l| l.starts_with("10.214.")),
            "{:?}",
            b.logs
        );
        assert_bridge_cleaned(bridge, "10.214.", &s.root);
    }
    // Through buildwitd, in the default mode.
    let mut d = daemon(&s, &s.config, "apt-daemon");
    let b = d.build(&ctx, &[]).ok();
    assert!(curl(&b), "{:?}", b.logs);
    assert!(d.stop().success(), "{}", d.log());
}

#[test]
fn cni_mode_runs_the_plugins_of_its_config() {
    let s = support::setup();
    let _one = BRIDGE.lock().unwrap_or_else(|e| e.into_inner());
    let (bridge, prefix) = ("bwtest2", "10.216.");
    let conflist = s.dir.path().join("net.conflist");
    std::fs::write(
        &conflist,
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "bwtest", "plugins": [
                {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": true,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.216.0.0/16"}}]]}}}}]}}"#
        ),
    )
    .unwrap();
    let config = write_config(
        &s,
        "cni",
        &format!(
            "[worker.oci]\nnetworkMode = \"cni\"\ncniConfigPath = \"{}\"\ncniBinaryPath = \"/usr/lib/cni\"\n",
            conflist.display()
        ),
    );
    let ctx = s.context(
        "cni",
        &[(
            "Dockerfile",
            "FROM BASE\nRUN busybox ls /sys/class/net && busybox ip -4 addr show eth1\n",
        )],
    );
    let b = s.build_with(&config, &ctx, &[]).ok();
    let logs = b.logs.join("\n");
    // go-cni's loopback network, then the list's on eth1 (eth0 for a single plugin).
    assert!(
        logs.contains("lo\n") || b.logs.iter().any(|l| l == "lo"),
        "{logs}"
    );
    assert!(logs.contains(&format!("inet {prefix}")), "{logs}");
    // Each namespace was released: its NAT rules and its file are gone. The bridge is the
    // configuration's (BuildKit leaves it too): the test removes it.
    let nat = iptables("nat");
    assert!(!nat.contains(prefix), "{nat}");
    let left = std::fs::read_dir(s.root.join("net/cni")).map_or(0, |d| d.count());
    assert_eq!(left, 0);
    let _ = Command::new("ip").args(["link", "delete", bridge]).status();
}
