//! The default seccomp profile of a build step: which system calls a `RUN` may make.
//!
//! BuildKit gives every step that is not `security.insecure` Docker's default profile
//! (moby/buildkit `executor/oci/spec_linux.go`, `withDefaultProfile`, which calls
//! `GetDefaultProfile` of moby/profiles `seccomp`; containerd's `contrib/seccomp` profile is
//! kept in step with it). We write the same `linux.seccomp` object so that a step refused
//! there is refused here, with the same errno: whatever is not listed fails with `EPERM`.
//!
//! The profile is a table of rules, each kept or dropped by the step's capabilities, the
//! host's architecture and the kernel's version; we resolve those conditions when the spec
//! is written, as `GetDefaultProfile` does, and runc compiles what is left to BPF. The table
//! names syscalls newer than some libseccomps know; runc skips names its libseccomp lacks.

use std::sync::OnceLock;

use rustix::io::Errno;
use serde_json::{Value, json};

/// The errno of a refused syscall.
const EPERM: u32 = Errno::PERM.raw_os_error() as u32;
/// What `clone3` returns without `CAP_SYS_ADMIN`: glibc then falls back to `clone`, whose
/// flags, unlike `clone3`'s (behind a pointer), a seccomp filter can read.
const ENOSYS: u32 = Errno::NOSYS.raw_os_error() as u32;

/// The socket families the profile refuses, `AF_ALG` and `AF_VSOCK`; only `AF_KCM` (39) lies
/// between them. The same numbers on every Linux architecture.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// `clone` flags that make namespaces (`CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`).
const CLONE_NAMESPACES: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// Calls every step may make. Names separated by white space.
const ALLOWED: &str = "
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
    chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
    clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
    exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
    fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
    flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
    fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
    futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32
    getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid
    getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list
    getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid
    getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
    io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get
    ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listmount listxattr
    listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
    map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat
    mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl
    msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
    _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
    pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
    process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
    readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
    removexattr removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir
    rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
    sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
    sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
    sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
    setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
    setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
    setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
    setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
    sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount
    statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
    timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
    tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat
    utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
";

/// Calls a step may make only with `CAP_SYS_ADMIN` (besides [`ALLOWED`]).
const CAP_SYS_ADMIN_CALLS: &str = "
    bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
    lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
    open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
    umount umount2 unshare
";

/// The profile's rules, in Docker's order.
const RULES: &[Rule] = &[
    allow(ALLOWED),
    // Before 4.8 a tracer could change a call after the filter had passed it.
    allow("process_vm_readv process_vm_writev ptrace").since_kernel(4, 8),
    // Every socket family but AF_ALG and AF_VSOCK, as three ranges: runc splits two
    // conditions on one argument into two rules, which would allow either family.
    allow("socket").when(&[arg(0, Op::Lt, AF_ALG)]),
    allow("socket").when(&[arg(0, Op::Eq, AF_ALG + 1)]),
    allow("socket").when(&[arg(0, Op::Gt, AF_VSOCK)]),
    // personality(2) only for PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE (and both), and the
    // query (0xffffffff): no READ_IMPLIES_EXEC and friends.
    allow("personality").when(&[arg(0, Op::Eq, 0x0)]),
    allow("personality").when(&[arg(0, Op::Eq, 0x0008)]),
    allow("personality").when(&[arg(0, Op::Eq, 0x20000)]),
    allow("personality").when(&[arg(0, Op::Eq, 0x20008)]),
    allow("personality").when(&[arg(0, Op::Eq, 0xffff_ffff)]),
    allow("sync_file_range2 swapcontext").on(&[Arch::Ppc64le]),
    allow("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls")
        .on(&[Arch::Arm, Arch::Aarch64]),
    allow("arch_prctl").on(&[Arch::X86_64]),
    allow("modify_ldt").on(&[Arch::X86_64, Arch::X86]),
    allow("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr").on(&[Arch::S390x]),
    allow("riscv_flush_icache").on(&[Arch::Riscv64]),
    allow("open_by_handle_at").with_cap("CAP_DAC_READ_SEARCH"),
    allow(CAP_SYS_ADMIN_CALLS).with_cap("CAP_SYS_ADMIN"),
    // Without CAP_SYS_ADMIN, clone(2) may not make namespaces (flags are its first
    // argument, its second on s390x); clone3(2) keeps its flags behind a pointer the filter
    // cannot read, so it says ENOSYS and glibc falls back to clone.
    allow("clone")
        .when(&[arg(0, Op::MaskedEq, CLONE_NAMESPACES)])
        .without_cap("CAP_SYS_ADMIN")
        .not_on(&[Arch::S390x]),
    allow("clone")
        .when(&[arg(1, Op::MaskedEq, CLONE_NAMESPACES)])
        .without_cap("CAP_SYS_ADMIN")
        .on(&[Arch::S390x]),
    allow("clone3").errno(ENOSYS).without_cap("CAP_SYS_ADMIN"),
    allow("reboot").with_cap("CAP_SYS_BOOT"),
    allow("chroot").with_cap("CAP_SYS_CHROOT"),
    allow("delete_module init_module finit_module").with_cap("CAP_SYS_MODULE"),
    allow("acct").with_cap("CAP_SYS_PACCT"),
    allow("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace")
        .with_cap("CAP_SYS_PTRACE"),
    allow("iopl ioperm").with_cap("CAP_SYS_RAWIO"),
    allow("settimeofday stime clock_settime clock_settime64").with_cap("CAP_SYS_TIME"),
    allow("vhangup").with_cap("CAP_SYS_TTY_CONFIG"),
    allow("get_mempolicy mbind set_mempolicy set_mempolicy_home_node").with_cap("CAP_SYS_NICE"),
    allow("syslog").with_cap("CAP_SYSLOG"),
    allow("bpf").with_cap("CAP_BPF"),
    allow("perf_event_open").with_cap("CAP_PERFMON"),
];

