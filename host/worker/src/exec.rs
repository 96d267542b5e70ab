//! Running one process in a container through the OCI runtime binary (`runc`).
//!
//! We write the bundle's `config.json` ourselves and run `runc run`; its output is read
//! line by line for progress, and its last lines are kept for the error of a failed step.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

/// Capabilities a build step gets, as Docker's and BuildKit's defaults.
pub(crate) const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The PATH a step gets when its environment has none (BuildKit's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many output lines a failed step reports.
const TAIL_LINES: usize = 20;

/// A mount of the container.
#[derive(Clone, Debug)]
pub enum MountKind {
    /// A host directory or file.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes (0: the kernel's default).
        size: i64,
    },
}

/// One container mount: where, and what.
#[derive(Clone, Debug)]
pub struct ExecMount {
    /// Absolute path in the container.
    pub dest: String,
    /// The mount.
    pub kind: MountKind,
}

/// A process to run.
#[derive(Clone, Debug, Default)]
pub struct Process {
    /// argv.
    pub args: Vec<String>,
    /// `K=V` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// uid, gid, supplementary gids.
    pub user: (u32, u32, Vec<u32>),
    /// Hostname.
    pub hostname: String,
    /// `RLIMIT_*` name (as `nofile`), soft, hard.
    pub rlimits: Vec<(String, i64, i64)>,
    /// Its network namespace.
    pub network: NetworkNamespace,
    /// All capabilities and no masked paths (`security=insecure`).
    pub insecure: bool,
    /// The root filesystem is read-only.
    pub readonly_root: bool,
    /// The AppArmor profile to confine it with (a profile the host has loaded).
    pub apparmor_profile: Option<String>,
    /// The cgroup to put its cgroup under (`--cgroup-parent`); empty: runc's default.
    pub cgroup_parent: String,
    /// Its memory limit in bytes (`None`: unlimited).
    pub memory_limit: Option<u64>,
}

/// A process's stdin and stdout given as descriptors (a frontend's gRPC connection),
/// instead of no input and output read line by line.
#[derive(Debug)]
pub struct Pipes {
    /// What the process reads.
    pub stdin: std::os::fd::OwnedFd,
    /// What the process writes.
    pub stdout: std::os::fd::OwnedFd,
}

/// The network namespace of a step.
#[derive(Clone, Debug, Default)]
pub enum NetworkNamespace {
    /// A new one runc makes, with loopback only.
    #[default]
    New,
    /// The host's.
    Host,
    /// A prepared one to join.
    Join(PathBuf),
}

/// How a step ended.
#[derive(Debug)]
pub struct ExitStatus {
    /// Exit code (128+signal when killed).
    pub code: i32,
    /// Its last lines of output.
    pub tail: Vec<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The containers this process runs now (runtime binary, state directory, id), so that a
/// process about to exit can stop them: [`kill_running`].
static RUNNING: std::sync::Mutex<Vec<(String, PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Kill every container this process runs now; their steps then fail. For a client that
/// must exit at once (a second Ctrl-C): nothing keeps running behind it.
pub fn kill_running() -> usize {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (binary, state, id) in &running {
        let _ = Command::new(binary)
            .arg("--root")
            .arg(state)
            .args(["kill", id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    running.len()
}

/// Keeps a container in [`RUNNING`] while its step runs.
struct Registered(String);

impl Registered {
    fn new(runner: &Runner, id: &str) -> Self {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push((
            runner.binary.clone(),
            runner.state.clone(),
            id.to_string(),
        ));
        Registered(id.to_string())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, _, id)| *id != self.0);
    }
}

/// Runs containers with one OCI runtime binary.
#[derive(Clone, Debug)]
pub struct Runner {
    /// The runtime binary (`runc`).
    pub binary: String,
    /// Its state directory (`runc --root`).
    pub state: PathBuf,
    /// Where bundles are made.
    pub bundles: PathBuf,
}

impl Runner {
    /// Kill and delete every container of the state directory: run while the worker holds
    /// its root, so they are what a killed process (SIGKILL) left running.
    pub fn reclaim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.state) else {
            return;
        };
        for id in entries.flatten().map(|e| e.file_name()) {
            tracing::warn!(
                "removing the container {} a killed buildwit process left running",
                id.to_string_lossy()
            );
            let _ = Command::new(&self.binary)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "--force"])
                .arg(&id)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Run `process` on `rootfs` with `mounts`; `output(stream, line)` gets each line
    /// (stream 1 = stdout, 2 = stderr), or only stderr's when `pipes` are its stdin and
    /// stdout. Setting `cancel` kills the container.
    pub fn run(
        &self,
        rootfs: &Path,
        process: &Process,
        mounts: &[ExecMount],
        pipes: Option<Pipes>,
        output: &(dyn Fn(u8, &str) + Sync),
        cancel: &AtomicBool,
    ) -> io::Result<ExitStatus> {
        // The pid alone repeats after a restart (PID 1 in a container), and runc's state
        // directory outlives a killed daemon: the start time makes ids unique.
        static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
        let start = START.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        });
        let id = format!(
            "buildwit-{}-{start:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was cancelled"));
        }
        let bundle = self.bundles.join(&id);
        std::fs::create_dir_all(&bundle)?;
        let _cleanup = RemoveOnDrop(bundle.clone());
        let config = spec(&id, rootfs, process, mounts);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).map_err(io::Error::other)?,
        )?;
        let _registered = Registered::new(self, &id);
        // Without a terminal, runc hands its own stdio to the process.
        let (stdin, stdout) = match pipes {
            Some(p) => (Stdio::from(p.stdin), Stdio::from(p.stdout)),
            None => (Stdio::null(), Stdio::piped()),
        };
        let mut child = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", self.binary)))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("piped");
        let tail = std::sync::Mutex::new(VecDeque::new());
        let read = |stream: u8, r: Box<dyn io::Read + Send>| {
            for line in BufReader::new(r).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                output(stream, &line);
                let mut t = tail.lock().unwrap();
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        };
        // Dropped when the step is over, which wakes the watcher at once.
        let (finished, watch) = std::sync::mpsc::channel::<()>();
        let status = std::thread::scope(|s| {
            if let Some(stdout) = stdout {
                s.spawn(|| read(1, Box::new(stdout)));
            }
            // `runc run` stays in the foreground; `runc kill` stops what it runs.
            s.spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                let tick = std::time::Duration::from_millis(50);
                // Until runc exits: a kill before runc made the container finds nothing.
                while let Err(RecvTimeoutError::Timeout) = watch.recv_timeout(tick) {
                    if cancel.load(Ordering::Relaxed) {
                        let _ = Command::new(&self.binary)
                            .arg("--root")
                            .arg(&self.state)
                            .args(["kill", &id, "KILL"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            });
            read(2, Box::new(stderr));
            let status = child.wait();
            drop(finished);
            status
        })?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(ExitStatus {
            code,
            tail: tail.into_inner().unwrap().into(),
        })
    }
}

