//! The network of a RUN step, as BuildKit's OCI worker gives it (`util/network/`).
//!
//! `[worker.oci] networkMode` picks what a step with the default network (`NetMode`
//! unset, `RUN --network=default`) gets:
//! - `host`: the host's network namespace (its UTS namespace stays private);
//! - `cni`: a namespace set up by the CNI plugins of `cniConfigPath`;
//! - `bridge`: BuildKit's built-in bridge, a CNI list made here (loopback, bridge with NAT
//!   and host-local addresses from `bridgeSubnet`, firewall);
//! - `auto` (the default): `bridge` when `BUILDKIT_NETWORK_BRIDGE_AUTO` is true, `cni`
//!   when the file at `cniConfigPath` exists, else `host`, said once in the log.
//!
//! `RUN --network=none` always gets a namespace of its own with loopback only, and
//! `--network=host` the host's (with the `network.host` entitlement). CNI namespaces come
//! from a pool (`cniPoolSize` kept ready, others reused for five minutes), so a step pays
//! no plugin run; a namespace a `security.insecure` step could have changed, or one made
//! for a step with its own hostname, is never reused. What a killed process left behind
//! is released at the next start.

mod cni;
mod netns;
pub mod resolv;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buildwit_llb::pb;
use serde_json::{Value, json};

use cni::{Attachment, NetworkList, Plugins};
pub use resolv::DnsSettings;

/// `[worker.oci]`'s network settings.
#[derive(Clone, Debug, Default)]
pub struct NetworkConfig {
    /// `networkMode`: `auto` (or unset), `host`, `cni`, `bridge`.
    pub mode: Option<String>,
    /// `cniConfigPath` (default `/etc/buildkit/cni.json`).
    pub cni_config_path: Option<PathBuf>,
    /// `cniBinaryPath` (default `/opt/cni/bin`).
    pub cni_binary_path: Option<PathBuf>,
    /// `cniPoolSize`: namespaces kept ready.
    pub cni_pool_size: usize,
    /// `bridgeName` (default `buildkit0`).
    pub bridge_name: Option<String>,
    /// `bridgeSubnet` (default `10.10.0.0/16`).
    pub bridge_subnet: Option<String>,
    /// `[dns]`.
    pub dns: DnsSettings,
}

/// BuildKit's defaults.
const DEFAULT_CNI_CONFIG: &str = "/etc/buildkit/cni.json";
const DEFAULT_CNI_BINARIES: &str = "/opt/cni/bin";
/// Where Debian's containernetworking-plugins are, used when the default directory has
/// no plugins and `cniBinaryPath` is not set.
const DEBIAN_CNI_BINARIES: &str = "/usr/lib/cni";
const DEFAULT_BRIDGE: &str = "buildkit0";
const DEFAULT_SUBNET: &str = "10.10.0.0/16";
/// How long a namespace beyond the pool's target is kept for reuse.
const IDLE: Duration = Duration::from_secs(300);

/// Why the default network is not available.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(String);

/// What `networkMode` resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The host's network.
    Host,
    /// CNI plugins from `cniConfigPath`.
    Cni,
    /// The built-in bridge.
    Bridge,
}

impl Mode {
    /// Resolve `networkMode` (`auto` looks at the environment and the CNI config file).
    pub fn resolve(config: &NetworkConfig) -> Result<Mode, NetworkError> {
        match config.mode.as_deref().unwrap_or("auto") {
            "host" => Ok(Mode::Host),
            "cni" => Ok(Mode::Cni),
            "bridge" => Ok(Mode::Bridge),
            "auto" | "" => {
                let bridge_auto = std::env::var("BUILDKIT_NETWORK_BRIDGE_AUTO").is_ok_and(|v| {
                    matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True")
                });
                if bridge_auto {
                    Ok(Mode::Bridge)
                } else if cni_config_path(config).exists() {
                    Ok(Mode::Cni)
                } else {
                    Ok(Mode::Host)
                }
            }
            other => Err(NetworkError(format!(
                "invalid network mode: {other:?} ([worker.oci] networkMode is auto, host, cni or bridge)"
            ))),
        }
    }

    /// The worker label `org.mobyproject.buildkit.worker.network`.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Host => "host",
            Mode::Cni | Mode::Bridge => "cni",
        }
    }
}

fn cni_config_path(config: &NetworkConfig) -> PathBuf {
    config
        .cni_config_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_CONFIG))
}

/// The networks of the steps of one worker.
#[derive(Debug)]
pub struct Networks {
    /// What a step with the default network gets (or why it cannot).
    default: Result<DefaultNetwork, NetworkError>,
    dns: DnsSettings,
}