/// The `linux.seccomp` object of a step's OCI spec: BuildKit's default profile (Docker's
/// default seccomp profile, which BuildKit applies to every step that is not
/// `security.insecure`), for the host's architecture, given the capabilities the step has
/// (strings like "CAP_SYS_ADMIN").
pub fn default_profile(caps: &[String]) -> serde_json::Value {
    profile(Arch::host(), kernel_version(), caps)
}

/// The profile for `arch` and a kernel of version `kernel` (unknown: rules that need a
/// newer kernel are left out, the stricter choice).
fn profile(arch: Arch, kernel: Option<(u32, u32)>, caps: &[String]) -> Value {
    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let syscalls: Vec<Value> = RULES
        .iter()
        .filter(|rule| rule.applies(arch, kernel, &has))
        .map(|rule| rule.to_json())
        .collect();
    let mut seccomp = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "syscalls": syscalls,
    });
    // None listed: runc allows the native ABI only.
    if !arch.architectures().is_empty() {
        seccomp["architectures"] = json!(arch.architectures());
    }
    seccomp
}

/// A host architecture, as far as the profile tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    X86_64,
    X86,
    Aarch64,
    Arm,
    S390x,
    Riscv64,
    Ppc64le,
    /// The rest (mips, loongarch64, big-endian ppc64, ...): no rules of their own, and the
    /// native ABI only.
    Other,
}

impl Arch {
    /// The architecture this daemon was built for, which is the one its steps run on.
    fn host() -> Arch {
        Arch::from_rust(std::env::consts::ARCH, cfg!(target_endian = "little"))
    }

    /// From a `std::env::consts::ARCH` name.
    fn from_rust(name: &str, little_endian: bool) -> Arch {
        match name {
            "x86_64" => Arch::X86_64,
            "x86" => Arch::X86,
            "aarch64" => Arch::Aarch64,
            "arm" => Arch::Arm,
            "s390x" => Arch::S390x,
            "riscv64" => Arch::Riscv64,
            "powerpc64" if little_endian => Arch::Ppc64le,
            _ => Arch::Other,
        }
    }

    /// The ABIs a step may call in: a 64-bit host's 32-bit ones too, so that 32-bit
    /// binaries in an image run, under the same rules.
    fn architectures(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            Arch::Aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            Arch::S390x => &["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
            Arch::Riscv64 => &["SCMP_ARCH_RISCV64"],
            // The profile has no entry for these.
            Arch::X86 | Arch::Arm | Arch::Ppc64le | Arch::Other => &[],
        }
    }
}