/// A directory removed when this goes out of scope.
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a step's cgroup goes under `parent`, as BuildKit puts it: a systemd slice
/// (`NAME.slice:PREFIX:`) takes the id as the unit's name, a cgroupfs path gets
/// `buildkit/<id>` below it.
fn cgroups_path(parent: &str, id: &str) -> Option<String> {
    if parent.is_empty() {
        None
    } else if parent.contains(".slice") && parent.ends_with(':') {
        Some(format!("{parent}{id}"))
    } else {
        Some(format!("/{}/buildkit/{id}", parent.trim_matches('/')))
    }
}

/// The runtime spec (`config.json`) of a build step.
fn spec(id: &str, rootfs: &Path, p: &Process, mounts: &[ExecMount]) -> Value {
    let mut all = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in mounts {
        all.push(match &m.kind {
            MountKind::Bind { source, readonly } => {
                let mut options = vec!["rbind", "rprivate"];
                if *readonly {
                    options.push("ro");
                }
                json!({"destination": m.dest, "type": "bind", "source": source, "options": options})
            }
            MountKind::Tmpfs { size } => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string(), "mode=1777".to_string()];
                if *size > 0 {
                    options.push(format!("size={size}"));
                }
                json!({"destination": m.dest, "type": "tmpfs", "source": "tmpfs", "options": options})
            }
        });
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &p.network {
        NetworkNamespace::Host => {}
        NetworkNamespace::New => namespaces.push(json!({"type": "network"})),
        NetworkNamespace::Join(path) => {
            namespaces.push(json!({"type": "network", "path": path}));
        }
    }
    let caps: Vec<String> = if p.insecure {
        all_caps()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    let rlimits: Vec<Value> = p
        .rlimits
        .iter()
        .map(|(name, soft, hard)| {
            json!({"type": format!("RLIMIT_{}", name.to_uppercase()), "soft": soft, "hard": hard})
        })
        .collect();
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    });
    if !p.insecure {
        // BuildKit's default seccomp profile; `security.insecure` steps run unconfined.
        linux["seccomp"] = crate::seccomp::default_profile(&caps);
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    } else {
        linux["resources"] = json!({"devices": [{"allow": true, "access": "rwm"}]});
    }
    if let Some(limit) = p.memory_limit {
        linux["resources"]["memory"] = json!({"limit": limit});
    }
    if let Some(path) = cgroups_path(&p.cgroup_parent, id) {
        linux["cgroupsPath"] = json!(path);
    }
    let apparmor = p.apparmor_profile.as_deref().filter(|_| !p.insecure);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "apparmorProfile": apparmor.unwrap_or_default(),
            "terminal": false,
            "user": {"uid": p.user.0, "gid": p.user.1, "additionalGids": p.user.2},
            "args": p.args,
            "env": p.env,
            "cwd": if p.cwd.is_empty() { "/" } else { &p.cwd },
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": rlimits,
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": p.readonly_root},
        "hostname": p.hostname,
        "mounts": all,
        "linux": linux,
    })
}

/// Every capability this process may pass on (its bounding set), as BuildKit gives a
/// `security.insecure` step: asking runc for one the host withholds fails the step.
fn all_caps() -> Vec<String> {
    // By bit number, as the kernel numbers them.
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, c)| format!("CAP_{c}"))
        .collect()
}