#[derive(Debug)]
enum DefaultNetwork {
    Host,
    Cni(Arc<Pool>),
}

/// The network a step runs in.
#[derive(Debug)]
pub enum StepNetwork {
    /// The host's.
    Host,
    /// A new namespace with loopback only (runc makes it).
    Loopback,
    /// A prepared namespace, at this path while the lease lives.
    Namespace(Lease),
}

impl StepNetwork {
    /// Whether the step shares the host's network.
    pub fn is_host(&self) -> bool {
        matches!(self, StepNetwork::Host)
    }

    /// The network namespace runc gives the step.
    pub fn namespace(&self) -> crate::exec::NetworkNamespace {
        use crate::exec::NetworkNamespace as N;
        match self {
            StepNetwork::Host => N::Host,
            StepNetwork::Loopback => N::New,
            StepNetwork::Namespace(l) => {
                N::Join(l.ns.as_ref().map(|n| n.path.clone()).unwrap_or_default())
            }
        }
    }
}

impl Networks {
    /// The networks under `root` (`<root>/net/cni` holds the namespaces). A configuration
    /// that cannot work is logged and reported to each step that needs the default
    /// network; `none` and `host` steps work regardless.
    pub fn open(root: &Path, config: &NetworkConfig) -> Networks {
        let default = Mode::resolve(config).and_then(|mode| {
            if config.mode.as_deref().unwrap_or("auto") == "auto" && mode == Mode::Host {
                tracing::info!("using host network as the default");
            }
            match mode {
                Mode::Host => Ok(DefaultNetwork::Host),
                Mode::Cni | Mode::Bridge => {
                    Pool::open(root.join("net").join("cni"), mode, config).map(DefaultNetwork::Cni)
                }
            }
        });
        if let Err(e) = &default {
            tracing::error!("the default network of steps is unavailable: {e}");
        }
        Networks {
            default,
            dns: config.dns.clone(),
        }
    }

    /// The network of a step with `mode`; `hostname` and `insecure` as the step has them.
    pub fn for_step(
        &self,
        mode: i32,
        hostname: &str,
        insecure: bool,
    ) -> Result<StepNetwork, NetworkError> {
        match pb::NetMode::try_from(mode) {
            Ok(pb::NetMode::Host) => Ok(StepNetwork::Host),
            Ok(pb::NetMode::None) => Ok(StepNetwork::Loopback),
            Ok(pb::NetMode::Unset) => match &self.default {
                Ok(DefaultNetwork::Host) => Ok(StepNetwork::Host),
                Ok(DefaultNetwork::Cni(pool)) => {
                    pool.get(hostname, insecure).map(StepNetwork::Namespace)
                }
                Err(e) => Err(e.clone()),
            },
            Err(_) => Err(NetworkError(format!("unknown network mode {mode}"))),
        }
    }

    /// The resolv.conf of a step; `host_mode`: the step asked for the host's network
    /// (`--network=host`). As in BuildKit, a step with the default network drops loopback
    /// resolvers even where the default is the host's network.
    pub fn resolv_conf(&self, host_mode: bool) -> Result<String, NetworkError> {
        resolv::resolv_conf(&self.dns, host_mode, |p| {
            std::fs::read_to_string(p).unwrap_or_default()
        })
        .map_err(NetworkError)
    }

    /// Release every namespace (those in use when their step ends) and the bridge, if
    /// this process made it.
    pub fn close(&self) {
        if let Ok(DefaultNetwork::Cni(pool)) = &self.default {
            pool.close();
        }
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        self.close();
    }
}

/// A prepared namespace.
#[derive(Debug)]
struct Namespace {
    id: String,
    path: PathBuf,
    /// The ADD result of each network, for DEL.
    results: Vec<Value>,
    /// When it was last returned to the pool.
    idle_since: Instant,
}

/// What is kept beside a namespace so it can be released after a crash.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    networks: Vec<NetworkList>,
    results: Vec<Value>,
    args: String,
}

/// CNI namespaces, made ahead and reused.
#[derive(Debug)]
struct Pool {
    dir: PathBuf,
    networks: Vec<NetworkList>,
    plugins: Plugins,
    target: usize,
    idle: Mutex<PoolState>,
    /// The bridge this process created (removed when closing), in bridge mode.
    bridge: Option<String>,
}

#[derive(Debug, Default)]
struct PoolState {
    free: VecDeque<Namespace>,
    closed: bool,
}

/// A namespace lent to one step: back to the pool when dropped, or released.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    ns: Option<Namespace>,
    /// Not to be reused (own hostname, or an insecure step could have changed it).
    discard: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            if self.discard {
                self.pool.release(ns);
            } else {
                self.pool.put(ns);
            }
        }
    }
}