/// What a rule does to the calls it matches.
#[derive(Clone, Copy, Debug)]
enum Action {
    Allow,
    /// Fail with this errno.
    Errno(u32),
}

/// A comparison of a syscall argument (`SCMP_CMP_*`).
#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Lt,
    Gt,
    /// `(arg & value) == value_two`.
    MaskedEq,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Eq => "SCMP_CMP_EQ",
            Op::Lt => "SCMP_CMP_LT",
            Op::Gt => "SCMP_CMP_GT",
            Op::MaskedEq => "SCMP_CMP_MASKED_EQ",
        }
    }
}

/// A condition on one syscall argument.
#[derive(Clone, Copy, Debug)]
struct Arg {
    index: u32,
    op: Op,
    value: u64,
    value_two: u64,
}

/// `arg[index] op value` (for `MaskedEq`: `arg[index] & value == 0`).
const fn arg(index: u32, op: Op, value: u64) -> Arg {
    Arg {
        index,
        op,
        value,
        value_two: 0,
    }
}

/// One rule of the profile and when the step gets it.
#[derive(Clone, Copy, Debug)]
struct Rule {
    /// Syscall names, separated by white space.
    names: &'static str,
    action: Action,
    /// Conditions on the arguments; all must hold.
    args: &'static [Arg],
    /// Kept only if the step has this capability.
    with_cap: Option<&'static str>,
    /// Left out if the step has this capability (it gets a wider rule instead).
    without_cap: Option<&'static str>,
    /// Kept only on these architectures (on all, if empty).
    on: &'static [Arch],
    /// Left out on these.
    not_on: &'static [Arch],
    /// Kept only from this kernel version (major, minor) on.
    since_kernel: Option<(u32, u32)>,
}

/// A rule allowing `names` (separated by white space) always; narrowed by the methods below.
const fn allow(names: &'static str) -> Rule {
    Rule {
        names,
        action: Action::Allow,
        args: &[],
        with_cap: None,
        without_cap: None,
        on: &[],
        not_on: &[],
        since_kernel: None,
    }
}

impl Rule {
    const fn when(self, args: &'static [Arg]) -> Rule {
        Rule { args, ..self }
    }

    const fn errno(self, errno: u32) -> Rule {
        Rule {
            action: Action::Errno(errno),
            ..self
        }
    }

    const fn with_cap(self, cap: &'static str) -> Rule {
        Rule {
            with_cap: Some(cap),
            ..self
        }
    }

    const fn without_cap(self, cap: &'static str) -> Rule {
        Rule {
            without_cap: Some(cap),
            ..self
        }
    }

    const fn on(self, arches: &'static [Arch]) -> Rule {
        Rule { on: arches, ..self }
    }

    const fn not_on(self, arches: &'static [Arch]) -> Rule {
        Rule {
            not_on: arches,
            ..self
        }
    }

    const fn since_kernel(self, major: u32, minor: u32) -> Rule {
        Rule {
            since_kernel: Some((major, minor)),
            ..self
        }
    }

    fn applies(&self, arch: Arch, kernel: Option<(u32, u32)>, has: &dyn Fn(&str) -> bool) -> bool {
        if self.not_on.contains(&arch) || (!self.on.is_empty() && !self.on.contains(&arch)) {
            return false;
        }
        if self.without_cap.is_some_and(has) || self.with_cap.is_some_and(|c| !has(c)) {
            return false;
        }
        match (self.since_kernel, kernel) {
            (None, _) => true,
            (Some(min), Some(running)) => running >= min,
            (Some(_), None) => false,
        }
    }

    /// The rule as runc reads it (runtime-spec `LinuxSyscall`).
    fn to_json(self) -> Value {
        let names: Vec<&str> = self.names.split_whitespace().collect();
        let mut rule = json!({"names": names});
        match self.action {
            Action::Allow => rule["action"] = json!("SCMP_ACT_ALLOW"),
            Action::Errno(errno) => {
                rule["action"] = json!("SCMP_ACT_ERRNO");
                rule["errnoRet"] = json!(errno);
            }
        }
        if !self.args.is_empty() {
            let args: Vec<Value> = self
                .args
                .iter()
                .map(|a| {
                    json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op.name()})
                })
                .collect();
            rule["args"] = json!(args);
        }
        rule
    }
}