impl Pool {
    fn open(dir: PathBuf, mode: Mode, config: &NetworkConfig) -> Result<Arc<Pool>, NetworkError> {
        let err = NetworkError;
        let configured_bin = config.cni_binary_path.is_some();
        let mut bin = config
            .cni_binary_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_BINARIES));
        if !configured_bin
            && !bin.join("bridge").exists()
            && Path::new(DEBIAN_CNI_BINARIES).join("bridge").exists()
        {
            bin = PathBuf::from(DEBIAN_CNI_BINARIES);
        }
        let plugins = Plugins {
            dirs: vec![bin.clone()],
        };
        let (networks, bridge) = match mode {
            Mode::Cni => {
                let path = cni_config_path(config);
                if !bin.is_dir() {
                    return Err(err(format!(
                        "failed to read cni binary dir {:?}: no such directory (install containernetworking-plugins and set [worker.oci] cniBinaryPath = \"/usr/lib/cni\")",
                        bin.display()
                    )));
                }
                // go-cni: its own loopback network on lo, then the file's on eth0
                // (eth1 for a .conflist, which go-cni counts from one).
                let ifname = if path.extension().is_some_and(|e| e == "conflist") {
                    "eth1"
                } else {
                    "eth0"
                };
                let user = NetworkList::from_file(&path, ifname).map_err(|e| {
                    err(format!(
                        "{e} (set [worker.oci] cniConfigPath, or networkMode = \"bridge\")"
                    ))
                })?;
                let loopback = NetworkList {
                    name: "cni-loopback".into(),
                    cni_version: "0.3.1".into(),
                    plugins: vec![json!({"type": "loopback"})],
                    ifname: "lo".into(),
                };
                (vec![loopback, user], None)
            }
            Mode::Bridge => {
                let bridge = config
                    .bridge_name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BRIDGE.into());
                let subnet = config
                    .bridge_subnet
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SUBNET.into());
                plugins.find("bridge").map_err(|e| {
                    err(format!(
                        "failed to find CNI bridge {:?}: {e}",
                        bin.join("bridge").display()
                    ))
                })?;
                for kind in ["loopback", "host-local", "firewall"] {
                    plugins.find(kind).map_err(err)?;
                }
                let list = NetworkList {
                    name: "buildkit".into(),
                    cni_version: "1.0.0".into(),
                    plugins: vec![
                        json!({"type": "loopback"}),
                        json!({"type": "bridge", "bridge": bridge, "isDefaultGateway": true, "ipMasq": true,
                               "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]}}),
                        json!({"type": "firewall", "backend": "iptables", "ingressPolicy": "same-bridge"}),
                    ],
                    ifname: "eth0".into(),
                };
                // Ours to remove when closing: made by this process, or by a buildwit on
                // this root that was killed (its mark is left in the namespace directory).
                let mark = dir.join(format!("bridge.{bridge}"));
                let existed = Path::new("/sys/class/net").join(&bridge).exists();
                let ours = !existed || mark.exists();
                if ours {
                    std::fs::create_dir_all(&dir)
                        .and_then(|()| std::fs::write(&mark, b""))
                        .map_err(|e| err(format!("{}: {e}", dir.display())))?;
                }
                (vec![list], ours.then_some(bridge))
            }
            Mode::Host => unreachable!("host mode has no pool"),
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let pool = Arc::new(Pool {
            dir,
            networks,
            plugins,
            target: config.cni_pool_size,
            idle: Mutex::new(PoolState::default()),
            bridge,
        });
        pool.reclaim();
        if pool.target > 0 {
            let filling = pool.clone();
            std::thread::spawn(move || filling.fill());
        }
        Ok(pool)
    }

    /// Release what a killed process left in the namespace directory.
    fn reclaim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some() {
                continue;
            }
            let id = e.file_name().to_string_lossy().into_owned();
            let record: Option<Record> = std::fs::read(path.with_extension("json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let (networks, results, args) = match record {
                Some(r) => (r.networks, r.results, r.args),
                None => (self.networks.clone(), Vec::new(), String::new()),
            };
            let at = Attachment {
                id: &id,
                netns: &path,
                args: &args,
            };
            for (i, n) in networks.iter().enumerate().rev() {
                let _ = n.del(&self.plugins, &at, results.get(i));
            }
            if let Err(e) = netns::remove(&path) {
                tracing::warn!(
                    "failed to release network namespace {id:?} left over from previous run: {e}"
                );
            }
            let _ = std::fs::remove_file(path.with_extension("json"));
        }
    }

    /// Make namespaces until the pool holds its target.
    fn fill(&self) {
        loop {
            {
                let state = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if state.closed || state.free.len() >= self.target {
                    return;
                }
            }
            match self.create("") {
                Ok(ns) => self.put(ns),
                Err(e) => {
                    tracing::warn!(
                        "failed to create new cni network namespace while prefilling pool: {e}"
                    );
                    return;
                }
            }
        }
    }

    /// A new namespace attached to every network.
    fn create(&self, args: &str) -> Result<Namespace, NetworkError> {
        let id = new_id();
        let path = self.dir.join(&id);
        netns::create(&path)
            .map_err(|e| NetworkError(format!("creating a network namespace: {e}")))?;
        let at = Attachment {
            id: &id,
            netns: &path,
            args,
        };
        let mut results = Vec::new();
        let record = |results: &[Value]| {
            let r = Record {
                networks: self.networks.clone(),
                results: results.to_vec(),
                args: args.to_string(),
            };
            let _ = serde_json::to_vec(&r).map(|b| std::fs::write(path.with_extension("json"), b));
        };
        record(&results);
        for n in &self.networks {
            match n.add(&self.plugins, &at) {
                Ok(r) => results.push(r),
                Err(e) => {
                    for (i, done) in self.networks[..results.len()].iter().enumerate().rev() {
                        let _ = done.del(&self.plugins, &at, results.get(i));
                    }
                    let _ = netns::remove(&path);
                    let _ = std::fs::remove_file(path.with_extension("json"));
                    return Err(NetworkError(format!("CNI setup error: {e}{}", hint(&e))));
                }
            }
        }
        record(&results);
        Ok(Namespace {
            id,
            path,
            results,
            idle_since: Instant::now(),
        })
    }

    /// DEL from every network, then the namespace itself.
    fn release(&self, ns: Namespace) {
        let args = std::fs::read(ns.path.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .map(|r| r.args)
            .unwrap_or_default();
        let at = Attachment {
            id: &ns.id,
            netns: &ns.path,
            args: &args,
        };
        for (i, n) in self.networks.iter().enumerate().rev() {
            if let Err(e) = n.del(&self.plugins, &at, ns.results.get(i)) {
                tracing::warn!("releasing network namespace {}: {e}", ns.id);
            }
        }
        if let Err(e) = netns::remove(&ns.path) {
            tracing::warn!("removing network namespace {}: {e}", ns.id);
        }
        let _ = std::fs::remove_file(ns.path.with_extension("json"));
    }

    /// A namespace for a step: from the pool, or new. A step with a hostname of its own
    /// gets a fresh one named for it (`K8S_POD_NAME`, which the dnsname plugin reads).
    fn get(self: &Arc<Self>, hostname: &str, insecure: bool) -> Result<Lease, NetworkError> {
        if !hostname.is_empty() {
            let args = format!("K8S_POD_NAME={hostname};IgnoreUnknown=1");
            return Ok(Lease {
                pool: self.clone(),
                ns: Some(self.create(&args)?),
                discard: true,
            });
        }
        let reused = {
            let mut state = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if state.closed {
                return Err(NetworkError("cni network namespace pool is closed".into()));
            }
            state.free.pop_back()
        };
        let ns = match reused {
            Some(ns) => ns,
            None => self.create("")?,
        };
        Ok(Lease {
            pool: self.clone(),
            ns: Some(ns),
            discard: insecure,
        })
    }

    /// Return a namespace; those beyond the target idle for five minutes are released.
    fn put(&self, mut ns: Namespace) {
        ns.idle_since = Instant::now();
        let expired = {
            let mut state = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if state.closed {
                vec![ns]
            } else {
                state.free.push_back(ns);
                let mut expired = Vec::new();
                while state.free.len() > self.target
                    && state
                        .free
                        .front()
                        .is_some_and(|n| n.idle_since.elapsed() >= IDLE)
                {
                    expired.extend(state.free.pop_front());
                }
                expired
            }
        };
        for ns in expired {
            self.release(ns);
        }
    }

    fn close(&self) {
        let free = {
            let mut state = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if state.closed {
                return;
            }
            state.closed = true;
            std::mem::take(&mut state.free)
        };
        for ns in free {
            self.release(ns);
        }
        if let Some(bridge) = &self.bridge
            && Path::new("/sys/class/net").join(bridge).exists()
        {
            let removed = std::process::Command::new("ip")
                .args(["link", "delete", bridge])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .output();
            match removed {
                Ok(o) if o.status.success() => {}
                Ok(o) => tracing::warn!(
                    "failed to remove bridge {bridge:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => tracing::warn!("failed to remove bridge {bridge:?}: {e}"),
            }
            remove_bridge_rules(bridge);
        }
        if let Some(bridge) = &self.bridge {
            let _ = std::fs::remove_file(self.dir.join(format!("bridge.{bridge}")));
        }
    }
}

/// Remove the firewall plugin's rules that name `bridge`, which outlive it otherwise. The
/// chains every CNI network shares (`CNI-FORWARD`, `CNI-ADMIN`, `CNI-ISOLATION-*`) stay,
/// as BuildKit leaves them: other networks on the host may use them.
fn remove_bridge_rules(bridge: &str) {
    let Ok(out) = std::process::Command::new("iptables")
        .args(["-t", "filter", "-S"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut rule = split_rule(line);
        let ours = rule.first().is_some_and(|a| a == "-A")
            && rule.get(1).is_some_and(|c| c.starts_with("CNI-"))
            && rule
                .windows(2)
                .any(|w| (w[0] == "-i" || w[0] == "-o") && w[1] == bridge);
        if ours {
            rule[0] = "-D".into();
            let _ = std::process::Command::new("iptables")
                .args(["-t", "filter"])
                .args(&rule)
                .status();
        }
    }
}

/// The words of an `iptables -S` line, with its double-quoted comments as one word each.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => word.extend(chars.next()),
            ' ' if !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

/// What to do about a CNI failure, where the message says.
fn hint(error: &str) -> &'static str {
    if error.contains("iptables") || error.contains("nft") {
        " (the bridge needs iptables with its nat table: apt-get install iptables)"
    } else if error.contains("permission") || error.contains("not permitted") {
        " (setting up a network needs root and CAP_NET_ADMIN)"
    } else {
        ""
    }
}

/// 25 random base-36 characters, as BuildKit names namespaces.
fn new_id() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{:?}-{}",
        std::process::id(),
        std::time::SystemTime::now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let digest = Sha256::digest(seed.as_bytes());
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    digest
        .iter()
        .take(25)
        .map(|b| ALPHABET[*b as usize % 36] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_resolve_as_buildkit_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        let absent = NetworkConfig {
            cni_config_path: Some(dir.path().join("cni.json")),
            ..Default::default()
        };
        assert_eq!(Mode::resolve(&absent).unwrap(), Mode::Host);
        std::fs::write(dir.path().join("cni.json"), "{}").unwrap();
        assert_eq!(Mode::resolve(&absent).unwrap(), Mode::Cni);
        for (mode, want) in [
            ("host", Mode::Host),
            ("cni", Mode::Cni),
            ("bridge", Mode::Bridge),
        ] {
            let c = NetworkConfig {
                mode: Some(mode.into()),
                ..Default::default()
            };
            assert_eq!(Mode::resolve(&c).unwrap(), want);
        }
        let bogus = NetworkConfig {
            mode: Some("bogus".into()),
            ..Default::default()
        };
        let e = Mode::resolve(&bogus).unwrap_err().to_string();
        assert!(e.starts_with("invalid network mode: \"bogus\""), "{e}");
        assert_eq!(Mode::Bridge.label(), "cni");
    }

    #[test]
    fn a_broken_default_network_leaves_none_and_host_working() {
        let dir = tempfile::tempdir().unwrap();
        let config = NetworkConfig {
            mode: Some("cni".into()),
            cni_config_path: Some(dir.path().join("missing.json")),
            cni_binary_path: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let n = Networks::open(dir.path(), &config);
        let e = n.for_step(0, "", false).unwrap_err().to_string();
        assert!(e.contains("failed to read cni config"), "{e}");
        assert!(n.for_step(pb::NetMode::None as i32, "", false).is_ok());
        assert!(
            n.for_step(pb::NetMode::Host as i32, "", false)
                .unwrap()
                .is_host()
        );
        let e = n.for_step(7, "", false).unwrap_err().to_string();
        assert_eq!(e, "unknown network mode 7");
    }

    #[test]
    fn iptables_rules_split_with_their_comments_whole() {
        let line = r#"-A CNI-ISOLATION-STAGE-2 -o bw0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j DROP"#;
        let words = split_rule(line);
        assert_eq!(words.len(), 10);
        assert_eq!(
            words[7],
            "CNI firewall plugin rules (ingressPolicy: same-bridge)"
        );
        assert_eq!(
            split_rule(r#"-A X --comment "a \"b\"" -j Y"#)[3],
            r#"a "b""#
        );
    }

    #[test]
    fn ids_are_25_base36_characters() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 25);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(a, b);
    }
}