/// The running kernel's version, read once.
fn kernel_version() -> Option<(u32, u32)> {
    static VERSION: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        parse_release(&release)
    })
}

/// Major and minor of a kernel release such as "6.1.0-18-amd64" or "3.12-1-amd64".
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let (major, rest) = release.trim().split_once('.')?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((major.parse().ok()?, rest[..digits].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A build step's capabilities without `security.insecure`.
    const STEP_CAPS: &[&str] = crate::exec::DEFAULT_CAPS;

    fn caps(extra: &[&str]) -> Vec<String> {
        STEP_CAPS
            .iter()
            .chain(extra)
            .map(|c| c.to_string())
            .collect()
    }

    fn x86_64(extra: &[&str]) -> Value {
        profile(Arch::X86_64, Some((6, 1)), &caps(extra))
    }

    fn rules(profile: &Value) -> &Vec<Value> {
        profile["syscalls"].as_array().unwrap()
    }

    /// The rules that name `name`.
    fn rules_for<'a>(profile: &'a Value, name: &str) -> Vec<&'a Value> {
        rules(profile)
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    /// Whether `name` is allowed whatever its arguments.
    fn allowed(profile: &Value, name: &str) -> bool {
        rules_for(profile, name)
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
    }

    #[test]
    fn refuses_what_is_not_listed_with_eperm() {
        let p = x86_64(&[]);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert!(allowed(&p, "read") && allowed(&p, "execve") && allowed(&p, "wait4"));
        assert!(rules_for(&p, "kexec_load").is_empty());
    }

    #[test]
    fn lists_the_abis_of_the_host() {
        assert_eq!(
            x86_64(&[])["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let arm = profile(Arch::Aarch64, Some((6, 1)), &caps(&[]));
        assert_eq!(
            arm["architectures"],
            json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        let other = profile(Arch::Other, Some((6, 1)), &caps(&[]));
        assert!(other.get("architectures").is_none());
        assert_eq!(Arch::from_rust("x86_64", true), Arch::X86_64);
        assert_eq!(Arch::from_rust("aarch64", true), Arch::Aarch64);
        assert_eq!(Arch::from_rust("powerpc64", false), Arch::Other);
    }

    #[test]
    fn namespaces_and_mounts_need_cap_sys_admin() {
        let step = x86_64(&[]);
        let admin = x86_64(&["CAP_SYS_ADMIN"]);
        for name in [
            "unshare",
            "mount",
            "umount2",
            "setns",
            "sethostname",
            "fsopen",
            "bpf",
        ] {
            assert!(
                rules_for(&step, name).is_empty(),
                "{name} without CAP_SYS_ADMIN"
            );
            assert!(allowed(&admin, name), "{name} with CAP_SYS_ADMIN");
        }
    }

    #[test]
    fn capabilities_open_their_groups() {
        for (cap, name) in [
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_MODULE", "finit_module"),
            ("CAP_SYS_PACCT", "acct"),
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_SYS_RAWIO", "iopl"),
            ("CAP_SYS_TIME", "clock_settime"),
            ("CAP_SYS_TTY_CONFIG", "vhangup"),
            ("CAP_SYS_NICE", "mbind"),
            ("CAP_SYSLOG", "syslog"),
            ("CAP_BPF", "bpf"),
            ("CAP_PERFMON", "perf_event_open"),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        ] {
            assert!(
                rules_for(&x86_64(&[]), name).is_empty(),
                "{name} without {cap}"
            );
            assert!(allowed(&x86_64(&[cap]), name), "{name} with {cap}");
        }
        // A step has CAP_SYS_CHROOT by default; without it chroot is refused.
        assert!(allowed(&x86_64(&[]), "chroot"));
        let none = profile(Arch::X86_64, Some((6, 1)), &[]);
        assert!(rules_for(&none, "chroot").is_empty());
    }

    #[test]
    fn clone_may_not_make_namespaces_without_cap_sys_admin() {
        let step = x86_64(&[]);
        let clone = rules_for(&step, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(
            clone[0]["args"],
            json!([{"index": 0, "value": 0x7e02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let clone3 = rules_for(&step, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], 38);

        let admin = x86_64(&["CAP_SYS_ADMIN"]);
        assert!(allowed(&admin, "clone") && allowed(&admin, "clone3"));
        assert_eq!(rules_for(&admin, "clone").len(), 1);
        assert_eq!(rules_for(&admin, "clone3").len(), 1);

        // s390x passes the flags second.
        let s390x = profile(Arch::S390x, Some((6, 1)), &caps(&[]));
        assert_eq!(rules_for(&s390x, "clone")[0]["args"][0]["index"], 1);
    }

    #[test]
    fn personality_and_socket_only_with_these_arguments() {
        let p = x86_64(&[]);
        let values = |name| -> Vec<(String, u64)> {
            rules_for(&p, name)
                .iter()
                .map(|r| {
                    assert_eq!(r["action"], "SCMP_ACT_ALLOW");
                    let arg = &r["args"][0];
                    (
                        arg["op"].as_str().unwrap().to_string(),
                        arg["value"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        let eq = |v| ("SCMP_CMP_EQ".to_string(), v);
        assert_eq!(
            values("personality"),
            [eq(0), eq(8), eq(0x20000), eq(0x20008), eq(0xffff_ffff)]
        );
        assert_eq!(
            values("socket"),
            [
                ("SCMP_CMP_LT".to_string(), 38),
                eq(39),
                ("SCMP_CMP_GT".to_string(), 40)
            ]
        );
    }

    #[test]
    fn arch_specific_calls_on_their_arch_only() {
        let x86 = x86_64(&[]);
        let arm = profile(Arch::Aarch64, Some((6, 1)), &caps(&[]));
        assert!(allowed(&x86, "arch_prctl") && allowed(&x86, "modify_ldt"));
        assert!(rules_for(&x86, "set_tls").is_empty());
        for name in [
            "set_tls",
            "cacheflush",
            "breakpoint",
            "arm_fadvise64_64",
            "sync_file_range2",
        ] {
            assert!(allowed(&arm, name), "{name} on aarch64");
        }
        assert!(
            rules_for(&arm, "arch_prctl").is_empty() && rules_for(&arm, "modify_ldt").is_empty()
        );
    }

    #[test]
    fn ptrace_needs_a_kernel_from_4_8_or_cap_sys_ptrace() {
        assert!(allowed(&x86_64(&[]), "ptrace"));
        let old = profile(Arch::X86_64, Some((4, 4)), &caps(&[]));
        assert!(rules_for(&old, "ptrace").is_empty());
        let unknown = profile(Arch::X86_64, None, &caps(&[]));
        assert!(rules_for(&unknown, "ptrace").is_empty());
        let traced = profile(Arch::X86_64, Some((4, 4)), &caps(&["CAP_SYS_PTRACE"]));
        assert!(allowed(&traced, "ptrace"));
    }

    #[test]
    fn no_rule_names_a_call_twice() {
        for rule in RULES {
            let mut seen = HashSet::new();
            for name in rule.names.split_whitespace() {
                assert!(seen.insert(name), "{name} twice in one rule");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
            }
            assert!(!seen.is_empty());
        }
        // Nor is a conditional call also in the unconditional list.
        let always: HashSet<&str> = ALLOWED.split_whitespace().collect();
        for name in CAP_SYS_ADMIN_CALLS.split_whitespace() {
            assert!(!always.contains(name), "{name}");
        }
        for name in [
            "chroot",
            "reboot",
            "ptrace",
            "personality",
            "socket",
            "clone3",
        ] {
            assert!(!always.contains(name), "{name}");
        }
    }

    #[test]
    fn reads_kernel_releases() {
        assert_eq!(parse_release("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_release("3.12-1-amd64"), Some((3, 12)));
        assert_eq!(parse_release("4.8"), Some((4, 8)));
        assert_eq!(parse_release("garbage"), None);
        assert!(kernel_version().is_some());
    }

    /// Prints the profile of this host for `SECCOMP_CAPS` (comma-separated; a step's
    /// defaults if unset), to try it with runc by hand.
    #[test]
    #[ignore = "prints a profile for a manual check with runc"]
    fn print_profile() {
        let caps = match std::env::var("SECCOMP_CAPS") {
            Ok(list) => list
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
            Err(_) => caps(&[]),
        };
        println!("{}", default_profile(&caps));
    }
}
